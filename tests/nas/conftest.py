from __future__ import annotations

import pytest

from nas.objective import Objective
from nas.synthetic import make_synthetic_objective


@pytest.fixture
def mnist_objective() -> Objective:
    """SYNTHETIC objective on the small-resolution space (46 decisions, 3 resolutions)."""
    return make_synthetic_objective("mnist", seed=0)
