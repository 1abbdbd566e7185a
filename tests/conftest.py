"""Test-wide settings: one torch thread (a shared 2-core VM makes multi-threaded torch erratic), offline."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
