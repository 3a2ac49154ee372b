"""Many sessions on a real Dask cluster (dyadlab.synchrony.distributed.map_sessions): no mocks.

The per-session work is the quick-check itself (``run_check``, few surrogates, fixed seed) on small
files in another lab's format (``tests.synchrony.foreign_dyad``), plus one XDF cut short by a
crash. The local cluster has 2 worker processes with a small memory limit.
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
from distributed import LocalCluster

from dyadlab.synchrony import distributed as dist
from dyadlab.synchrony.check import run_check
from tests.synchrony.foreign_dyad import CONDITIONS, write_foreign_dyad
from tests.synchrony.report_diff import differences

#: Per worker: a worker process with numpy, scipy, numba and the quick-check imported holds about
#: 250 MB; a session here needs a few MB more.
WORKER_MEMORY = "600MB"

check_session = functools.partial(
    run_check, conditions=CONDITIONS, bands="alpha=8-12", metrics=["plv"], n_surrogates=20, seed=5, progress=False
)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small sessions and, third, a session whose file ends after its headers (a crash)."""
    folder = tmp_path_factory.mktemp("sessions")
    files = [
        write_foreign_dyad(folder / f"s{seed}.xdf", block_seconds=8.0, n_blocks=4, fs=200.0, channels=3, seed=seed)
        for seed in (1, 2, 3)
    ]
    corrupt = folder / "crashed.xdf"
    corrupt.write_bytes(files[0].read_bytes()[:1500])
    return [files[0], files[1], corrupt, files[2]]


@pytest.fixture(scope="module")
def serial_results(sessions: list[Path]) -> list[Any]:
    return dist.map_sessions(check_session, sessions, scheduler="serial", progress=False)


def test_serial_path_returns_results_in_order_and_the_crash_as_a_failure(
    serial_results: list[Any], sessions: list[Path]
) -> None:
    assert [r["file"]["name"] for i, r in enumerate(serial_results) if i != 2] == [sessions[i].name for i in (0, 1, 3)]
    failure = serial_results[2]
    assert isinstance(failure, dist.SessionFailure)
    assert failure.index == 2 and failure.item == str(sessions[2])
    assert failure.error_type == "XdfLoadError" and "truncated" in failure.message
    assert "load_dyad" in failure.traceback
    assert str(failure).startswith(f"{sessions[2]}: XdfLoadError: ")


def test_local_cluster_gives_the_serial_results(serial_results: list[Any], sessions: list[Path]) -> None:
    """A real local cluster (2 worker processes, bounded memory): the same reports, the same failure.

    Equal up to summation order (:mod:`tests.synchrony.report_diff`): the check is deterministic
    for a seed and the same code runs on the same bytes, but the workers are single-threaded and
    this process is not, and BLAS and numba's parallel loops sum in an order that depends on the
    thread count (on these small sessions the reports come out bit-identical; on a 5-minute
    32-channel session means differ by up to 1e-10 and z by up to 5e-8).
    """
    results = dist.map_sessions(check_session, sessions, n_workers=2, memory_limit=WORKER_MEMORY, progress=False)
    assert len(results) == len(sessions)
    for cluster_result, serial_result in zip(results, serial_results):
        if isinstance(serial_result, dist.SessionFailure):
            assert isinstance(cluster_result, dist.SessionFailure)
            assert (cluster_result.index, cluster_result.error_type, cluster_result.message) == (
                serial_result.index,
                serial_result.error_type,
                serial_result.message,
            )
        else:
            assert list(differences(cluster_result, serial_result)) == []


@pytest.fixture(scope="module")
def scheduler_address() -> Any:
    """A scheduler started apart from map_sessions, as a lab server would be: 1 worker process with
    a bounded memory. Dask's retries of a task whose worker died are set to 0, and one task per
    worker thread (the default keeps a second one queued on the worker, which a death would take
    down too): a worker's death is blamed on the session it was running."""
    settings = {"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": 1.0}
    with (
        dask.config.set(settings),
        LocalCluster(n_workers=1, threads_per_worker=1, memory_limit=WORKER_MEMORY, dashboard_address=":0") as cluster,
    ):
        yield cluster.scheduler_address


def _allocate(size: tuple[int, float]) -> int:
    """Touch ``size[0]`` MB of memory and hold it ``size[1]`` s (a session too big for its worker)."""
    import time

    megabytes, hold_s = size
    block = np.ones(megabytes * 2**20 // 8)
    time.sleep(hold_s)
    return int(block.size)


def test_scheduler_address_runs_there_and_keeps_the_order(scheduler_address: str) -> None:
    results = dist.map_sessions(np.sqrt, [16.0, 1.0, 9.0, 4.0], scheduler=scheduler_address, progress=True)
    assert results == [4.0, 1.0, 3.0, 2.0]


def test_worker_over_its_memory_limit_is_one_failed_session(scheduler_address: str) -> None:
    """The nanny kills a worker past 95 % of its memory limit: that session comes back as a failure
    saying so, and the others run on the restarted worker."""
    # The nanny looks every 100 ms (distributed.worker.memory.monitor-interval): 1 s held is ten looks.
    sizes = [(1, 0.0), (1500, 1.0), (3, 0.0)]
    results = dist.map_sessions(_allocate, sizes, scheduler=scheduler_address, progress=False)
    assert results[0] == 2**20 // 8 and results[2] == 3 * 2**20 // 8
    failure = results[1]
    assert isinstance(failure, dist.SessionFailure) and failure.error_type == "KilledWorker"
    assert "worker running this session died" in failure.message


def test_unreachable_scheduler_and_misplaced_options_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(dist, "CONNECT_TIMEOUT_S", 2.0)
    with pytest.raises(dist.DistributedError, match=f"Cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
        dist.map_sessions(np.sqrt, [1.0], scheduler=f"tcp://127.0.0.1:{port}", progress=False)
    with pytest.raises(dist.DistributedError, match="local cluster only"):
        dist.map_sessions(np.sqrt, [1.0], scheduler="tcp://127.0.0.1:1", n_workers=2, progress=False)
    with pytest.raises(dist.DistributedError, match="not to scheduler='serial'"):
        dist.map_sessions(np.sqrt, [1.0], scheduler="serial", memory_limit="1GB", progress=False)
    with pytest.raises(dist.DistributedError, match="at least 1"):
        dist.map_sessions(np.sqrt, [1.0], n_workers=0, progress=False)
