"""Issue 12, "nothing lost, nothing silent": one test (at least) per fault the review found.

============================================  ==========================================
what was done (the review)                    test
============================================  ==========================================
Ctrl-C while ``deconvolve`` compiles          test_interrupt_* (real CLI subprocesses,
(printed "interrupted.", then segfault)       SIGINT/SIGTERM at start-up, compilation,
                                              training, in a batch, while writing)
``Config(learning_rate=inf)`` (all-NaN fit)   test_config_rejects_*, test_diverging_*,
                                              test_infer_*, test_cli_divergence_*
``Config(steps=2.5)``                         test_config_rejects_*
``Config(loss_weights={"bsp": -1.0})``        test_config_rejects_*
a 9x9 PSF with its peak at (1, 1)             test_off_centre_psf_* (and test_psf.py)
output into a read-only folder                test_unwritable_output_*
corrupt / missing params.npz                  test_predict_with_a_broken_model_folder_*
a truncated TIFF (tifffile log line)          test_truncated_tiff_* (and test_io.py)
output file that already exists               test_existing_output_* (and test_io.py)
two runs writing the same output              test_locked_output_*, test_stale_lock_*
                                              (and test_io.py: exclusive writes)
============================================  ==========================================

The interrupt tests run the real command line in subprocesses, all at once (one module
fixture drives them from threads), on one 32x32 image: about a minute of wall time.
"""

from __future__ import annotations

import contextlib
import io as _stringio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from cli_helpers import one_error_line, run

import jdeconv
import jdeconv.api
from jdeconv import cli, stages
from jdeconv.config import Config
from jdeconv.losses import register_loss
from jdeconv.model import FittedModel, save_model
from jdeconv.psf import gaussian_psf
from jdeconv.unet import init_unet

ROOT = Path(__file__).resolve().parents[1]
# Small enough to compile and train quickly on a CPU.
TINY = dict(
    steps=3, batch_size=2, patch_size=16, base_channels=4, depth=2, tta=False, validate_every=2
)


def leftovers(folder: Path) -> list[str]:
    """Temporary and lock files jdeconv might have left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".lock")))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.save(d / f"{name}.npy", rng.random((32, 32)).astype(np.float32))
    np.save(d / "psf.npy", gaussian_psf((5, 5), 1.0))
    return d


def fake_fit(seen=None):
    """A stand-in for jdeconv.api.fit: no training, records the PSF it was given."""

    def fit(image, psf, cfg=None, **kwargs):
        if seen is not None:
            seen.append(np.asarray(psf))
        return types.SimpleNamespace(
            deconvolved=np.asarray(image, np.float32),
            model=types.SimpleNamespace(config=Config.default(np.ndim(image))),
            history={"loss": [1.0]},
            timings={"total": 0.0, "compile": 0.0, "steps": 1, "seconds_per_step": 0.0},
            best_step=1,
        )

    return fit


def no_fit(*args, **kwargs):
    raise AssertionError("fit was called: the problem must be caught before training")


# --------------------------------------------------------------------------- interrupts


def _cli_command(*args) -> list[str]:
    return [sys.executable, "-m", "jdeconv.cli", *map(str, args)]


class Case:
    """One CLI subprocess, signalled when its stderr shows ``marker`` (after ``delay`` s)."""

    def __init__(self, name, argv, out_dir, *, sig, marker=None, delay=0.0, count=1):
        self.name, self.argv, self.out_dir = name, argv, out_dir
        self.sig, self.marker, self.delay, self.count = sig, marker, delay, count
        self.returncode = self.stderr = self.signal_to_exit = None
        self.marker_seen = marker is None

    def drive(self, env):
        err_path = self.out_dir / "stderr.txt"
        with open(err_path, "w") as err:
            proc = subprocess.Popen(
                self.argv, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT
            )
            start = time.monotonic()
            try:
                while self.marker is not None and time.monotonic() - start < 240:
                    if err_path.read_text().count(self.marker) >= self.count:
                        self.marker_seen = True
                        break
                    if proc.poll() is not None:
                        break
                    time.sleep(0.05)
                time.sleep(self.delay)
                sent = time.monotonic()
                proc.send_signal(self.sig)
                self.returncode = proc.wait(timeout=60)
                self.signal_to_exit = time.monotonic() - sent
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        self.stderr = err_path.read_text()
        err_path.unlink()


@pytest.fixture(scope="module")
def interrupted(inputs, tmp_path_factory):
    """Every interrupt case, run concurrently: {name: Case} after they have all ended."""
    base = tmp_path_factory.mktemp("interrupts")
    img, psf = inputs / "a.npy", inputs / "psf.npy"
    fast = ["--patch-size", "16", "--batch-size", "2", "--no-tta"]
    tiny = [*fast, "--set", "base_channels=4", "--set", "depth=2"]
    cases = []

    def case(name, args, **kwargs):
        out_dir = base / name
        out_dir.mkdir()
        argv = _cli_command(*[str(a).format(out=out_dir) for a in args])
        cases.append(Case(name, argv, out_dir, **kwargs))

    single = ["deconvolve", img, "--psf", psf, "-o", "{out}/out.tif"]
    # Start-up: Python is importing; --quiet, so the interrupt line is all of stderr.
    case("startup", [*single, "--quiet", *fast], sig=signal.SIGINT, delay=1.0)
    # Compilation: the "[1/1] ..." line is printed just before fit. On a 2-core CPU the
    # fit then compiles small jitted helpers for ~5 s, traces the step for ~2 s and XLA
    # compiles it for 15-30 s (JAX_LOG_COMPILES=1 shows it): the review's segfault came
    # from a Ctrl-C in that last phase (reproduced: exit -11 half a minute later).
    case(
        "compile",
        [*single, "--steps", "100000", *fast],
        sig=signal.SIGINT,
        marker="[1/1]",
        delay=15.0,
    )
    case(
        "compile-term",
        [*single, "--steps", "100000", *fast],
        sig=signal.SIGTERM,
        marker="[1/1]",
        delay=4.0,
    )
    # Training: the progress bar is on screen.
    case(
        "training",
        [*single, "--steps", "100000", *tiny],
        sig=signal.SIGINT,
        marker="jdeconv fit:",
        delay=1.0,
    )
    # A batch: the first file is written, the second is being prepared/compiled.
    case(
        "batch",
        [
            "deconvolve",
            img,
            inputs / "b.npy",
            "--psf",
            psf,
            "--output-dir",
            "{out}",
            "--steps",
            "3",
            *tiny,
        ],
        sig=signal.SIGINT,
        marker="[2/2]",
        delay=0.5,
    )

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    # A parent that ignores SIGINT (a background job of a script) would pass SIG_IGN on,
    # and jdeconv, like Python, leaves an ignored SIGINT ignored.
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threads = [threading.Thread(target=c.drive, args=(env,)) for c in cases]
        for t in threads:
            t.start()
            time.sleep(0.2)  # launched just apart
    finally:
        if previous is signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)
    for t in threads:
        t.join()
    return {c.name: c for c in cases}


def _check_interrupted(case: Case, *, code: int, quiet: bool = False) -> str:
    assert case.marker_seen, f"{case.name}: never saw {case.marker!r}: {case.stderr}"
    assert case.returncode == code, f"{case.name}: exit {case.returncode}: {case.stderr}"
    for crash in ("Traceback", "Segmentation", "Fatal Python", "core dumped", "Aborted"):
        assert crash not in case.stderr, case.stderr
    # The interrupt line is the last line; it is the only jdeconv line after the notes.
    lines = [line for line in case.stderr.replace("\r", "\n").splitlines() if line.strip()]
    if quiet:
        assert len(lines) == 1, case.stderr
    name = "SIGINT (Ctrl-C)" if code == 130 else "SIGTERM"
    assert lines[-1].startswith(f"jdeconv: interrupted by {name}; "), lines[-1]
    assert sum("jdeconv: interrupted" in line for line in lines) == 1, case.stderr
    assert case.signal_to_exit < 10, f"{case.name}: {case.signal_to_exit:.1f} s to exit"
    assert leftovers(case.out_dir) == [], leftovers(case.out_dir)
    return lines[-1]


@pytest.mark.parametrize(
    "name, code", [("startup", 130), ("compile", 130), ("compile-term", 143), ("training", 130)]
)
def test_interrupt_exits_with_one_line_and_leaves_nothing(interrupted, name, code):
    case = interrupted[name]
    line = _check_interrupted(case, code=code, quiet=name == "startup")
    assert line.endswith("nothing was written."), line
    assert not (case.out_dir / "out.tif").exists()


def test_interrupt_in_a_batch_keeps_the_finished_file_and_names_the_rest(interrupted):
    case = interrupted["batch"]
    line = _check_interrupted(case, code=130)
    assert "finished 1 of 2" in line and "a_deconv.tif" in line, line
    assert line.split("not run or not finished: ")[1] == f"{case.argv[5]}.", line  # b.npy
    assert sorted(p.name for p in case.out_dir.iterdir()) == ["a_deconv.tif"]
    a, _ = jdeconv.io.read_image(case.out_dir / "a_deconv.tif")
    assert a.shape == (32, 32) and np.all(np.isfinite(a))


_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from jdeconv import _files, _signals

out = Path(sys.argv[1])
mode = sys.argv[2]

def status():
    return "the status line."

with _signals.handling(status):
    lock = _files.acquire_lock(out)
    if mode == "writing":  # a slow write: the interrupt removes its temporary file
        def slow(tmp):
            Path(tmp).write_text("partial")
            print("writing", flush=True)
            time.sleep(600)
        _files.atomic_write(out, slow)
    elif mode == "commit":  # a result being committed is finished first
        with _signals.commit():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
            _files.atomic_write_text(out, "complete")
        time.sleep(600)
    elif mode == "twice":  # a second signal does not wait for a long commit
        with _signals.commit():
            print("writing", flush=True)
            time.sleep(600)
print("not interrupted", flush=True)
"""


@pytest.mark.parametrize("mode", ["writing", "commit", "twice"])
def test_interrupt_while_writing(tmp_path, mode):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    out = tmp_path / "out.tif"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        # As from a terminal: SIGINT at its default even where this process inherited it
        # ignored (xvfb-run, which .ci/run uses, starts its command with SIGINT ignored,
        # and an ignored signal stays ignored across exec).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    if mode != "commit":
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGINT)
        if mode == "twice":
            time.sleep(0.5)
            assert proc.poll() is None  # waiting for the commit to finish
            proc.send_signal(signal.SIGINT)
    # No wall-clock assert (a loaded CI machine is slow): the script sleeps 600 s where
    # it would wait, so finishing within the timeout shows the interrupt did not wait.
    stdout, stderr = proc.communicate(timeout=120)
    assert "not interrupted" not in stdout
    expected = 143 if mode == "commit" else 130
    assert proc.returncode == expected, stderr
    assert stderr.splitlines() == [
        f"jdeconv: interrupted by {'SIGTERM' if mode == 'commit' else 'SIGINT (Ctrl-C)'}; "
        "the status line."
    ]
    if mode == "commit":
        assert out.read_text() == "complete"  # the result being written was finished
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "script.py"]
    else:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["script.py"]  # no tmp, no lock


def test_signal_handling_is_only_installed_inside_the_cli(inputs, tmp_path, monkeypatch):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(jdeconv.api, "fit", fake_fit())
    code, _, stderr = run(
        ["deconvolve", inputs / "a.npy", "--psf", inputs / "psf.npy", "-o", tmp_path / "o.tif"]
    )
    assert code == 0, stderr
    assert {s: signal.getsignal(s) for s in before} == before
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- divergence


def test_config_rejects_non_finite_fractional_and_negative_settings():
    # Review: accepted, then all-NaN output / TypeError after compilation / accepted.
    with pytest.raises(ValueError, match="learning_rate"):
        Config(learning_rate=float("inf"))
    with pytest.raises(ValueError, match="learning_rate"):
        Config(learning_rate=float("nan"))
    with pytest.raises(ValueError, match="steps"):
        Config(steps=2.5)
    with pytest.raises(ValueError, match="negative"):
        Config(loss_weights={"bsp": -1.0})


def _nan_term(p):
    return jnp.nan * jnp.mean(p.reconvolved)


register_loss("nan_for_tests", _nan_term, needs=("unmasked",), overwrite=True)


def _counting_drain(monkeypatch) -> list:
    drained = []
    real_drain = stages._drain

    def counting_drain(history, pending, first_step, cfg):
        drained.append((first_step, len(pending)))
        return real_drain(history, pending, first_step, cfg)

    monkeypatch.setattr(stages, "_drain", counting_drain)
    return drained


def test_training_checks_in_chunks_and_infer_never_returns_a_non_finite_image(monkeypatch):
    drained = _counting_drain(monkeypatch)
    image = np.random.default_rng(0).random((32, 32))
    cfg = Config(**{**TINY, "steps": 25, "validate_every": 25})
    prepared = stages.prepare(image, gaussian_psf((5, 5), 1.0), cfg)
    trained = stages.train(prepared, verbose=False)
    # The metrics are fetched every CHECK_EVERY steps and at validations, never once per
    # step (no device sync per step), and the whole history is recorded.
    assert drained == [(1, 10), (11, 10), (21, 5), (26, 0)]
    assert trained.history["step"] == list(range(1, 26)) and len(trained.history["loss"]) == 25
    # Parameters that turned NaN after the last loss was computed: infer refuses.
    broken = jax.tree.map(lambda a: a * jnp.nan, trained.params)
    model = FittedModel(broken, prepared.cfg, 2, prepared.psf)
    with pytest.raises(FloatingPointError, match="1024 of 1024 non-finite pixels"):
        stages.infer(prepared, model)


def test_diverging_loss_stops_training_naming_the_step_and_the_settings(monkeypatch):
    # Review: Config(learning_rate=inf) made fit return all-NaN pixels without a word.
    # Diverged from step 1: training stops at the first check (step 10 of 1000).
    drained = _counting_drain(monkeypatch)
    cfg = Config(
        loss_weights={"rec": 1.0, "nan_for_tests": 1.0},
        **{**TINY, "steps": 1000, "validate_every": 100},
    )
    image = np.random.default_rng(0).random((32, 32))
    with pytest.raises(FloatingPointError, match="diverged") as err:
        jdeconv.api.fit(image, gaussian_psf((5, 5), 1.0), cfg, verbose=False)
    assert drained == [(1, 10)]
    message = str(err.value)
    for fragment in ("step 1 of 1000", "learning_rate=0.001", "grad_clip=1.0", "nan_for_tests"):
        assert fragment in message, message


def test_cli_divergence_is_exit_1_with_one_line_naming_the_fix(inputs, tmp_path):
    out = tmp_path / "o.tif"
    settings = ["--set", "loss_weights={'rec': 1.0, 'nan_for_tests': 1.0}"]
    settings += ["--set", "base_channels=4", "--set", "depth=2", "--set", "validate_every=2"]
    code, stdout, stderr = run(
        [
            "deconvolve",
            inputs / "a.npy",
            "--psf",
            inputs / "psf.npy",
            "-o",
            out,
            "--quiet",
            "--steps",
            "50",
            "--patch-size",
            "16",
            "--batch-size",
            "2",
            "--no-tta",
            *settings,
        ]
    )
    line = one_error_line(code, stderr, "a.npy", "diverged", "--set learning_rate", expected_code=1)
    assert "Traceback" not in stderr and "--debug" not in line
    assert not out.exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- PSF


def test_off_centre_psf_is_refused_before_training_unless_centred(inputs, tmp_path, monkeypatch):
    psf = np.zeros((9, 9))
    psf[:6, :6] = gaussian_psf((9, 9), 1.0)[3:, 3:]  # the review's: peak at (1, 1)
    np.save(tmp_path / "off.npy", psf / psf.sum())
    with pytest.raises(ValueError, match="center_psf"):  # the API, before compiling
        jdeconv.api.fit(np.load(inputs / "a.npy"), psf / psf.sum())
    monkeypatch.setattr(jdeconv.api, "fit", no_fit)
    argv = ["deconvolve", inputs / "a.npy", "--psf", tmp_path / "off.npy", "-o", tmp_path / "o.tif"]
    code, _, stderr = run(argv)
    one_error_line(code, stderr, "off.npy", "off-centre", "--center-psf")

    seen = []
    monkeypatch.setattr(jdeconv.api, "fit", fake_fit(seen))
    code, _, stderr = run([*argv, "--center-psf", "--quiet"])
    assert code == 0, stderr
    assert seen[0].shape == (9, 9) and np.unravel_index(np.argmax(seen[0]), (9, 9)) == (4, 4)


# --------------------------------------------------------------------------- outputs


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores permissions: use a read-only file system
        candidate = Path("/sys")
        try:
            fd = os.open(candidate / "jdeconv-probe.tif", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except OSError:
            return candidate
        os.close(fd)
        pytest.skip("no read-only folder available to this user")
    return folder


def test_unwritable_output_is_refused_before_training(inputs, tmp_path, monkeypatch):
    # Review: refused only after training, so the whole fit was lost.
    folder = _read_only_folder(tmp_path)
    monkeypatch.setattr(jdeconv.api, "fit", no_fit)
    base = ["deconvolve", inputs / "a.npy", "--psf", inputs / "psf.npy"]
    code, _, stderr = run([*base, "-o", folder / "o.tif"])
    one_error_line(code, stderr, "cannot write in", str(folder), "nothing was computed")
    code, _, stderr = run([*base, "-o", tmp_path / "o.tif", "--save-model", folder / "model"])
    one_error_line(code, stderr, "cannot write in", str(folder))
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.tif").exists()


def test_existing_output_is_refused_unless_overwrite(inputs, tmp_path, monkeypatch):
    # Review: an existing output was replaced silently.
    out = tmp_path / "o.tif"
    out.write_bytes(b"an earlier result")
    monkeypatch.setattr(jdeconv.api, "fit", no_fit)
    base = ["deconvolve", inputs / "a.npy", "--psf", inputs / "psf.npy", "--quiet"]
    code, _, stderr = run([*base, "-o", out])
    one_error_line(code, stderr, str(out), "already exists", "--overwrite")
    assert out.read_bytes() == b"an earlier result"
    # The same for the other commands that write files.
    code, _, stderr = run(["psf", "--model", "gaussian", "--sigma", "1", "-o", out])
    one_error_line(code, stderr, "already exists", "--overwrite")
    code, _, stderr = run(["simulate", inputs / "a.npy", "--psf", inputs / "psf.npy", "-o", out])
    one_error_line(code, stderr, "already exists", "--overwrite")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    code, _, stderr = run([*base, "-o", tmp_path / "new.tif", "--save-model", model])
    one_error_line(code, stderr, "already holds a model", "--overwrite")

    monkeypatch.setattr(jdeconv.api, "fit", fake_fit())
    code, _, stderr = run([*base, "-o", out, "--overwrite"])
    assert code == 0, stderr
    np.testing.assert_array_equal(jdeconv.io.read_image(out)[0], np.load(inputs / "a.npy"))
    assert leftovers(tmp_path) == []


def test_locked_output_is_refused_while_its_process_runs(inputs, tmp_path, monkeypatch):
    # Review: two runs writing the same output both succeeded; one result was lost. The
    # first run holds <output>.lock from before training to the end.
    import socket

    out = tmp_path / "o.tif"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "o.tif.lock").write_text(f"{holder.pid} {socket.gethostname()}\n")
        monkeypatch.setattr(jdeconv.api, "fit", no_fit)
        argv = ["deconvolve", inputs / "a.npy", "--psf", inputs / "psf.npy", "-o", out]
        code, _, stderr = run(argv)
        one_error_line(code, stderr, "o.tif", f"process {holder.pid}", "o.tif.lock")
        assert (tmp_path / "o.tif.lock").exists()  # another run's lock is never removed
    finally:
        holder.kill()
        holder.wait()
    # Its process gone (a crash), the lock is stale: taken over, and removed at the end.
    monkeypatch.setattr(jdeconv.api, "fit", fake_fit())
    code, _, stderr = run([*argv, "--quiet"])
    assert code == 0, stderr
    assert out.exists() and leftovers(tmp_path) == []


def test_concurrent_runs_one_output_exactly_one_wins(inputs, tmp_path, monkeypatch):
    # Two commands started together for one output, in threads of this process: the
    # exclusive lock lets exactly one of them train and write.
    out = tmp_path / "o.npy"
    barrier, results = threading.Barrier(2), []
    entered = threading.Event()

    def slow_fit(image, psf, cfg=None, **kwargs):
        entered.set()
        time.sleep(0.5)  # "training", while the other run tries to claim the output
        return fake_fit()(image, psf, cfg)

    monkeypatch.setattr(jdeconv.api, "fit", slow_fit)

    def command():
        barrier.wait()
        argv = ["deconvolve", inputs / "a.npy", "--psf", inputs / "psf.npy", "-o", out]
        results.append(cli.main([str(a) for a in [*argv, "--quiet"]]))

    err = _stringio.StringIO()
    with contextlib.redirect_stderr(err):
        threads = [threading.Thread(target=command) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == [0, 2]
    assert out.exists() and leftovers(tmp_path) == []
    # The loser says why in one line: the output is locked by the winner (or, had the
    # winner already finished, exists).
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jdeconv: error: "), lines
    assert "is being written by" in lines[0] or "already exists" in lines[0], lines


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    cfg = Config(depth=1, base_channels=4, patch_size=8, tta=False)
    _, params = init_unet(0, cfg.unet(2))
    folder = tmp_path_factory.mktemp("model") / "m"
    save_model(FittedModel(params, cfg, 2, gaussian_psf((5, 5), 1.0)), folder)
    return folder


@pytest.mark.parametrize("damage", ["corrupt", "missing", "not a zip"])
def test_predict_with_a_broken_model_folder_is_one_line_exit_2(
    inputs, model_folder, tmp_path, damage
):
    # Review: load_model raised BadZipFile / FileNotFoundError; predict exited 1.
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(model_folder, folder)
    params = folder / "params.npz"
    if damage == "corrupt":
        data = bytearray(params.read_bytes())
        data[len(data) // 2] ^= 0xFF
        params.write_bytes(bytes(data))
    elif damage == "missing":
        params.unlink()
    else:  # garbage, with config.json's checksum updated: the zip reader itself fails
        import hashlib

        params.write_bytes(b"not a zip file")
        meta = json.loads((folder / "config.json").read_text())
        meta["sha256"]["params.npz"] = hashlib.sha256(b"not a zip file").hexdigest()
        (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="params.npz"):
        jdeconv.load_model(folder)
    code, _, stderr = run(
        ["predict", "--model", folder, inputs / "a.npy", "-o", tmp_path / "o.tif"]
    )
    one_error_line(code, stderr, str(folder), "params.npz")
    assert "BadZipFile" not in stderr and not (tmp_path / "o.tif").exists()


# --------------------------------------------------------------------------- one line


def test_truncated_tiff_is_exit_2_and_exactly_one_line(inputs, tmp_path):
    # Review: exit 2 with a good message, but a tifffile log line printed first. A real
    # subprocess: under pytest, log records go to pytest's handler, not the terminal.
    buffer = _stringio.BytesIO()
    tifffile.imwrite(buffer, np.ones((32, 32), np.float32))
    (tmp_path / "cut.tif").write_bytes(buffer.getvalue()[:200])
    proc = subprocess.run(
        _cli_command(
            "deconvolve",
            tmp_path / "cut.tif",
            "--psf",
            inputs / "psf.npy",
            "-o",
            tmp_path / "o.tif",
        ),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jdeconv: error: "), proc.stderr
    assert "cut.tif" in lines[0] and "TIFF" in lines[0]


def test_other_libraries_logs_stay_off_the_terminal(inputs, tmp_path, monkeypatch):
    import logging

    gpu = "An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not "
    gpu += "installed. Falling back to cpu."

    def noisy_fit(image, psf, cfg=None, **kwargs):
        logging.getLogger("jax._src.xla_bridge").warning(gpu)
        logging.getLogger("absl").warning("some absl chatter")
        import warnings

        warnings.warn_explicit("a third-party warning", UserWarning, "/elsewhere/lib.py", 1)
        if image.ndim == 2 and image[0, 0] < -1:
            raise ValueError("bad image")
        return fake_fit()(image, psf, cfg)

    monkeypatch.setattr(jdeconv.api, "fit", noisy_fit)
    argv = ["deconvolve", inputs / "a.npy", "--psf", inputs / "psf.npy", "--quiet"]
    code, _, stderr = run([*argv, "-o", tmp_path / "o.tif"])
    # On success: our line, which says what to do, instead of JAX's; nothing else.
    assert code == 0, stderr
    assert stderr.splitlines() == [
        "jdeconv: warning: a GPU seems to be present but this JAX has no GPU support, so "
        "jdeconv ran on the CPU; for speed install it with: pip install -U 'jax[cuda12]'."
    ]
    # On an error path: the error line only.
    bad = np.load(inputs / "a.npy")
    bad[0, 0] = -5
    np.save(tmp_path / "bad.npy", bad)
    code, _, stderr = run(
        [
            "deconvolve",
            tmp_path / "bad.npy",
            "--psf",
            inputs / "psf.npy",
            "--quiet",
            "-o",
            tmp_path / "p.tif",
        ]
    )
    one_error_line(code, stderr, "bad image")


# --------------------------------------------------------------------------- seeds


def _shared_data() -> Path | None:
    for base in Path(__file__).resolve().parents[2:4]:
        if (base / "shared" / "data" / "ssi2d").is_dir():
            return base / "shared" / "data"
    return None


def test_seeds_benchmark_tiny(tmp_path):
    data = _shared_data()
    if data is None:
        pytest.skip("reference data (../shared/data/ssi2d) not found")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "seeds.py"),
            "--tiny",
            "--data",
            str(data),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "seeds-tiny.json").read_text())
    assert result["status"] == "complete" and {"platform", "jax"} <= set(result["machine"])
    images, seeds = result["config"]["images"], result["config"]["seeds"]
    assert images == ["drosophilaslice532x1352"] and seeds == [0, 1]
    for image in result["images"]:
        assert [r["seed"] for r in image["runs"]] == seeds
        assert all(np.isfinite(r["psnr"]) for r in image["runs"])
        psnrs = [r["psnr"] for r in image["runs"]]
        s = image["summary"]
        assert s["mean"] == pytest.approx(np.mean(psnrs)) and s["min"] == min(psnrs)
        assert s["std"] == pytest.approx(np.std(psnrs, ddof=1))
        assert s["below_rl_oracle"] == sum(p < image["rl_oracle"]["psnr"] for p in psnrs)
    md = (tmp_path / "seeds-tiny.md").read_text()
    assert "below the RL oracle" in md and "| seed |" in md
