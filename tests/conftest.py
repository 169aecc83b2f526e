import importlib.util
import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# Keep CPU tests deterministic and quiet.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# Property tests draw the same examples on every run: a rare failing draw is then found
# once, by whoever adds the test, and not by CI on somebody else's change (it happened:
# test_masked_pass_is_j_invariant once drew a Bernoulli mask with no pixel).
settings.register_profile("deterministic", derandomize=True)
settings.load_profile("deterministic")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's reference data (../shared/data), or skip when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)``: the module ``benchmarks/<name>.py``, imported as the
    scripts import each other (``benchmarks/`` on ``sys.path``, for ``_common``)."""

    def load(name: str):
        if str(BENCHMARKS) not in sys.path:
            sys.path.insert(0, str(BENCHMARKS))
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
