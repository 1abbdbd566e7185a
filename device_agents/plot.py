"""Timeline plot of one simulation: choice, latency vs deadline, battery, CPU clock and load, bandwidth."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from supernet.io import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from .simulator import SimulationResult

__all__ = ["plot_timeline"]


def plot_timeline(result: SimulationResult, path: str | os.PathLike[str], *, title: str | None = None) -> None:
    """Write a PNG with five stacked panels sharing the time axis (seconds):

    1. the chosen option, as its accuracy (offloads in a separate colour);
    2. actual and expected latency (ms) against the deadline, misses marked (failed requests at the top);
    3. battery (%) with charging periods shaded;
    4. CPU clock (MHz) and background load (right axis);
    5. true and estimated bandwidth (Mbit/s).
    """
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    steps = result.steps
    t = np.array([s.time_s for s in steps])
    acc = np.array([s.accuracy for s in steps])
    off = np.array([s.offload for s in steps])
    actual = np.array([s.actual_latency_ms for s in steps])
    expected = np.array([s.expected_latency_ms for s in steps])
    missed = np.array([s.missed for s in steps])
    finite = actual[np.isfinite(actual)]
    top = max(result.deadline_ms * 1.5, float(np.percentile(finite, 99)) * 1.1 if finite.size else 0.0)
    shown = np.where(np.isfinite(actual), np.minimum(actual, top), top)

    fig = Figure(figsize=(11, 11), dpi=100, layout="constrained")
    axes = fig.subplots(5, 1, sharex=True)
    m = result.metrics
    fig.suptitle(
        title
        or f"{result.policy} on {result.trace}: miss {m['miss_rate']:.1%}, accuracy {m['mean_accuracy']:.3f}, "
        f"energy {m['energy_mj'] / 1000:.1f} J, switches {m['switches']}, offloads {m['offloads']}"
    )

    ax = axes[0]
    ax.step(t, acc, where="post", color="tab:blue", lw=1.2, label="local variant")
    if off.any():
        ax.scatter(t[off], acc[off], s=6, color="tab:purple", label="offload", zorder=3)
    for prec, marker in (("int8", "v"), ("fp16", "s"), ("fp32", "^")):
        sel = np.array([s.precision == prec for s in steps])
        if sel.any():
            ax.scatter(t[sel], acc[sel], s=4, marker=marker, alpha=0.5, label=prec)
    ax.set_ylabel("accuracy of choice")
    ax.legend(loc="lower left", fontsize=7, ncol=5)

    ax = axes[1]
    ax.plot(t, shown, lw=0.8, color="tab:gray", label="actual")
    ax.plot(t, np.minimum(expected, top), lw=0.8, color="tab:green", alpha=0.8, label="expected")
    ax.axhline(result.deadline_ms, color="tab:red", ls="--", lw=1, label=f"deadline {result.deadline_ms:g} ms")
    if missed.any():
        ax.scatter(t[missed], shown[missed], s=10, color="tab:red", marker="x", label="missed", zorder=3)
    ax.set_ylim(0, top * 1.02)
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper left", fontsize=7, ncol=4)

    ax = axes[2]
    battery = np.array([s.battery_pct for s in steps])
    charging = np.array([s.charging for s in steps])
    ax.plot(t, battery, color="tab:orange")
    if charging.any():
        ax.fill_between(t, 0, 100, where=charging, color="tab:orange", alpha=0.15, step="post", label="charging")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("battery (%)")

    ax = axes[3]
    ax.plot(t, [s.cpu_freq_mhz for s in steps], color="tab:blue", label="CPU clock")
    ax.set_ylabel("CPU clock (MHz)")
    ax.set_ylim(0, max(s.cpu_freq_max_mhz for s in steps) * 1.05)
    ax2 = ax.twinx()
    ax2.plot(t, [s.background_load for s in steps], color="tab:brown", lw=0.7, alpha=0.7)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("background load", color="tab:brown")

    ax = axes[4]
    ax.plot(t, [s.bandwidth_mbps for s in steps], color="tab:cyan", lw=0.9, label="true")
    ax.plot(t, [s.estimated_bandwidth_mbps for s in steps], color="tab:purple", lw=0.7, ls="--", label="estimated")
    ax.set_ylabel("bandwidth (Mbit/s)")
    ax.set_xlabel("time (s)")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_ylim(bottom=0)

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
