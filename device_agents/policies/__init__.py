"""Policy registry: ``create_policy(name, variants, **kwargs)``; implementations are imported on first use.

Every policy constructor takes the bundle first, then keyword-only arguments, and accepts the environment
keywords ``offload``, ``energy_model`` and ``battery_budget`` (static baselines ignore them), so a caller can
build any registered policy the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..variants import Variant
from .base import ClairvoyantPolicy, Decision, Policy, StepTruth

__all__ = [
    "AGENT_POLICY",
    "ClairvoyantPolicy",
    "Decision",
    "Policy",
    "StepTruth",
    "create_policy",
    "list_policies",
]

AGENT_POLICY = "kalman"
"""The registry name of the runtime agent proper."""

_POLICIES: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "static": ("device_agents.policies.static:StaticPolicy", {}),
    "static-smallest": ("device_agents.policies.static:StaticPolicy", {"which": "smallest"}),
    "static-middle": ("device_agents.policies.static:StaticPolicy", {"which": "middle"}),
    "static-largest": ("device_agents.policies.static:StaticPolicy", {"which": "largest"}),
    "greedy": ("device_agents.policies.adaptive:GreedyPolicy", {}),
    "greedy-frequency": ("device_agents.policies.adaptive:GreedyPolicy", {"contention_coeff": 0.0}),
    "kalman": ("device_agents.policies.adaptive:KalmanPolicy", {}),
    "oracle": ("device_agents.policies.oracle:OraclePolicy", {}),
}


def list_policies() -> list[str]:
    return list(_POLICIES)


def create_policy(name: str, variants: Sequence[Variant], **kwargs: Any) -> Policy:
    """Build a registered policy; ``kwargs`` override the registry's presets (e.g. ``which`` for "static")."""
    if name not in _POLICIES:
        raise KeyError(f"unknown policy {name!r}; known policies: {list(_POLICIES)}")
    target, preset = _POLICIES[name]
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    policy: Policy = cls(variants, **{**preset, **kwargs})
    if name != "static":
        policy.name = name
    return policy
