"""Policy registry: ``create_policy(name, variants, **kwargs)``; implementations are imported on first use.

Every policy constructor takes the bundle first, then keyword-only arguments, and accepts the environment
keywords ``offload``, ``energy_model`` and ``battery_budget`` (static baselines ignore them), so a caller can
build any registered policy the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from supernet.registry import Registry, import_target

from ..variants import Variant
from .base import ClairvoyantPolicy, Decision, Policy, StepTruth

__all__ = [
    "AGENT_POLICY",
    "POLICIES",
    "ClairvoyantPolicy",
    "Decision",
    "Policy",
    "StepTruth",
    "create_policy",
    "list_policies",
]

AGENT_POLICY = "kalman"
"""The registry name of the runtime agent proper."""

# name -> ("module:Class", preset keyword arguments); the class is imported by `create_policy`
POLICIES: Registry[tuple[str, Mapping[str, Any]]] = Registry("policy", plural="policies")
POLICIES.add("static", ("device_agents.policies.static:StaticPolicy", {}))
POLICIES.add("static-smallest", ("device_agents.policies.static:StaticPolicy", {"which": "smallest"}))
POLICIES.add("static-middle", ("device_agents.policies.static:StaticPolicy", {"which": "middle"}))
POLICIES.add("static-largest", ("device_agents.policies.static:StaticPolicy", {"which": "largest"}))
POLICIES.add("greedy", ("device_agents.policies.adaptive:GreedyPolicy", {}))
POLICIES.add("greedy-frequency", ("device_agents.policies.adaptive:GreedyPolicy", {"contention_coeff": 0.0}))
POLICIES.add("kalman", ("device_agents.policies.adaptive:KalmanPolicy", {}))
POLICIES.add("oracle", ("device_agents.policies.oracle:OraclePolicy", {}))


def list_policies() -> list[str]:
    return POLICIES.names()


def create_policy(name: str, variants: Sequence[Variant], **kwargs: Any) -> Policy:
    """Build a registered policy; ``kwargs`` override the registry's presets (e.g. ``which`` for "static").

    An unknown name raises `supernet.registry.UnknownNameError` (a KeyError) listing the known ones.
    """
    target, preset = POLICIES.get(name)
    cls = import_target(target)
    policy: Policy = cls(variants, **{**preset, **kwargs})
    if name != "static":
        policy.name = name
    return policy
