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


def assert_one_line_error(code, stderr, *fragments, expected_code=2):
    """Exit code, one stderr line that is an error (ours or argparse's), no traceback."""
    assert code == expected_code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("jdeconv: error: ") or " error: " in lines[0], lines[0]
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def one_error_line(code, stderr, *fragments, expected_code=2):
    """Exit code and exactly one stderr line, jdeconv's own ``jdeconv: error: ...``; the line."""
    assert code == expected_code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("jdeconv: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
