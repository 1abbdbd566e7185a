"""Helpers shared by the latency_tables tests (unique module name, so importing it never picks up another
test folder's ``conftest``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from latency_tables.protocol import MeasurementProtocol

# in-process (no spawned workers), few rounds: fast and deterministic with the fake backend
FAKE_PROTOCOL = MeasurementProtocol(
    rounds=3, runs_per_round=5, warmups=1, load_warmups=1, processes=3, chunk_size=16, spawn=False
)


class StubExporters:
    """Stands in for litert-torch (~10 s a layer here): writes the layer's MACs, counts calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def export(self, model: Any, path: Path, shape: tuple[int, ...]) -> Path:
        from latency_tables.backends.fake import count_macs_of_module

        macs, _ = count_macs_of_module(model, shape)
        Path(path).write_text(f"FAKE-TFLITE macs={macs}\n")
        self.calls.append(Path(path).name)
        return Path(path)

    def mapping(self) -> dict[str, Any]:
        return {"tflite": self.export}


FAKE_ADB = r"""#!/bin/sh
# Fake adb: push copies into $FAKE_DEVICE; 'shell benchmark_model --graph=X' prints a benchmark_model log whose
# Inference (avg) is 10 + macs/1000 us (macs read from the stub model). While a file $FAKE_DEVICE/fail-<name>
# exists, that model's runs fail.
case "$1" in
  push) cp "$2" "$FAKE_DEVICE/$(basename "$3")"; exit $? ;;
  shell)
    shift
    case "$*" in
      "test -x "*|"mkdir -p "*) exit 0 ;;
    esac
    graph=$(echo "$*" | sed -n 's/.*--graph=\([^ ]*\).*/\1/p')
    threads=$(echo "$*" | sed -n 's/.*--num_threads=\([0-9]*\).*/\1/p')
    runs=$(echo "$*" | sed -n 's/.*--num_runs=\([0-9]*\).*/\1/p')
    name=$(basename "$graph" .tflite)
    echo "INFO: STARTING!"
    echo "INFO: Num runs: [$runs]"
    echo "INFO: Num threads: [$threads]"
    echo "INFO: Graph: [$graph]"
    if [ -f "$FAKE_DEVICE/fail-$name" ]; then
      echo "ERROR: Didn't find op for builtin opcode 'HARD_SWISH' version '2'."
      echo "Benchmarking failed."
      exit 1
    fi
    macs=$(sed -n 's/.*macs=\([0-9]*\).*/\1/p' "$FAKE_DEVICE/$name.tflite")
    avg=$(awk "BEGIN { printf \"%.3f\", 10 + $macs / 1000 }")
    echo "INFO: count=5 first=99 curr=50 min=40 max=99 avg=60 std=5"
    echo "INFO: count=$runs first=$avg curr=$avg min=$avg max=$avg avg=$avg std=0"
    echo "INFO: Inference timings in us: Init: 1500, First inference: 99, Warmup (avg): 60, Inference (avg): $avg"
    exit 0 ;;
esac
echo "fake adb: unsupported $*" >&2
exit 1
"""


def run_kit_script(kit: Path, device: Path) -> subprocess.CompletedProcess[str]:
    adb = device.parent / "adb"
    if not adb.exists():
        adb.write_text(FAKE_ADB)
        adb.chmod(0o755)
    env = {**os.environ, "ADB": str(adb), "FAKE_DEVICE": str(device)}
    return subprocess.run(["sh", str(kit / "run_benchmark.sh")], check=False, env=env, capture_output=True, text=True, timeout=60)
