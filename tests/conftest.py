"""Shared test configuration.

LSL is confined to this machine with a SessionID unique to this pytest run, before any test
imports pylsl, so that tests never see (or are seen by) streams of other runs or machines. The
setting travels to subprocesses through the ``LSLAPICFG`` environment variable.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from dyadlab.acquisition.lslconfig import LslConfig, apply_lsl_config

TEST_SESSION_ID = f"dyadlab-test-{uuid.uuid4().hex[:12]}"
apply_lsl_config(LslConfig.local_only(TEST_SESSION_ID))

# Under pytest-xdist (``-n N``) every worker has its own SessionID (above) and its own X server:
# display tests of two workers on one display would share its keyboard (the autopilot's XTEST key
# presses reach whichever window has the focus) and its screen. The private Xvfb has the layout
# of `make test` (two screens, Xinerama) and ends with the worker. DYADLAB_TEST_SHARED_DISPLAY=1
# keeps the display the workers inherit.
if (
    os.environ.get("PYTEST_XDIST_WORKER")
    and os.environ.get("DYADLAB_TEST_SHARED_DISPLAY") != "1"
    and shutil.which("Xvfb")
):
    from dyadlab.protocols.display import ensure_display

    os.environ.pop("DISPLAY", None)
    ensure_display(keep_until_exit=True).__enter__()

ARTIFACTS = Path(os.environ.get("DYADLAB_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))


@pytest.fixture(scope="session")
def lsl_session_id() -> str:
    """The LSL SessionID every stream of this test run shares."""
    return TEST_SESSION_ID


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """A folder whose files are kept after the run (screenshots, example reports)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def unique_id() -> str:
    """A short unique token for stream names and source ids within one test."""
    return uuid.uuid4().hex[:8]
