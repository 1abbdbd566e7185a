"""The shared vocabulary of hwnas: an architecture value (`ArchConfig`) and the space that owns its choices.

Notation
--------
S = number of elastic stages (5 for OFA MobileNetV3), D = max depth per stage (4), so a config has S*D block
*slots*; slot ``s*D + j`` is block ``j`` of stage ``s``. A stage with depth ``d`` uses its first ``d`` slots;
the others are *inactive*. In the canonical form inactive slots hold ``0`` for both kernel size and expand
ratio, so two configs that build the same network compare equal.

Every other package (latency tables, search, device agents) talks about architectures through these two
classes; the vector layout used by predictors and the GP surrogate belongs to `SearchSpace` alone.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from supernet.errors import InputError
from supernet.io import missing_file_message
from supernet.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import optuna

ARCH_SCHEMA_VERSION = 1
SPACE_SCHEMA_VERSION = 1
# Numeric precisions a subnet can be deployed at, the one vocabulary of quantized export (`supernet.quantize`),
# latency tables (`latency_tables`), the accuracy cache and search (`nas`) and the device agents' bundles.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
INACTIVE = 0

__all__ = [
    "ARCH_SCHEMA_VERSION",
    "PRECISIONS",
    "SPACES",
    "ArchConfig",
    "InvalidArchError",
    "SearchSpace",
    "get_space",
    "list_spaces",
    "resolve_arch",
]


class InvalidArchError(InputError):
    """An architecture (or its JSON/string form) does not fit the search space; the message says which field."""


SHOWN_INPUT_CHARS = 80


def shown(value: Any, limit: int = SHOWN_INPUT_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters with the full length said: a message never
    echoes a megabyte of someone's input (an HTTP 422, a log line)."""
    r = repr(value)
    if len(r) <= limit:
        return r
    n = f" ({len(value)} chars)" if isinstance(value, (str, bytes)) else ""
    return r[: limit - 1] + "…" + n


def _as_int_tuple(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArchError(f"{name}: expected a list of integers, got {shown(value)}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InvalidArchError(f"{name}[{i}]: expected an integer, got {shown(v)}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class ArchConfig:
    """One sub-network of the supernet: a frozen, hashable value.

    Attributes:
        resolution: input image side in pixels.
        depths: active blocks per elastic stage, one entry per stage.
        kernel_sizes: depthwise kernel size per block slot (``len(depths) * max_depth`` entries).
        expand_ratios: expand ratio of the inverted bottleneck per block slot.

    Structural checks (types, lengths) happen here; whether the values are allowed is the space's job
    (`SearchSpace.validate`).
    """

    resolution: int
    depths: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int, ...]

    def __post_init__(self) -> None:
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, (int, np.integer)):
            raise InvalidArchError(f"resolution: expected an integer, got {shown(self.resolution)}")
        object.__setattr__(self, "resolution", int(self.resolution))
        object.__setattr__(self, "depths", _as_int_tuple("depths", self.depths))
        object.__setattr__(self, "kernel_sizes", _as_int_tuple("kernel_sizes", self.kernel_sizes))
        object.__setattr__(self, "expand_ratios", _as_int_tuple("expand_ratios", self.expand_ratios))
        n_stages = len(self.depths)
        if n_stages == 0:
            raise InvalidArchError("depths: expected one entry per stage, got an empty list")
        if len(self.kernel_sizes) != len(self.expand_ratios):
            raise InvalidArchError(
                f"kernel_sizes has {len(self.kernel_sizes)} entries but expand_ratios has "
                f"{len(self.expand_ratios)}; both need one entry per block slot"
            )
        if len(self.kernel_sizes) % n_stages:
            raise InvalidArchError(
                f"kernel_sizes: {len(self.kernel_sizes)} block slots do not divide evenly into "
                f"{n_stages} stages"
            )

    @property
    def n_stages(self) -> int:
        return len(self.depths)

    @property
    def max_depth(self) -> int:
        return len(self.kernel_sizes) // len(self.depths)

    def active_slots(self) -> Iterator[tuple[int, int, int]]:
        """Yield ``(stage, block_in_stage, slot)`` for every active block, in network order."""
        d_max = self.max_depth
        for s, d in enumerate(self.depths):
            for j in range(d):
                yield s, j, s * d_max + j

    # ----------------------------------------------------------------- serialisation
    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": ARCH_SCHEMA_VERSION,
            "resolution": self.resolution,
            "depths": list(self.depths),
            "kernel_sizes": list(self.kernel_sizes),
            "expand_ratios": list(self.expand_ratios),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ArchConfig:
        if not isinstance(d, Mapping):
            raise InvalidArchError(f"architecture JSON: expected an object, got {type(d).__name__}")
        version = d.get("schema_version")
        if version is None:
            raise InvalidArchError(
                "architecture JSON: missing 'schema_version' (expected "
                f"{ARCH_SCHEMA_VERSION}); keys present: {shown(sorted(map(str, d)))}"
            )
        if version != ARCH_SCHEMA_VERSION:
            raise InvalidArchError(
                f"architecture JSON: schema_version {shown(version)} is not supported (this hwnas reads "
                f"version {ARCH_SCHEMA_VERSION})"
            )
        required = ("resolution", "depths", "kernel_sizes", "expand_ratios")
        missing = [k for k in required if k not in d]
        if missing:
            raise InvalidArchError(f"architecture JSON: missing field(s) {missing}; expected {list(required)}")
        unknown = sorted(set(d) - set(required) - {"schema_version"})
        if unknown:
            raise InvalidArchError(f"architecture JSON: unknown field(s) {shown(unknown)}; expected {list(required)}")
        return cls(
            resolution=d["resolution"],
            depths=d["depths"],
            kernel_sizes=d["kernel_sizes"],
            expand_ratios=d["expand_ratios"],
        )

    def __str__(self) -> str:
        """Readable, parseable form of the *active* network, e.g. ``r28-d2.3.2.2.2-k3e4.k5e6_k7e3...``.

        Inactive slots are not shown, so `ArchConfig.parse(str(c)) == space.canonical(c)`.
        """
        d_max = self.max_depth
        stages = []
        for s, d in enumerate(self.depths):
            blocks = [f"k{self.kernel_sizes[s * d_max + j]}e{self.expand_ratios[s * d_max + j]}" for j in range(d)]
            stages.append(".".join(blocks))
        depths = ".".join(str(d) for d in self.depths)
        return f"r{self.resolution}-d{depths}-{'_'.join(stages)}"

    _STR_RE = re.compile(r"^r(\d+)-d([\d.]+)-(.+)$")
    _BLOCK_RE = re.compile(r"^k(\d+)e(\d+)$")

    @classmethod
    def parse(cls, text: str, *, max_depth: int) -> ArchConfig:
        """Parse the string form written by ``str(config)``; inactive slots come back as 0 (canonical)."""
        m = cls._STR_RE.match(text.strip())
        if not m:
            raise InvalidArchError(
                f"architecture string {shown(text)}: expected the form 'r<res>-d<d1>.<d2>...-k<k>e<e>.k<k>e<e>_...' "
                "(stages separated by '_', blocks by '.')"
            )
        resolution = int(m.group(1))
        depths = tuple(int(x) for x in m.group(2).split("."))
        stage_texts = m.group(3).split("_")
        if len(stage_texts) != len(depths):
            raise InvalidArchError(
                f"architecture string {shown(text)}: {len(depths)} depths but {len(stage_texts)} stage groups"
            )
        ks = [INACTIVE] * (len(depths) * max_depth)
        es = [INACTIVE] * (len(depths) * max_depth)
        for s, (d, st) in enumerate(zip(depths, stage_texts, strict=True)):
            blocks = st.split(".")
            if len(blocks) != d:
                raise InvalidArchError(
                    f"architecture string {shown(text)}: stage {s} has depth {d} but {len(blocks)} blocks"
                )
            if d > max_depth:
                raise InvalidArchError(
                    f"architecture string {shown(text)}: stage {s} depth {d} exceeds max depth {max_depth}"
                )
            for j, b in enumerate(blocks):
                bm = cls._BLOCK_RE.match(b)
                if not bm:
                    raise InvalidArchError(f"architecture string {shown(text)}: block {shown(b)} is not 'k<k>e<e>'")
                ks[s * max_depth + j] = int(bm.group(1))
                es[s * max_depth + j] = int(bm.group(2))
        return cls(resolution=resolution, depths=depths, kernel_sizes=tuple(ks), expand_ratios=tuple(es))


EncodingKind = Literal["ordinal", "onehot"]


@dataclass(frozen=True)
class SearchSpace:
    """The choices of an elastic MobileNetV3 space and every encoding of its architectures.

    Ordinal encoding (the GP surrogate's input; order-respecting):
        ``[resolution, depth_1..depth_S, kernel_1..kernel_{S*D}, expand_1..expand_{S*D}]`` as floats, with
        inactive slots 0. Length ``1 + S + 2*S*D`` (46 for the OFA space).
    One-hot encoding (the accuracy predictor's input, as in OFA):
        per slot a one-hot over kernel choices and one over expand choices (all zeros when inactive), then a
        one-hot over resolutions. Depth is implied by which slots are active.
    """

    name: str = "ofa-mbv3"
    resolutions: tuple[int, ...] = tuple(range(128, 225, 4))
    depth_choices: tuple[int, ...] = (2, 3, 4)
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    expand_choices: tuple[int, ...] = (3, 4, 6)
    n_stages: int = 5
    schema_version: int = field(default=SPACE_SCHEMA_VERSION)

    def __post_init__(self) -> None:
        for fname in ("resolutions", "depth_choices", "kernel_choices", "expand_choices"):
            vals = _as_int_tuple(fname, getattr(self, fname))
            if not vals:
                raise ValueError(f"SearchSpace.{fname}: needs at least one choice")
            if list(vals) != sorted(set(vals)):
                raise ValueError(f"SearchSpace.{fname}: choices must be strictly increasing, got {list(vals)}")
            object.__setattr__(self, fname, vals)
        if min(self.depth_choices) < 1:
            raise ValueError("SearchSpace.depth_choices: depths must be >= 1")
        if any(k % 2 == 0 for k in self.kernel_choices):
            raise ValueError(f"SearchSpace.kernel_choices: kernel sizes must be odd, got {self.kernel_choices}")
        if self.n_stages < 1:
            raise ValueError("SearchSpace.n_stages: must be >= 1")

    # ----------------------------------------------------------------- shape
    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    @property
    def n_slots(self) -> int:
        return self.n_stages * self.max_depth

    @property
    def n_decisions(self) -> int:
        """Length of the ordinal encoding: resolution + depths + kernel and expand per slot."""
        return 1 + self.n_stages + 2 * self.n_slots

    def num_subnets(self, resolution: int | None = None) -> int:
        """Distinct networks at one resolution (canonical forms), or over all resolutions when None."""
        per_block = len(self.kernel_choices) * len(self.expand_choices)
        per_stage = sum(per_block**d for d in self.depth_choices)
        per_res = per_stage**self.n_stages
        if resolution is None:
            return per_res * len(self.resolutions)
        if resolution not in self.resolutions:
            raise InvalidArchError(f"resolution {resolution} is not in this space; allowed: {list(self.resolutions)}")
        return per_res

    # ----------------------------------------------------------------- validity
    def validate(self, cfg: ArchConfig) -> ArchConfig:
        """Raise `InvalidArchError` naming the field and the allowed values; return ``cfg`` unchanged if valid.

        Inactive slots may hold 0 or any allowed value (they do not change the network).
        """
        if not isinstance(cfg, ArchConfig):
            raise InvalidArchError(f"expected an ArchConfig, got {type(cfg).__name__}")
        if cfg.resolution not in self.resolutions:
            raise InvalidArchError(
                f"resolution: {cfg.resolution} is not allowed in space {self.name!r}; allowed: "
                f"{_fmt_choices(self.resolutions)}"
            )
        if len(cfg.depths) != self.n_stages:
            raise InvalidArchError(
                f"depths: expected {self.n_stages} entries (one per stage), got {len(cfg.depths)}"
            )
        for field_name, n in (("kernel_sizes", len(cfg.kernel_sizes)), ("expand_ratios", len(cfg.expand_ratios))):
            if n != self.n_slots:
                raise InvalidArchError(
                    f"{field_name}: expected {self.n_slots} entries ({self.n_stages} stages x "
                    f"{self.max_depth} slots), got {n}"
                )
        for s, d in enumerate(cfg.depths):
            if d not in self.depth_choices:
                raise InvalidArchError(f"depths[{s}]: {d} is not allowed; allowed: {list(self.depth_choices)}")
        for s, d in enumerate(cfg.depths):
            for j in range(self.max_depth):
                slot = s * self.max_depth + j
                k, e = cfg.kernel_sizes[slot], cfg.expand_ratios[slot]
                active = j < d
                if not (k in self.kernel_choices or (not active and k == INACTIVE)):
                    raise InvalidArchError(
                        f"kernel_sizes[{slot}] (stage {s}, block {j}{'' if active else ', inactive'}): {k} is "
                        f"not allowed; allowed: {list(self.kernel_choices)}" + ("" if active else " or 0")
                    )
                if not (e in self.expand_choices or (not active and e == INACTIVE)):
                    raise InvalidArchError(
                        f"expand_ratios[{slot}] (stage {s}, block {j}{'' if active else ', inactive'}): {e} is "
                        f"not allowed; allowed: {list(self.expand_choices)}" + ("" if active else " or 0")
                    )
        return cfg

    def canonical(self, cfg: ArchConfig) -> ArchConfig:
        """The validated config with inactive slots zeroed, so equal networks compare equal."""
        self.validate(cfg)
        ks, es = list(cfg.kernel_sizes), list(cfg.expand_ratios)
        for s, d in enumerate(cfg.depths):
            for j in range(d, self.max_depth):
                ks[s * self.max_depth + j] = INACTIVE
                es[s * self.max_depth + j] = INACTIVE
        return replace(cfg, kernel_sizes=tuple(ks), expand_ratios=tuple(es))

    def parse(self, text: str) -> ArchConfig:
        """Parse ``str(config)`` and validate it against this space."""
        return self.validate(ArchConfig.parse(text, max_depth=self.max_depth))

    # ----------------------------------------------------------------- named members
    def largest(self, resolution: int | None = None) -> ArchConfig:
        return self.uniform(
            depth=max(self.depth_choices),
            kernel=max(self.kernel_choices),
            expand=max(self.expand_choices),
            resolution=max(self.resolutions) if resolution is None else resolution,
        )

    def smallest(self, resolution: int | None = None) -> ArchConfig:
        return self.uniform(
            depth=min(self.depth_choices),
            kernel=min(self.kernel_choices),
            expand=min(self.expand_choices),
            resolution=min(self.resolutions) if resolution is None else resolution,
        )

    def uniform(self, *, depth: int, kernel: int, expand: int, resolution: int) -> ArchConfig:
        cfg = ArchConfig(
            resolution=resolution,
            depths=(depth,) * self.n_stages,
            kernel_sizes=(kernel,) * self.n_slots,
            expand_ratios=(expand,) * self.n_slots,
        )
        return self.canonical(cfg)

    # ----------------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator, *, resolution: int | None = None) -> ArchConfig:
        """Uniform over each decision (not over networks), canonical; ``rng`` is the only randomness used."""
        res = int(rng.choice(self.resolutions)) if resolution is None else resolution
        depths = tuple(int(x) for x in rng.choice(self.depth_choices, size=self.n_stages))
        ks = [int(x) for x in rng.choice(self.kernel_choices, size=self.n_slots)]
        es = [int(x) for x in rng.choice(self.expand_choices, size=self.n_slots)]
        return self.canonical(ArchConfig(res, depths, tuple(ks), tuple(es)))

    def mutate(self, cfg: ArchConfig, rng: np.random.Generator, *, prob: float) -> ArchConfig:
        """Resample each decision independently with probability ``prob`` (OFA's evolutionary mutation)."""
        c = self.canonical(cfg)
        full = self._fill_inactive(c, rng)
        res = int(rng.choice(self.resolutions)) if rng.random() < prob else full.resolution
        depths = [int(rng.choice(self.depth_choices)) if rng.random() < prob else d for d in full.depths]
        ks = [int(rng.choice(self.kernel_choices)) if rng.random() < prob else k for k in full.kernel_sizes]
        es = [int(rng.choice(self.expand_choices)) if rng.random() < prob else e for e in full.expand_ratios]
        return self.canonical(ArchConfig(res, tuple(depths), tuple(ks), tuple(es)))

    def crossover(self, a: ArchConfig, b: ArchConfig, rng: np.random.Generator) -> ArchConfig:
        """Take each decision from ``a`` or ``b`` with equal probability."""
        fa, fb = self._fill_inactive(self.canonical(a), rng), self._fill_inactive(self.canonical(b), rng)
        pick = lambda x, y: x if rng.random() < 0.5 else y
        return self.canonical(
            ArchConfig(
                pick(fa.resolution, fb.resolution),
                tuple(pick(x, y) for x, y in zip(fa.depths, fb.depths, strict=True)),
                tuple(pick(x, y) for x, y in zip(fa.kernel_sizes, fb.kernel_sizes, strict=True)),
                tuple(pick(x, y) for x, y in zip(fa.expand_ratios, fb.expand_ratios, strict=True)),
            )
        )

    def _fill_inactive(self, cfg: ArchConfig, rng: np.random.Generator) -> ArchConfig:
        """Give inactive slots random valid values so that growing a stage's depth yields a valid block."""
        ks = [k if k != INACTIVE else int(rng.choice(self.kernel_choices)) for k in cfg.kernel_sizes]
        es = [e if e != INACTIVE else int(rng.choice(self.expand_choices)) for e in cfg.expand_ratios]
        return replace(cfg, kernel_sizes=tuple(ks), expand_ratios=tuple(es))

    def neighbors(self, cfg: ArchConfig) -> list[ArchConfig]:
        """All canonical configs that differ from ``cfg`` in exactly one decision (for local search)."""
        c = self.canonical(cfg)
        out: set[ArchConfig] = set()
        for r in self.resolutions:
            if r != c.resolution:
                out.add(replace(c, resolution=r))
        for s in range(self.n_stages):
            for d in self.depth_choices:
                if d == c.depths[s]:
                    continue
                depths = list(c.depths)
                depths[s] = d
                ks, es = list(c.kernel_sizes), list(c.expand_ratios)
                for j in range(c.depths[s], d):  # newly active slots copy the last active block
                    src = s * self.max_depth + c.depths[s] - 1
                    ks[s * self.max_depth + j], es[s * self.max_depth + j] = ks[src], es[src]
                out.add(self.canonical(ArchConfig(c.resolution, tuple(depths), tuple(ks), tuple(es))))
        for _, _, slot in c.active_slots():
            for k in self.kernel_choices:
                if k != c.kernel_sizes[slot]:
                    ks = list(c.kernel_sizes)
                    ks[slot] = k
                    out.add(replace(c, kernel_sizes=tuple(ks)))
            for e in self.expand_choices:
                if e != c.expand_ratios[slot]:
                    es = list(c.expand_ratios)
                    es[slot] = e
                    out.add(replace(c, expand_ratios=tuple(es)))
        return sorted(out, key=str)

    def enumerate_stage_options(self) -> Iterator[tuple[tuple[int, int], ...]]:
        """Every (kernel, expand) block sequence a single stage can take (for exhaustive per-stage work)."""
        blocks = list(itertools.product(self.kernel_choices, self.expand_choices))
        for d in self.depth_choices:
            yield from itertools.product(blocks, repeat=d)

    # ----------------------------------------------------------------- encodings
    def encode(self, cfg: ArchConfig, kind: EncodingKind = "ordinal") -> np.ndarray:
        c = self.canonical(cfg)
        if kind == "ordinal":
            return np.asarray(
                [c.resolution, *c.depths, *c.kernel_sizes, *c.expand_ratios], dtype=np.float64
            )
        if kind == "onehot":
            nk, ne = len(self.kernel_choices), len(self.expand_choices)
            vec = np.zeros(self.encoding_size("onehot"), dtype=np.float64)
            for _, _, slot in c.active_slots():
                base = slot * (nk + ne)
                vec[base + self.kernel_choices.index(c.kernel_sizes[slot])] = 1.0
                vec[base + nk + self.expand_choices.index(c.expand_ratios[slot])] = 1.0
            vec[self.n_slots * (nk + ne) + self.resolutions.index(c.resolution)] = 1.0
            return vec
        raise ValueError(f"encoding kind {kind!r}: expected 'ordinal' or 'onehot'")

    def encode_many(self, cfgs: Sequence[ArchConfig], kind: EncodingKind = "ordinal") -> np.ndarray:
        return np.stack([self.encode(c, kind) for c in cfgs]) if cfgs else np.zeros((0, self.encoding_size(kind)))

    def encoding_size(self, kind: EncodingKind = "ordinal") -> int:
        if kind == "ordinal":
            return self.n_decisions
        if kind == "onehot":
            return self.n_slots * (len(self.kernel_choices) + len(self.expand_choices)) + len(self.resolutions)
        raise ValueError(f"encoding kind {kind!r}: expected 'ordinal' or 'onehot'")

    def decode(self, vec: Sequence[float] | np.ndarray, kind: EncodingKind = "ordinal") -> ArchConfig:
        """Inverse of `encode`: ``decode(encode(c)) == canonical(c)``.

        Ordinal vectors may be continuous (e.g. from a relaxation): each entry snaps to the nearest choice,
        and inactive slots are ignored.
        """
        v = np.asarray(vec, dtype=np.float64).ravel()
        if v.size != self.encoding_size(kind):
            raise InvalidArchError(f"{kind} vector: expected length {self.encoding_size(kind)}, got {v.size}")
        if kind == "ordinal":
            snap = lambda x, ch: min(ch, key=lambda c: (abs(c - x), c))
            res = snap(v[0], self.resolutions)
            depths = tuple(snap(x, self.depth_choices) for x in v[1 : 1 + self.n_stages])
            o = 1 + self.n_stages
            ks = [snap(x, self.kernel_choices) for x in v[o : o + self.n_slots]]
            es = [snap(x, self.expand_choices) for x in v[o + self.n_slots : o + 2 * self.n_slots]]
            return self.canonical(ArchConfig(res, depths, tuple(ks), tuple(es)))
        nk, ne = len(self.kernel_choices), len(self.expand_choices)
        ks, es = [INACTIVE] * self.n_slots, [INACTIVE] * self.n_slots
        active: list[int] = []  # active blocks per stage
        for s in range(self.n_stages):
            d = 0
            for j in range(self.max_depth):
                slot = s * self.max_depth + j
                base = slot * (nk + ne)
                kpart, epart = v[base : base + nk], v[base + nk : base + nk + ne]
                if kpart.sum() == 0 and epart.sum() == 0:
                    continue
                if j != d:
                    raise InvalidArchError(f"onehot vector: stage {s} has an active slot {j} after an inactive one")
                ks[slot] = self.kernel_choices[int(np.argmax(kpart))]
                es[slot] = self.expand_choices[int(np.argmax(epart))]
                d += 1
            active.append(d)
        res = self.resolutions[int(np.argmax(v[self.n_slots * (nk + ne) :]))]
        return self.canonical(ArchConfig(res, tuple(active), tuple(ks), tuple(es)))

    # ----------------------------------------------------------------- optuna
    def param_ranges(self, *, prefix: str = "") -> dict[str, tuple[int, int]]:
        """Optuna parameter name -> inclusive range of the choice index, in suggestion order.

        The one place the names are made (``r``, ``d<stage>``, ``k<slot>``, ``e<slot>``, after ``prefix``):
        `suggest`, `to_params`, `from_params` and `nas.study.param_distributions` all read them from here.
        """
        out = {f"{prefix}r": (0, len(self.resolutions) - 1)}
        out.update({f"{prefix}d{s}": (0, len(self.depth_choices) - 1) for s in range(self.n_stages)})
        out.update({f"{prefix}k{i}": (0, len(self.kernel_choices) - 1) for i in range(self.n_slots)})
        out.update({f"{prefix}e{i}": (0, len(self.expand_choices) - 1) for i in range(self.n_slots)})
        return out

    def suggest(self, trial: optuna.trial.BaseTrial, *, prefix: str = "") -> ArchConfig:
        """Ask an Optuna trial for an architecture.

        Every decision is an *ordered* integer (the index of the choice), always suggested, so the search
        space is static: samplers that model order (GP, TPE) see that kernel 5 lies between 3 and 7.
        Inactive slots are still suggested but ignored (canonicalised away).
        """
        ranges = self.param_ranges(prefix=prefix)
        params = {name: trial.suggest_int(name, lo, hi) for name, (lo, hi) in ranges.items()}
        return self.from_params(params, prefix=prefix)

    def from_params(self, params: Mapping[str, int], *, prefix: str = "") -> ArchConfig:
        """The canonical architecture of Optuna parameters named as in `param_ranges`."""
        idx = [int(params[name]) for name in self.param_ranges(prefix=prefix)]
        n_s, n_b = self.n_stages, self.n_slots
        res = self.resolutions[idx[0]]
        depths = tuple(self.depth_choices[i] for i in idx[1 : 1 + n_s])
        ks = tuple(self.kernel_choices[i] for i in idx[1 + n_s : 1 + n_s + n_b])
        es = tuple(self.expand_choices[i] for i in idx[1 + n_s + n_b :])
        return self.canonical(ArchConfig(res, depths, ks, es))

    def to_params(self, cfg: ArchConfig, *, prefix: str = "") -> dict[str, int]:
        """The Optuna parameters `suggest` would return for ``cfg`` (for ``study.enqueue_trial``)."""
        c = self._fill_inactive(self.canonical(cfg), np.random.default_rng(0))
        idx = [self.resolutions.index(c.resolution)]
        idx += [self.depth_choices.index(d) for d in c.depths]
        idx += [self.kernel_choices.index(k) for k in c.kernel_sizes]
        idx += [self.expand_choices.index(e) for e in c.expand_ratios]
        return dict(zip(self.param_ranges(prefix=prefix), idx, strict=True))

    # ----------------------------------------------------------------- serialisation
    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "resolutions": list(self.resolutions),
            "depth_choices": list(self.depth_choices),
            "kernel_choices": list(self.kernel_choices),
            "expand_choices": list(self.expand_choices),
            "n_stages": self.n_stages,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SearchSpace:
        if not isinstance(d, Mapping):
            raise ValueError(f"search space JSON: expected an object, got {type(d).__name__}")
        version = d.get("schema_version")
        if version != SPACE_SCHEMA_VERSION:
            raise ValueError(
                f"search space JSON: schema_version {version!r} is not supported (expected {SPACE_SCHEMA_VERSION})"
            )
        keys = ("name", "resolutions", "depth_choices", "kernel_choices", "expand_choices", "n_stages")
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"search space JSON: missing field(s) {missing}")
        fields: dict[str, Any] = {k: (tuple(d[k]) if isinstance(d[k], list) else d[k]) for k in keys}
        return cls(**fields)

    def describe(self) -> str:
        return (
            f"{self.name}: {self.n_stages} stages x max depth {self.max_depth}; depth {list(self.depth_choices)}, "
            f"kernel {list(self.kernel_choices)}, expand {list(self.expand_choices)}, "
            f"resolutions {_fmt_choices(self.resolutions)}"
        )


def _fmt_choices(vals: Sequence[int]) -> str:
    if len(vals) > 4:
        steps = {b - a for a, b in itertools.pairwise(vals)}
        if len(steps) == 1:
            return f"{vals[0]}..{vals[-1]} step {steps.pop()} ({len(vals)} values)"
    return str(list(vals))


# --------------------------------------------------------------------------- registry of named spaces
SPACES: Registry[SearchSpace] = Registry("search space")
# OFA MobileNetV3 as published: resolutions 128..224 step 4.
SPACES.add("ofa-mbv3", SearchSpace(name="ofa-mbv3"))
# Same block choices for the 28x28 embedded MNIST dataset (images are resized per batch).
SPACES.add("mnist", SearchSpace(name="mnist", resolutions=(24, 28, 32)))
# CIFAR-sized inputs.
SPACES.add("cifar", SearchSpace(name="cifar", resolutions=(24, 28, 32)))


def list_spaces() -> list[str]:
    return sorted(SPACES.names())


def get_space(name: str) -> SearchSpace:
    """The named space; `UnknownNameError` (a KeyError and an InputError) lists the known ones."""
    return SPACES.get(name)


def log10_num_subnets(space: SearchSpace) -> float:
    return math.log10(space.num_subnets(space.resolutions[0]))


def resolve_arch(value: str, space: SearchSpace) -> ArchConfig:
    """Turn a CLI ``--arch`` value into a canonical config of ``space``.

    Accepts ``largest`` / ``smallest``, a path to an architecture JSON file (as written by ``hwnas search``;
    a top-level ``"arch"`` key is followed), inline JSON, or the string form ``r28-d2.2...``.
    """
    import json
    from pathlib import Path

    text = value.strip()
    if text in ("largest", "smallest"):
        return space.largest() if text == "largest" else space.smallest()
    if text.startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidArchError(f"--arch: inline JSON is not valid: {e}") from None
        return space.canonical(ArchConfig.from_json(d.get("arch", d)))
    p = Path(text)
    if p.suffix == ".json" or p.is_file():
        if not p.is_file():
            raise InvalidArchError("--arch: " + missing_file_message("file", p))
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InvalidArchError(f"--arch: file {text!r} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise InvalidArchError(f"--arch: file {text!r} must hold a JSON object")
        return space.canonical(ArchConfig.from_json(d.get("arch", d)))
    return space.canonical(space.parse(text))
