"""Issue 16 at the library level: non-finite numbers, diverging training, corrupt checkpoints, full disks, devices.

Everything trains on 64 digits images at width 0.25 (see test_train.py), a few seconds per run.
"""

from __future__ import annotations

import errno
import json
import math
import os

import pytest
import torch

from supernet import io as sio
from supernet.data import load_dataset
from supernet.distributed import init_from_env, resolve_device_type
from supernet.errors import InputError
from supernet.io import OutputError, atomic_torch_save, atomic_write_json, check_output_dir, check_output_file
from supernet.train import NonFiniteLossError, Phase, TrainConfig, train_supernet

ONE_PHASE = (Phase(name="full", epochs_frac=1, lr=0.05, distill=False),)
SMALL = TrainConfig(dataset="digits", epochs=1, batch_size=16, max_train_images=64, width_mult=0.25,
                    phases=ONE_PHASE, checkpoint_every_steps=1, eval_bn_images=16, warmup_steps=1, seed=1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=SMALL.seed, max_train=SMALL.max_train_images, val_fraction=0.05)


# ----------------------------------------------------------------------------- 1: non-finite numbers
@pytest.mark.parametrize("field,value", [
    ("kd_ratio", math.inf), ("kd_ratio", math.nan), ("kd_ratio", -1.0), ("kd_temperature", math.inf),
    ("kd_temperature", 0.0), ("width_mult", math.nan), ("width_mult", 0.0), ("momentum", 1.5),
    ("weight_decay", math.nan), ("label_smoothing", 1.0), ("feature_ratio", math.inf),
])
def test_every_float_of_the_config_is_finite_and_in_range(field, value) -> None:
    with pytest.raises(InputError, match=field.replace("_", "[-_]")):
        TrainConfig(**{field: value})


def test_phase_lr_must_be_finite() -> None:
    with pytest.raises(InputError, match="lr must be a finite"):
        Phase(name="p", epochs_frac=1, lr=math.inf)
    with pytest.raises(InputError, match="epochs_frac"):
        Phase(name="p", epochs_frac=math.nan, lr=0.1)


def test_json_never_holds_nan(tmp_path) -> None:
    atomic_write_json(tmp_path / "a.json", {"x": math.nan, "y": [1.0, math.inf], "z": (2.0,)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None, "y": [1.0, None], "z": [2.0]}
    assert "NaN" not in (tmp_path / "a.json").read_text()


def test_diverging_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, digits,
                                                                                     monkeypatch) -> None:
    import supernet.train as tr

    calls = {"n": 0}
    real = tr.F.cross_entropy

    def poisoned(*a, **kw):
        calls["n"] += 1
        out = real(*a, **kw)
        return out * math.nan if calls["n"] == 3 else out

    monkeypatch.setattr(tr.F, "cross_entropy", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan.*checkpoint.*kept"):
        train_supernet(SMALL, out_dir=tmp_path, data=digits, progress=False)
    assert not (tmp_path / "supernet.pt").exists()
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["global_step"] == 2  # the two good steps; the poisoned third was not applied
    assert all(torch.isfinite(t).all() for t in ck["model"].values() if t.is_floating_point())
    # the config written beside is strict JSON
    json.loads((tmp_path / "train_config.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    # once the cause is gone, re-running resumes from that checkpoint and finishes
    monkeypatch.setattr(tr.F, "cross_entropy", real)
    res = train_supernet(SMALL, out_dir=tmp_path, data=digits, progress=False)
    assert res.resumed_from_step == 2 and (tmp_path / "supernet.pt").is_file()


def test_non_finite_weights_are_never_checkpointed(tmp_path, digits, monkeypatch) -> None:
    """A step that leaves NaN weights behind a finite loss: the checkpoint write refuses instead of saving them."""
    real_step = torch.optim.SGD.step
    calls = {"n": 0}

    def bad_step(self, *a, **kw):
        out = real_step(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 2:
            with torch.no_grad():
                next(iter(self.param_groups[0]["params"])).fill_(math.nan)
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", bad_step)
    with pytest.raises(NonFiniteLossError, match="weights .* non-finite"):
        train_supernet(SMALL, out_dir=tmp_path, data=digits, progress=False)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["global_step"] == 1


# ----------------------------------------------------------------------------- 6: corrupt checkpoint
def test_corrupt_checkpoint_on_resume_hints_at_no_resume(tmp_path, digits) -> None:
    train_supernet(SMALL, out_dir=tmp_path, data=digits, progress=False, stop_after_steps=1)
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="--no-resume"):
        train_supernet(SMALL, out_dir=tmp_path, data=digits, progress=False)


# ----------------------------------------------------------------------------- 7: resume counts everything
def test_train_log_after_resume_counts_every_step(tmp_path, digits) -> None:
    cfg = TrainConfig(**{**SMALL.to_json(), "epochs": 2, "checkpoint_every_steps": 0})
    full = train_supernet(cfg, out_dir=tmp_path / "a", data=digits, progress=False)
    train_supernet(cfg, out_dir=tmp_path / "b", data=digits, progress=False, stop_after_steps=3)  # mid epoch 0
    train_supernet(cfg, out_dir=tmp_path / "b", data=digits, progress=False, stop_after_steps=2)  # into epoch 1
    resumed = train_supernet(cfg, out_dir=tmp_path / "b", data=digits, progress=False)
    (a,), (b,) = full.phases, resumed.phases
    assert a.steps == b.steps == 8
    assert b.mean_loss == pytest.approx(a.mean_loss, rel=1e-6)
    log = json.loads((tmp_path / "b" / "train_log.json").read_text())
    assert log["phases"][0]["steps"] == 8


# ----------------------------------------------------------------------------- 6: full disk
def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_gives_a_clear_error_and_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "t.json"
    atomic_write_json(target, {"v": 1})
    monkeypatch.setattr(sio.os, "fsync", _enospc)
    with pytest.raises(OutputError, match="no space left.*previous file is unchanged"):
        atomic_write_json(target, {"v": 2})
    with pytest.raises(OutputError, match="no space left"):
        atomic_torch_save(tmp_path / "w.pt", {"w": torch.zeros(3)})
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]  # no temporary file left behind


def test_full_disk_during_training_keeps_the_last_checkpoint(tmp_path, digits, monkeypatch) -> None:
    train_supernet(SMALL, out_dir=tmp_path, data=digits, progress=False, stop_after_steps=2)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # the disk fills up while a checkpoint is written
        if "checkpoint.pt" in os.readlink(f"/proc/self/fd/{fd}"):
            _enospc()
        real_fsync(fd)

    monkeypatch.setattr(sio.os, "fsync", fsync)
    with pytest.raises(OutputError, match=r"checkpoint\.pt.*no space left"):
        train_supernet(SMALL, out_dir=tmp_path, data=digits, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_output_path_checks(tmp_path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="--out .* is a directory"):
        check_output_file(tmp_path, flag="--out")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        check_output_file(tmp_path / "f", flag="--out", overwrite=False)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_file(tmp_path / "f" / "g.csv", flag="--out")
    with pytest.raises(OutputError, match="is a file; expected a folder"):
        check_output_dir(tmp_path / "f", flag="--out")
    with pytest.raises(OutputError, match="is a directory"):
        atomic_write_json(tmp_path, {})
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="not writable"):
                check_output_file(ro / "x" / "y.csv", flag="--out")
        finally:
            ro.chmod(0o700)


# ----------------------------------------------------------------------------- 8: device selection
def test_device_auto_takes_a_gpu_when_torch_sees_one(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device_type("auto") == "cpu"
    assert init_from_env({}, device="auto").device == torch.device("cpu")
    with pytest.raises(InputError, match="--device cuda: torch sees no CUDA GPU"):
        resolve_device_type("cuda")
    with pytest.raises(InputError, match="--device 'tpu'"):
        resolve_device_type("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_type("auto") == "cuda"
    assert init_from_env({}, device="auto").device == torch.device("cuda", 0)
    assert init_from_env({}, device="cpu").device == torch.device("cpu")


def test_device_auto_under_torchrun_takes_the_local_rank_gpu(monkeypatch) -> None:
    import supernet.distributed as sd

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(sd.dist, "is_initialized", lambda: True)  # the group exists: no real NCCL needed
    monkeypatch.setattr(sd.dist, "get_backend", lambda: "nccl")
    monkeypatch.setattr(sd.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(sd.dist, "get_rank", lambda: 1)
    env = init_from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, device="auto")
    assert env.device == torch.device("cuda", 1) and env.backend == "nccl"


def test_train_supernet_places_the_model_on_the_chosen_device(tmp_path, digits, monkeypatch) -> None:
    """The selected device reaches the training loop (on CPU here: cuda is faked as absent, then refused)."""
    import supernet.train as tr

    seen = []
    real_init = tr.init_from_env
    monkeypatch.setattr(tr, "init_from_env", lambda **kw: seen.append(kw) or real_init(**kw))
    train_supernet(SMALL, out_dir=tmp_path, data=digits, progress=False, stop_after_steps=1, device="cpu")
    assert seen == [{"device": "cpu"}]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA GPU"):
        train_supernet(SMALL, out_dir=tmp_path / "c", data=digits, progress=False, device="cuda")
