"""Many sessions at once: per-session work on a Dask distributed cluster, or in a plain loop.

:func:`map_sessions` applies one function (typically the quick-check,
:func:`dyadlab.synchrony.check.run_check`, with fixed settings) to many items (typically XDF
paths) and returns the results in the order of the items. Where it runs is one argument:

- ``scheduler=None`` (or ``"local"``): a local Dask cluster (:class:`distributed.LocalCluster`)
  started for this call and closed after it: one process per worker, one thread each, a bounded
  memory limit per worker (the nanny restarts a worker that exceeds it, and the session it ran
  is reported as failed rather than taking the machine down).
- ``scheduler="serial"``: a plain loop in this process (debugging, profiling, one-core machines).
- ``scheduler="tcp://host:8786"``: an existing scheduler: a lab server started with
  ``dask scheduler`` and ``dask worker``, or an HPC cluster through dask-jobqueue (for example
  ``SLURMCluster(...).scale(jobs=10)`` and its ``scheduler_address``). dask-jobqueue is not a
  dependency of dyadlab: install it where the jobs are submitted. The workers must have dyadlab
  installed (the same version) and see the items' paths (a shared file system).

No scheduler of our own: Dask does the placement, retries of lost workers and memory bounds.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from dyadlab import DyadlabError
from dyadlab.cli_support import ProgressBar

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

SERIAL = "serial"
#: The same as ``scheduler=None``: a local cluster (the word a command line can pass).
LOCAL = "local"
#: Share of this machine's memory given to the local cluster's workers together; the rest stays
#: for this process (which gathers the results) and the operating system.
LOCAL_MEMORY_SHARE = 0.8
#: Seconds to wait for a remote scheduler before saying it cannot be reached.
CONNECT_TIMEOUT_S = 30.0


class DistributedError(DyadlabError, ValueError):
    """The cluster cannot be used as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class SessionFailure:
    """One item whose function raised, or whose worker died, instead of returning a result.

    :func:`map_sessions` puts it in the item's place in the results, so that one corrupt file does
    not lose the other sessions' work. Test with ``isinstance(result, SessionFailure)``.

    Attributes
    ----------
    index : int
        The item's position in the items given to :func:`map_sessions`.
    item : str
        The item's text (``str(item)``; for a path, the path).
    error_type : str
        The exception's class name (``"XdfLoadError"``, ``"KilledWorker"`` for a worker that died,
        e.g. over its memory limit).
    message : str
        The exception's message.
    traceback : str
        The formatted traceback where the error was raised (on the worker), for a bug report.
    """

    index: int
    item: str
    error_type: str
    message: str
    traceback: str

    def __str__(self) -> str:
        return f"{self.item}: {self.error_type}: {self.message}"

    @classmethod
    def from_exception(cls, index: int, item: object, error: BaseException) -> SessionFailure:
        """The failure of item number ``index`` from the exception it raised."""
        return cls(
            index=index,
            item=str(item),
            error_type=type(error).__name__,
            message=str(error),
            traceback="".join(traceback.format_exception(type(error), error, error.__traceback__)),
        )


class _Guarded(Generic[ItemT, ResultT]):
    """``function`` made to return a :class:`SessionFailure` instead of raising (runs on the worker).

    The exception is caught where it happens so that its traceback and message come back as text:
    the exception object itself may not unpickle in the client (a class the client lacks).
    """

    def __init__(self, function: Callable[[ItemT], ResultT]) -> None:
        self.function = function

    def __call__(self, index: int, item: ItemT) -> ResultT | SessionFailure:
        try:
            return self.function(item)
        except Exception as error:  # every error of one session is that session's result
            return SessionFailure.from_exception(index, item, error)


def default_workers() -> int:
    """Worker processes of a local cluster: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def default_memory_limit(n_workers: int) -> int:
    """Bytes per local worker: :data:`LOCAL_MEMORY_SHARE` of the machine's memory, split evenly."""
    import psutil

    return int(psutil.virtual_memory().total * LOCAL_MEMORY_SHARE / max(n_workers, 1))


@contextmanager
def _client(scheduler: str | None, n_workers: int | None, memory_limit: int | str | None) -> Iterator[Client]:
    """A client of a new local cluster (closed afterwards) or of the scheduler at an address."""
    from distributed import Client, LocalCluster

    if scheduler in (None, LOCAL):
        workers = n_workers if n_workers is not None else default_workers()
        if workers < 1:
            raise DistributedError(f"n_workers must be at least 1, got {workers}.")
        limit = memory_limit if memory_limit is not None else default_memory_limit(workers)
        logger.info("Starting a local Dask cluster: %d worker processes, memory limit %s each", workers, limit)
        # Ports chosen by the system (several maps may run at once on one machine).
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=limit,
                scheduler_port=0,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    if n_workers is not None or memory_limit is not None:
        raise DistributedError(
            f"n_workers and memory_limit apply to a local cluster only; the scheduler at {scheduler} "
            "has its own workers (set their number and memory where they are started, e.g. "
            "`dask worker --nworkers N --memory-limit 4GB` or dask-jobqueue's cluster options)."
        )
    try:
        client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
    except OSError as error:
        raise DistributedError(
            f"Cannot reach the Dask scheduler at {scheduler} ({error}). Is it running "
            "(`dask scheduler` on that host) and is its port open from here? Without a cluster, "
            "leave the scheduler out for a local one, or use 'serial'."
        ) from error
    with client:
        yield client


def map_sessions(
    function: Callable[[ItemT], ResultT],
    items: Sequence[ItemT],
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    progress: bool = True,
    memory_limit: int | str | None = None,
) -> list[ResultT | SessionFailure]:
    """Apply ``function`` to every item, on a Dask cluster or in a loop; results in items' order.

    Parameters
    ----------
    function : callable
        One session's work, ``function(item) -> result``. On a cluster it runs in other processes
        (or machines): it must be picklable (a module-level function, or a
        :func:`functools.partial` of one with the fixed settings), and so must the items and the
        results. Results travel back to this process: return what is needed (a quick-check's
        report dict), not the raw signals.
    items : sequence
        Typically XDF paths (on a remote cluster, paths the workers can read).
    scheduler : str, optional
        ``None`` or ``"local"`` (default): a local Dask cluster for this call. ``"serial"``: a
        plain loop in this process. Otherwise the address of a running Dask scheduler (``"tcp://host:8786"``; for an
        HPC cluster, dask-jobqueue's ``cluster.scheduler_address``).
    n_workers : int, optional
        Local cluster only: worker processes (one thread each); default one per CPU this process
        may use (:func:`default_workers`).
    progress : bool
        A progress bar over the sessions on stderr.
    memory_limit : int or str, optional
        Local cluster only: memory per worker (bytes, or Dask's ``"2GB"``); default
        :func:`default_memory_limit`. A worker above 95 % of it is restarted by its nanny, and the
        session it ran comes back as a :class:`SessionFailure`.

    Returns
    -------
    list
        One entry per item, in the order of ``items``: the function's result, or a
        :class:`SessionFailure` when that item's function raised (any :class:`Exception`) or its
        worker died (Dask's ``KilledWorker`` after the worker was lost repeatedly, e.g. over its
        memory limit). The other items complete either way; the caller decides whether a failure
        is fatal (``[r for r in results if isinstance(r, SessionFailure)]``). Each failure is also
        logged as a warning.

    Raises
    ------
    DistributedError
        ``n_workers`` below 1, ``n_workers``/``memory_limit`` given with a scheduler address, or the
        scheduler cannot be reached. Errors of the sessions themselves are never raised.

    Notes
    -----
    The serial and the distributed paths call the same function on the same items, so a
    deterministic function (the quick-check with a fixed seed) gives equal results either way.
    On the local cluster each worker process is single-threaded and Dask's nanny sets
    ``OMP_NUM_THREADS=1`` (and the MKL/OpenBLAS equivalents) in it, so that N workers use N cores.
    """
    items = list(items)
    guarded: _Guarded[ItemT, ResultT] = _Guarded(function)
    results: list[ResultT | SessionFailure]
    with ProgressBar(progress) as bar:
        bar.stage("Sessions", total=len(items))
        if scheduler == SERIAL:
            if n_workers is not None or memory_limit is not None:
                raise DistributedError(
                    "n_workers and memory_limit apply to a local cluster, not to scheduler='serial'."
                )
            results = []
            for index, item in enumerate(items):
                results.append(guarded(index, item))
                bar.advance()
        else:
            results = _map_on_cluster(guarded, items, scheduler, n_workers, memory_limit, bar)
    for result in results:
        if isinstance(result, SessionFailure):
            logger.warning("Session failed: %s", result)
    return results


def _map_on_cluster(
    guarded: _Guarded[ItemT, ResultT],
    items: list[ItemT],
    scheduler: str | None,
    n_workers: int | None,
    memory_limit: int | str | None,
    bar: ProgressBar,
) -> list[ResultT | SessionFailure]:
    from distributed import KilledWorker, as_completed

    with _client(scheduler, n_workers, memory_limit) as client:
        # Keys name the session in Dask's logs and dashboard; unique per call, so that every call
        # runs (no reuse of a result held by a shared scheduler).
        batch = uuid.uuid4().hex[:8]
        keys = [f"dyadlab-session-{index}-{batch}" for index in range(len(items))]
        futures = client.map(guarded, range(len(items)), items, key=keys)
        position = {future.key: index for index, future in enumerate(futures)}
        by_index: dict[int, ResultT | SessionFailure] = {}
        for future in as_completed(futures):
            index = position[future.key]
            try:
                by_index[index] = future.result()
            except KilledWorker as error:
                failure = SessionFailure.from_exception(index, items[index], error)
                by_index[index] = dataclasses.replace(
                    failure,
                    message=f"The worker running this session died (most often: over its memory limit, "
                    f"{memory_limit or 'set where the workers were started'}; raise it or use fewer workers). "
                    f"Dask: {error}",
                )
            except Exception as error:  # e.g. a result that does not unpickle here
                by_index[index] = SessionFailure.from_exception(index, items[index], error)
            bar.advance()
    return [by_index[index] for index in range(len(items))]
