"""The XDF reader on damaged files: every diagnostic word for word, and pyxdf's reading.

Each test writes a small recording with the independent writer (``independent_xdf``), damages it
by byte surgery at chunk boundaries (a chunk inserted, replaced, removed, or the file cut), and
checks what the reader says: the whole text of the error or problem, with the chunk number and
byte offsets computed here from the bytes written (a chunk's number is its place in the file,
the FileHeader being chunk #0). Where the reader reads the file, its reading must be pyxdf's
(``load_xdf`` with clock synchronisation, without de-jittering) bit for bit. Found by mutation
testing (docs/testing.md, issue #18): none of these messages were asserted before.
"""

from __future__ import annotations

import logging
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from dyadlab.synchrony import xdfreader
from tests.synchrony.independent_xdf import Stream, Writer
from tests.synchrony.test_xdfreader import BLOCK_SIZES, _assert_streams_equal, _dyad, _pyxdf
from tests.synchrony.test_xdfreader_edges import _vanished

# Chunk tags of the XDF 1.0 specification (written out here, not taken from dyadlab).
FILE_HEADER, STREAM_HEADER, SAMPLES, CLOCK_OFFSET, BOUNDARY, STREAM_FOOTER = 1, 2, 3, 4, 5, 6
UNDEFINED_TAG = 7  # no chunk of XDF 1.0: a reader skips it
EEG_ID, MARKERS_ID = 1, 3
# Where damage is inserted: before the third Samples chunk, so that a wrong chunk count (starting
# at 1, counting by 2, stuck at 1) shows in the messages.
DAMAGED_SAMPLES_CHUNK = 2


class WideCountStream(Stream):
    """Samples chunks whose NumSamples field is 4 or 8 bytes wide (alternately): valid XDF that
    the writer of this test suite otherwise never writes (it uses 1 byte below 256 samples)."""

    def sample_chunks(self):
        for k, (order, content) in enumerate(super().sample_chunks()):
            assert content[0] == 1, "chunks of fewer than 256 samples"
            width = (4, 8)[k % 2]
            yield order, bytes([width]) + content[1].to_bytes(width, "little") + content[2:]


def _streams(footer: bool = True, eeg_class: type[Stream] = Stream) -> list[Stream]:
    """Four channels of float32 EEG at 128 Hz (96 samples in chunks of 16) with a sender clock
    0.25 s off, and four string markers."""
    rng = np.random.default_rng(18)
    n = 96
    stamps = 1000.0 + np.arange(n) / 128.0
    eeg = eeg_class(
        EEG_ID,
        "amp-A",
        "EEG",
        "float32",
        128.0,
        rng.standard_normal((n, 4)).astype(np.float32),
        stamps,
        [16] * 6,
        offsets=[(1000.0 + t, 0.25 + 1e-6 * t) for t in (0.0, 0.3, 0.6)],
        footer=footer,
    )
    markers = Stream(
        MARKERS_ID,
        "events",
        "Markers",
        "string",
        0.0,
        [["rest_on"], ["rest_off"], ["coop_on"], ["coop_off"]],
        1000.0 + np.array([0.1, 0.3, 0.5, 0.7]),
        [1, 1, 1, 1],
        offsets=[(1000.0, 0.0), (1000.5, 0.0)],
        footer=footer,
    )
    return [eeg, markers]


def _recording(path: Path, streams: list[Stream], wide_lengths: bool = False) -> list[tuple[int, int]]:
    """Write ``streams`` to ``path``; (byte offset, tag) of every chunk, in file order."""
    writer = Writer(wide_lengths=wide_lengths)
    writer.write(path, streams)
    return writer.offsets


def _chunk(tag: int, content: bytes, stream_id: int | None = None) -> bytes:
    """One chunk, ``[1][length][tag][stream id][content]`` (a 1-byte length field)."""
    body = struct.pack("<H", tag) + (b"" if stream_id is None else struct.pack("<I", stream_id)) + content
    assert len(body) < 256
    return bytes([1, len(body)]) + body


def _string_sample(text: str, stamp: float) -> bytes:
    raw = text.encode()
    return b"\x08" + struct.pack("<d", stamp) + bytes([1, len(raw)]) + raw


def _samples_chunk_offset(offsets: list[tuple[int, int]], which: int) -> tuple[int, int]:
    """(chunk number, byte offset) of the ``which``-th Samples chunk."""
    number = [k for k, (_, tag) in enumerate(offsets) if tag == SAMPLES][which]
    return number, offsets[number][0]


def _stream_id(chunk: bytes) -> int:
    """The stream id of a chunk that has one: ``[width][length][tag][stream id]...``."""
    width = chunk[0]
    return int.from_bytes(chunk[3 + width : 7 + width], "little")


def _insert(path: Path, at: int, chunk: bytes) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:at] + chunk + data[at:])


def _assert_reads_as_pyxdf(path: Path, reference_path: Path | None = None) -> None:
    """The reader's result (streams and file header) is pyxdf's reading of ``reference_path``
    (default: the same file), for every block size."""
    reference, header = _pyxdf(reference_path or path)
    for block_bytes in BLOCK_SIZES:
        ours, our_header = xdfreader.load_xdf(path, block_bytes=block_bytes)
        assert our_header == header
        _assert_streams_equal(reference, ours)


def _parse_error(xml: bytes) -> str:
    """The XML parser's own message for ``xml`` (the reader quotes it)."""
    with pytest.raises(ET.ParseError) as caught:
        ET.fromstring(xml.decode("utf-8", "replace"))
    return str(caught.value)


# -- damage the index refuses: the caller falls back to pyxdf ----------------------------------
# Each case: the chunk inserted before the third Samples chunk, and the message expected with
# {n} its chunk number and {p} its byte offset.
REFUSED = {
    "stream chunk shorter than its stream id": (
        bytes([1, 5]) + struct.pack("<H", SAMPLES) + struct.pack("<I", EEG_ID)[:3],
        "chunk #{n} (Samples) at byte {p} is 5 bytes long",
    ),
    "samples of an undeclared stream": (
        _chunk(SAMPLES, b"\x01\x00", stream_id=9),
        "chunk #{n} (Samples) of stream 9 precedes its header",
    ),
    "Samples chunk without its NumSamples field": (
        _chunk(SAMPLES, b"", stream_id=EEG_ID),
        "chunk #{n} (Samples) at byte {p}: bad sample count",
    ),
    "NumSamples field of width 3": (
        _chunk(SAMPLES, b"\x03\x01\x00\x00", stream_id=EEG_ID),
        "chunk #{n} (Samples) at byte {p}: bad sample count",
    ),
    "NumSamples width 1 without its byte": (
        _chunk(SAMPLES, b"\x01", stream_id=EEG_ID),
        "chunk #{n} (Samples) at byte {p}: bad sample count",
    ),
    "NumSamples width 8 with 4 bytes": (
        _chunk(SAMPLES, b"\x08\x01\x00\x00\x00", stream_id=EEG_ID),
        "chunk #{n} (Samples) at byte {p}: bad sample count",
    ),
    "ClockOffset with one value": (
        _chunk(CLOCK_OFFSET, struct.pack("<d", 1000.0), stream_id=EEG_ID),
        "chunk #{n} (ClockOffset) at byte {p} is 14 bytes long",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_damaged_chunks_are_refused_with_their_number_and_offset(tmp_path, case):
    chunk, message = REFUSED[case]
    path = tmp_path / "damaged.xdf"
    offsets = _recording(path, _streams())
    number, at = _samples_chunk_offset(offsets, DAMAGED_SAMPLES_CHUNK)
    assert number >= 3  # FileHeader, two StreamHeaders, Samples...: the count is not trivially right
    _insert(path, at, chunk)
    with pytest.raises(xdfreader.XdfIndexError) as caught:
        xdfreader.index_xdf(path)
    assert str(caught.value) == message.format(n=number, p=at)


def test_a_second_header_for_a_stream_is_refused(tmp_path):
    path = tmp_path / "two-headers.xdf"
    offsets = _recording(path, _streams())
    first = next(k for k, (_, tag) in enumerate(offsets) if tag == STREAM_HEADER)
    header = path.read_bytes()[offsets[first][0] : offsets[first + 1][0]]
    assert _stream_id(header) == EEG_ID
    number, at = _samples_chunk_offset(offsets, DAMAGED_SAMPLES_CHUNK)
    _insert(path, at, header)
    with pytest.raises(xdfreader.XdfIndexError) as caught:
        xdfreader.index_xdf(path)
    assert str(caught.value) == f"chunk #{number}: a second StreamHeader for stream {EEG_ID}"


def test_a_samples_chunk_of_only_a_stream_id_at_the_end_of_the_file_is_refused(tmp_path):
    """The chunk's lead bytes are the last bytes of the file: its NumSamples field is missing."""
    path = tmp_path / "end.xdf"
    number = len(_recording(path, _streams()))
    at = path.stat().st_size
    _insert(path, at, _chunk(SAMPLES, b"", stream_id=EEG_ID))
    with pytest.raises(xdfreader.XdfIndexError) as caught:
        xdfreader.index_xdf(path)
    assert str(caught.value) == f"chunk #{number} (Samples) at byte {at}: bad sample count"


def test_a_file_header_that_does_not_parse_is_refused(tmp_path):
    path = tmp_path / "bad-header.xdf"
    offsets = _recording(path, _streams())
    xml = b'<?xml version="1.0"?><info><version>1.0</info>'
    data = path.read_bytes()
    path.write_bytes(data[:4] + _chunk(FILE_HEADER, xml) + data[offsets[1][0] :])
    with pytest.raises(xdfreader.XdfIndexError) as caught:
        xdfreader.index_xdf(path)
    assert str(caught.value) == f"the FileHeader XML does not parse ({_parse_error(xml)})"


# -- damage the index reads past: problems reported, pyxdf's reading ----------------------------
def test_a_footer_that_does_not_parse_is_ignored_as_pyxdf_ignores_it(tmp_path):
    path = tmp_path / "bad-footer.xdf"
    offsets = _recording(path, _streams())
    assert offsets[-1][1] == STREAM_FOOTER  # the markers' footer, written last
    xml = b'<?xml version="1.0"?><info><sample_count>4</info>'
    path.write_bytes(path.read_bytes()[: offsets[-1][0]] + _chunk(STREAM_FOOTER, xml, stream_id=MARKERS_ID))
    index = xdfreader.index_xdf(path)
    assert index.problems == [
        f"stream {MARKERS_ID}: the footer XML does not parse ({_parse_error(xml)}); the footer is ignored"
    ]
    assert index.streams[MARKERS_ID].footer is None and index.streams[EEG_ID].footer is not None
    _assert_reads_as_pyxdf(path)


def test_a_file_without_a_file_header_reads_as_pyxdf_reads_it(tmp_path):
    """No FileHeader chunk: the header is None, as pyxdf returns it."""
    path = tmp_path / "headless.xdf"
    offsets = _recording(path, _streams())
    data = path.read_bytes()
    path.write_bytes(data[:4] + data[offsets[1][0] :])
    index = xdfreader.index_xdf(path)
    assert index.file_header is None and index.problems == []
    _assert_reads_as_pyxdf(path)
    assert xdfreader.load_xdf(path)[1] is None


def test_unusual_valid_chunks_read_as_pyxdf_reads_them(tmp_path):
    """Chunks XDF allows and the writers of this suite never write: NumSamples fields 4 and 8
    bytes wide, Samples chunks without samples, a short string with an 8-byte length field, a
    Boundary of no content (2 bytes long, the least a chunk without stream id can be), a chunk of
    a tag XDF 1.0 does not define."""
    path = tmp_path / "unusual.xdf"
    streams = _streams(eeg_class=WideCountStream)
    streams[0].chunks = [16, 16, 0, 16, 16, 16, 16]  # the empty chunk is written after the others
    offsets = _recording(path, streams)
    _, at = _samples_chunk_offset(offsets, DAMAGED_SAMPLES_CHUNK)
    unusual = (
        _chunk(BOUNDARY, b"")
        + _chunk(UNDEFINED_TAG, b"a future chunk")
        + _chunk(SAMPLES, b"\x01\x00", stream_id=EEG_ID)
        + _chunk(SAMPLES, b"\x08" + bytes(8), stream_id=MARKERS_ID)
        + _chunk(
            SAMPLES,
            b"\x01\x01\x08" + struct.pack("<d", 1000.2) + b"\x08" + struct.pack("<Q", 4) + b"wide",
            stream_id=MARKERS_ID,
        )
    )
    _insert(path, at, unusual)
    index = xdfreader.index_xdf(path)
    assert index.problems == []
    eeg_counts, marker_counts = (index.streams[i].chunk_counts for i in (EEG_ID, MARKERS_ID))
    assert sorted(eeg_counts) == [0, 0, 16, 16, 16, 16, 16, 16] and sorted(marker_counts) == [0, 1, 1, 1, 1, 1]
    _assert_reads_as_pyxdf(path)
    assert ["wide"] in xdfreader.load_xdf(path)[0][1]["time_series"]  # the markers


# The Samples chunk cut: (writer's lengths 8 bytes wide, its stream): a marker chunk is short
# enough for a 1-byte length field, an EEG chunk (400 bytes) takes a 4-byte one.
CUT_CHUNKS = {"1-byte length": (False, MARKERS_ID), "4-byte length": (False, EEG_ID), "8-byte length": (True, EEG_ID)}


@pytest.mark.parametrize("chunk", list(CUT_CHUNKS))
@pytest.mark.parametrize("kept", ["width", "length", "half tag", "tag", "tag and 3 bytes"])
def test_a_file_cut_inside_a_chunk_is_read_up_to_that_chunk(tmp_path, chunk, kept):
    """A recording cut short (crash, full disk) inside the lead bytes of a Samples chunk: its
    length field, its tag, its stream id. The reader keeps every chunk before it and says which
    chunk is cut where; it reads what pyxdf reads of the file cut just before that chunk (and
    what pyxdf reads of the cut file itself, when pyxdf can: not when the cut is inside the tag)."""
    wide_lengths, stream_id = CUT_CHUNKS[chunk]
    path = tmp_path / "cut.xdf"
    offsets = _recording(path, _streams(footer=False), wide_lengths=wide_lengths)
    data = path.read_bytes()
    number = [
        k
        for k, (at, tag) in enumerate(offsets[:-1])
        if tag == SAMPLES and _stream_id(data[at : offsets[k + 1][0]]) == stream_id
    ][2]
    at, total = offsets[number][0], offsets[number + 1][0] - offsets[number][0]
    width = data[at]
    assert width == (8 if wide_lengths else 1 if stream_id == MARKERS_ID else 4)
    kept_bytes = {"width": 1, "length": 1 + width, "half tag": 2 + width, "tag": 3 + width}.get(kept, 6 + width)
    path.write_bytes(data[: at + kept_bytes])
    before = tmp_path / "before.xdf"
    before.write_bytes(data[:at])
    index = xdfreader.index_xdf(path)
    if kept_bytes < 1 + width + 2:
        expected = f"the file ends inside the header of chunk #{number} (byte {at})"
    else:
        expected = (
            f"the file ends inside chunk #{number} (Samples, byte {at}): {total - kept_bytes} of its "
            f"{total - 1 - width} bytes are missing; the data before it are read"
        )
    assert index.problems == [expected]
    _assert_reads_as_pyxdf(path, before)
    if kept_bytes in (1, 3 + width, 6 + width):
        _assert_reads_as_pyxdf(path)


def test_a_file_cut_inside_a_chunk_of_an_undefined_tag_names_the_tag(tmp_path):
    path = tmp_path / "cut-unknown.xdf"
    number = len(_recording(path, _streams()))
    at = path.stat().st_size
    chunk = _chunk(UNDEFINED_TAG, b"a future chunk")
    _insert(path, at, chunk)
    before = tmp_path / "before.xdf"
    before.write_bytes(path.read_bytes()[:at])
    path.write_bytes(path.read_bytes()[: at + 9])
    index = xdfreader.index_xdf(path)
    assert index.problems == [
        f"the file ends inside chunk #{number} (tag-{UNDEFINED_TAG}, byte {at}): {len(chunk) - 9} of its "
        f"{len(chunk) - 2} bytes are missing; the data before it are read"
    ]
    _assert_reads_as_pyxdf(path, before)
    _assert_reads_as_pyxdf(path)


def test_a_file_that_shrank_after_indexing_is_reported(tmp_path):
    path = tmp_path / "shrunk.xdf"
    offsets = _recording(path, _streams())
    index = xdfreader.index_xdf(path)
    path.write_bytes(path.read_bytes()[: offsets[len(offsets) // 2][0]])
    with pytest.raises(OSError) as caught:
        xdfreader.read_streams(index, list(index.streams))
    assert str(caught.value) == f"{path} is shorter than when it was indexed"


# -- damaged string samples: found when the samples are read ------------------------------------
# Each case: the content of a Samples chunk of the marker stream (after its stream id) and the
# message expected.
STRING_DAMAGE = {
    "length field of width 3": (
        b"\x01\x01" + b"\x08" + struct.pack("<d", 1001.0) + b"\x03\x02\x00\x00ab",
        f"a string of stream {MARKERS_ID} has a length of width 3",
    ),
    "a byte after the last sample": (
        b"\x01\x01" + _string_sample("ab", 1001.0) + b"\x00",
        f"a Samples chunk of stream {MARKERS_ID} is not filled exactly by its strings",
    ),
    "one sample fewer than counted": (
        b"\x01\x02" + _string_sample("ab", 1001.0),
        f"a Samples chunk of stream {MARKERS_ID} ends inside a sample",
    ),
    "counted sample cut inside its timestamp": (
        b"\x01\x02" + _string_sample("ab", 1001.0) + b"\x08" + bytes(3),
        f"a Samples chunk of stream {MARKERS_ID} ends inside a sample",
    ),
}


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
@pytest.mark.parametrize("case", list(STRING_DAMAGE))
def test_damaged_string_samples_are_refused(tmp_path, case, block_bytes):
    """A damaged Samples chunk of the marker stream, last in the file (so that reading past its
    end runs out of data rather than into the next chunk)."""
    content, message = STRING_DAMAGE[case]
    path = tmp_path / "strings.xdf"
    _recording(path, _streams())
    _insert(path, path.stat().st_size, _chunk(SAMPLES, content, stream_id=MARKERS_ID))
    index = xdfreader.index_xdf(path)
    assert index.problems == []
    with pytest.raises(xdfreader.XdfIndexError) as caught:
        xdfreader.read_streams(index, list(index.streams), block_bytes=block_bytes)
    assert str(caught.value) == message


# -- XdfStreamIndex.text (the marker streams repair.py looks for) --------------------------------
def test_stream_text_is_the_stripped_first_value_of_a_header_field(tmp_path):
    path = tmp_path / "text.xdf"
    _recording(path, _streams())
    stream = xdfreader.index_xdf(path).streams[MARKERS_ID]
    assert (stream.text("name"), stream.text("type"), stream.text("source_id")) == ("events", "Markers", "events")
    assert stream.text("stream_id") == ""  # an int, not text
    assert stream.text("desc") == ""  # an element with children, not text
    assert stream.text("no such field") == ""
    stream.info.update({"padded": ["  coop \n"], "repeated": ["first", "second"], "empty": [], "bare": "  bare "})
    assert stream.text("padded") == "coop"
    assert stream.text("repeated") == "first"
    assert stream.text("empty") == ""
    assert stream.text("bare") == "bare"


# -- what the survivors of the first mutation runs showed besides the damaged files --------------
@pytest.mark.parametrize("with_empty", [False, True], ids=["two groups", "and an empty one"])
def test_every_channel_group_is_filled_beside_a_whole_stream_group(tmp_path, with_empty):
    """Groups asked besides one of every channel in the stream's own dtype (the group unpacked in
    place when it is the only one), and a group of no channel: each holds pyxdf's values."""
    path = tmp_path / "groups.xdf"
    _recording(path, _streams())
    values = next(s for s in _pyxdf(path)[0] if s["info"]["stream_id"] == EEG_ID)["time_series"]
    assert values.dtype == np.float32 and values.shape == (96, 4)
    groups = [xdfreader.ChannelGroup(range(4), np.float32), xdfreader.ChannelGroup([2, 0], np.float64)]
    groups += [xdfreader.ChannelGroup([], np.float32)] if with_empty else []
    index = xdfreader.index_xdf(path)
    for block_bytes in BLOCK_SIZES:
        samples, _ = xdfreader.read_streams(index, [EEG_ID], groups={EEG_ID: groups}, block_bytes=block_bytes)
        whole, picked, *empty = samples[EEG_ID].groups
        assert whole.dtype == np.float32 and whole.tobytes() == np.ascontiguousarray(values.T).tobytes()
        assert picked.dtype == np.float64
        np.testing.assert_array_equal(picked, values[:, [2, 0]].T.astype(np.float64))
        assert [e.shape for e in empty] == ([(0, 96)] if with_empty else [])


def test_synchronisation_problems_do_not_depend_on_pyxdf_logger_propagation(tmp_path, monkeypatch):
    """An application that keeps pyxdf off its console (``propagate = False`` on its logger, as
    io.py does while pyxdf reads a damaged file) still gets pyxdf's warnings as problems."""
    a, b, markers = _dyad(np.random.default_rng(7))
    path = Writer().write(tmp_path / "vanished.xdf", [_vanished(a), b, markers])
    index = xdfreader.index_xdf(path)
    _, problems = xdfreader.read_streams(index, list(index.streams))
    assert any("exceeds footer sample_count" in p for p in problems), problems
    monkeypatch.setattr(logging.getLogger("pyxdf"), "propagate", False)
    assert xdfreader.read_streams(index, list(index.streams))[1] == problems
