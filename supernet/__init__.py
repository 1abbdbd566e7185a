"""Once-for-all supernet: search space vocabulary, elastic MobileNetV3, training, evaluation, export.

Heavy modules (torch models, training) are imported on first use so that ``import supernet`` and the CLI's
``--help`` stay fast.
"""

from __future__ import annotations

from supernet.space import ArchConfig, InvalidArchError, SearchSpace, get_space, list_spaces, resolve_arch

__all__ = ["ArchConfig", "InvalidArchError", "SearchSpace", "get_space", "list_spaces", "resolve_arch"]
