import os
from pathlib import Path

import pytest

# Keep CPU tests deterministic and quiet.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's reference data (../shared/data), or skip when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA
