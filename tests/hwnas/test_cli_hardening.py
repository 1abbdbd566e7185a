"""Issue 16 through the command line: bad input -> ``error: ...``, exit 2, nothing written (small, offline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hwnas.cli import _mount_subapps, app
from latency_tables.protocol import Protocol
from latency_tables.table import build_table
from supernet.layers import Backbone
from supernet.model import OFASupernet
from supernet.space import SearchSpace
from supernet.train import save_supernet

_mount_subapps()
runner = CliRunner()
SPACE = SearchSpace(name="cli-hard", resolutions=(24,), depth_choices=(1, 2), kernel_choices=(3, 5),
                    expand_choices=(3, 6))
BACKBONE = Backbone(in_channels=1, num_classes=10, width_mult=0.25)
FAKE = Protocol(rounds=2, runs_per_round=3, warmups=1, load_warmups=1, processes=1, chunk_size=64, spawn=False)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _bad(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    text = " ".join(res.output.split())
    for n in needles:
        assert n in text, text


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-hard")
    torch.manual_seed(0)
    sn = save_supernet(OFASupernet(space=SPACE, backbone=BACKBONE), root / "supernet.pt",
                       extra={"train_config": {"dataset": "digits", "seed": 0}})
    table = build_table(SPACE, BACKBONE, out=root / "lut.csv", backend="fake", progress=False, device="x",
                        protocol=FAKE)
    other = build_table(SPACE, Backbone(in_channels=3, num_classes=1000, width_mult=1.0), out=root / "other.csv",
                        backend="fake", progress=False, device="x", protocol=FAKE)
    return {"root": root, "supernet": sn, "table": table.path, "other": other.path}


# ----------------------------------------------------------------------------- 1: non-finite numbers
@pytest.mark.parametrize("flag,value", [("--kd-ratio", "inf"), ("--kd-ratio", "nan"), ("--width-mult", "nan"),
                                        ("--kd-temperature", "0"), ("--width-mult", "-1")])
def test_train_refuses_non_finite_and_out_of_range_floats_writing_nothing(tmp_path: Path, flag, value) -> None:
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--dataset", "digits", "--out", str(out), flag, value])
    _bad(res, "error:", flag)
    assert not out.exists()


def test_train_device_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = runner.invoke(app, ["train", "--dataset", "digits", "--out", str(tmp_path / "r"), "--device", "cuda"])
    _bad(res, "--device cuda", "no CUDA GPU")
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- 2: mismatched inputs
def test_search_refuses_a_table_of_another_backbone_before_writing(setup, tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", "--table", str(setup["other"]), "--supernet", str(setup["supernet"]),
                              "--latency-ms", "1", "--budget", "2", "--out", str(tmp_path / "s")])
    _bad(res, "another backbone", "in_channels 3 (table) vs 1 (supernet)", "--in-channels 1")
    assert not (tmp_path / "s").exists(), "a refused search writes nothing (not even search_config.json)"


def test_eval_refuses_a_dataset_with_other_classes_or_channels(setup, tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "imgs"
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / c / f"{i}.png")
    res = runner.invoke(app, ["eval", "--arch", "smallest", "--supernet", str(setup["supernet"]),
                              "--dataset", "imagefolder", "--data-root", str(root), "--bn-images", "4"])
    _bad(res, "3 classes", "trained for 10")


def test_search_says_when_no_subnet_meets_the_target_and_dedupes_targets(setup, tmp_path: Path) -> None:
    out = tmp_path / "s"
    res = runner.invoke(app, ["search", "--table", str(setup["table"]), "--supernet", str(setup["supernet"]),
                              "--targets", "0.0001,0.0001", "--strategy", "random", "--budget", "2",
                              "--bn-images", "16", "--out", str(out), "--no-measure"])
    assert res.exit_code == 0, res.output
    assert "no evaluated subnet meets the 0.0001 ms target" in " ".join(res.output.split())
    summary = json.loads((out / "search_results.json").read_text())
    assert summary["targets_ms"] == [0.0001] and len(summary["winners"]) == 1


# ----------------------------------------------------------------------------- 3: a study keeps its table
def test_a_study_refuses_another_table(setup, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "s"
    base = ["search", "--supernet", str(setup["supernet"]), "--latency-ms", "1", "--strategy", "random",
            "--budget", "2", "--bn-images", "16", "--out", str(out), "--no-measure"]
    assert runner.invoke(app, [*base, "--table", str(setup["table"])]).exit_code == 0
    # the same space and backbone, measured again: another table (other rows, other sha256)
    copy = tmp_path / "lut2.csv"
    shutil.copy(setup["table"], copy)
    shutil.copy(f"{setup['table']}.meta.json", f"{copy}.meta.json")
    build_table(SPACE, BACKBONE, out=copy, backend="fake", progress=False, device="y", overwrite=True,
                protocol=Protocol(rounds=2, runs_per_round=4, warmups=1, load_warmups=1, processes=1,
                                  chunk_size=64, spawn=False, seed=7))
    res = runner.invoke(app, [*base, "--table", str(copy)])
    _bad(res, "latency_table_sha256", "--study-name")


def test_compare_with_an_unknown_strategy_fails_before_anything_runs(setup, tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", "--table", str(setup["table"]), "--supernet", str(setup["supernet"]),
                              "--latency-ms", "1", "--strategy", "random", "--compare", "random,bogus",
                              "--budget", "2", "--out", str(tmp_path / "s")])
    _bad(res, "unknown strategy 'bogus'")
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------- 4: no overwriting
def test_lut_build_refuses_to_replace_a_finished_table(setup, tmp_path: Path) -> None:
    import shutil

    t = tmp_path / "t.csv"
    shutil.copy(setup["table"], t)
    shutil.copy(f"{setup['table']}.meta.json", f"{t}.meta.json")
    before = t.read_bytes()
    res = runner.invoke(app, ["lut", "build", "--out", str(t), "--backend", "fake", "--space", "mnist"])
    _bad(res, "already exists", "--overwrite")
    assert t.read_bytes() == before and _files(tmp_path) == {"t.csv", "t.csv.meta.json"}


@pytest.mark.parametrize("flag", ["--in-channels", "--num-classes", "--width-mult"])
def test_lut_build_backbone_numbers(tmp_path: Path, flag: str) -> None:
    res = runner.invoke(app, ["lut", "build", "--out", str(tmp_path / "t.csv"), "--backend", "fake", flag, "0"])
    _bad(res, flag)
    assert _files(tmp_path) == set()


def test_lut_build_defaults_to_the_space_backbone(tmp_path: Path, monkeypatch) -> None:
    import latency_tables.table as lt

    seen = {}

    def fake_build(space, backbone, **kw):
        seen["bb"] = backbone
        raise SystemExit(0)

    monkeypatch.setattr(lt, "build_table", fake_build)
    runner.invoke(app, ["lut", "build", "--out", str(tmp_path / "t.csv"), "--backend", "fake"])
    assert (seen["bb"].in_channels, seen["bb"].num_classes, seen["bb"].width_mult) == (1, 10, 0.35)


def test_export_refuses_an_existing_file_before_any_work(setup, tmp_path: Path, monkeypatch) -> None:
    import supernet.evaluate as ev

    monkeypatch.setattr(ev, "recalibrated_subnet", lambda *a, **k: pytest.fail("work started"))
    target = tmp_path / "m.onnx"
    target.write_bytes(b"finished")
    res = runner.invoke(app, ["export", "--arch", "smallest", "--supernet", str(setup["supernet"]),
                              "--out", str(target)])
    _bad(res, "already exists", "--overwrite")
    res = runner.invoke(app, ["export", "--arch", "smallest", "--supernet", str(setup["supernet"]),
                              "--out", str(tmp_path)])
    _bad(res, "is a directory")
    assert target.read_bytes() == b"finished"


# ----------------------------------------------------------------------------- 6: tracebacks
def test_arch_parse_errors_in_lut_predict(setup, tmp_path: Path) -> None:
    _bad(runner.invoke(app, ["lut", "predict", "--table", str(setup["table"]), "--arch", "r24-garbage"]), "error:")
    f = tmp_path / "archs.txt"
    f.write_text('r24-d1.1.1.1.1-k3e3_k3e3_k3e3_k3e3_k3e3\n{"resolution": 24,\n')
    _bad(runner.invoke(app, ["lut", "predict", "--table", str(setup["table"]), "--arch-file", str(f)]),
         "line 2", "not valid JSON")
    _bad(runner.invoke(app, ["lut", "predict", "--table", str(setup["table"]), "--arch-file", str(tmp_path)]),
         "is a directory")


def test_nas_reward_numbers() -> None:
    _bad(runner.invoke(app, ["nas", "reward", "1.5", "10", "--target-ms", "20"]), "[0, 1]")
    _bad(runner.invoke(app, ["nas", "reward", "0.5", "nan", "--target-ms", "20"]), "LATENCY_MS")
    _bad(runner.invoke(app, ["nas", "reward", "0.5", "10", "--target-ms", "inf"]), "--target-ms")


@pytest.mark.parametrize("flag,value", [("--deadline-ms", "nan"), ("--request-rate-hz", "inf"),
                                        ("--duration-s", "inf"), ("--server-accuracy", "1.5"),
                                        ("--payload-bytes", "-1")])
def test_agent_simulate_numbers(tmp_path: Path, flag: str, value: str) -> None:
    variants = tmp_path / "v.json"
    assert runner.invoke(app, ["agent", "example-variants", "--out", str(variants)]).exit_code == 0
    args = ["agent", "simulate", "--variants", str(variants), "--trace", "steady", "--deadline-ms", "50",
            "--out", str(tmp_path / "sim"), "--duration-s", "5"]
    i = args.index(flag) if flag in args else None
    if i is not None:
        args[i + 1] = value
    else:
        args += [flag, value]
    _bad(runner.invoke(app, args), flag)
    assert not (tmp_path / "sim").exists()


def test_the_safe_unpickler_refusal_is_one_line(tmp_path: Path) -> None:
    import pickle

    import numpy as np

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [os.system]}, protocol=2))
    for n in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / n).write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]},
                                              protocol=2))
    res = runner.invoke(app, ["train", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out",
                              str(tmp_path / "run")])
    _bad(res, "error:", "batches.meta", "system")
    assert len(res.output.strip().splitlines()) <= 3


def test_corrupt_checkpoint_hints_at_no_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn")
    res = runner.invoke(app, ["train", "--dataset", "digits", "--out", str(out), "--epochs", "1"])
    _bad(res, "--no-resume")


@pytest.mark.parametrize("command", [["lut", "build", "--backend", "fake"], ["lut", "kit"],
                                     ["agent", "example-variants"]])
def test_output_paths_that_cannot_be_written(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "a_file").write_text("x")
    res = runner.invoke(app, [*command, "--out", str(tmp_path / "a_file" / "below" / "t.csv")])
    _bad(res, "error", "a_file")


def test_exported_onnx_is_readable_per_umask(tmp_path: Path) -> None:
    from supernet.export import export_onnx
    from supernet.layers import build_static_model

    model = build_static_model(BACKBONE, SPACE.smallest(), space=SPACE)
    old = os.umask(0o022)
    try:
        path = export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 1, 24, 24))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
