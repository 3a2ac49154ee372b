"""xdfinspect: strict chunk-by-chunk validation of XDF files, and the ``dyadlab inspect`` command.

The oracle for truncation is the writer itself: ``XdfWriter.bytes_written`` after each call gives
every chunk boundary of the file, independently of the inspector's own parsing.
"""

from __future__ import annotations

import gc
import io
import json
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf
from click.testing import CliRunner

from dyadlab.acquisition.cli.inspect_command import inspect as inspect_command
from dyadlab.acquisition.xdf import XdfWriter, encode_varlen
from dyadlab.acquisition.xdfinspect import inspect_xdf

DATA = Path(__file__).parent.parent / "data"
LABRECORDER_FIXTURE = DATA / "labrecorder_eeg_markers.xdf"


def small_info(name: str, channel_format: str, channel_count: int, srate: float) -> str:
    """A compact but complete stream info XML, so the every-byte test file stays ~1.5 KB."""
    return (
        f'<?xml version="1.0"?><info><name>{name}</name><type>T</type>'
        f"<channel_count>{channel_count}</channel_count><channel_format>{channel_format}</channel_format>"
        f"<source_id>dyadlab.test.{name}</source_id><nominal_srate>{srate}</nominal_srate><desc/></info>"
    )


@dataclass
class Chunk:
    kind: str
    start: int
    end: int
    counts: dict[int, int]  # samples per stream id once this chunk is complete


def write_small_recording(path: Path) -> list[Chunk]:
    """Two streams (int16 x2 at 100 Hz, string markers), offsets, a boundary and footers.

    Returns every chunk with its byte range, as measured by the writer.
    """
    chunks: list[Chunk] = []
    counts = {1: 0, 2: 0}
    with XdfWriter(path, file_metadata={"study": "unit", "dyad": "d01"}) as writer:

        def record(kind: str, start: int) -> None:
            chunks.append(Chunk(kind, start, writer.bytes_written, dict(counts)))

        chunks.append(Chunk("FileHeader", 4, writer.bytes_written, dict(counts)))
        start = writer.bytes_written
        writer.add_stream(1, small_info("eeg", "int16", 2, 100.0))
        record("StreamHeader", start)
        start = writer.bytes_written
        writer.add_stream(2, small_info("mk", "string", 1, 0.0))
        record("StreamHeader", start)
        start = writer.bytes_written
        writer.write_clock_offset(1, 10.0, -1e-5)
        record("ClockOffset", start)
        start = writer.bytes_written
        writer.write_samples(1, 10.0 + np.arange(5) / 100.0, np.arange(10).reshape(5, 2))
        counts[1] += 5
        record("Samples", start)
        start = writer.bytes_written
        writer.write_samples(2, np.array([10.01, 10.03]), [['{"event": "trial_start"}'], [""]])
        counts[2] += 2
        record("Samples", start)
        start = writer.bytes_written
        writer.write_boundary()
        record("Boundary", start)
        start = writer.bytes_written
        writer.write_samples(1, 10.05 + np.arange(5) / 100.0, -np.arange(10).reshape(5, 2))
        counts[1] += 5
        record("Samples", start)
        start = writer.bytes_written
        writer.write_samples(2, np.array([10.08]), [["Grüße ✓"]])
        counts[2] += 1
        record("Samples", start)
        for stream_id in (1, 2, 2):
            start = writer.bytes_written
            writer.write_clock_offset(stream_id, 10.1, -2e-5)
            record("ClockOffset", start)
        for stream_id in (1, 2):
            start = writer.bytes_written
            writer.write_footer(stream_id)
            record("StreamFooter", start)
    return chunks


@pytest.fixture
def small_file(tmp_path: Path) -> tuple[bytes, list[Chunk]]:
    path = tmp_path / "small.xdf"
    chunks = write_small_recording(path)
    data = path.read_bytes()
    assert chunks[-1].end == len(data)
    return data, chunks


def inspect_bytes(data: bytes):
    return inspect_xdf(io.BytesIO(data))


def test_complete_file_is_valid_and_summarised(small_file: tuple[bytes, list[Chunk]], tmp_path: Path) -> None:
    data, chunks = small_file
    path = tmp_path / "complete.xdf"
    path.write_bytes(data)
    result = inspect_xdf(path)
    assert result.valid and result.complete, result.defect
    assert result.warnings == []
    assert result.file_header["study"] == "unit" and result.file_header["version"] == "1.0"
    assert result.chunk_count == len(chunks)
    assert result.chunk_counts == {
        "FileHeader": 1,
        "StreamHeader": 2,
        "ClockOffset": 4,
        "Samples": 4,
        "Boundary": 1,
        "StreamFooter": 2,
    }
    eeg, markers = result.streams
    assert (eeg.stream_id, eeg.name, eeg.type, eeg.source_id) == (1, "eeg", "T", "dyadlab.test.eeg")
    assert (eeg.channel_format, eeg.channel_count, eeg.nominal_srate) == ("int16", 2, 100.0)
    assert eeg.sample_count == 10 and eeg.footer_sample_count == 10 and eeg.has_footer
    assert eeg.first_timestamp == 10.0 and eeg.last_timestamp == pytest.approx(10.09)
    assert eeg.duration == pytest.approx(0.09) and eeg.effective_srate == pytest.approx(100.0)
    assert (eeg.clock_offset_count, eeg.clock_offset_min, eeg.clock_offset_max) == (2, -2e-5, -1e-5)
    assert eeg.gap_count == 0 and eeg.non_monotonic_count == 0
    assert markers.sample_count == 3 and markers.clock_offset_count == 2 and markers.channel_format == "string"
    as_dict = result.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["valid"] is True and as_dict["streams"][0]["sample_count"] == 10


def test_every_truncation_length_is_reported_cleanly(small_file: tuple[bytes, list[Chunk]]) -> None:
    data, chunks = small_file
    ends = {chunk.end: index for index, chunk in enumerate(chunks)}
    for length in range(len(data) + 1):
        result = inspect_bytes(data[:length])
        context = f"cut at {length} of {len(data)}"
        if length < 4:
            assert not result.valid, context
            assert result.defect.byte_offset == 0 and result.defect.chunk_index is None, context
            assert "magic" in result.defect.message, context
        elif length == 4:
            assert not result.valid and "FileHeader chunk is missing" in result.defect.message, context
        elif length in ends:
            index = ends[length]
            assert result.valid, f"{context}: {result.defect}"
            assert result.chunk_count == index + 1, context
            headers_read = sum(c.kind == "StreamHeader" for c in chunks[: index + 1])
            expected = {sid: n for sid, n in chunks[index].counts.items() if sid <= headers_read}
            assert {s.stream_id: s.sample_count for s in result.streams} == expected, context
            assert result.complete == (length == len(data)), context
            if not result.complete and result.streams:
                assert any(f"ends cleanly after chunk #{index}" in w for w in result.warnings), context
        else:
            index = next(i for i, c in enumerate(chunks) if c.start < length < c.end)
            chunk = chunks[index]
            assert not result.valid, context
            assert result.defect.chunk_index == index, f"{context}: {result.defect}"
            assert result.defect.byte_offset == chunk.start, f"{context}: {result.defect}"
            assert "truncated" in result.defect.message, f"{context}: {result.defect}"
            width = data[chunk.start]
            if length >= chunk.start + 1 + width + 2:  # the tag was read: the type is named
                missing = chunk.end - length
                assert f"truncated {chunk.kind} chunk" in result.defect.message, context
                assert f"({missing} bytes missing)" in result.defect.message, context


def test_cuts_at_chunk_boundaries_agree_with_pyxdf(small_file: tuple[bytes, list[Chunk]], tmp_path: Path) -> None:
    data, chunks = small_file
    for index, chunk in enumerate(chunks[2:], start=2):  # from the first StreamHeader on
        path = tmp_path / f"cut{index}.xdf"
        path.write_bytes(data[: chunk.end])
        streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
        expected = {int(s["info"]["stream_id"]): len(s["time_stamps"]) for s in streams}
        result = inspect_xdf(path)
        assert {s.stream_id: s.sample_count for s in result.streams} == expected


@pytest.mark.parametrize("kind", ["FileHeader", "StreamHeader", "Samples", "ClockOffset", "Boundary", "StreamFooter"])
def test_truncation_inside_each_chunk_type(kind: str, small_file: tuple[bytes, list[Chunk]], tmp_path: Path) -> None:
    data, chunks = small_file
    index, chunk = next((i, c) for i, c in enumerate(chunks) if c.kind == kind)
    cut = (chunk.start + chunk.end) // 2 + 1
    path = tmp_path / f"cut-{kind}.xdf"
    path.write_bytes(data[:cut])
    result = inspect_xdf(path)
    assert not result.valid
    assert result.defect.chunk_index == index
    assert result.defect.byte_offset == chunk.start
    assert f"truncated {kind} chunk" in result.defect.message
    assert f"({chunk.end - cut} bytes missing)" in result.defect.message
    assert f"byte {chunk.start}, chunk #{index}" in str(result.defect)


def corrupt(data: bytes, offset: int, replacement: bytes) -> bytes:
    return data[:offset] + replacement + data[offset + len(replacement) :]


def id_offset(data: bytes, chunk: Chunk) -> int:
    """Offset of a chunk's StreamId: after the width byte, the length and the tag."""
    return chunk.start + 1 + data[chunk.start] + 2


def first(chunks: list[Chunk], kind: str, nth: int = 0) -> tuple[int, Chunk]:
    return [(i, c) for i, c in enumerate(chunks) if c.kind == kind][nth]


def test_corrupted_length_width_tag_and_stream_id(small_file: tuple[bytes, list[Chunk]]) -> None:
    data, chunks = small_file
    index, samples = first(chunks, "Samples")

    result = inspect_bytes(corrupt(data, samples.start, b"\x03"))
    assert result.defect.message.startswith("invalid length-field width 3")
    assert (result.defect.byte_offset, result.defect.chunk_index) == (samples.start, index)
    assert result.streams[0].sample_count == 0  # nothing after the defect is counted

    result = inspect_bytes(corrupt(data, samples.start + 2, struct.pack("<H", 9)))
    assert "unknown chunk tag 9" in result.defect.message and result.defect.chunk_index == index

    result = inspect_bytes(corrupt(data, id_offset(data, samples), struct.pack("<I", 77)))
    assert "Samples chunk for stream id 77, which has no StreamHeader" in result.defect.message

    offset_index, offset_chunk = first(chunks, "ClockOffset")
    result = inspect_bytes(corrupt(data, id_offset(data, offset_chunk), struct.pack("<I", 78)))
    assert "ClockOffset chunk for stream id 78" in result.defect.message
    assert result.defect.chunk_index == offset_index

    footer_index, footer = first(chunks, "StreamFooter")
    result = inspect_bytes(corrupt(data, id_offset(data, footer), struct.pack("<I", 79)))
    assert "StreamFooter chunk for stream id 79" in result.defect.message


def test_undecodable_samples(small_file: tuple[bytes, list[Chunk]]) -> None:
    data, chunks = small_file
    index, samples = first(chunks, "Samples")
    # content: len(1) len tag(2) id(4) count(2) then the first sample's timestamp byte
    result = inspect_bytes(corrupt(data, samples.start + 10, b"\x05"))
    assert "cannot be decoded: sample 0 has timestamp byte 5" in result.defect.message
    assert result.defect.chunk_index == index
    # announce 6 samples where there are 5
    result = inspect_bytes(corrupt(data, samples.start + 9, b"\x06"))
    assert "announces 6 samples but ends after 5" in result.defect.message
    # a corrupted 8-byte sample count must be refused before anything is allocated for it
    huge = chunk(3, b"\x08" + struct.pack("<Q", 2**60) + bytes(13), 1)
    result = inspect_bytes(data[: samples.start] + huge)
    assert f"announces {2**60} samples, but 13 bytes cannot hold more than 2" in result.defect.message
    # a string length that runs past the chunk
    _, strings = first(chunks, "Samples", 1)
    result = inspect_bytes(corrupt(data, strings.start + 10 + 9 + 1, b"\xff"))
    assert "string of 255 bytes runs past the chunk" in result.defect.message


def test_structural_defects(small_file: tuple[bytes, list[Chunk]]) -> None:
    data, chunks = small_file
    assert "not an XDF file" in inspect_bytes(b"XDFX" + data[4:]).defect.message
    assert inspect_bytes(b"").defect.message.startswith("file is 0 bytes long")
    assert "gzip-compressed" in inspect_bytes(b"\x1f\x8b\x08\x00rest").defect.message

    header = data[4 : chunks[0].end]
    result = inspect_bytes(data + header)
    assert "a second FileHeader" in result.defect.message and result.defect.chunk_index == len(chunks)

    _, stream_header = first(chunks, "StreamHeader")
    result = inspect_bytes(data[:4] + data[stream_header.start :])
    assert "must start with its FileHeader" in result.defect.message

    result = inspect_bytes(data[: chunks[2].end] + data[stream_header.start : stream_header.end])
    assert "second StreamHeader for stream id 1" in result.defect.message

    broken = corrupt(data, data.index(b"<name>"), b"<name ")
    assert "StreamHeader XML does not parse" in inspect_bytes(broken).defect.message

    declared = b'<?xml version="1.0" encoding="zz"?><info>  '
    bad_encoding = data.replace(b'<?xml version="1.0"?><info><name>eeg</name>', declared, 1)
    assert len(bad_encoding) == len(data)
    result = inspect_bytes(bad_encoding)
    assert "StreamHeader XML does not parse (unknown encoding: zz)" in result.defect.message

    no_format = data.replace(b"<channel_format>int16</channel_format>", b"<channel_fxrmat>int16</channel_fxrmat>")
    assert "lacks <channel_format>" in inspect_bytes(no_format).defect.message

    _, offset = first(chunks, "ClockOffset")
    short_offset = b"\x01\x12\x04\x00" + struct.pack("<I", 1) + bytes(12)
    result = inspect_bytes(data[: offset.start] + short_offset + data[offset.end :])
    assert "has 12 content bytes instead of 16" in result.defect.message

    _, boundary = first(chunks, "Boundary")
    result = inspect_bytes(corrupt(data, boundary.start + 4, b"\x00"))
    assert "does not hold the Boundary UUID" in result.defect.message

    _, eeg_samples = first(chunks, "Samples")
    missing_chunk = data[: eeg_samples.start] + data[eeg_samples.end :]
    result = inspect_bytes(missing_chunk)
    assert "says sample_count 10, but 5 samples were read" in result.defect.message
    assert "off-by-one" not in result.defect.message

    result = inspect_bytes(data + data[eeg_samples.start : eeg_samples.end])
    assert "Samples for stream 1 ('eeg') after its StreamFooter" in result.defect.message
    assert result.defect.byte_offset == len(data)

    _, footer = first(chunks, "StreamFooter")
    result = inspect_bytes(data + data[footer.start : footer.end])
    assert "second StreamFooter for stream 1" in result.defect.message

    assert "chunk length 0 is too small" in inspect_bytes(data + b"\x01\x00").defect.message


def test_unreadable_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        inspect_xdf(tmp_path / "missing.xdf")


def test_timestamp_warnings_gaps_and_missing_offsets(tmp_path: Path) -> None:
    path = tmp_path / "gaps.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(5, small_info("eeg", "float32", 1, 100.0))
        writer.add_stream(6, small_info("jitter", "double64", 1, 0.0))
        writer.write_samples(5, np.arange(100) / 100.0, np.zeros((100, 1)))
        writer.write_samples(5, 2.0 + np.arange(100) / 100.0, np.zeros((100, 1)))  # 1.01 s gap
        writer.write_samples(5, 2.5 + np.arange(3) / 100.0, np.zeros((3, 1)))  # goes backwards
        writer.write_samples(6, np.array([1.0, 0.5, 3.0]), np.zeros((3, 1)))
        writer.write_footer(5)
        writer.write_footer(6)
    result = inspect_xdf(path)
    assert result.valid and result.complete
    eeg, irregular = result.streams
    assert eeg.gap_count == 1 and eeg.largest_gap == pytest.approx(1.01)
    assert eeg.non_monotonic_count == 1 and irregular.non_monotonic_count == 1
    assert irregular.gap_count == 0 and irregular.largest_gap is None  # no gaps for irregular streams
    warnings = "\n".join(result.warnings)
    assert "stream 5 ('eeg'): timestamps go backwards 1 time(s), first at t=2.5" in warnings
    assert "stream 6 ('jitter'): no clock offsets" in warnings


def chunk(tag: int, content: bytes, stream_id: int | None = None) -> bytes:
    """Test-side chunk builder, written out from the specification, independent of the writer."""
    head = struct.pack("<H", tag) + (b"" if stream_id is None else struct.pack("<I", stream_id))
    return encode_varlen(len(head) + len(content)) + head + content


def test_deduced_timestamps_and_four_byte_counts_match_pyxdf(tmp_path: Path) -> None:
    """A file in LabRecorder's style: 0-byte timestamps, 4-byte sample counts, 4-byte lengths."""
    path = tmp_path / "deduced.xdf"
    header = b'<?xml version="1.0"?><info><version>1.0</version></info>'
    samples = b""
    for index in range(40):
        stamp = b"\x08" + struct.pack("<d", 5.0 + index * 0.1) if index % 3 == 0 else b"\x00"
        samples += stamp + struct.pack("<hh", index, -index)
    strings = (
        b"\x08" + struct.pack("<d", 5.05) + b"\x01\x02hi" + b"\x00" + b"\x04" + struct.pack("<I", 300) + b"z" * 300
    )
    footer = b"<info><sample_count>40</sample_count><first_timestamp>5.0</first_timestamp></info>"
    data = (
        b"XDF:"
        + chunk(1, header)
        + chunk(2, small_info("ded", "int16", 2, 10.0).encode(), 2)
        + chunk(2, small_info("dmk", "string", 1, 20.0).encode(), 9)
        + chunk(3, b"\x04" + struct.pack("<I", 40) + samples, 2)
        + chunk(3, b"\x01\x02" + strings, 9)
        + chunk(4, struct.pack("<dd", 5.0, 0.001), 2)
        + chunk(4, struct.pack("<dd", 8.0, 0.002), 2)
        + chunk(6, footer, 2)
    )
    path.write_bytes(data)
    eeg_samples_start = data.index(b"\x04" + struct.pack("<I", 40) + b"\x08") - 1 - 6 - 4
    assert data[eeg_samples_start] == 4  # this chunk is longer than 255 bytes: 4-byte length

    result = inspect_xdf(path)
    assert result.valid, result.defect
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    by_id = {int(s["info"]["stream_id"]): s for s in streams}
    for summary in result.streams:
        stamps = by_id[summary.stream_id]["time_stamps"]
        assert summary.sample_count == len(stamps)
        assert summary.first_timestamp == stamps[0] and summary.last_timestamp == stamps[-1]
    assert result.streams[0].deduced_timestamp_count == 40 - 14
    assert result.streams[1].deduced_timestamp_count == 1
    off_by_one = inspect_bytes(data.replace(b"<sample_count>40<", b"<sample_count>41<"))
    assert "says sample_count 41, but 40 samples were read (an off-by-one" in off_by_one.defect.message

    no_first_stamp = data[: data.index(chunk(3, b"\x01\x02" + strings, 9))] + chunk(3, b"\x01\x01\x00\x01\x01x", 9)
    result = inspect_bytes(no_first_stamp)
    assert "sample 0 is the stream's first and has no timestamp" in result.defect.message


def check_against_pyxdf(path: Path) -> None:
    result = inspect_xdf(path)
    assert result.valid, result.defect
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    assert len(streams) == len(result.streams)
    by_id = {int(s["info"]["stream_id"]): s for s in streams}
    for summary in result.streams:
        raw = by_id[summary.stream_id]
        assert summary.sample_count == len(raw["time_stamps"]) > 0
        assert summary.first_timestamp == raw["time_stamps"][0]
        assert summary.last_timestamp == raw["time_stamps"][-1]
        if "footer" in raw:
            assert summary.footer_sample_count == int(raw["footer"]["info"]["sample_count"][0])
    eeg = next(s for s in result.streams if s.type == "EEG")
    assert eeg.deduced_timestamp_count > 0  # LabRecorder compresses timestamps


def test_labrecorder_fixture_agrees_with_pyxdf() -> None:
    """A file written by LabRecorder (labrecorder 1.0.0rc0), stored in tests/data."""
    check_against_pyxdf(LABRECORDER_FIXTURE)


def record_with_labrecorder(path: Path, unique: str, seconds: float) -> None:
    """Record a 4-channel 250 Hz EEG outlet and a string marker outlet with in-process LabRecorder."""
    labrecorder = pytest.importorskip("labrecorder")
    eeg = pylsl.StreamOutlet(pylsl.StreamInfo(f"lr-eeg-{unique}", "EEG", 4, 250.0, "float32", f"lr.eeg.{unique}"))
    markers = pylsl.StreamOutlet(pylsl.StreamInfo(f"lr-mk-{unique}", "Markers", 1, 0.0, "string", f"lr.mk.{unique}"))
    infos = []
    for source_id in (f"lr.eeg.{unique}", f"lr.mk.{unique}"):
        found = pylsl.resolve_byprop("source_id", source_id, 1, 10.0)
        assert found, f"outlet {source_id} not resolvable on loopback"
        infos += found
    recording = labrecorder.Recording(str(path), infos)
    try:
        time.sleep(1.0)  # LabRecorder opens inlets asynchronously; let them connect first
        start = pylsl.local_clock()
        pushed = 0
        rng = np.random.default_rng(1)
        while pylsl.local_clock() - start < seconds:
            due = int((pylsl.local_clock() - start) * 250.0) - pushed
            if due > 0:
                stamps = start + (pushed + np.arange(due)) / 250.0
                eeg.push_chunk(rng.normal(size=(due, 4)).astype(np.float32).tolist(), stamps.tolist())
                pushed += due
            markers.push_sample([f"marker ✓ {pushed}"])
            time.sleep(0.1)
        time.sleep(0.7)  # LabRecorder pulls every 500 ms and drops what is buffered at stop
    finally:
        recording.stop()
        del recording
        gc.collect()
        del eeg, markers


@pytest.mark.integration
def test_live_labrecorder_recording_agrees_with_pyxdf(tmp_path: Path, unique_id: str) -> None:
    path = tmp_path / "labrecorder.xdf"
    record_with_labrecorder(path, unique_id, seconds=2.0)
    check_against_pyxdf(path)


def test_cli_table_json_and_exit_codes(small_file: tuple[bytes, list[Chunk]], tmp_path: Path) -> None:
    data, chunks = small_file
    good = tmp_path / "good.xdf"
    good.write_bytes(data)
    runner = CliRunner()

    result = runner.invoke(inspect_command, [str(good)])
    assert result.exit_code == 0, result.output
    assert "eeg" in result.output and "int16" in result.output and "valid" in result.output.lower()

    result = runner.invoke(inspect_command, [str(good), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output) == inspect_xdf(good).to_dict()

    bad = tmp_path / "bad.xdf"
    _, samples = first(chunks, "Samples")
    bad.write_bytes(data[: samples.start + 12])
    result = runner.invoke(inspect_command, [str(bad)])
    assert result.exit_code == 1
    assert "truncated Samples chunk" in result.output and f"byte {samples.start}" in result.output

    result = runner.invoke(inspect_command, [str(bad), "--json"])
    assert result.exit_code == 1 and json.loads(result.output)["defect"]["byte_offset"] == samples.start

    result = runner.invoke(inspect_command, [str(tmp_path / "nope.xdf")])
    assert result.exit_code == 2
    assert "nope.xdf" in result.output
    assert runner.invoke(inspect_command, [str(tmp_path)]).exit_code == 2  # a directory


def test_random_corruption_never_raises(small_file: tuple[bytes, list[Chunk]]) -> None:
    """Flipped, inserted and deleted bytes anywhere: always a report, never an exception."""
    data, _ = small_file
    rng = np.random.default_rng(20261126)
    defects = 0
    for _ in range(1500):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            position = int(rng.integers(4, len(mutated)))
            action = rng.integers(3)
            if action == 0:
                mutated[position] = int(rng.integers(256))
            elif action == 1:
                mutated.insert(position, int(rng.integers(256)))
            else:
                del mutated[position]
        result = inspect_bytes(bytes(mutated))
        if not result.valid:
            defects += 1
            assert 0 <= result.defect.byte_offset <= len(mutated)
            assert result.defect.message
        json.dumps(result.to_dict())
    assert defects > 1300, defects  # most random damage must be detected
