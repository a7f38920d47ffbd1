from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get("SAFECLS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        for item in (i for i in items if "gpu" in i.keywords):
            item.add_marker(pytest.mark.skip(reason="no CUDA device on this machine"))


@pytest.fixture(autouse=True)
def _threads(request):
    """Tiny models run fastest on one thread (thread start-up dominates, and two threads thrash when the machine
    is busy); the real SmolLM2 (slow tests) gets every core."""
    before = torch.get_num_threads()
    torch.set_num_threads(before if "slow" in request.keywords else 1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set SAFECLS_SHARED_DATA)")
    return SHARED_DATA
