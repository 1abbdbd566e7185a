"""One error path for the whole CLI: an `InputError` from any command -> ``error: <message>``, exit 2,
no traceback; ``--debug`` re-raises it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from hwnas.cli import _mount_subapps, app

_mount_subapps()
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def test_an_input_error_from_a_library_is_one_line_on_stderr_and_exit_2(tmp_path: Path) -> None:
    # `hwnas lut info` on a CSV that is not a table: the library raises a LatencyTableError (an InputError)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    res = runner.invoke(app, ["lut", "info", str(bad)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and "Traceback" not in res.output
    assert res.stdout == ""


def test_debug_re_raises_the_input_error(tmp_path: Path) -> None:
    from supernet.errors import InputError

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    res = runner.invoke(app, ["--debug", "lut", "info", str(bad)])
    assert isinstance(res.exception, InputError)
    assert res.exit_code == 1  # CliRunner's code for an uncaught exception


def test_console_script_has_no_traceback_for_an_unknown_name() -> None:
    """The real entry point (`hwnas.cli:main`), run as a process: unknown space -> exit 2, one line."""
    code = "import sys; from hwnas.cli import main; sys.argv = ['hwnas', 'space', 'info', '--space', 'nope']; main()"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 2, p.stderr
    assert "unknown search space 'nope'" in p.stderr and "Traceback" not in p.stderr
