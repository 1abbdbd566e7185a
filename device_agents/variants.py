"""The deployable choices an agent switches between: one searched architecture at one precision (`Variant`).

A bundle of variants comes out of the search (Pareto front x precisions). ``predicted_latency_ms`` is the
latency at the device's maximum CPU frequency with no contention, e.g. from the latency tables; the agents scale
it to the current conditions. Variants are identified by ``name``, which must be unique within a bundle.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supernet.errors import InputError
from supernet.io import atomic_write_json, read_json
from supernet.space import PRECISIONS  # the vocabulary shared with quantization, tables and search

__all__ = [
    "PRECISIONS",
    "VARIANT_SCHEMA_VERSION",
    "InvalidVariantError",
    "Variant",
    "example_variants",
    "load_variants",
    "save_variants",
    "validate_bundle",
]

VARIANT_SCHEMA_VERSION = 1


class InvalidVariantError(InputError):
    """A variant or a bundle of variants is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class Variant:
    """One deployable model.

    Attributes:
        name: unique id within a bundle, conventionally ``f"{arch}@{precision}"``.
        arch: ``str(ArchConfig)`` of the sub-network.
        precision: "fp32", "fp16" or "int8".
        predicted_latency_ms: latency at ``cpu_freq_max_mhz`` with no background load, milliseconds.
        accuracy: measured top-1 accuracy in [0, 1].
        size_bytes: size of the exported model file (0 = unknown).
        model_path: where the exported model lives, if any (ONNX/TFLite); not read by the agents.
    """

    name: str
    arch: str
    precision: str
    predicted_latency_ms: float
    accuracy: float
    size_bytes: int = 0
    model_path: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidVariantError(f"Variant.name: expected a non-empty string, got {self.name!r}")
        if not isinstance(self.arch, str) or not self.arch:
            raise InvalidVariantError(f"Variant {self.name!r}: arch must be a non-empty string (str(ArchConfig))")
        if self.precision not in PRECISIONS:
            raise InvalidVariantError(
                f"Variant {self.name!r}: precision {self.precision!r} is not one of {list(PRECISIONS)}"
            )
        lat = self.predicted_latency_ms
        if isinstance(lat, bool) or not isinstance(lat, (int, float)) or not (math.isfinite(lat) and lat > 0):
            raise InvalidVariantError(
                f"Variant {self.name!r}: predicted_latency_ms must be a finite number > 0, got {lat!r}"
            )
        acc = self.accuracy
        if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0.0 <= acc <= 1.0:
            raise InvalidVariantError(
                f"Variant {self.name!r}: accuracy must be a fraction in [0, 1] (not percent), got {acc!r}"
            )
        if isinstance(self.size_bytes, bool) or not isinstance(self.size_bytes, int) or self.size_bytes < 0:
            raise InvalidVariantError(f"Variant {self.name!r}: size_bytes must be an integer >= 0")
        if self.model_path is not None and not isinstance(self.model_path, str):
            raise InvalidVariantError(f"Variant {self.name!r}: model_path must be a string or null")
        object.__setattr__(self, "predicted_latency_ms", float(lat))
        object.__setattr__(self, "accuracy", float(acc))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": VARIANT_SCHEMA_VERSION,
            "name": self.name,
            "arch": self.arch,
            "precision": self.precision,
            "predicted_latency_ms": self.predicted_latency_ms,
            "accuracy": self.accuracy,
            "size_bytes": self.size_bytes,
            "model_path": self.model_path,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Variant:
        if not isinstance(d, Mapping):
            raise InvalidVariantError(f"variant JSON: expected an object, got {type(d).__name__}")
        version = d.get("schema_version", VARIANT_SCHEMA_VERSION)
        if version != VARIANT_SCHEMA_VERSION:
            raise InvalidVariantError(
                f"variant JSON: schema_version {version!r} is not supported (this hwnas reads "
                f"{VARIANT_SCHEMA_VERSION})"
            )
        required = ("name", "arch", "precision", "predicted_latency_ms", "accuracy")
        missing = [k for k in required if k not in d]
        if missing:
            raise InvalidVariantError(
                f"variant JSON {d.get('name', '?')!r}: missing field(s) {missing}; required {list(required)}"
            )
        optional = ("size_bytes", "model_path", "schema_version")
        unknown = sorted(set(d) - set(required) - set(optional))
        if unknown:
            raise InvalidVariantError(
                f"variant JSON {d.get('name', '?')!r}: unknown field(s) {unknown}; allowed "
                f"{list(required) + list(optional[:-1])}"
            )
        return cls(**{k: d[k] for k in required}, size_bytes=d.get("size_bytes", 0), model_path=d.get("model_path"))


def validate_bundle(variants: Sequence[Variant]) -> tuple[Variant, ...]:
    """Check a bundle is usable by a policy: non-empty, all `Variant`, unique names. Returns it as a tuple."""
    out = tuple(variants)
    if not out:
        raise InvalidVariantError("a variant bundle needs at least one variant")
    for i, v in enumerate(out):
        if not isinstance(v, Variant):
            raise InvalidVariantError(f"variants[{i}]: expected a Variant, got {type(v).__name__}")
    seen: set[str] = set()
    for v in out:
        if v.name in seen:
            raise InvalidVariantError(f"variant name {v.name!r} appears more than once; names must be unique")
        seen.add(v.name)
    return out


def load_variants(path: str | os.PathLike[str]) -> tuple[Variant, ...]:
    """Read a bundle: a JSON list of variant objects, or an object with a ``"variants"`` list.

    Errors name the file and the entry index.
    """
    data = read_json(path, what="variants file")
    if isinstance(data, Mapping) and "variants" in data:
        data = data["variants"]
    if not isinstance(data, list):
        raise InvalidVariantError(
            f"variants file {os.fspath(path)!r}: expected a JSON list of variants (or {{\"variants\": [...]}}), "
            f"got {type(data).__name__}"
        )
    out = []
    for i, item in enumerate(data):
        try:
            out.append(Variant.from_json(item))
        except InvalidVariantError as e:
            raise InvalidVariantError(f"variants file {os.fspath(path)!r}, entry {i}: {e}") from None
        except TypeError as e:  # e.g. wrong types reaching the constructor
            raise InvalidVariantError(f"variants file {os.fspath(path)!r}, entry {i}: {e}") from None
    try:
        return validate_bundle(out)
    except InvalidVariantError as e:
        raise InvalidVariantError(f"variants file {os.fspath(path)!r}: {e}") from None


def save_variants(variants: Sequence[Variant], path: str | os.PathLike[str]) -> None:
    atomic_write_json(path, [v.to_json() for v in validate_bundle(variants)])


# Latency and accuracy multipliers of lower precisions relative to fp32 on a CPU, used only by
# `example_variants`. fp16 on CPUs is mostly emulated, hence the small gain.
_EXAMPLE_PRECISION = {"fp32": (1.0, 0.0), "fp16": (0.85, -0.001), "int8": (0.45, -0.012)}


def example_variants(*, precisions: Sequence[str] = PRECISIONS) -> tuple[Variant, ...]:
    """A synthetic but plausible bundle (6 OFA sub-networks x ``precisions``) for demos and tests.

    Latencies are in the range of a mobile CPU at full clock (8..70 ms); accuracies of ImageNet-scale OFA
    sub-networks (0.70..0.80). Not measured: use the search's output for anything real.
    """
    from supernet.space import SearchSpace  # local: only the example needs the space

    space = SearchSpace()
    points = [  # (depth, kernel, expand, resolution, fp32 latency ms, fp32 accuracy)
        (2, 3, 3, 128, 9.0, 0.705),
        (2, 5, 4, 160, 15.0, 0.735),
        (3, 5, 4, 176, 24.0, 0.757),
        (3, 7, 6, 192, 36.0, 0.772),
        (4, 5, 6, 208, 50.0, 0.786),
        (4, 7, 6, 224, 68.0, 0.798),
    ]
    out = []
    for depth, kernel, expand, res, lat_ms, acc in points:
        arch = str(space.uniform(depth=depth, kernel=kernel, expand=expand, resolution=res))
        for p in precisions:
            lat_mult, acc_delta = _EXAMPLE_PRECISION[p]
            out.append(
                Variant(
                    name=f"{arch}@{p}",
                    arch=arch,
                    precision=p,
                    predicted_latency_ms=round(lat_ms * lat_mult, 3),
                    accuracy=round(acc + acc_delta, 4),
                    size_bytes=0,
                )
            )
    return validate_bundle(out)
