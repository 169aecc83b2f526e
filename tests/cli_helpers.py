"""Helpers shared by the command-line tests: run ``jdeconv`` in-process, check one-line errors."""

from __future__ import annotations

import contextlib
import io

from jdeconv import cli


def run(argv):
    """``cli.main(argv)`` with stdout/stderr captured: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _the_line(code, stderr, fragments, expected_code) -> str:
    """Exit code, exactly one non-blank stderr line holding every fragment; the line."""
    assert code == expected_code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_one_line_error(code, stderr, *fragments, expected_code=2):
    """Exit code, one stderr line that is an error (ours or argparse's), no traceback."""
    line = _the_line(code, stderr, fragments, expected_code)
    assert line.startswith("jdeconv: error: ") or " error: " in line, line
    assert "Traceback" not in stderr


def one_error_line(code, stderr, *fragments, expected_code=2):
    """Exit code and exactly one stderr line, jdeconv's own ``jdeconv: error: ...``; the line."""
    line = _the_line(code, stderr, fragments, expected_code)
    assert line.startswith("jdeconv: error: "), line
    return line
