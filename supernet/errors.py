"""Error types shared by every package: one base class for "the user gave something wrong".

The CLI (`hwnas.cli`) turns any `InputError` into ``error: <message>`` on stderr and exit code 2, without a
traceback, so the message must stand alone: it names the input (flag, file, key) and says what was expected.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad user input: a name, value, file or flag that cannot be used as given.

    A `ValueError`, so code written against ``except ValueError`` keeps working. The message names the input
    and what was expected, e.g. ``--space 'ofa'``: unknown search space; known: mnist, ofa-mbv3``.
    """
