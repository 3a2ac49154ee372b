"""XdfWriter, exactly: every failure path, message, fsync point and edge of the input (issue #18).

Written against the mutants of ``acquisition/xdf.py`` that survived ``test_xdf_writer.py``,
``test_disk_full.py``, ``test_xdfinspect.py`` and ``test_recorder.py`` (docs/testing.md, "xdf.py").
What a user relies on is checked against pyxdf and the bytes on disk: what a failed write leaves
(the file cut back to its last complete chunk, byte for byte the recording written without the
failure), the error's whole message and attributes, the writer's state afterwards, where the file
is fsynced, and what pyxdf reads back.

How the failures are produced, without mocking the writer:

* a write cut short: a real file-size limit (``RLIMIT_FSIZE`` with ``SIGXFSZ`` ignored) on this
  process, so the kernel writes part of a chunk and refuses the rest with ``EFBIG``;
* what no disk here does (a full disk at a chosen chunk, ``EDQUOT``, ``EIO`` from ``fsync``, a failed
  ``ftruncate``, ``fstat`` or ``close``, a write that accepts 0 bytes): ``strace`` attached to this
  process injects the error into the real system call on the recording's file (``-P``), so the
  writer's code runs unchanged and sees what the kernel would return. ``strace`` also records which
  system calls reach the file (the fsync points). These tests need ``strace``
  (``.ci/system-deps.sh``) and permission to trace this process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import pickle
import re
import resource
import shutil
import signal
import stat
import struct
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import pyxdf

from dyadlab.acquisition.xdf import (
    XdfWriteError,
    XdfWriter,
    XdfWriterError,
    encode_varlen,
    parse_stream_info,
    validate_file_metadata,
)

STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace not installed (.ci/system-deps.sh)")

LOGGER = "dyadlab.acquisition.xdf"


def info_xml(name: str, channel_format: str, channel_count: int, srate: float) -> str:
    """A minimal LSL stream header (the fields the writer reads, as ``StreamInfo.as_xml()`` has them)."""
    return (
        f'<?xml version="1.0"?><info><name>{name}</name><type>EEG</type>'
        f"<channel_count>{channel_count}</channel_count><channel_format>{channel_format}</channel_format>"
        f"<nominal_srate>{srate}</nominal_srate><source_id>dyadlab.test.{name}</source_id></info>"
    )


EEG = info_xml("eeg", "float32", 3, 100.0)
MARKERS = info_xml("markers", "string", 1, 0.0)


def load_raw(path: Path) -> dict[str, dict]:
    """pyxdf without timestamp processing: values and stamps as written, by stream name."""
    streams, _ = pyxdf.load_xdf(
        str(path), synchronize_clocks=False, dejitter_timestamps=False, handle_clock_resets=False
    )
    return {stream["info"]["name"][0]: stream for stream in streams}


# -- the fixes and messages a user reads ---------------------------------------------------------
FIX_NO_SPACE = "free space on that disk, or record to another disk (check free space before starting)"
FIX = {
    errno.ENOSPC: FIX_NO_SPACE,
    errno.EDQUOT: FIX_NO_SPACE,
    errno.EFBIG: (
        "the file reached the largest size this file system or process allows (e.g. 4 GiB on "
        "FAT32, or a ulimit -f); record to a disk formatted with exFAT/NTFS/ext4 or lift the limit"
    ),
    errno.EIO: "check the disk (cable, health, permissions) or record to another disk",
}


def failure_message(
    action: str, path: Path, code: int, kept: int, strerror: str | None = None, *, cut: bool = True
) -> str:
    """The whole message of a write or fsync failure; ``cut``: the file ends at a complete chunk."""
    state = (
        f"The file was cut back to its last complete chunk and stays a valid XDF file: {kept:,} bytes kept, "
        "holding everything written before this moment"
        if cut
        else f"The file could not be cut back to its last complete chunk: {kept:,} bytes kept, the last "
        "chunk incomplete (a reader may drop or misread its samples)"
    )
    return (
        f"{action} to {path} failed: {strerror or os.strerror(code)} ({errno.errorcode[code]}). {state}; "
        f"nothing more can be recorded into it. Fix: {FIX[code]}."
    )


def check_write_error(
    error: XdfWriteError, message: str, code: int, path: Path, kept: int, strerror: str | None = None
) -> None:
    """The whole message, and the attributes a caller reads instead of parsing it."""
    assert str(error) == message
    assert error.args == (message,)  # repr() and a logged exception show the message too
    assert (error.errno, error.strerror, error.filename, error.bytes_kept) == (
        code,
        strerror or os.strerror(code),
        str(path),
        kept,
    )


# -- system-call fault injection -----------------------------------------------------------------
_TRACED_CALLS = "write,fsync,ftruncate,close,fstat,newfstatat,statx"


def _tracer_pid() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0


def _let_a_child_attach(allowed: bool) -> None:
    """Yama (ptrace_scope 1) lets a process trace only its descendants: strace, a child, may attach
    to this process while ``allowed`` (``PR_SET_PTRACER_ANY``), and no process may afterwards."""
    if Path("/proc/sys/kernel/yama").exists():
        pr_set_ptracer, tracer = 0x59616D61, ctypes.c_ulong(-1 if allowed else 0)
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_ptracer, tracer, 0, 0, 0)


@contextlib.contextmanager
def kernel(path: Path, *injections: str, log: Path | None = None) -> Iterator[None]:
    """Attach strace to this process for the block: the system calls on ``path`` return the errors
    of ``injections`` (strace ``-e inject=`` specs; ``when=N`` counts from the attach), and with
    ``log`` every traced call on the file is written there."""
    assert STRACE is not None
    command = [STRACE, "-qq", "-o", str(log or os.devnull), "-p", str(os.getpid()), "-P", str(path)]
    command += ["-e", f"trace={_TRACED_CALLS}"]
    for injection in injections:
        command += ["-e", f"inject={injection}"]
    _let_a_child_attach(True)
    tracer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20.0  # strace attaches in ~30 ms; generous on a loaded machine
        while _tracer_pid() != tracer.pid:
            if tracer.poll() is not None:
                assert tracer.stderr is not None
                pytest.skip(f"strace cannot trace this process here: {tracer.stderr.read().decode().strip()}")
            assert time.monotonic() < deadline, "strace did not attach within 20 s"
            time.sleep(0.005)
        _let_a_child_attach(False)
        yield
    finally:
        _let_a_child_attach(False)
        tracer.terminate()  # strace detaches on SIGTERM
        tracer.wait(timeout=20)
        assert tracer.stderr is not None
        tracer.stderr.close()


def traced_calls(log: Path) -> list[str]:
    """The names of the system calls strace logged, in order (``fsync(5) = 0`` -> ``fsync``)."""
    return [match.group(1) for match in re.finditer(r"^(?:\d+ +)?(\w+)\(", log.read_text(), re.MULTILINE)]


def close_leaked_descriptor(path: Path) -> None:
    """An injected ``close`` failure skips the real call, so the descriptor is still open (the kernel
    would have closed it): close it here."""
    for entry in Path("/proc/self/fd").iterdir():
        if _links_to(entry, path):
            os.close(int(entry.name))


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Files of this process may not grow beyond ``limit`` bytes (a write beyond it: ``EFBIG``)."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


# -- one small recording, chunk by chunk ---------------------------------------------------------
def recording_steps(writer: XdfWriter) -> list[tuple[str, Callable[[], None]]]:
    """Each step writes exactly one chunk; with what the writer calls it in its messages."""
    stamps = 20.0 + np.arange(6) / 100.0
    values = np.arange(18, dtype=np.float32).reshape(6, 3) / 8.0
    return [
        ("the StreamHeader of stream 1 ('eeg')", lambda: writer.add_stream(1, EEG)),
        ("the StreamHeader of stream 2 ('markers')", lambda: writer.add_stream(2, MARKERS)),
        ("3 samples of stream 1 ('eeg')", lambda: writer.write_samples(1, stamps[:3], values[:3])),
        ("1 samples of stream 2 ('markers')", lambda: writer.write_samples(2, stamps[:1], [["go"]])),
        ("a clock offset of stream 1", lambda: writer.write_clock_offset(1, 20.5, -0.125)),
        ("a Boundary chunk", writer.write_boundary),
        ("3 samples of stream 1 ('eeg')", lambda: writer.write_samples(1, stamps[3:], values[3:])),
        ("the StreamFooter of stream 1 ('eeg')", lambda: writer.write_footer(1)),
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int, list[int]]:
    """The recording without failures: its bytes, its FileHeader's end and every chunk end."""
    path = tmp_path_factory.mktemp("reference") / "reference.xdf"
    with XdfWriter(path) as writer:
        header_end = writer.bytes_written
        ends = [header_end]
        for _, step in recording_steps(writer):
            step()
            ends.append(writer.bytes_written)
    return path.read_bytes(), header_end, ends


def assert_prefix_of_reference(path: Path, header_end: int, reference: tuple[bytes, int, list[int]]) -> int:
    """The file after a failure is the reference recording up to one of its chunk ends (after the
    FileHeader, whose datetime may differ by a second); return the number of chunks kept."""
    data, reference_header_end, ends = reference
    body = path.read_bytes()[header_end:]
    kept_end = reference_header_end + len(body)
    assert kept_end in ends, "the file must end exactly at a chunk boundary"
    assert body == data[reference_header_end:kept_end]
    return ends.index(kept_end)


# -- creating the file ----------------------------------------------------------------------------
def test_the_file_header_is_exact(tmp_path: Path) -> None:
    """Byte for byte (only the time varies): version, local datetime with its offset, escaped metadata."""
    path = tmp_path / "header.xdf"
    before = datetime.now().astimezone().replace(microsecond=0)
    with XdfWriter(path, file_metadata={"study": "S&P <1>", "dyad": "d01"}) as writer:
        header_end = writer.bytes_written
    after = datetime.now().astimezone()
    data = path.read_bytes()
    assert data[:4] == b"XDF:" and data[4] == 1 and data[6:8] == b"\x01\x00"
    assert data[5] == header_end - 6 and header_end == len(data)
    match = re.fullmatch(
        r'<\?xml version="1\.0"\?>\n<info>\n  <version>1\.0</version>\n  <datetime>(?P<when>[^<]+)</datetime>\n'
        r"  <study>S&amp;P &lt;1&gt;</study>\n  <dyad>d01</dyad>\n</info>",
        data[8:].decode("utf-8"),
    )
    assert match is not None, data[8:]
    when = datetime.fromisoformat(match["when"])
    assert when.utcoffset() is not None and before <= when <= after


def test_a_new_file_is_private_to_the_recording_and_never_replaces_one(tmp_path: Path) -> None:
    """Mode 0o666 less the umask (not executable), not inherited by child processes, never an
    existing file; the flush interval is checked and kept."""
    path = tmp_path / "new.xdf"
    previous = os.umask(0o022)
    try:
        writer = XdfWriter(path)
    finally:
        os.umask(previous)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        (descriptor,) = [int(e.name) for e in Path("/proc/self/fd").iterdir() if _links_to(e, path)]
        assert fcntl.fcntl(descriptor, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert writer.flush_interval == 0.5
    finally:
        writer.close()
    with pytest.raises(FileExistsError) as caught:
        XdfWriter(path)
    assert str(caught.value) == (
        f"{path} already exists; XdfWriter never overwrites a recording. "
        "Choose a new file name or move the existing file away."
    )
    with pytest.raises(ValueError) as refused:
        XdfWriter(tmp_path / "negative.xdf", flush_interval=-0.25)
    assert str(refused.value) == "flush_interval must be >= 0 seconds, got -0.25"
    assert not (tmp_path / "negative.xdf").exists()


def _links_to(entry: Path, path: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.readlink(entry) == str(path)
    return False


@needs_strace
@pytest.mark.parametrize(("injection", "code"), [("write:error=ENOSPC", errno.ENOSPC), ("fsync:error=EIO", errno.EIO)])
def test_a_recording_that_cannot_start_leaves_no_file(tmp_path: Path, injection: str, code: int) -> None:
    """The FileHeader is refused (or cannot be saved): nothing was recorded, the empty file is removed."""
    path = tmp_path / "unborn.xdf"
    with kernel(path, f"{injection}:when=1"), pytest.raises(XdfWriteError) as caught:
        XdfWriter(path)
    message = (
        f"cannot create the recording {path}: {os.strerror(code)}. Nothing was recorded and the "
        f"empty file was removed. Fix: {FIX[code]}."
    )
    check_write_error(caught.value, message, code, path, 0)
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == code
    assert not path.exists()
    assert not [entry for entry in Path("/proc/self/fd").iterdir() if _links_to(entry, path)]


class Interrupted(Exception):
    """What a signal handler raises (as Ctrl+C raises KeyboardInterrupt)."""


@needs_strace
def test_an_interrupt_while_the_file_is_created_closes_it(tmp_path: Path) -> None:
    """Ctrl+C while a slow disk takes the FileHeader (the write held 0.2 s by strace, the signal due
    after 0.02 s): the interrupt propagates as it is and the descriptor is not left open."""
    path = tmp_path / "interrupted.xdf"

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    handler = signal.signal(signal.SIGALRM, interrupt)
    try:
        with kernel(path, "write:delay_enter=200ms:when=1"), pytest.raises(Interrupted):
            signal.setitimer(signal.ITIMER_REAL, 0.02)
            XdfWriter(path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, handler)
    assert not [entry for entry in Path("/proc/self/fd").iterdir() if _links_to(entry, path)]


def test_varlen_integers_at_the_ends_of_their_range() -> None:
    assert encode_varlen(2**64 - 1) == b"\x08" + b"\xff" * 8
    with pytest.raises(ValueError) as caught:
        encode_varlen(-1)
    assert str(caught.value) == "XDF variable-length integers are unsigned, got -1"


def test_stream_headers_and_file_metadata_are_refused_with_the_reason() -> None:
    """Every message of ``parse_stream_info`` and ``validate_file_metadata``, whole."""

    def info(name: str = "<name>eeg</name>", fmt: str = "float32", count: str = "2", srate: str = "100") -> str:
        return (
            f"<info>{name}<channel_format>{fmt}</channel_format><channel_count>{count}</channel_count>"
            f"<nominal_srate>{srate}</nominal_srate></info>"
        )

    assert parse_stream_info(info(name="<name> eeg </name>")) == ("eeg", "float32", 2, 100.0)
    assert parse_stream_info(info(count="2147483647", srate="0.5")) == ("eeg", "float32", 2**31 - 1, 0.5)
    formats = "['double64', 'float32', 'int16', 'int32', 'int64', 'int8', 'string']"
    for xml, message in (
        ("<stream/>", "stream info XML must have root element <info>, got <stream>"),
        (info(fmt=" "), "stream info XML lacks <channel_format>; pass the full StreamInfo.as_xml()"),
        (info(fmt="uint16"), f"stream 'eeg': channel_format 'uint16' is not an XDF format (one of {formats})"),
        (info(name="", count="two"), "stream '': channel_count is not an integer"),
        (info(name="<name/>", count="0"), "stream '': channel_count must be >= 1, got 0"),
        (info(count="2147483648"), "stream 'eeg': channel_count 2147483648 is more than LSL allows (2147483647)"),
        (info(srate="fast"), "stream 'eeg': nominal_srate is not a number"),
        (info(srate="nan"), "stream 'eeg': nominal_srate must be finite and >= 0, got nan"),
        (info(srate="-1"), "stream 'eeg': nominal_srate must be finite and >= 0, got -1.0"),
    ):
        with pytest.raises(ValueError) as caught:
            parse_stream_info(xml)
        assert str(caught.value) == message
    for xml in ("<info>", "not XML"):
        with pytest.raises(ValueError, match=r"^stream info XML does not parse \(.+\); pass StreamInfo\.as_xml\(\)$"):
            parse_stream_info(xml)
    for key, message in (
        (
            "bad key",
            "file metadata key 'bad key' is not a valid XML element name "
            "(use letters, digits, '_', '-', '.'; start with a letter or '_')",
        ),
        ("version", "file metadata key 'version' is reserved; the writer sets it itself"),
    ):
        with pytest.raises(ValueError) as caught:
            validate_file_metadata({key: "x"})
        assert str(caught.value) == message


# -- a refused write ------------------------------------------------------------------------------
@needs_strace
@pytest.mark.parametrize("failing_step", range(8))
def test_a_refused_write_keeps_every_chunk_before_it(
    tmp_path: Path, failing_step: int, reference: tuple[bytes, int, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    """The disk refuses the chunk of one step (whole: nothing of it reaches the file): the file is
    the recording up to the step before, the error names the chunk, the errno and the fix, and the
    writer refuses everything afterwards with the same error."""
    code = (errno.ENOSPC, errno.EDQUOT, errno.EIO)[failing_step % 3]
    path = tmp_path / "refused.xdf"
    writer = XdfWriter(path)
    header_end = writer.bytes_written
    steps = recording_steps(writer)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    # ftruncate would fail too: a refused write leaves nothing to cut, so the writer must not need it.
    with kernel(path, f"write:error={errno.errorcode[code]}:when={failing_step + 1}", "ftruncate:error=EIO"):
        for _, step in steps[:failing_step]:
            step()
        kept = writer.bytes_written
        with pytest.raises(XdfWriteError) as caught:
            steps[failing_step][1]()
    error = caught.value
    check_write_error(error, failure_message(f"writing {steps[failing_step][0]}", path, code, kept), code, path, kept)
    assert writer.failure is error and writer.bytes_written == kept == path.stat().st_size
    assert assert_prefix_of_reference(path, header_end, reference) == failing_step
    for later in (writer.write_boundary, lambda: writer.flush(), lambda: writer.write_clock_offset(1, 1.0, 0.0)):
        with pytest.raises(XdfWriteError) as again:
            later()
        assert again.value is error
    writer.close()
    writer.close()
    assert caplog.records == []  # no cut-back trouble, no "closed without footers" after a failure

    if failing_step >= 3:  # pyxdf reads every sample acknowledged before the failure
        streams = load_raw(path)
        for stream_id, name in ((1, "eeg"), (2, "markers")):
            stats = writer.stream_stats(stream_id)
            assert len(streams[name]["time_stamps"]) == stats.sample_count
        assert len(streams["eeg"]["clock_times"]) == len(writer.stream_stats(1).clock_offsets)


@needs_strace
def test_a_failed_write_error_survives_pickling(tmp_path: Path) -> None:
    """The recorder hands the error across processes: every attribute arrives."""
    path = tmp_path / "pickled.xdf"
    writer = XdfWriter(path)
    with kernel(path, "write:error=ENOSPC:when=1"), pytest.raises(XdfWriteError) as caught:
        writer.add_stream(1, EEG)
    writer.close()
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is XdfWriteError and str(copy) == str(caught.value)
    assert (copy.errno, copy.strerror, copy.filename, copy.bytes_kept) == (
        errno.ENOSPC,
        os.strerror(errno.ENOSPC),
        str(path),
        writer.bytes_written,
    )


@needs_strace
def test_a_write_that_accepts_nothing_is_a_failure_not_a_loop(tmp_path: Path) -> None:
    """A write returning 0 bytes (no regular file does; injected): an EIO failure at once."""
    path = tmp_path / "zero.xdf"
    writer = XdfWriter(path)
    writer.add_stream(1, EEG)
    kept = writer.bytes_written
    with kernel(path, "write:retval=0:when=1"), pytest.raises(XdfWriteError) as caught:
        writer.write_samples(1, np.array([1.0, 2.0, 3.0]), np.zeros((3, 3)))
    writer.close()
    strerror = "the operating system accepted 0 bytes"
    message = failure_message("writing 3 samples of stream 1 ('eeg')", path, errno.EIO, kept, strerror)
    check_write_error(caught.value, message, errno.EIO, path, kept, strerror)
    assert path.stat().st_size == kept


@pytest.mark.parametrize("written", [1, 40])
def test_a_write_cut_short_by_a_size_limit_is_cut_back(
    tmp_path: Path, written: int, reference: tuple[bytes, int, list[int]]
) -> None:
    """The kernel writes ``written`` bytes of the chunk, then refuses the rest (EFBIG): those bytes
    are cut away (1 byte: a short write of exactly one byte is progress, not an error)."""
    path = tmp_path / "limited.xdf"
    writer = XdfWriter(path)
    header_end = writer.bytes_written
    steps = recording_steps(writer)
    for _, step in steps[:2]:
        step()
    kept = writer.bytes_written
    with file_size_limit(kept + written), pytest.raises(XdfWriteError) as caught:
        steps[2][1]()  # 3 samples of 3 float32 channels: a 73-byte chunk
    writer.close()
    message = failure_message(f"writing {steps[2][0]}", path, errno.EFBIG, kept)
    check_write_error(caught.value, message, errno.EFBIG, path, kept)
    assert assert_prefix_of_reference(path, header_end, reference) == 2


@needs_strace
def test_a_chunk_the_kernel_takes_in_two_writes_is_written_once(
    tmp_path: Path, reference: tuple[bytes, int, list[int]]
) -> None:
    """The disk fills in the middle of a chunk and space is freed before the next write: the kernel
    takes the first 20 bytes (a real short write at a size limit), the writer writes the rest, once.
    The second write is held 1 s by strace while the limit is lifted (after the first 20 bytes are
    on disk: no race)."""
    path = tmp_path / "two-writes.xdf"
    writer = XdfWriter(path)
    header_end = writer.bytes_written
    steps = recording_steps(writer)
    for _, step in steps[:2]:
        step()
    limit = writer.bytes_written + 20

    def free_space() -> None:
        while path.stat().st_size < limit:
            time.sleep(0.001)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))

    with kernel(path, "write:delay_enter=1s:when=2"), file_size_limit(limit):
        lifter = threading.Thread(target=free_space)
        lifter.start()
        try:
            steps[2][1]()
        finally:
            lifter.join(timeout=20)
    for _, step in steps[3:]:
        step()
    writer.close()
    assert writer.failure is None and writer.bytes_written == path.stat().st_size
    assert assert_prefix_of_reference(path, header_end, reference) == len(steps)


@needs_strace
def test_a_cut_back_that_fails_leaves_the_half_chunk_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A disk that went read-only after the failed write (ext4 ``errors=remount-ro``): ``ftruncate``
    fails, the half chunk stays, the log says where the complete chunks end, the error counts the
    bytes really left and does not call the file valid, and pyxdf still reads every complete chunk
    before it."""
    path = tmp_path / "uncut.xdf"
    writer = XdfWriter(path)
    writer.add_stream(1, EEG)
    writer.write_samples(1, np.array([1.0, 2.0]), np.ones((2, 3)))
    complete = writer.bytes_written
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with (
        kernel(path, "ftruncate:error=EROFS"),
        file_size_limit(complete + 40),
        pytest.raises(XdfWriteError) as caught,
    ):
        writer.write_samples(1, np.array([3.0, 4.0]), np.ones((2, 3)))
    writer.close()
    kept = complete + 40
    message = failure_message("writing 2 samples of stream 1 ('eeg')", path, errno.EFBIG, kept, cut=False)
    check_write_error(caught.value, message, errno.EFBIG, path, kept)
    assert path.stat().st_size == kept == writer.bytes_written
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        f"cannot cut {path} back to its last complete chunk ({complete} bytes); readers stop at the cut chunk"
    )
    assert record.exc_info is not None and isinstance(record.exc_info[1], OSError)
    assert record.exc_info[1].errno == errno.EROFS
    stream = load_raw(path)["eeg"]
    # pyxdf 1.17 also returns what it can parse of the cut chunk (here its first sample, then a stamp
    # without values): the complete chunks come first, intact.
    np.testing.assert_array_equal(stream["time_stamps"][:3], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(stream["time_series"][:3], np.ones((3, 3)))


@needs_strace
def test_a_file_size_that_cannot_be_read_falls_back_to_the_bytes_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "nostat.xdf"
    writer = XdfWriter(path)
    writer.add_stream(1, EEG)
    kept = writer.bytes_written
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with (
        kernel(path, "write:error=ENOSPC:when=1", "fstat,newfstatat,statx:error=EIO"),
        pytest.raises(XdfWriteError) as caught,
    ):
        writer.write_boundary()
    writer.close()
    message = failure_message("writing a Boundary chunk", path, errno.ENOSPC, kept)
    check_write_error(caught.value, message, errno.ENOSPC, path, kept)
    (record,) = caplog.records
    assert (record.levelno, record.getMessage()) == (
        logging.WARNING,
        f"cannot read the size of {path} after a failed write",
    )
    assert record.exc_info is not None and record.exc_info[1].errno == errno.EIO  # type: ignore[union-attr]
    assert path.stat().st_size == kept


@needs_strace
def test_an_fsync_failing_after_the_cut_is_logged_and_the_first_error_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "nosync.xdf"
    writer = XdfWriter(path)
    writer.add_stream(1, EEG)
    kept = writer.bytes_written
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with kernel(path, "write:error=ENOSPC:when=1", "fsync:error=EIO:when=1"), pytest.raises(XdfWriteError) as caught:
        writer.write_clock_offset(1, 3.0, 0.5)
    writer.close()
    message = failure_message("writing a clock offset of stream 1", path, errno.ENOSPC, kept)
    check_write_error(caught.value, message, errno.ENOSPC, path, kept)
    (record,) = caplog.records
    assert (record.levelno, record.getMessage()) == (
        logging.WARNING,
        f"fsync of {path} after cutting it back failed",
    )
    assert record.exc_info is not None and record.exc_info[1].errno == errno.EIO  # type: ignore[union-attr]


@needs_strace
def test_a_file_cut_behind_the_writers_back_keeps_what_is_left(tmp_path: Path) -> None:
    """Another program truncated the recording: after a failed write no end the writer knows lies in
    the file; nothing is cut and the error says how much is left, and that it is not a valid file."""
    path = tmp_path / "shrunk.xdf"
    writer = XdfWriter(path)
    writer.add_stream(1, EEG)
    os.truncate(path, 0)
    with kernel(path, "write:error=EIO:when=1"), pytest.raises(XdfWriteError) as caught:
        writer.write_boundary()
    writer.close()
    message = failure_message("writing a Boundary chunk", path, errno.EIO, 0, cut=False)
    check_write_error(caught.value, message, errno.EIO, path, 0)
    assert path.stat().st_size == 0 == writer.bytes_written


# -- fsync: where, and when it fails --------------------------------------------------------------
@needs_strace
def test_the_file_is_fsynced_after_headers_boundaries_footers_and_at_close(tmp_path: Path) -> None:
    """The system calls that reach the file: one write per chunk; fsync after the FileHeader, each
    StreamHeader, Boundary and StreamFooter, on ``flush(fsync=True)`` and at close; never otherwise."""
    path = tmp_path / "synced.xdf"
    log = tmp_path / "strace.log"
    with kernel(path, log=log):
        writer = XdfWriter(path)
        writer.add_stream(1, EEG)
        writer.write_samples(1, np.array([1.0]), np.zeros((1, 3)))
        writer.write_clock_offset(1, 1.0, 0.0)
        writer.flush()
        writer.flush(fsync=True)
        writer.write_boundary()
        writer.write_footer(1)
        writer.close()
    assert traced_calls(log) == [
        *("write", "fsync"),  # FileHeader
        *("write", "fsync"),  # StreamHeader
        "write",  # Samples
        "write",  # ClockOffset
        "fsync",  # flush(fsync=True); flush() alone does not
        *("write", "fsync"),  # Boundary
        *("write", "fsync"),  # StreamFooter
        *("fsync", "close"),  # close
    ]


def _add(writer: XdfWriter) -> None:
    writer.add_stream(2, MARKERS)


@needs_strace
@pytest.mark.parametrize(
    ("what", "action"),
    [
        ("the StreamHeader of stream 2", _add),
        ("a Boundary chunk", lambda writer: writer.write_boundary()),
        ("the StreamFooter of stream 1", lambda writer: writer.write_footer(1)),
        ("buffered data", lambda writer: writer.flush(fsync=True)),
        ("the end of the file", lambda writer: writer.close()),
    ],
)
def test_a_failed_fsync_is_a_write_failure_naming_what_was_being_saved(
    tmp_path: Path, what: str, action: Callable[[XdfWriter], None]
) -> None:
    path = tmp_path / "fsync.xdf"
    writer = XdfWriter(path)
    writer.add_stream(1, EEG)
    writer.write_samples(1, np.array([1.0]), np.zeros((1, 3)))
    with kernel(path, "fsync:error=EIO:when=1"), pytest.raises(XdfWriteError) as caught:
        action(writer)
    kept = path.stat().st_size  # the chunk was written; only its fsync failed: nothing to cut
    message = failure_message(f"saving {what} to the disk (fsync)", path, errno.EIO, kept)
    check_write_error(caught.value, message, errno.EIO, path, kept)
    assert writer.bytes_written == kept
    writer.close()  # after a failure, close only releases the file
    with pytest.raises(XdfWriteError) as again:
        writer.flush()
    assert again.value is caught.value


@needs_strace
def test_a_failed_close_is_reported_once_and_an_earlier_failure_wins(tmp_path: Path) -> None:
    """``close`` failing (a network file system reporting a late write error: over quota) raises a
    clear error with the fix for that error, once; after a write failure, a failing close raises
    nothing more (the first error stands)."""
    path = tmp_path / "close.xdf"
    writer = XdfWriter(path)
    writer.add_stream(1, EEG)
    writer.write_footer(1)
    try:
        with kernel(path, "close:error=EDQUOT"), pytest.raises(XdfWriteError) as caught:
            writer.close()
    finally:
        close_leaked_descriptor(path)
    message = (
        f"closing {path} failed: {os.strerror(errno.EDQUOT)}; the last chunks may be missing. Fix: {FIX[errno.EDQUOT]}."
    )
    error = caught.value
    assert str(error) == message and error.args == (message,)
    assert (error.errno, error.strerror, error.filename, error.bytes_kept) == (
        errno.EDQUOT,
        os.strerror(errno.EDQUOT),
        str(path),
        path.stat().st_size,
    )
    assert writer.failure is error
    writer.close()  # never a second time

    other = tmp_path / "close-after-failure.xdf"
    writer = XdfWriter(other)
    try:
        with kernel(other, "write:error=ENOSPC:when=1", "close:error=EIO"):
            with pytest.raises(XdfWriteError) as first:
                writer.add_stream(1, EEG)
            writer.close()
    finally:
        close_leaked_descriptor(other)
    assert writer.failure is first.value and first.value.errno == errno.ENOSPC


# -- what reaches pyxdf, and the messages of misuse -----------------------------------------------
def test_single_channel_values_may_be_one_dimensional(tmp_path: Path) -> None:
    path = tmp_path / "mono.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, info_xml("mono", "int16", 1, 10.0))
        writer.write_samples(1, np.array([1.0, 1.1, 1.2]), np.array([7, -8, 9]))
        writer.write_samples(1, [1.3, 1.4], [[10], [11]])
        with pytest.raises(ValueError) as caught:
            writer.write_samples(1, np.array([2.0, 2.1]), np.array([1, 2, 3]))
        assert str(caught.value) == ("stream 'mono': values must have shape (n_samples, n_channels) = (2, 1), got (3,)")
        writer.write_footer(1)
    stream = load_raw(path)["mono"]
    np.testing.assert_array_equal(stream["time_series"], [[7], [-8], [9], [10], [11]])
    np.testing.assert_array_equal(stream["time_stamps"], [1.0, 1.1, 1.2, 1.3, 1.4])


def test_double_values_into_a_float32_stream_are_rounded_not_refused(tmp_path: Path) -> None:
    """BrainFlow's rows are float64; a float32 stream stores them rounded, NaN and inf included."""
    path = tmp_path / "rounded.xdf"
    values = np.array([[0.1, np.nan], [1e-300, -np.inf], [1 / 3, 2.5]])
    with XdfWriter(path) as writer:
        writer.add_stream(1, info_xml("f32", "float32", 2, 10.0))
        writer.write_samples(1, np.array([0.0, 0.1, 0.2]), values)
        writer.write_footer(1)
    stream = load_raw(path)["f32"]
    assert stream["time_series"].dtype == np.float32
    np.testing.assert_array_equal(stream["time_series"], values.astype(np.float32))


def test_values_that_do_not_fit_are_refused_with_the_reason(tmp_path: Path) -> None:
    with XdfWriter(tmp_path / "refused.xdf") as writer:
        writer.add_stream(1, info_xml("ints", "int16", 2, 10.0))
        writer.add_stream(2, info_xml("eeg", "double64", 2, 10.0))
        for stream_id, values, message in (
            (1, np.array([[1.0, np.nan]]), "stream 'ints' (int16): values contain NaN or inf"),
            (1, np.array([[np.inf, 1.0]], dtype=np.float32), "stream 'ints' (int16): values contain NaN or inf"),
            (1, np.array([[1 + 2j, 0]]), "stream 'ints' (int16): values must be numeric, got dtype complex128"),
            (2, np.array([["a", "b"]]), "stream 'eeg' (double64): values must be numeric, got dtype <U1"),
            (
                2,
                np.array([1.0, 2.0]),
                "stream 'eeg': values must have shape (n_samples, n_channels) = (1, 2), got (2,)",
            ),
        ):
            with pytest.raises(ValueError) as caught:
                writer.write_samples(stream_id, np.array([1.0]), values)
            assert str(caught.value) == message
        with warnings.catch_warnings():  # refused with a ValueError, without a RuntimeWarning first
            warnings.simplefilter("error")
            for values in (np.array([[np.nan, 1.0]]), np.array([[1e20, 1.0]]), np.array([[0.5, 1.0]])):
                with pytest.raises(ValueError, match="^stream 'ints'"):
                    writer.write_samples(1, np.array([1.0]), values)
        with pytest.raises(ValueError) as caught:
            writer.write_samples(2, np.ones((2, 1)), np.ones((2, 2)))
        assert str(caught.value) == "stream 'eeg': timestamps must be 1-D, got shape (2, 1)"
        writer.write_footer(1)
        writer.write_footer(2)
    assert all(len(s["time_stamps"]) == 0 for s in load_raw(tmp_path / "refused.xdf").values())


def test_string_samples_of_the_wrong_shape_are_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "strings.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, info_xml("markers", "string", 1, 0.0))
        stamps = np.array([1.0, 2.0])
        for values, message in (
            ([["a"]], "values must be a sequence of 2 samples, each a sequence of 1 str/bytes"),
            ("ab", "values must be a sequence of 2 samples, each a sequence of 1 str/bytes"),
            (["a", "b"], "sample 0 must be a sequence of 1 str/bytes, got str"),
            ([["a"], 5], "sample 1 must be a sequence of 1 str/bytes, got int"),
            ([["a"], ["b", "c"]], "sample 1 has 2 values, expected 1"),
            ([[5], ["b"]], "sample 0 holds a int, expected str or bytes"),
        ):
            with pytest.raises(ValueError) as caught:
                writer.write_samples(1, stamps, values)
            assert str(caught.value) == f"stream 'markers' (string): {message}"
        writer.write_samples(1, stamps, (("a",), np.array(["b"])))
        writer.write_footer(1)
    assert load_raw(path)["markers"]["time_series"] == [["a"], ["b"]]


def test_stream_ids_span_exactly_the_unsigned_32_bit_range(tmp_path: Path) -> None:
    path = tmp_path / "ids.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, EEG)
        for bad in ("1", 1.0, -1, 2**32):
            with pytest.raises(ValueError) as caught:
                writer.add_stream(bad, MARKERS)  # type: ignore[arg-type]
            assert str(caught.value) == f"stream_id must be an integer in 0..4294967295, got {bad!r}"
        writer.add_stream(np.uint32(0xFFFFFFFF), MARKERS)
        writer.add_stream(0, info_xml("zero", "int8", 1, 0.0))
        for stream_id in (1, 0xFFFFFFFF, 0):
            writer.write_footer(stream_id)
    streams = load_raw(path)
    assert {name: s["info"]["stream_id"] for name, s in streams.items()} == {
        "eeg": 1,
        "markers": 0xFFFFFFFF,
        "zero": 0,
    }


def test_misuse_messages_name_the_stream_and_what_was_refused(tmp_path: Path) -> None:
    path = tmp_path / "misuse.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, EEG)
        writer.add_stream(2, MARKERS)
        for call, message in (
            (
                lambda: writer.write_samples(9, np.array([1.0]), np.zeros((1, 3))),
                "cannot write samples for stream id 9: no StreamHeader was written for it "
                "(known ids: [1, 2]); call add_stream() first",
            ),
            (
                lambda: writer.write_clock_offset(9, 1.0, 0.0),
                "cannot write a clock offset for stream id 9: no StreamHeader was written for it "
                "(known ids: [1, 2]); call add_stream() first",
            ),
            (
                lambda: writer.write_footer(9),
                "cannot write a footer for stream id 9: no StreamHeader was written for it "
                "(known ids: [1, 2]); call add_stream() first",
            ),
            (lambda: writer.stream_stats(9), "unknown stream id 9 (known: [1, 2])"),
            (lambda: writer.add_stream(2, EEG), "stream id 2 is already used by 'markers'"),
        ):
            with pytest.raises(XdfWriterError) as caught:
                call()
            assert str(caught.value) == message
        writer.write_footer(1)
        for call, what in (
            (lambda: writer.write_samples(1, np.array([1.0]), np.zeros((1, 3))), "samples"),
            (lambda: writer.write_clock_offset(1, 1.0, 0.0), "a clock offset"),
            (lambda: writer.write_footer(1), "a footer"),
        ):
            with pytest.raises(XdfWriterError) as caught:
                call()
            assert (
                str(caught.value)
                == f"cannot write {what} for stream id 1 ('eeg'): its StreamFooter was already written"
            )
        writer.write_footer(2)


class FooterWhileConverting:
    """Values whose conversion writes the stream's footer: another thread doing so while the samples
    are packed (outside the lock), made deterministic."""

    def __init__(self, writer: XdfWriter, stream_id: int) -> None:
        self.writer, self.stream_id = writer, stream_id

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        self.writer.write_footer(self.stream_id)
        return np.zeros((1, 3), dtype=np.float32)


def test_samples_are_refused_if_the_footer_was_written_while_they_were_packed(tmp_path: Path) -> None:
    path = tmp_path / "race.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, EEG)
        writer.write_samples(1, np.array([1.0]), np.ones((1, 3)))
        with pytest.raises(XdfWriterError) as caught:
            writer.write_samples(1, np.array([2.0]), FooterWhileConverting(writer, 1))
        assert str(caught.value) == "cannot write samples for stream id 1 ('eeg'): its StreamFooter was already written"
    stream = load_raw(path)["eeg"]
    np.testing.assert_array_equal(stream["time_stamps"], [1.0])
    assert stream["footer"]["info"]["sample_count"] == ["1"]


def footer_xml(path: Path, footer_start: int) -> str:
    """The XML of the StreamFooter chunk that starts at ``footer_start``."""
    data = path.read_bytes()[footer_start:]
    width = data[0]
    length = int.from_bytes(data[1 : 1 + width], "little")
    tag, _stream_id = struct.unpack("<HI", data[1 + width : 7 + width])
    assert tag == 6
    return data[7 + width : 1 + width + length].decode("utf-8")


def test_footer_bytes_are_exact_including_zero_and_missing_timestamps(tmp_path: Path) -> None:
    """An empty stream's footer says 0 for its timestamps; a first timestamp of exactly 0.0 stays 0.0;
    the offsets follow each other without anything between them."""
    path = tmp_path / "footers.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, EEG)
        writer.add_stream(2, MARKERS)
        writer.write_samples(1, np.array([0.0, 0.5, 1.0]), np.zeros((3, 3)))
        writer.write_clock_offset(1, 0.25, -0.5)
        writer.write_clock_offset(1, 1.25, 0.125)
        first = writer.bytes_written
        writer.write_footer(1)
        second = writer.bytes_written
        writer.write_footer(2)
        assert footer_xml(path, first) == (
            '<?xml version="1.0"?><info><first_timestamp>0.0</first_timestamp>'
            "<last_timestamp>1.0</last_timestamp><sample_count>3</sample_count>"
            "<measured_srate>2.0</measured_srate><clock_offsets>"
            "<offset><time>0.25</time><value>-0.5</value></offset>"
            "<offset><time>1.25</time><value>0.125</value></offset>"
            "</clock_offsets></info>"
        )
        assert footer_xml(path, second) == (
            '<?xml version="1.0"?><info><first_timestamp>0.0</first_timestamp>'
            "<last_timestamp>0.0</last_timestamp><sample_count>0</sample_count>"
            "<measured_srate>0.0</measured_srate><clock_offsets></clock_offsets></info>"
        )
    streams = load_raw(path)
    assert streams["eeg"]["footer"]["info"]["first_timestamp"] == ["0.0"]
    assert streams["markers"]["footer"]["info"]["last_timestamp"] == ["0.0"]


def test_the_log_says_what_was_added_footed_and_left_without_footer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    footed = tmp_path / "footed.xdf"
    with XdfWriter(footed) as writer:
        writer.add_stream(1, EEG)
        writer.write_samples(1, np.array([1.0, 2.0]), np.zeros((2, 3)))
        writer.write_footer(1)
    unfooted = tmp_path / "unfooted.xdf"
    with XdfWriter(unfooted) as writer:
        writer.add_stream(4, EEG)
        writer.add_stream(3, MARKERS)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, f"opened XDF file {footed}"),
        (logging.DEBUG, "stream 1 (eeg, float32 x3) added"),
        (logging.DEBUG, "footer of stream 1 (eeg): 2 samples"),
        (logging.DEBUG, f"opened XDF file {unfooted}"),
        (logging.DEBUG, "stream 4 (eeg, float32 x3) added"),
        (logging.DEBUG, "stream 3 (markers, string x1) added"),
        (logging.WARNING, f"{unfooted} closed without footers for stream ids [3, 4]"),
    ]
