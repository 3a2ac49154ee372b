"""``dyadlab.acquisition.lslpeers`` on this machine: which known peers answer LSL's query.

Real liblsl outlets on the loopback answer (the test run's local-only configuration,
``tests/conftest.py``); 192.0.2.1 (TEST-NET-1, RFC 5737: never assigned to a host) stands for a PC
that never answers. The same check across separate hosts is in ``test_network_hosts.py``.
"""

from __future__ import annotations

import time

import pylsl
import pytest

from dyadlab.acquisition.lslpeers import peer_problems, query_peers

pytestmark = pytest.mark.integration

SILENT = "192.0.2.1"


@pytest.fixture
def outlet(unique_id: str) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(f"peers-{unique_id}", "Markers", 1, 0, "string", f"peers-{unique_id}")
    return pylsl.StreamOutlet(info)


def test_answering_and_silent_peers_are_told_apart(outlet: pylsl.StreamOutlet, lsl_session_id: str) -> None:
    began = time.monotonic()
    answers = query_peers(["127.0.0.1", SILENT], lsl_session_id, timeout=1.5)
    assert time.monotonic() - began < 2.5
    by_peer = {answer.peer: answer for answer in answers}
    assert lsl_session_id in by_peer["127.0.0.1"].session_ids
    assert by_peer[SILENT].session_ids == frozenset()
    errors, warnings = peer_problems(answers, lsl_session_id, timeout=1.5)
    assert len(errors) == 1 and errors[0].startswith(f"LSL peer {SILENT} (lsl: known_peers) did not answer")
    assert warnings == []


def test_a_peer_of_another_session_is_a_warning_not_an_error(outlet: pylsl.StreamOutlet, lsl_session_id: str) -> None:
    answers = query_peers(["127.0.0.1"], "another-lab", timeout=1.0)
    assert lsl_session_id in answers[0].session_ids and "another-lab" not in answers[0].session_ids
    errors, warnings = peer_problems(answers, "another-lab")
    assert errors == []
    assert len(warnings) == 1 and lsl_session_id in warnings[0] and "127.0.0.1" in warnings[0]


def test_a_name_that_does_not_resolve_is_an_error(lsl_session_id: str) -> None:
    answers = query_peers(["no-such-host.invalid"], lsl_session_id, timeout=0.5)
    assert answers[0].address is None
    errors, _ = peer_problems(answers, lsl_session_id)
    assert errors and "no-such-host.invalid" in errors[0] and "IP address" in errors[0]


def test_every_peer_answering_returns_at_once(outlet: pylsl.StreamOutlet, lsl_session_id: str) -> None:
    began = time.monotonic()
    query_peers(["127.0.0.1"], lsl_session_id, timeout=5.0)
    assert time.monotonic() - began < 2.0, "waited for the timeout although the only peer answered"
