"""A full disk: nothing already recorded is lost, the file stays valid, the error says what to do.

Two real ways to run out of room, no mocks:

* a tiny ``tmpfs`` mounted for the test (real ``ENOSPC``; needs root and mount permission);
* ``RLIMIT_FSIZE`` in a subprocess with ``SIGXFSZ`` ignored: the kernel cuts a write short at the
  limit, then refuses the next one with ``EFBIG`` -- a chunk really is cut in half on disk.

When mounting is not permitted, the tmpfs scenarios run under ``RLIMIT_FSIZE`` instead (same
``OSError`` path in the writer), so no scenario is ever skipped (``DYADLAB_TEST_NO_TMPFS=1``
forces the fallback).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf

from dyadlab.acquisition.xdf import XdfWriteError, XdfWriter, XdfWriterError
from dyadlab.acquisition.xdfinspect import inspect_xdf

REPO = Path(__file__).resolve().parents[2]


# -- small disks -------------------------------------------------------------------------------
def _try_mount(folder: Path, size: str) -> bool:
    # DYADLAB_TEST_NO_TMPFS=1 exercises the file-size-limit fallback on a machine that can mount.
    if os.geteuid() != 0 or os.environ.get("DYADLAB_TEST_NO_TMPFS") == "1":
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


def _unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path | None]]:
    """``small_disk("64k")`` mounts a tmpfs of that size and returns its folder, or None when
    mounting is not permitted here; every mount is undone at teardown."""
    mounted: list[Path] = []

    def mount(size: str) -> Path | None:
        folder = tmp_path / f"disk-{len(mounted)}"
        folder.mkdir()
        if not _try_mount(folder, size):
            return None
        mounted.append(folder)
        return folder

    try:
        yield mount
    finally:
        for folder in reversed(mounted):
            _unmount(folder)


def _fill(path: Path) -> None:
    """Fill the disk holding ``path`` to the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def stream_info_xml(name: str, channel_format: str, channel_count: int, srate: float) -> str:
    return pylsl.StreamInfo(name, "EEG", channel_count, srate, channel_format, f"dyadlab.test.{name}").as_xml()


def load_raw(path: Path) -> dict[str, dict]:
    streams, _ = pyxdf.load_xdf(
        str(path), synchronize_clocks=False, dejitter_timestamps=False, handle_clock_resets=False
    )
    return {s["info"]["name"][0]: s for s in streams}


# -- the writer scenario (runs in this process on a tmpfs, or in a subprocess under a limit) --------
WRITE_UNTIL_FULL = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import pylsl
    from dyadlab.acquisition.xdf import XdfWriteError, XdfWriter

    def write_until_full(path, max_chunks=100_000):
        '''Write 2 interleaved streams (7 ch float32, 9 ch int16; 37-sample chunks, so chunk ends
        never line up with pages) until the writer fails. Returns what the writer acknowledged.'''
        infos = {1: ("full-a", "float32", 7), 2: ("full-b", "int16", 9)}
        boundaries, acknowledged = [], {1: 0, 2: 0}
        writer = XdfWriter(path, file_metadata={"test": "disk-full"})
        boundaries.append(writer.bytes_written)
        failure = None
        try:
            for sid, (name, fmt, ch) in infos.items():
                writer.add_stream(sid, pylsl.StreamInfo(name, "EEG", ch, 500.0, fmt, "dyadlab.test." + name).as_xml())
                boundaries.append(writer.bytes_written)
            for index in range(max_chunks):
                sid = 1 + index % 2
                name, fmt, ch = infos[sid]
                start = acknowledged[sid]
                stamps = 100.0 + np.arange(start, start + 37) / 500.0
                values = np.repeat((np.arange(start, start + 37) % 30000)[:, None], ch, axis=1)
                writer.write_samples(sid, stamps, values.astype("float32" if fmt == "float32" else "int16"))
                acknowledged[sid] += 37
                boundaries.append(writer.bytes_written)
                if index % 10 == 9:
                    writer.write_clock_offset(sid, 100.0 + index, 0.001)
                    boundaries.append(writer.bytes_written)
        except XdfWriteError as exc:
            failure = exc
        later = None
        if failure is not None:
            try:
                writer.write_samples(1, np.array([1e6]), np.zeros((1, 7), dtype="float32"))
            except XdfWriteError as exc:
                later = str(exc)
        writer.close()
        writer.close()  # never raises a second time
        return {
            "boundaries": boundaries,
            "acknowledged": {"full-a": acknowledged[1], "full-b": acknowledged[2]},
            "error": None if failure is None else {
                "message": str(failure), "errno": failure.errno, "strerror": failure.strerror,
                "bytes_kept": failure.bytes_kept, "cause": repr(failure.__cause__),
            },
            "later": later,
            "writer_failure_is_same": later == (None if failure is None else str(failure)),
        }
    """
)


def _run_write_until_full_locally(path: Path) -> dict:
    namespace: dict = {}
    exec(compile(WRITE_UNTIL_FULL, "write_until_full", "exec"), namespace)
    return namespace["write_until_full"](path)


def _run_write_until_full_under_limit(path: Path, limit: int) -> dict:
    """The same scenario in a subprocess whose files may not grow beyond ``limit`` bytes."""
    script = WRITE_UNTIL_FULL + textwrap.dedent(
        f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        print(json.dumps(write_until_full(sys.argv[1])))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check_file_after_failure(path: Path, outcome: dict, expected_errno: int, expected_text: str) -> None:
    """Every guarantee after a failed write: clear error, valid file at a chunk end, no sample lost."""
    error = outcome["error"]
    assert error is not None, "the disk never filled up"
    assert error["errno"] == expected_errno
    assert expected_text in error["message"]
    assert str(path) in error["message"]
    assert "Fix:" in error["message"] and "bytes kept" in error["message"]
    assert outcome["writer_failure_is_same"], "a later write must raise the same error at once"

    size = path.stat().st_size
    assert size == error["bytes_kept"]
    assert size in outcome["boundaries"], "the file must end exactly at a chunk boundary"
    assert size == outcome["boundaries"][-1], "every acknowledged chunk must be kept"

    report = inspect_xdf(path)
    assert report.valid, report.defect
    assert not report.complete  # no footers: valid but incomplete
    assert {s.name: s.sample_count for s in report.streams} == outcome["acknowledged"]

    streams = load_raw(path)
    for name, count in outcome["acknowledged"].items():
        series = streams[name]["time_series"]
        assert len(series) == count
        np.testing.assert_array_equal(series[:, 0], np.arange(count) % 30000)
        np.testing.assert_allclose(streams[name]["time_stamps"], 100.0 + np.arange(count) / 500.0)


def test_writer_on_a_full_tmpfs_keeps_a_valid_file(small_disk: Callable[[str], Path | None]) -> None:
    disk = small_disk("64k")
    if disk is None:  # no mount permission: the same OSError path through a file-size limit
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"dyadlab-full-{uuid.uuid4().hex}.xdf"
        try:
            outcome = _run_write_until_full_under_limit(path, 64 * 1024 + 123)
            _check_file_after_failure(path, outcome, errno.EFBIG, "File too large")
        finally:
            path.unlink(missing_ok=True)
        return
    path = disk / "full.xdf"
    outcome = _run_write_until_full_locally(path)
    _check_file_after_failure(path, outcome, errno.ENOSPC, "No space left on device")
    assert outcome["acknowledged"]["full-a"] > 37  # the test wrote real data before the disk filled


@pytest.mark.parametrize("limit", [20_000, 20_000 + 4000 - 1])
def test_writer_cut_short_by_a_file_size_limit_keeps_a_valid_file(tmp_path: Path, limit: int) -> None:
    """RLIMIT_FSIZE: the kernel writes part of the chunk, then refuses (EFBIG): the half chunk is cut."""
    path = tmp_path / "limited.xdf"
    outcome = _run_write_until_full_under_limit(path, limit)
    assert "OSError" in outcome["error"]["cause"]
    # The limit falls inside a chunk, so part of it was written and had to be cut away.
    assert limit not in outcome["boundaries"]
    assert path.stat().st_size < limit
    _check_file_after_failure(path, outcome, errno.EFBIG, "File too large")


def test_writer_that_cannot_even_write_its_header_leaves_no_file(
    small_disk: Callable[[str], Path | None], tmp_path: Path
) -> None:
    disk = small_disk("16k")
    if disk is not None:
        _fill(disk / "filler")
        path = disk / "no-room.xdf"
        with pytest.raises(XdfWriteError, match="No space left on device") as caught:
            XdfWriter(path)
        assert caught.value.errno == errno.ENOSPC
    else:
        path = tmp_path / "no-room.xdf"
        script = (
            "import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (10, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
            "from dyadlab.acquisition.xdf import XdfWriteError, XdfWriter\n"
            "try:\n    XdfWriter(sys.argv[1])\nexcept XdfWriteError as exc:\n    print(exc)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
        )
        assert "File too large" in result.stdout, result.stderr
    assert not path.exists()


def test_write_error_is_an_oserror_and_a_writer_error() -> None:
    assert issubclass(XdfWriteError, OSError)
    assert issubclass(XdfWriteError, XdfWriterError)


# -- the recorder on a disk that fills up ------------------------------------------------------
def record_until_failure(path: str, source_ids: list[str], timeout: float = 40.0) -> dict:
    """Record the given streams until a write fails (or ``timeout``), then stop; report what
    happened. Runs in the test process (tmpfs) or in a subprocess under a file-size limit."""
    import logging
    import threading

    from dyadlab.acquisition.recorder import LslRecorder, StreamSelector

    errors: list[str] = []

    class CountErrors(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record.getMessage())

    handler = CountErrors()
    logging.getLogger("dyadlab.acquisition").addHandler(handler)
    calls: list[tuple[str, float, str]] = []
    failed = threading.Event()

    def on_failure(message: str) -> None:
        calls.append((message, pylsl.local_clock(), threading.current_thread().name))
        failed.set()

    try:
        recorder = LslRecorder(
            path, [StreamSelector(source_id=s) for s in source_ids], boundary_interval=0.5, on_failure=on_failure
        )
        recorder.start()
        t_start = pylsl.local_clock()
        failed.wait(timeout)
        failure_seen = recorder.failure
        time.sleep(0.5)  # the other threads run into the failed state meanwhile: still one report
        summary = recorder.stop()
        again = recorder.stop()
    finally:
        logging.getLogger("dyadlab.acquisition").removeHandler(handler)
    return {
        "t_start": t_start,
        "on_failure_calls": calls,
        "failure": failure_seen,
        "errors_logged": errors,
        "ok": summary.ok,
        "closed": summary.closed,
        "problems": summary.problems,
        "again_problems": again.problems,
        "file_size": summary.file_size,
        "streams": {
            s.name: {"samples": s.sample_count, "footer": s.footer_written, "last": s.last_timestamp}
            for s in summary.streams
        },
    }


def _record_until_failure_under_limit(path: Path, source_ids: list[str], limit: int) -> dict:
    script = textwrap.dedent(
        f"""
        import json, resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        from tests.acquisition.test_disk_full import record_until_failure
        print(json.dumps(record_until_failure(sys.argv[1], sys.argv[2:])))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path), *source_ids],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_recorder_on_a_disk_that_fills_up_fails_once_and_keeps_every_sample(
    small_disk: Callable[[str], Path | None], tmp_path: Path, unique_id: str
) -> None:
    """Two 32-channel float32 EEG streams at 1 kHz (~270 kB/s) into a 1 MiB tmpfs."""
    from tests.acquisition.recorder_helpers import NumberedPusher, make_outlet

    names = [f"full-{label}-{unique_id}" for label in "AB"]
    outlets = [make_outlet(name, name, channels=32, rate=1000.0) for name in names]
    pushers = [NumberedPusher(outlet, 1000.0, block=10).start() for outlet in outlets]
    disk = small_disk("1m")
    try:
        if disk is not None:
            path = disk / "session.xdf"
            outcome = record_until_failure(str(path), names)
            expected = "No space left on device"
        else:  # no mount permission: the same failure through a file-size limit
            path = tmp_path / "session.xdf"
            outcome = _record_until_failure_under_limit(path, names, 1024 * 1024)
            expected = "File too large"
    finally:
        for pusher in pushers:
            pusher.stop()

    # Reported once: one callback, one ERROR, one problem; stop() returned (twice) without raising.
    assert len(outcome["on_failure_calls"]) == 1
    message, t_failure, _thread = outcome["on_failure_calls"][0]
    assert expected in message and str(path) in message and "Fix:" in message
    assert outcome["failure"] == message
    assert outcome["errors_logged"] == [message]
    assert outcome["problems"] == [message] == outcome["again_problems"]
    assert not outcome["ok"] and outcome["closed"]
    assert all(not s["footer"] for s in outcome["streams"].values())

    # The file that remains: valid, loads in pyxdf, every sample the summary counts, without a gap.
    assert path.stat().st_size == outcome["file_size"]
    report = inspect_xdf(path)
    assert report.valid, report.defect
    assert not report.complete
    streams = load_raw(path)
    for name in names:
        counted = outcome["streams"][name]["samples"]
        values = streams[name]["time_series"]
        assert counted > 1000 and len(values) == counted
        first = values[0, 0]
        np.testing.assert_array_equal(values[:, 0], first + np.arange(counted))  # nothing lost in between
        np.testing.assert_array_equal(values, np.repeat(values[:, :1], 32, axis=1))
        # Samples up to the failure: the last one written is at most a few pull periods older.
        last = streams[name]["time_stamps"][-1]
        assert last == outcome["streams"][name]["last"]
        assert t_failure - 3.0 < last <= t_failure


# -- refusing up front ---------------------------------------------------------------------------
def test_estimate_covers_a_real_file_without_overstating_it(tmp_path: Path) -> None:
    """60 s of 32 x float32 at 500 Hz in 0.2-s chunks, with a clock offset every 5 s, plus markers."""
    from dyadlab.acquisition.storage import estimate_recording_bytes

    path = tmp_path / "sized.xdf"
    info = pylsl.StreamInfo("sized", "EEG", 32, 500.0, "float32", "dyadlab.test.sized")
    info.set_channel_labels([f"ch{i}" for i in range(32)])
    markers = pylsl.StreamInfo("sized-mk", "Markers", 1, 0.0, "string", "dyadlab.test.sized-mk")
    marker = '{"event": "trial_start", "task": "cooperation", "block": "coop-1", "condition": "cooperation"}'
    with XdfWriter(path) as writer:
        writer.add_stream(1, info.as_xml())
        writer.add_stream(2, markers.as_xml())
        for chunk in range(300):
            stamps = chunk * 0.2 + np.arange(100) / 500.0
            writer.write_samples(1, stamps, np.zeros((100, 32), dtype=np.float32))
            writer.write_samples(2, stamps[:2], [[marker], [marker]])  # 10 markers per second
            if chunk % 25 == 0:
                writer.write_clock_offset(1, chunk * 0.2, 0.0)
                writer.write_clock_offset(2, chunk * 0.2, 0.0)
        writer.write_footer(1)
        writer.write_footer(2)
    actual = path.stat().st_size
    estimate = estimate_recording_bytes([info, ("string", 1, 0.0)], 60.0)
    assert actual <= estimate <= actual * 1.15 + 2 * 64 * 1024
    assert estimate_recording_bytes([("float32", 32, 500.0)] * 2, 3600) > 2 * 500 * 3600 * (9 + 128)


def test_free_space_check_refuses_with_the_numbers_and_a_fix(
    small_disk: Callable[[str], Path | None], tmp_path: Path
) -> None:
    from dyadlab.acquisition.storage import InsufficientSpaceError, check_free_space, estimate_recording_bytes

    disk = small_disk("1m") or tmp_path  # the check itself needs no mount: a real disk works too
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    hour = estimate_recording_bytes([("float32", 32, 500.0)] * 2, 3600)
    too_much = max(hour, free)  # more than the disk holds (1 MiB tmpfs: one hour is ~0.5 GB)
    with pytest.raises(InsufficientSpaceError) as caught:
        check_free_space(disk / "sessions" / "d01", too_much, what="a 60-minute session")
    message = str(caught.value)
    assert "not enough free space for a 60-minute session" in message
    assert str(disk / "sessions" / "d01") in message and "Fix:" in message
    assert caught.value.required_bytes == 2 * too_much + 64 * 1024 * 1024
    assert caught.value.free_bytes <= free + 4096
    # What fits is accepted, and the free space is returned.
    assert check_free_space(disk, free // 4, margin=2.0, min_free_bytes=0) >= free // 4


def test_record_command_refuses_a_recording_that_cannot_fit_before_creating_the_file(
    small_disk: Callable[[str], Path | None], tmp_path: Path, unique_id: str
) -> None:
    from click.testing import CliRunner

    from dyadlab.acquisition.cli.record_command import EXIT_NO_SPACE, record
    from tests.acquisition.recorder_helpers import make_outlet

    name = f"nospace-{unique_id}"
    outlet = make_outlet(name, name, channels=32, rate=500.0)  # noqa: F841 - must exist while resolving
    disk = small_disk("1m")
    # Without a mount, a duration no real disk holds (1e8 s of 32 x 500 Hz is ~7 TB) takes its place.
    folder, duration = (disk, "3600") if disk is not None else (tmp_path, "100000000")
    out = folder / "x.xdf"
    result = CliRunner().invoke(record, ["--source-id", name, "--duration", duration, "--out", str(out), "--wait", "5"])
    assert result.exit_code == EXIT_NO_SPACE, result.output
    assert "Not enough disk space" in result.output and "not enough free space" in result.output
    assert "Fix:" in result.output
    assert not out.exists()


def _limit_file_size(limit: int) -> Callable[[], None]:
    """A ``preexec_fn``: files of the child may not grow beyond ``limit`` (SIG_IGN survives exec)."""

    def apply() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return apply


def test_record_command_stops_by_itself_when_the_disk_fills_up(
    small_disk: Callable[[str], Path | None], tmp_path: Path, unique_id: str
) -> None:
    """No --duration: only the full disk ends the recording; exit 1, the problem printed, file valid."""
    from tests.acquisition.recorder_helpers import NumberedPusher, make_outlet

    name = f"fills-{unique_id}"
    pusher = NumberedPusher(make_outlet(name, name, channels=64, rate=1000.0), 1000.0, block=10).start()
    disk = small_disk("1m")
    out = (disk or tmp_path) / "x.xdf"
    command = [
        sys.executable,
        "-c",
        "from dyadlab.acquisition.cli.record_command import record; record()",
        "--source-id",
        name,
        "--out",
        str(out),
        "--wait",
        "5",
    ]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=90,
            preexec_fn=None if disk else _limit_file_size(1024 * 1024),
        )
    finally:
        pusher.stop()
    expected = "No space left on device" if disk else "File too large"
    assert result.returncode == 1, result.stderr
    assert "The recording failed" in result.stderr
    assert "problem: the recording stopped early: " in result.stderr and expected in result.stderr
    assert "INCOMPLETE" in result.stdout
    report = inspect_xdf(out)
    assert report.valid and not report.complete
    values = load_raw(out)[name]["time_series"][:, 0]
    assert len(values) > 1000
    np.testing.assert_array_equal(values, values[0] + np.arange(len(values)))
