import os
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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's reference data (../shared/data), or skip when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA
