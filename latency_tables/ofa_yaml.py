"""OFA's latency lookup-table format, both ways: per-resolution ``<r>_lookup_table.yaml`` files <-> an hwnas table.

OFA (``ofa/nas/efficiency_predictor/latency_lookup_table.py``, ``MBv3LatencyTable``) keeps one YAML file per input
resolution, each a mapping ``key -> {count, mean, std}`` (latencies in ms; OFA's predictor sums the ``mean`` of a
network's keys). The keys of a MobileNetV3 network at resolution r (feature side f after the blocks):

    Conv-input:{r}x{r}x3-output:{h}x{h}x{stem}                                      the first conv, h = (r + 1) // 2
    expanded_conv-input:{f}x{f}x{in}-output:{g}x{g}x{out}-expand:{mid}-kernel:{k}-stride:{s}-idskip:{0|1}-se:{0|1}-hs:{0|1}
    Conv_1-input:{f}x{f}x{c}-output:{f}x{f}x{final}                                 final expand
    AvgPool2D-input:{f}x{f}x{final}-output:1x1x{final}                              global pool
    Conv_2-input:1x1x{final}-output:1x1x{mix}                                       feature mix
    Logits-input:1x1x{mix}-output:{classes}                                         classifier

(``expand`` holds the expanded channel count, ``idskip`` the residual, ``hs`` the h-swish activation.) Each maps to
one `supernet.layers.LayerSpec` of the backbone, except that hwnas measures pool + feature mix + classifier as one
layer (``head``): on import the three are summed into it; on export the head's latency goes under ``AvgPool2D``
and ``Conv_2`` / ``Logits`` get 0 (OFA sums them, so its network latency is the same).

The mapping is built from the other side: every layer the backbone can contain at a resolution
(`latency_tables.table.enumerate_layers`) is turned into its OFA key, and every key of a file must be one of them;
a key that maps to no layer of the space is an error listing such keys (never a silent skip). A layer met in
several files (the same block shape reached from two resolutions) gets the count-weighted mean of their values.

Statistic: OFA stores a ``mean`` per inference. An imported file is a table of the ``mean`` statistic unless an
``hwnas-table.json`` beside the files (written by `export_ofa_yaml`) says which statistic the numbers are, so a
table exported and imported again predicts exactly what it did.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latency_tables.protocol import REFERENCE_KEY, REFERENCE_SPEC_JSON, check_statistic
from latency_tables.table import LatencyTable, LatencyTableError, TableMeta, TableRow, enumerate_layers
from supernet.io import atomic_write_json, atomic_write_text
from supernet.layers import Backbone, LayerSpec
from supernet.space import SearchSpace, get_space

__all__ = ["OfaYamlError", "export_ofa_yaml", "import_ofa_yaml", "ofa_keys", "yaml_name"]

SIDECAR = "hwnas-table.json"
SIDECAR_SCHEMA_VERSION = 1
_FILE_RE = re.compile(r"^(\d+)_lookup_table\.yaml$")
_SHAPE = r"(\d+)x(\d+)x(\d+)"
_KEY_RE = re.compile(
    rf"^(?P<op>Conv|Conv_1|Conv_2|AvgPool2D|Logits|expanded_conv)-input:{_SHAPE}-output:(?:{_SHAPE}|(?P<classes>\d+))"
    r"(?P<block>-expand:\d+-kernel:\d+-stride:\d+-idskip:[01]-se:[01]-hs:[01])?$"
)
# widths tried when a file does not say which backbone it is for: OFA's published MobileNetV3 supernets
_WIDTHS = (1.0, 1.2)


class OfaYamlError(LatencyTableError):
    """An OFA lookup-table folder cannot be read or written; the message names the file and key."""


def yaml_name(resolution: int) -> str:
    return f"{resolution}_lookup_table.yaml"


def _shape(*dims: int) -> str:
    return "x".join(str(d) for d in dims)


def ofa_keys(spec: LayerSpec) -> list[str]:
    """The OFA key(s) of one hwnas layer: one, or three for the head (pool, feature mix, classifier)."""
    h, o = spec.in_hw, spec.out_hw
    if spec.op == "stem":
        return [f"Conv-input:{_shape(h, h, spec.in_ch)}-output:{_shape(o, o, spec.out_ch)}"]
    if spec.op == "mbconv":
        idskip = int(spec.stride == 1 and spec.in_ch == spec.out_ch)
        return [(f"expanded_conv-input:{_shape(h, h, spec.in_ch)}-output:{_shape(o, o, spec.out_ch)}"
                 f"-expand:{spec.mid_ch}-kernel:{spec.kernel}-stride:{spec.stride}-idskip:{idskip}"
                 f"-se:{int(spec.se)}-hs:{int(spec.act == 'hswish')}")]
    if spec.op == "final_expand":
        return [f"Conv_1-input:{_shape(h, h, spec.in_ch)}-output:{_shape(h, h, spec.out_ch)}"]
    if spec.op == "head":
        return [f"AvgPool2D-input:{_shape(h, h, spec.in_ch)}-output:{_shape(1, 1, spec.in_ch)}",
                f"Conv_2-input:{_shape(1, 1, spec.in_ch)}-output:{_shape(1, 1, spec.mid_ch)}",
                f"Logits-input:{_shape(1, 1, spec.mid_ch)}-output:{spec.out_ch}"]
    raise OfaYamlError(f"layer {spec.key}: op {spec.op!r} has no OFA key")


def _space_at(space: SearchSpace, resolution: int) -> SearchSpace:
    from dataclasses import replace

    return replace(space, resolutions=(resolution,))


def _key_map(space: SearchSpace, backbone: Backbone, resolution: int) -> dict[str, LayerSpec]:
    """OFA key -> the hwnas layer it belongs to, for every layer of ``space`` at ``resolution``."""
    out: dict[str, LayerSpec] = {}
    for spec in enumerate_layers(_space_at(space, resolution), backbone):
        for k in ofa_keys(spec):
            out[k] = spec
    return out


# --------------------------------------------------------------------------- export
def export_ofa_yaml(table: LatencyTable, out_dir: str | Path) -> list[Path]:
    """Write ``table`` as OFA lookup-table files, one per resolution of its space, plus ``hwnas-table.json``.

    ``mean`` is the table's statistic (``table.statistic``, recorded in the sidecar), ``std`` the spread of the
    layer's round medians (IQR / 1.349, a normal's std), ``count`` its timed runs. Returns the files written."""
    import yaml

    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise OfaYamlError(f"--out {d}: is a file; expected a folder for the <r>_lookup_table.yaml files")
    d.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for r in table.space.resolutions:
        entries: dict[str, dict[str, float | int]] = {}
        for spec in enumerate_layers(_space_at(table.space, r), table.backbone):
            row = table.rows.get(spec.key)
            if row is None:
                continue  # a partial (imported) table: OFA's format has no "missing", the key is simply absent
            std = round(row.iqr_ms / 1.349, 6)
            for i, k in enumerate(ofa_keys(spec)):
                entries[k] = {"count": int(row.runs), "mean": float(row.latency_ms) if i == 0 else 0.0, "std": std if i == 0 else 0.0}
        path = d / yaml_name(r)
        atomic_write_text(path, yaml.safe_dump(entries, sort_keys=True, default_flow_style=False))
        written.append(path)
    atomic_write_json(d / SIDECAR, {
        "schema_version": SIDECAR_SCHEMA_VERSION, "statistic": table.statistic,
        "note": ("written by hwnas lut export --format ofa-yaml: 'mean' holds the table's statistic named here; "
                 "the head (pool + feature mix + classifier) is one hwnas layer, exported under AvgPool2D with "
                 "Conv_2 and Logits at 0"),
        "table_meta": table.meta.to_json(), "files": [p.name for p in written],
    })
    return written


# --------------------------------------------------------------------------- import
@dataclass(frozen=True)
class _Entry:
    mean_ms: float
    std_ms: float
    count: int


def _read_file(path: Path) -> dict[str, _Entry]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise OfaYamlError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, Mapping):
        raise OfaYamlError(f"{path}: expected a mapping of OFA layer keys to {{count, mean, std}}, got "
                           f"{type(data).__name__}")
    out: dict[str, _Entry] = {}
    malformed: list[str] = []
    for key, val in data.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            malformed.append(str(key))
            continue
        if not isinstance(val, Mapping) or "mean" not in val:
            raise OfaYamlError(f"{path}, key {key!r}: expected a mapping with 'mean' (ms), 'count' and 'std', got {val!r}")
        try:
            mean, std, count = float(val["mean"]), float(val.get("std", 0.0) or 0.0), int(val.get("count", 1) or 1)
        except (TypeError, ValueError):
            raise OfaYamlError(f"{path}, key {key!r}: 'mean', 'std' and 'count' must be numbers, got {dict(val)}") from None
        if not (mean >= 0.0 and mean < float("inf")):
            raise OfaYamlError(f"{path}, key {key!r}: 'mean' must be a latency >= 0 ms, got {val['mean']!r}")
        out[key] = _Entry(mean, std, count)
    if malformed:
        raise OfaYamlError(
            f"{path}: {len(malformed)} malformed key(s), e.g. {malformed[:5]}; expected OFA MobileNetV3 keys such as "
            "'Conv-input:224x224x3-output:112x112x16' or 'expanded_conv-input:56x56x24-output:28x28x40-expand:96-"
            "kernel:5-stride:2-idskip:0-se:1-hs:0'"
        )
    return out


def _guess_backbone(entries: Mapping[str, _Entry], where: Path, width_mult: float | None) -> Backbone:
    """The backbone whose stem width and classifier size the file's Conv and Logits keys show."""
    stem = [k for k in entries if k.startswith("Conv-")]
    logits = [k for k in entries if k.startswith("Logits-")]
    m = _KEY_RE.match(stem[0]) if stem else None
    classes = int(_KEY_RE.match(logits[0]).group("classes")) if logits else 1000  # type: ignore[union-attr]
    in_ch = int(m.group(4)) if m else 3
    widths = (width_mult,) if width_mult is not None else _WIDTHS
    if m is not None:
        stem_ch = int(m.group(7))
        for w in widths:
            bb = Backbone(in_channels=in_ch, num_classes=classes, width_mult=w)
            if bb.ch(bb.stem_width) == stem_ch:
                return bb
        raise OfaYamlError(
            f"{where}, key {stem[0]!r}: a first conv of {stem_ch} channels matches no backbone width "
            f"{'--width-mult ' + str(width_mult) if width_mult is not None else 'of ' + str(list(_WIDTHS))} "
            f"(stem {[Backbone(width_mult=w).ch(16) for w in widths]} channels); pass the right --width-mult"
        )
    return Backbone(in_channels=in_ch, num_classes=classes, width_mult=widths[0])


def import_ofa_yaml(
    src_dir: str | Path,
    *,
    out: str | Path,
    space: str | SearchSpace = "ofa-mbv3",
    width_mult: float | None = None,
    statistic: str | None = None,
    device: str | None = None,
    cpu_model: str | None = None,
    backend: str | None = None,
    backend_version: str | None = None,
    precision: str = "fp32",
    threads: int = 1,
    allow_missing: bool = False,
) -> LatencyTable:
    """An hwnas table (``out`` CSV + manifest) from OFA's ``<r>_lookup_table.yaml`` files in ``src_dir``.

    The table's space is ``space`` (default ofa-mbv3) at the resolutions that have a file; its backbone is the one
    whose stem width matches the files (``width_mult`` pins it). ``statistic`` (default: the sidecar's, else
    "mean", what OFA stores). Every key must map to a layer of the space (`OfaYamlError` lists those that do not);
    every layer of the space at those resolutions must have a key unless ``allow_missing``.
    """
    d = Path(src_dir)
    if not d.is_dir():
        raise OfaYamlError(f"OFA lookup-table folder {str(d)!r} does not exist or is not a folder")
    files = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _FILE_RE.match(p.name)))
    if not files:
        raise OfaYamlError(f"{d}: no '<resolution>_lookup_table.yaml' files (e.g. 224_lookup_table.yaml)")
    sidecar: dict[str, Any] = {}
    if (d / SIDECAR).is_file():
        sidecar = json.loads((d / SIDECAR).read_text(encoding="utf-8"))
        if sidecar.get("schema_version") != SIDECAR_SCHEMA_VERSION:
            raise OfaYamlError(f"{d / SIDECAR}: schema_version {sidecar.get('schema_version')!r} is not supported "
                               f"(expected {SIDECAR_SCHEMA_VERSION})")
    stat = check_statistic(statistic or sidecar.get("statistic") or "mean", what="--statistic")
    base = get_space(space) if isinstance(space, str) else space
    resolutions = tuple(r for r, _ in files)
    outside = [r for r in resolutions if r not in base.resolutions]
    if outside:
        raise OfaYamlError(f"{d}: file(s) for resolution(s) {outside} outside the space {base.name!r} "
                           f"(resolutions {list(base.resolutions)})")
    from dataclasses import replace

    tspace = replace(base, resolutions=resolutions)
    parsed = {r: _read_file(p) for r, p in files}
    backbone = _guess_backbone(parsed[resolutions[0]], files[0][1], width_mult)
    sums: dict[str, list[float]] = {}  # key -> [sum of count * mean, sum of count, sum of count * std, count total]
    specs: dict[str, LayerSpec] = {}
    values: dict[str, list[float]] = {}  # key -> its mean in each file (the same number when we exported it)
    missing: list[str] = []
    for r, p in files:
        kmap = _key_map(tspace, backbone, r)
        entries = parsed[r]
        unmapped = sorted(set(entries) - set(kmap))
        if unmapped:
            raise OfaYamlError(
                f"{p}: {len(unmapped)} key(s) map to no layer of space {base.name!r} at resolution {r} with backbone "
                f"width {backbone.width_mult:g} ({backbone.num_classes} classes): {unmapped[:10]}"
                + (f" ... and {len(unmapped) - 10} more" if len(unmapped) > 10 else "")
                + "; is the file for another resolution, width (--width-mult) or space?"
            )
        per_layer: dict[str, list[_Entry]] = {}
        for k, spec in kmap.items():
            if k in entries:
                per_layer.setdefault(spec.key, []).append(entries[k])
                specs[spec.key] = spec
            elif not allow_missing:
                missing.append(f"{p.name}: {k}")
        for key, parts in per_layer.items():
            n_parts = len(ofa_keys(specs[key]))
            if len(parts) != n_parts:  # a head with only some of its three keys
                missing.extend(f"{p.name}: {k}" for k in ofa_keys(specs[key]) if k not in entries)
                continue
            mean = sum(e.mean_ms for e in parts)
            count = min(e.count for e in parts)
            std = sum(e.std_ms for e in parts)
            values.setdefault(key, []).append(mean)
            acc = sums.setdefault(key, [0.0, 0.0, 0.0, 0.0])
            acc[0] += count * mean
            acc[1] += count
            acc[2] += count * std
            acc[3] += 1
    if missing and not allow_missing:
        raise OfaYamlError(
            f"{d}: {len(missing)} layer key(s) of space {base.name!r} are missing, e.g. {missing[:5]}; import with "
            "--allow-missing for a partial table (a subnet needing a missing layer then fails naming it)"
        )
    rows: dict[str, TableRow] = {}
    for key, (wsum, csum, ssum, _) in sums.items():
        same = values[key]
        lat = same[0] if all(v == same[0] for v in same) else wsum / csum  # exact for our own round trip
        if lat <= 0:
            raise OfaYamlError(f"{d}: layer {key} has latency {lat} ms; a layer latency must be > 0")
        rows[key] = TableRow(spec=specs[key], latency_ms=lat, ratio=0.0, p50_ms=lat, iqr_ms=1.349 * ssum / csum,
                             runs=int(csum), stats={stat: lat})
    old = sidecar.get("table_meta") or {}
    meta = TableMeta(
        device=device or old.get("device") or "unknown", cpu_model=cpu_model or old.get("cpu_model") or "unknown",
        backend=backend or old.get("backend") or "ofa-yaml", backend_version=backend_version or old.get("backend_version") or "unknown",
        precision=precision if old.get("precision") is None else old["precision"],
        threads=threads if old.get("threads") is None else int(old["threads"]), batch_size=1,
        warmups=int(old.get("warmups", 0)), runs=int(old.get("runs", 0)), rounds=int(old.get("rounds", 0)),
        processes=int(old.get("processes", 0)),
        estimator=f"{stat}: imported from OFA lookup-table yaml ('mean' field)",
        reference={"key": REFERENCE_KEY, "spec": REFERENCE_SPEC_JSON, "latency_ms": None,
                   "note": "no reference probe in OFA's format"},
        measured_at=old.get("measured_at") or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        space=tspace.to_json(), backbone=backbone.to_json(), n_rows=len(rows), csv_sha256="",
        environment={"imported_from": str(d), "files": [p.name for _, p in files],
                     "missing_keys": missing[:200], "original_environment": old.get("environment", {})},
        protocol=old.get("protocol", {}), source="ofa-yaml", statistic=stat, statistics=[stat],
    )
    return LatencyTable(rows=rows, meta=meta).save(out)


def describe_files(paths: Sequence[Path]) -> str:
    return ", ".join(p.name for p in paths[:3]) + (f" ... ({len(paths)} files)" if len(paths) > 3 else "")
