"""`hwnas compress` / `decompress` / `prune` on a tiny untrained supernet and a fake-backend table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hwnas.cli import _mount_subapps, app
from latency_tables.protocol import MeasurementProtocol
from latency_tables.table import build_table
from supernet.layers import Backbone
from supernet.model import OFASupernet
from supernet.space import SearchSpace
from supernet.train import save_supernet

_mount_subapps()
runner = CliRunner()
SPACE = SearchSpace(name="cli-test", resolutions=(24, 28), depth_choices=(1, 2), kernel_choices=(3, 5),
                    expand_choices=(3, 6))
BACKBONE = Backbone(in_channels=1, num_classes=10, width_mult=0.25)
SMALL = ["--train-images", "64", "--bn-images", "32"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compress-cli")
    torch.manual_seed(0)
    sn = save_supernet(OFASupernet(space=SPACE, backbone=BACKBONE), root / "supernet.pt",
                       extra={"train_config": {"dataset": "digits", "seed": 0}})
    table = build_table(
        SPACE,
        BACKBONE,
        out=root / "lut.csv",
        backend="fake",
        progress=False,
        device="fake-phone",
        protocol=MeasurementProtocol(
            rounds=2, runs_per_round=3, warmups=1, load_warmups=1, processes=1, chunk_size=64, spawn=False
        ),
    )
    assert table.path is not None
    return {"root": root, "supernet": sn, "table": table.path}


@pytest.mark.parametrize(("flag", "value", "expect"), [("--sparsity", "1.0", "[0, 1)"), ("--sparsity", "-0.2", "[0, 1)"),
                                                       ("--bits", "9", "1..8"), ("--bits", "0", "1..8")])
def test_bad_sparsity_or_bits_exit_2_naming_the_value(flag: str, value: str, expect: str, setup: dict[str, Path]) -> None:
    res = runner.invoke(app, ["compress", "--arch", "smallest", "--supernet", str(setup["supernet"]), flag, value])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(f"error: {flag} {float(value) if flag == '--sparsity' else int(value)!r}")
    assert expect in res.stderr and "Traceback" not in res.output


def test_compress_then_decompress_restores_the_model(setup: dict[str, Path]) -> None:
    from supernet.compress import load_compressed
    from supernet.export import run_onnx

    out = setup["root"] / "dc"
    res = runner.invoke(app, ["compress", "--arch", "smallest", "--supernet", str(setup["supernet"]), "--out", str(out),
                              "--sparsity", "0.7", "--bits", "4", "--epochs", "0.5", "--centroid-epochs", "0.25", *SMALL])
    assert res.exit_code == 0, res.output
    art = next(out.glob("*.hwdc"))
    report = json.loads(Path(str(art) + ".json").read_text())
    assert report["size"]["file_bytes"] == art.stat().st_size
    assert report["size"]["ratio_vs_reference"] > 3 and report["config"]["deep_compression"]["bits"] == 4
    assert "compression" in res.output and "Huffman coded" in res.output
    onnx = setup["root"] / "restored.onnx"
    res = runner.invoke(app, ["decompress", str(art), "--out", str(onnx), "--sha256", report["artifact_sha256"]])
    assert res.exit_code == 0, res.output
    model = load_compressed(art).model
    x = np.random.default_rng(0).standard_normal((1, 1, 24, 24)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.allclose(run_onnx(onnx, x), want, atol=1e-4)
    cut = setup["root"] / "cut.hwdc"
    cut.write_bytes(art.read_bytes()[:-7])
    res = runner.invoke(app, ["decompress", str(cut)])
    assert res.exit_code == 2 and "cut.hwdc" in res.stderr and "truncated" in res.stderr


def test_prune_refuses_a_table_that_cannot_price_it_then_measures_the_new_shapes(setup: dict[str, Path]) -> None:
    base = ["prune", "--arch", "largest", "--supernet", str(setup["supernet"]), "--ratio", "0.5",
            "--table", str(setup["table"]), "--epochs", "0.25", *SMALL, "--out", str(setup["root"] / "pruned")]
    res = runner.invoke(app, base)
    assert res.exit_code == 2, res.output
    assert "cannot price the pruned subnet" in res.stderr and "lut.csv" in res.stderr
    assert not (setup["root"] / "pruned").exists()  # refused before any training or writing
    res = runner.invoke(app, [*base, "--measure-missing"])
    assert res.exit_code == 0, res.output
    info = json.loads(next((setup["root"] / "pruned").glob("*~m*.json")).read_text())
    lt = info["latency_table"]
    assert 0 < lt["pruned_ms"] < lt["unpruned_ms"] and lt["path"].endswith("lut.extended.csv")
    assert info["macs_after"] < info["macs_before"] and Path(info["model"]).is_file()
    res = runner.invoke(app, ["prune", "--arch", "smallest", "--supernet", str(setup["supernet"]), "--ratio", "1.0"])
    assert res.exit_code == 2 and "pruning ratio 1.0" in res.stderr
