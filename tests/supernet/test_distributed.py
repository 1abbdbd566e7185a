"""Data-parallel training: a real 2-process torchrun (gloo, CPU) run, and the single-process fallbacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from supernet.distributed import (
    DistEnv,
    allreduce_gradients,
    average_buffers,
    gather_objects,
    init_from_env,
    state_digest,
)
from supernet.train import load_supernet

RUN_TOML = """
dataset = "digits"
max_train_images = 64
width_mult = 0.25
batch_size = 16
eval_bn_images = 32
warmup_steps = 1
checkpoint_every_steps = 3
seed = 5

[[phases]]
name = "full"
epochs = 1
lr = 0.05
distill = false

[[phases]]
name = "sandwich"
epochs = 1
lr = 0.05
kernels = [3, 5, 7]
depths = [2, 3, 4]
expands = [3, 4, 6]
subnets_per_step = 3
sandwich = true
sort_channels = true
"""


def test_two_process_torchrun_ends_with_identical_weights(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(RUN_TOML, encoding="utf-8")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "hwnas.commands.train", "--config", str(cfg), "--out", str(out)]
    # own session, so that on a timeout the launcher *and* its two workers are killed
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"2-process run did not finish in 240 s:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-3000:]
    log = json.loads((out / "train_log.json").read_text())
    assert log["world_size"] == 2
    digests = log["rank_state_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # what rank 0 saved is what every rank holds
    assert state_digest(load_supernet(out / "supernet.pt")) == digests[0]
    assert [p["name"] for p in log["phases"]] == ["full", "sandwich"]
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporaries
    # 64 images / 2 ranks / 8 per rank = 4 steps per epoch and phase
    assert [p["steps"] for p in log["phases"]] == [4, 4]


def test_single_process_fallbacks() -> None:
    env = init_from_env({})
    assert env == DistEnv() and env.is_main and not env.distributed and env.device == torch.device("cpu")
    assert init_from_env({"WORLD_SIZE": "1"}) == DistEnv()
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    allreduce_gradients([p], env)
    torch.testing.assert_close(p.grad, torch.full((3,), 2.0))
    bn = torch.nn.BatchNorm2d(2)
    average_buffers(bn, env)
    assert gather_objects("x", env) == ["x"]


def test_state_digest_sees_every_tensor() -> None:
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    b = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    b.load_state_dict(a.state_dict())
    assert state_digest(a) == state_digest(b)
    with torch.no_grad():
        b[1].running_mean[0] += 1e-6
    assert state_digest(a) != state_digest(b)


@pytest.mark.parametrize("batch_size", [15])
def test_batch_must_split_over_ranks(tmp_path: Path, batch_size: int) -> None:
    from supernet.train import TrainConfig, train_supernet

    cfg = TrainConfig(dataset="digits", max_train_images=64, batch_size=batch_size)
    with pytest.raises(ValueError, match="not divisible by the world size 2"):
        train_supernet(cfg, out_dir=tmp_path, progress=False, dist_env=DistEnv(rank=1, world_size=2))
