"""Atomic file writes and hashing shared by every hwnas package.

Every artifact hwnas writes (checkpoints, tables, manifests, reports) goes through these helpers: the data is
written to a temporary file in the destination folder, flushed and fsynced, then renamed over the target, so a
crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from supernet.errors import InputError

__all__ = ["OutputError", "atomic_open", "atomic_torch_save", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "check_output_dir", "check_output_file", "json_safe", "read_json", "sha256_file"]

_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)


class OutputError(InputError):
    """An output path cannot be written as given: a full disk, no permission, or a finished result that would be
    overwritten. Raised before anything is replaced: the previous file (if any) is intact."""


def _write_failed(target: Path, e: OSError) -> OutputError:
    if e.errno in _DISK_FULL:
        why = f"no space left on the device ({e.strerror}); free some space and re-run"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"not writable ({e.strerror}); choose another output path"
    else:
        why = f"{e.strerror or e}"
    kept = "the previous file is unchanged" if target.exists() else "nothing was written"
    return OutputError(f"cannot write {str(target)!r}: {why}; {kept}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` only if the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode: expected 'w' or 'wb', got {mode!r}")
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"cannot write {str(target)!r}: it is a directory; expected a file path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except FileExistsError:
        raise OutputError(f"cannot write {str(target)!r}: {str(_first_file_parent(target))!r} is a file, "
                          "not a directory") from None
    except OSError as e:
        raise _write_failed(target, e) from None
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise _write_failed(target, e) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _first_file_parent(target: Path) -> Path:
    for p in reversed(target.parents):
        if p.exists() and not p.is_dir():
            return p
    return target.parent


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Strict JSON (``NaN``/``Infinity`` are not JSON): non-finite floats are written as ``null``."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save`` to memory, then `atomic_write_bytes`: a full disk surfaces as `OutputError` (torch's zip
    writer turns it into ``unexpected pos ...``) and the previous file stays intact."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getbuffer())


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` with non-finite floats replaced by None (strict JSON has no NaN); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def check_output_file(path: str | os.PathLike[str], *, flag: str, overwrite: bool = True,
                      what: str = "output file") -> Path:
    """Check, before any work, that ``path`` can be written as a file: not a directory, no file where a parent
    folder should be, the nearest existing folder writable, and (``overwrite=False``) no finished result there.

    Raises `OutputError` naming ``flag`` (e.g. ``--out``).
    """
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{flag} {str(p)!r} is a directory; expected a path for the {what}")
    if p.exists() and not overwrite:
        raise OutputError(f"{flag} {str(p)!r}: {what} already exists; pass --overwrite to replace it "
                          "(or choose another path)")
    _check_parent_writable(p.parent, flag=flag, shown=p)
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"{flag} {str(p)!r} is not writable")
    return p


def check_output_dir(path: str | os.PathLike[str], *, flag: str, what: str = "output folder") -> Path:
    """Check, before any work, that ``path`` is (or can become) a writable folder; raises `OutputError`."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{flag} {str(p)!r} is a file; expected a folder for the {what}")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputError(f"{flag} {str(p)!r}: folder is not writable")
        return p
    _check_parent_writable(p.parent, flag=flag, shown=p)
    return p


def _check_parent_writable(parent: Path, *, flag: str, shown: Path) -> None:
    q = parent
    while not q.exists():
        if q.parent == q:
            break
        q = q.parent
    if q.exists() and not q.is_dir():
        raise OutputError(f"{flag} {str(shown)!r}: {str(q)!r} is a file, not a folder")
    if q.exists() and not os.access(q, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {str(shown)!r}: folder {str(q)!r} is not writable")


def missing_file_message(what: str, path: str | os.PathLike[str], *, hint: str = "") -> str:
    """``"<what> '<path>' does not exist"``, or ``"... is a folder; expected a file"`` when it is one: a path the user
    gave for a file is never reported as missing when it is a folder. ``hint`` is appended as is."""
    p = Path(path)
    if p.is_dir():
        return f"{what} {str(p)!r} is a folder; expected a file{hint}"
    return f"{what} {str(p)!r} does not exist{hint}"


def read_json(path: str | os.PathLike[str], *, what: str = "JSON file") -> Any:
    """Read JSON, turning a missing file or a syntax error into a message that names the path."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {str(p)!r} is a directory; expected a JSON file")
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{what} {str(p)!r} is not valid JSON: {e}") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {str(p)!r} is not a text (UTF-8) file") from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
