"""Shared test configuration.

LSL is confined to this machine with a SessionID unique to this pytest run, before any test
imports pylsl, so that tests never see (or are seen by) streams of other runs or machines. The
setting travels to subprocesses through the ``LSLAPICFG`` environment variable.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from dyadlab.acquisition.lslconfig import LslConfig, apply_lsl_config

TEST_SESSION_ID = f"dyadlab-test-{uuid.uuid4().hex[:12]}"
apply_lsl_config(LslConfig.local_only(TEST_SESSION_ID))

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
