"""Runtime device agents: pick a variant (sub-network x precision) or offload, per request, to meet a deadline.

Public API (stable names; see each module for the contract):

* values: `Variant`, `DeviceState`, `Decision`, `Trace`, `OffloadTarget`, `EnergyModel`, `BatteryBudget`
* policies: `create_policy`, `list_policies`, `Policy` (``static*``, ``greedy``, ``greedy-frequency``,
  ``kalman`` = the agent, ``oracle``)
* state: `create_provider`, `list_providers`, `StateProvider`, `NetworkEstimator`
* traces: `builtin_trace`, `list_scenarios`, `load_trace_csv`, `save_trace_csv`
* evaluation: `simulate`, `compare_policies`, `SimulationResult`, `plot_timeline`
* deployment: `build_bundle`, `load_bundle`, `Bundle` (model files + versioned manifest); `AdaptiveModel` (real
  inference with per-request variant choice, offload with local fallback, decision log); the offload server is
  `device_agents.server` (FastAPI, imported on demand), its client `device_agents.client.OffloadClient`; the live
  run under injected contention is `device_agents.live.run_live`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .bundle import Bundle, BundleError, BundleHashError, BundleSchemaError, build_bundle, load_bundle
from .energy import BatteryBudget, EnergyModel
from .network import NetworkEstimator, OffloadTarget
from .policies import AGENT_POLICY, Decision, Policy, create_policy, list_policies
from .providers import create_provider, list_providers
from .runtime import AdaptiveModel, DecisionRecord, Prediction
from .scenarios import builtin_trace, describe_scenario, list_scenarios
from .simulator import DeviceLatencyModel, SimulationResult, StepRecord, compare_policies, simulate
from .state import DeviceState, StateProvider
from .trace import Trace, TraceFormatError, load_trace_csv, save_trace_csv
from .variants import InvalidVariantError, Variant, example_variants, load_variants, save_variants

if TYPE_CHECKING:  # pragma: no cover
    from .plot import plot_timeline

__all__ = [
    "AGENT_POLICY",
    "AdaptiveModel",
    "BatteryBudget",
    "Bundle",
    "BundleError",
    "BundleHashError",
    "BundleSchemaError",
    "Decision",
    "DecisionRecord",
    "DeviceLatencyModel",
    "DeviceState",
    "EnergyModel",
    "InvalidVariantError",
    "NetworkEstimator",
    "OffloadTarget",
    "Policy",
    "Prediction",
    "SimulationResult",
    "StateProvider",
    "StepRecord",
    "Trace",
    "TraceFormatError",
    "Variant",
    "build_bundle",
    "builtin_trace",
    "compare_policies",
    "create_policy",
    "create_provider",
    "describe_scenario",
    "example_variants",
    "list_policies",
    "list_providers",
    "list_scenarios",
    "load_bundle",
    "load_trace_csv",
    "load_variants",
    "plot_timeline",
    "save_trace_csv",
    "save_variants",
    "simulate",
]


if not TYPE_CHECKING:  # hidden from the type checker, which would otherwise accept any attribute name

    def __getattr__(name: str) -> Any:
        # matplotlib is heavy: import the plotting module only when asked for.
        if name == "plot_timeline":
            from .plot import plot_timeline

            return plot_timeline
        raise AttributeError(f"module 'device_agents' has no attribute {name!r}")
