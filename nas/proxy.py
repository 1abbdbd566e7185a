"""Accuracy *proxies*: stand-ins for validation accuracy when no supernet trained on the user's data exists.

A proxy is not an accuracy and every result searched with one says so (``accuracy_source`` in the outputs). The
one here follows the observation behind OFA's and MnasNet's spaces that, inside one MobileNetV3 space, accuracy
grows with compute: `macs_proxy` scores a subnet by its multiply-accumulates on a log scale,

    proxy(a) = clip(log10(MACs(a) / 1e6) / 4, 0, 1)        (1 M MACs -> 0, 10 G MACs -> 1)

so a search maximising it under a latency constraint returns the subnet with the most compute that meets the
target on the device: the right *latency* behaviour for a real-target benchmark, and no claim about ImageNet top-1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from supernet.layers import Backbone, count_macs
from supernet.space import ArchConfig

__all__ = ["PROXIES", "macs_proxy"]

PROXIES = {"macs": "log10(MACs / 1e6) / 4 clipped to [0, 1]: a compute proxy, NOT an accuracy"}


def macs_proxy(backbone: Backbone):  # type: ignore[no-untyped-def]
    """The batched MACs proxy of ``backbone``'s subnets (an `nas.objective.ArchFn`)."""

    def fn(cfgs: Sequence[ArchConfig]) -> np.ndarray:
        return np.asarray([min(1.0, max(0.0, math.log10(count_macs(backbone, c) / 1e6) / 4)) for c in cfgs])

    return fn
