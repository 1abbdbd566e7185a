"""A phone kit of K whole subnets (for few-shot adaptation) instead of every one-layer model.

Same layout and profiler as `latency_tables.kit` (``kit.json``, ``run_benchmark.sh``, ``models/``, ``logs/``), with
``"kind": "hwnas-subnet-kit"``: each model is one subnet chosen by `latency_tables.fewshot.choose_subnets`, keyed by
its architecture string. `import_subnet_logs` turns the benchmark_model logs into the measured CSV
(``arch,latency_ms,p50_ms,iqr_ms,runs``) that `hwnas lut adapt --measured` reads. Growing a kit (K -> 2K) keeps the
models already exported and measured: `write_subnet_kit` with ``add`` appends subnets chosen away from them.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.kit import FORMATS, Exporter, KitError, default_exporters, model_runs, run_script
from supernet.io import atomic_write_json, atomic_write_text, read_json, sha256_file
from supernet.layers import Backbone, build_static_model
from supernet.progress import ProgressArg, Tasks
from supernet.space import ArchConfig, SearchSpace

__all__ = ["SUBNET_KIT_KIND", "KitSubnet", "SubnetKitManifest", "existing_subnets", "import_subnet_logs",
           "is_subnet_kit", "load_subnet_kit", "write_subnet_kit"]

log = logging.getLogger(__name__)

SUBNET_KIT_SCHEMA_VERSION = 1
SUBNET_KIT_KIND = "hwnas-subnet-kit"


@dataclass(frozen=True, kw_only=True)
class KitSubnet:
    """One subnet of the kit: ``key`` is ``str(arch)``, ``name`` the file stem, ``files``/``sha256`` per format."""

    key: str
    name: str
    arch: dict[str, Any]
    input_shape: tuple[int, ...]
    files: dict[str, str]
    sha256: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


@dataclass(frozen=True, kw_only=True)
class SubnetKitManifest:
    schema_version: int = SUBNET_KIT_SCHEMA_VERSION
    kind: str = SUBNET_KIT_KIND
    space: dict[str, Any]
    backbone: dict[str, Any]
    precision: str
    threads: int
    num_runs: int
    warmup_runs: int
    rounds: int
    formats: tuple[str, ...]
    subnets: tuple[KitSubnet, ...]
    created_at: str
    chooser: dict[str, Any] = field(default_factory=dict)
    earlier_sha256: tuple[str, ...] = ()  # versions of this kit it grew from: their logs stay valid
    kit_sha256: str = ""

    @property
    def layers(self) -> tuple[KitSubnet, ...]:
        """The models the profiler runs (the name `latency_tables.kit.run_script` reads)."""
        return self.subnets

    def body_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("kit_sha256")
        d["formats"] = list(self.formats)
        d["earlier_sha256"] = list(self.earlier_sha256)
        d["subnets"] = [s.to_json() for s in self.subnets]
        return d

    def computed_sha256(self) -> str:
        text = json.dumps(self.body_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {**self.body_json(), "kit_sha256": self.kit_sha256}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, path: str = "kit.json") -> SubnetKitManifest:
        if not isinstance(d, Mapping) or d.get("kind") != SUBNET_KIT_KIND:
            raise KitError(f"{path}: not an hwnas subnet kit manifest (expected \"kind\": \"{SUBNET_KIT_KIND}\")")
        if d.get("schema_version") != SUBNET_KIT_SCHEMA_VERSION:
            raise KitError(f"{path}: subnet kit schema_version {d.get('schema_version')!r} is not supported "
                           f"(this hwnas reads {SUBNET_KIT_SCHEMA_VERSION})")
        try:
            subs = tuple(KitSubnet(**{**s, "input_shape": tuple(s["input_shape"])}) for s in d["subnets"])
            return cls(**{**d, "formats": tuple(d["formats"]), "subnets": subs,
                          "earlier_sha256": tuple(d.get("earlier_sha256", ()))})
        except (KeyError, TypeError) as e:
            raise KitError(f"{path}: malformed subnet kit manifest ({e})") from None

    def archs(self) -> list[ArchConfig]:
        return [ArchConfig.from_json(s.arch) for s in self.subnets]


def load_subnet_kit(kit_dir: str | Path) -> SubnetKitManifest:
    path = Path(kit_dir) / "kit.json"
    try:
        raw = read_json(path, what="subnet kit manifest")
    except ValueError as e:
        raise KitError(str(e)) from None
    m = SubnetKitManifest.from_json(raw, path=str(path))
    if m.computed_sha256() != m.kit_sha256:
        raise KitError(f"{path}: the manifest does not match its kit_sha256 {m.kit_sha256[:12]}... (edited after "
                       "`hwnas lut kit --subnets` wrote it?); regenerate the kit")
    return m


def is_subnet_kit(kit_dir: str | Path) -> bool:
    """Whether ``kit_dir/kit.json`` is a subnet kit (else a layer kit, or no kit: the layer loader says which)."""
    path = Path(kit_dir) / "kit.json"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(d, Mapping) and d.get("kind") == SUBNET_KIT_KIND


def existing_subnets(kit_dir: str | Path) -> list[ArchConfig]:
    """The subnets of the subnet kit in ``kit_dir`` (empty when there is none yet)."""
    return load_subnet_kit(kit_dir).archs() if is_subnet_kit(kit_dir) else []


def write_subnet_kit(
    space: SearchSpace,
    backbone: Backbone,
    archs: Sequence[ArchConfig],
    out_dir: str | Path,
    *,
    formats: Sequence[str] = FORMATS,
    threads: int = 1,
    num_runs: int = 50,
    warmup_runs: int = 10,
    rounds: int = 3,
    chooser: Mapping[str, Any] | None = None,
    exporters: Mapping[str, Exporter] | None = None,
    progress: ProgressArg = True,
) -> SubnetKitManifest:
    """Export ``archs`` (random weights: latency does not depend on them) and write ``kit.json`` and
    ``run_benchmark.sh``. If ``out_dir`` already holds a subnet kit of the same space, backbone and settings, its
    subnets are kept first (their files and logs stay valid) and ``archs`` not yet in it are appended."""
    import torch

    fmts = tuple(dict.fromkeys(formats))
    if not fmts or any(f not in FORMATS for f in fmts):
        raise KitError(f"kit formats {list(formats)}: expected some of {list(FORMATS)}")
    for name, v in (("threads", threads), ("num_runs", num_runs), ("rounds", rounds)):
        if v < 1:
            raise KitError(f"kit {name} must be >= 1, got {v}")
    out = Path(out_dir)
    models = out / "models"
    previous: list[KitSubnet] = []
    earlier: tuple[str, ...] = ()
    if (out / "kit.json").is_file():
        old = load_subnet_kit(out)
        same = (old.space == space.to_json() and old.backbone == backbone.to_json() and old.threads == threads
                and old.num_runs == num_runs and old.warmup_runs == warmup_runs and old.rounds == rounds
                and set(fmts) <= set(old.formats))
        if not same:
            raise KitError(f"{out}: holds a subnet kit with other settings (space, backbone, threads, runs or "
                           "formats); use another directory")
        previous = list(old.subnets)
        earlier = (*old.earlier_sha256, old.kit_sha256)
    known = {s.key for s in previous}
    new = [space.canonical(a) for a in archs]
    new = [a for a in dict.fromkeys(new) if str(a) not in known]
    models.mkdir(parents=True, exist_ok=True)
    exp = dict(exporters) if exporters is not None else default_exporters()
    entries = list(previous)
    with Tasks(progress, logger=log) as bars:
        advance = bars.task(f"export {'+'.join(fmts)} subnets", len(new) * len(fmts))
        for i, a in enumerate(new, start=len(previous)):
            key = str(a)
            name = f"subnet{i:04d}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
            shape = (1, backbone.in_channels, a.resolution, a.resolution)
            files = {f: f"models/{name}.{f}" for f in fmts}
            for f in fmts:
                if not (out / files[f]).exists():  # exports are atomic: a killed kit resumes here
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(0)
                        model = build_static_model(backbone, a, space=space).eval()
                    exp[f](model, out / files[f], shape)
                advance()
            entries.append(KitSubnet(key=key, name=name, arch=a.to_json(), input_shape=shape, files=files,
                                     sha256={f: sha256_file(out / p) for f, p in files.items()}))
    m = SubnetKitManifest(space=space.to_json(), backbone=backbone.to_json(), precision="fp32", threads=threads,
                          num_runs=num_runs, warmup_runs=warmup_runs, rounds=rounds, formats=fmts,
                          subnets=tuple(entries), chooser=dict(chooser or {}), earlier_sha256=earlier,
                          created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    m = replace(m, kit_sha256=m.computed_sha256())
    atomic_write_json(out / "kit.json", m.to_json())
    script = out / "run_benchmark.sh"
    text = run_script(m)  # type: ignore[arg-type]  # duck-typed: name/key/threads/runs
    text = (text.replace("Generated by `hwnas lut kit`", "Generated by `hwnas lut kit --subnets`")
                .replace("every one-layer model of this kit", "every subnet of this kit")
                .replace("--out table.csv", "--out measured.csv"))
    atomic_write_text(script, text)
    script.chmod(0o755)
    (out / "logs").mkdir(exist_ok=True)
    return m


def import_subnet_logs(kit_dir: str | Path, *, out: str | Path, allow_missing: bool = False) -> Path:
    """The measured CSV (``arch,latency_ms,p50_ms,iqr_ms,runs``; ms = median over rounds of benchmark_model's
    ``Inference (avg)``) from a subnet kit's logs. Every run must carry this kit's sha256 and its subnet's key;
    a subnet without a successful run is an error listing it (``allow_missing`` writes the others)."""
    kd = Path(kit_dir)
    m = load_subnet_kit(kd)
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    for s in m.subnets:
        ok, failed = model_runs(m, kd, s, earlier_sha256=m.earlier_sha256)  # type: ignore[arg-type]
        if not ok:
            missing.append(f"{s.name} ({s.key}): " + ("no log" if not failed else f"{len(failed)} failed run(s)"))
            continue
        avg_ms = np.asarray([r.inference_avg_us for r in ok], dtype=np.float64) / 1e3
        q75, q25 = np.percentile(avg_ms, [75, 25])
        rows.append({"arch": s.key, "latency_ms": float(np.median(avg_ms)), "p50_ms": float(np.median(avg_ms)),
                     "iqr_ms": float(q75 - q25), "runs": int(sum(r.count or 0 for r in ok))})
    if missing and not allow_missing:
        listing = "\n".join(f"  {x}" for x in missing[:20])
        raise KitError(f"subnet kit {kd}: {len(missing)} of {len(m.subnets)} subnets have no usable measurement:\n"
                       f"{listing}\nrerun run_benchmark.sh (it retries only what is missing), or import with "
                       "--allow-missing")
    if not rows:
        raise KitError(f"subnet kit {kd}: no subnet has a measurement yet; run run_benchmark.sh first")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["arch", "latency_ms", "p50_ms", "iqr_ms", "runs"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out, buf.getvalue())
    return Path(out)
