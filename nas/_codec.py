"""Vectorised views of a `SearchSpace` for strategies that handle thousands of candidates per step.

Notation
--------
A *choice matrix* ``I`` has shape ``(N, P)`` with ``P = space.n_decisions``; column ``p`` holds the index of the
chosen value of decision ``p`` in the space's ordinal layout (resolution, depths, kernels per slot, expands per
slot). In a *full* matrix every entry is a valid index (inactive slots hold a value that a later depth increase
would activate, as `SearchSpace.mutate` does); in a *canonical* matrix inactive slots hold ``-1``.

These are fast equivalents of `SearchSpace.sample` / `mutate` / `crossover` / `encode`, built from the space's
own choice tuples so the layout stays the space's; the contract tests check them against the space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from supernet.space import INACTIVE, ArchConfig, SearchSpace

__all__ = ["SpaceCodec"]


def _trusted_arch(resolution: int, depths: tuple[int, ...], kernel_sizes: tuple[int, ...],
                  expand_ratios: tuple[int, ...]) -> ArchConfig:
    """Build an `ArchConfig` from values already known to be valid Python ints, skipping the per-element type
    checks of ``ArchConfig.__post_init__`` (~20x faster; acquisition optimisation builds thousands per step).
    The codec contract test checks the result equals the validated construction."""
    cfg = object.__new__(ArchConfig)
    object.__setattr__(cfg, "resolution", resolution)
    object.__setattr__(cfg, "depths", depths)
    object.__setattr__(cfg, "kernel_sizes", kernel_sizes)
    object.__setattr__(cfg, "expand_ratios", expand_ratios)
    return cfg


@dataclass(frozen=True)
class SpaceCodec:
    space: SearchSpace

    # ----------------------------------------------------------------- layout
    @property
    def columns(self) -> list[tuple[int, ...]]:
        s = self.space
        return [s.resolutions, *([s.depth_choices] * s.n_stages), *([s.kernel_choices] * s.n_slots),
                *([s.expand_choices] * s.n_slots)]

    @property
    def n_choices(self) -> np.ndarray:
        return np.asarray([len(c) for c in self.columns], dtype=np.int64)

    def slot_active(self, depth_idx: np.ndarray) -> np.ndarray:
        """Boolean ``(N, n_slots)``: slot active given depth *indices* ``(N, n_stages)``."""
        s = self.space
        depths = np.asarray(s.depth_choices)[depth_idx]  # (N, S)
        j = np.arange(s.max_depth)
        return (j[None, None, :] < depths[:, :, None]).reshape(len(depth_idx), s.n_slots)

    # ----------------------------------------------------------------- sampling and variation
    def random_full(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return (rng.random((n, len(self.n_choices))) * self.n_choices).astype(np.int64)

    def balanced_full(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """A space-filling design: each column uses every choice equally often (±1), columns shuffled independently."""
        cols = []
        for k in self.n_choices:
            col = np.resize(np.arange(k), n)
            cols.append(rng.permutation(col))
        return np.stack(cols, axis=1).astype(np.int64)

    def mutate_full(self, full: np.ndarray, rng: np.random.Generator, prob: float | np.ndarray) -> np.ndarray:
        """Resample each decision with probability ``prob`` (scalar or per-row array), like `SearchSpace.mutate`."""
        p = np.asarray(prob, dtype=np.float64).reshape(-1, 1) if np.ndim(prob) else prob
        mask = rng.random(full.shape) < p
        fresh = self.random_full(rng, len(full))
        return np.where(mask, fresh, full)

    def crossover_full(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.where(rng.random(a.shape) < 0.5, a, b)

    def fill_inactive(self, canon: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.where(canon < 0, self.random_full(rng, len(canon)), canon)

    def canonicalise(self, full: np.ndarray) -> np.ndarray:
        s = self.space
        out = full.copy()
        act = self.slot_active(full[:, 1 : 1 + s.n_stages])
        o = 1 + s.n_stages
        out[:, o : o + s.n_slots][~act] = -1
        out[:, o + s.n_slots :][~act] = -1
        return out

    def neighbors(self, canon_row: np.ndarray) -> np.ndarray:
        """Canonical rows differing from ``canon_row`` in exactly one decision, as `SearchSpace.neighbors` (a
        deeper stage's new blocks copy its last active block), without building `ArchConfig`s."""
        s = self.space
        row = np.asarray(canon_row, dtype=np.int64).reshape(-1)
        n_ch = self.n_choices
        D, o = s.max_depth, 1 + s.n_stages
        out = []
        for p in range(row.size):
            if row[p] < 0:
                continue  # an inactive slot: not a decision of this network
            for c in range(int(n_ch[p])):
                if c == row[p]:
                    continue
                r = row.copy()
                r[p] = c
                if 1 <= p < o:  # a depth: (de)activate slots of that stage
                    st = p - 1
                    d_old, d_new = s.depth_choices[row[p]], s.depth_choices[c]
                    src = st * D + d_old - 1
                    for j in range(d_old, d_new):  # newly active slots copy the last active block
                        r[o + st * D + j], r[o + s.n_slots + st * D + j] = row[o + src], row[o + s.n_slots + src]
                    for j in range(d_new, D):
                        r[o + st * D + j] = r[o + s.n_slots + st * D + j] = -1
                out.append(r)
        return np.stack(out) if out else np.zeros((0, row.size), dtype=np.int64)

    # ----------------------------------------------------------------- conversion
    def to_archs(self, canon: np.ndarray) -> list[ArchConfig]:
        """Canonical matrix -> canonical `ArchConfig`s (built directly: no per-row validation)."""
        cols = self.columns
        lut = np.full((len(cols), max(len(c) for c in cols) + 1), INACTIVE, dtype=np.int64)
        for p, c in enumerate(cols):
            lut[p, : len(c)] = c  # index -1 maps to the trailing INACTIVE entry
        vals = lut[np.arange(len(cols))[None, :], canon].tolist()
        s = self.space
        o = 1 + s.n_stages
        return [_trusted_arch(v[0], tuple(v[1:o]), tuple(v[o : o + s.n_slots]), tuple(v[o + s.n_slots :]))
                for v in vals]

    def from_archs(self, cfgs: Sequence[ArchConfig]) -> np.ndarray:
        """Canonical `ArchConfig`s -> canonical matrix (inactive = -1); values outside a column's choices map to -1.

        Vectorised per column (a value -> index lookup array), since surrogates convert thousands of candidates
        per step."""
        cols = self.columns
        if not cfgs:
            return np.zeros((0, len(cols)), dtype=np.int64)
        vals = np.asarray([(c.resolution, *c.depths, *c.kernel_sizes, *c.expand_ratios) for c in cfgs],
                          dtype=np.int64)
        out = np.full(vals.shape, -1, dtype=np.int64)
        for p, c in enumerate(cols):
            lut = np.full(max(max(c), int(vals[:, p].max()), 0) + 1, -1, dtype=np.int64)
            lut[list(c)] = np.arange(len(c))
            v = vals[:, p]
            ok = v >= 0
            out[ok, p] = lut[v[ok]]
        return out

    def ordinal_values(self, cfgs: Sequence[ArchConfig]) -> np.ndarray:
        """`SearchSpace.encode(kind="ordinal")` for canonical configs, without re-validating each one."""
        if not cfgs:
            return np.zeros((0, self.space.n_decisions))
        return np.asarray(
            [(c.resolution, *c.depths, *c.kernel_sizes, *c.expand_ratios) for c in cfgs], dtype=np.float64
        )

    def unit_features(self, canon: np.ndarray) -> np.ndarray:
        """Order-respecting features in [0, 1]: choice index / (n_choices - 1); an inactive slot is one step below
        the smallest choice (``-1/(n-1)``), i.e. "no block" sits just under "the smallest block"."""
        denom = np.maximum(self.n_choices - 1, 1).astype(np.float64)
        return canon.astype(np.float64) / denom[None, :]

    def keys(self, canon: np.ndarray) -> list[bytes]:
        """Hashable row keys for duplicate detection."""
        c = np.ascontiguousarray(canon.astype(np.int8))
        return [row.tobytes() for row in c]
