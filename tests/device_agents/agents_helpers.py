"""Helpers shared by the device_agents tests (unique module name: imported by file path)."""

from __future__ import annotations

from pathlib import Path

from device_agents import Variant
from device_agents.testing import make_state

__all__ = ["DATA", "fake_sysfs", "make_state", "small_bundle", "tiny_onnx_variants", "write_tree"]

DATA = Path(__file__).parent / "data"


def small_bundle() -> tuple[Variant, ...]:
    """Three variants with easy numbers: 10 ms/0.70, 20 ms/0.75, 40 ms/0.80."""
    return (
        Variant(name="s", arch="r128-d2", precision="int8", predicted_latency_ms=10.0, accuracy=0.70),
        Variant(name="m", arch="r160-d3", precision="fp32", predicted_latency_ms=20.0, accuracy=0.75),
        Variant(name="l", arch="r224-d4", precision="fp32", predicted_latency_ms=40.0, accuracy=0.80),
    )


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def fake_sysfs(root: Path, *, battery: bool = True) -> tuple[Path, Path]:
    """A sysfs + procfs tree of a 2-core laptop; returns (sysfs_root, procfs_root)."""
    files = {
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "1200000\n",
        "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq": "2400000\n",
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq": "1800000\n",
        "sys/devices/system/cpu/cpu1/cpufreq/cpuinfo_max_freq": "2400000\n",
        "sys/devices/system/cpu/online": "0-1\n",
        "sys/class/thermal/thermal_zone0/temp": "52000\n",
        "sys/class/thermal/thermal_zone0/type": "acpitz\n",
        "sys/class/thermal/thermal_zone1/temp": "67500\n",
        "sys/class/thermal/thermal_zone1/type": "x86_pkg_temp\n",
        "sys/class/power_supply/AC/type": "Mains\n",
        "sys/class/power_supply/AC/online": "0\n",
        "proc/loadavg": "0.50 0.40 0.30 1/123 4567\n",
    }
    if battery:
        files.update({
            "sys/class/power_supply/BAT0/type": "Battery\n",
            "sys/class/power_supply/BAT0/capacity": "42\n",
            "sys/class/power_supply/BAT0/status": "Discharging\n",
        })
    write_tree(root, files)
    return root / "sys", root / "proc"


def tiny_onnx_variants(folder: Path) -> tuple[Variant, ...]:
    """Three real ONNX models (tiny conv nets, 1 input channel, 10 classes) at 8, 12 and 16 px, as variants with
    made-up latencies 1/2/4 ms and accuracies 0.6/0.7/0.8. Each exports in well under a second."""
    import torch
    from torch import nn

    from supernet.export import export_onnx

    out = []
    for i, (width, side) in enumerate(((4, 8), (8, 12), (16, 16))):
        torch.manual_seed(i)
        net = nn.Sequential(nn.Conv2d(1, width, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(width, 10))
        path = export_onnx(net, folder / f"tiny{i}.onnx", input_shape=(1, 1, side, side))
        out.append(Variant(name=f"tiny{i}@fp32", arch=f"tiny-w{width}-r{side}", precision="fp32",
                           predicted_latency_ms=float(2**i), accuracy=0.6 + 0.1 * i, model_path=str(path)))
    return tuple(out)
