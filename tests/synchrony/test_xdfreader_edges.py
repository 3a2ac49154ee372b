"""The XDF reader against pyxdf on what the main matrix (``test_xdfreader.py``) does not write.

Found by mutation testing (docs/testing.md): string samples stored without a timestamp (their
stamp is deduced from the previous one and the nominal rate, 0 Hz included), reading a subset of
the streams, reading without clock synchronisation, and the samples and clock offset that pyxdf
drops after an outlet vanished mid-recording (pylsl#67). Every comparison is bit for bit.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import pyxdf

from dyadlab.synchrony import xdfreader
from tests.synchrony.independent_xdf import Stream, Writer
from tests.synchrony.test_xdfreader import BLOCK_SIZES, T0, _assert_streams_equal, _dyad


class IrregularStringStream(Stream):
    """A 0-Hz string stream whose every third sample is stored without a timestamp (allowed by the
    format: such a sample takes the previous stamp plus 1 / nominal_srate, here plus 0)."""

    def _deduced(self) -> np.ndarray:
        deduced = np.zeros(len(self.stamps), dtype=bool)
        deduced[2::3] = True
        return deduced


def _string_streams(rng: np.random.Generator) -> list[Stream]:
    n = 24
    texts = [[f"event {k}", "ünïcode ✓" if k % 5 == 0 else ""] for k in range(n)]
    texts[3][1] = "a long note " * 30  # over 255 bytes: a 4-byte length field
    texts[4][0] = b"caf\xe9 \xff"  # not UTF-8 (Latin-1 from an old sender): replaced as pyxdf replaces it
    # 0.5 Hz: deduced stamps are the previous one plus 2 s (LabRecorder's compression).
    regular = T0 + 2.0 * np.arange(n)
    regular[::4] += 0.125  # every fourth stamp off the grid: stored, and the next one too
    slow = Stream(
        stream_id=4,
        name="slow-strings",
        type="Markers",
        channel_format="string",
        nominal_srate=0.5,
        values=texts,
        stamps=regular,
        chunks=[5, 1, 7, 11],
        compress=True,
    )
    irregular_stamps = T0 + np.sort(rng.uniform(0, 40, n))
    irregular_stamps[2::3] = irregular_stamps[1::3][: len(irregular_stamps[2::3])]  # as deduced: = previous
    irregular = IrregularStringStream(
        stream_id=5,
        name="irregular-strings",
        type="Markers",
        channel_format="string",
        nominal_srate=0.0,
        values=texts,
        stamps=irregular_stamps,
        chunks=[3, 3, 18],
    )
    return [slow, irregular]


def _reference(path: Path, **options: object) -> list[dict]:
    streams, _ = pyxdf.load_xdf(str(path), handle_clock_resets=True, dejitter_timestamps=False, **options)
    return streams


def test_string_samples_without_timestamps_are_stamped_as_pyxdf_stamps_them(tmp_path):
    streams = _string_streams(np.random.default_rng(4))
    path = Writer().write(tmp_path / "strings.xdf", streams)
    slow, irregular = streams
    assert slow._deduced().sum() >= 10 and irregular._deduced().sum() == 8  # the case is really written
    reference = _reference(path, synchronize_clocks=True)
    for block_bytes in BLOCK_SIZES:
        ours, _ = xdfreader.load_xdf(path, block_bytes=block_bytes)
        _assert_streams_equal(reference, ours)
    by_name = {s["info"]["name"][0]: s for s in reference}
    np.testing.assert_array_equal(by_name["slow-strings"]["time_stamps"], slow.stamps)
    np.testing.assert_array_equal(by_name["irregular-strings"]["time_stamps"], irregular.stamps)


def test_a_subset_of_streams_reads_as_pyxdf_reads_it(tmp_path):
    streams = _dyad(np.random.default_rng(5), b_offset=3.2, b_drift=500e-6)
    path = Writer().write(tmp_path / "dyad.xdf", streams)
    for subset in ([7], [1, 3]):
        ours, _ = xdfreader.load_xdf(path, select_streams=subset)
        _assert_streams_equal(_reference(path, synchronize_clocks=True, select_streams=subset), ours)
        assert sorted(int(s["info"]["stream_id"]) for s in ours) == subset


@pytest.mark.parametrize("synchronize", [True, False])
def test_clock_synchronisation_can_be_switched_off_as_in_pyxdf(tmp_path, synchronize):
    streams = _dyad(np.random.default_rng(6), b_offset=3.2, b_drift=500e-6)
    path = Writer().write(tmp_path / "dyad.xdf", streams)
    ours, _ = xdfreader.load_xdf(path, synchronize_clocks=synchronize)
    _assert_streams_equal(_reference(path, synchronize_clocks=synchronize), ours)
    index = xdfreader.index_xdf(path)
    assert xdfreader.read_streams(index, list(index.streams), synchronize_clocks=synchronize)[1] == []
    b = next(s for s in ours if s["info"]["name"][0] == "amp-B")
    raw = streams[1].stamps
    assert (b["time_stamps"].tobytes() == raw.tobytes()) is not synchronize


class VanishedOutlet(Stream):
    """pylsl#67 / liblsl#246: the outlet was destroyed while the recorder was connected, so the
    file holds one sample more than the footer's sample_count and a garbage last clock offset."""

    def footer_xml(self) -> bytes:
        return (
            super()
            .footer_xml()
            .replace(
                f"<sample_count>{len(self.stamps)}</sample_count>".encode(),
                f"<sample_count>{len(self.stamps) - 1}</sample_count>".encode(),
            )
        )


def _vanished(stream: Stream) -> VanishedOutlet:
    fields = {name: getattr(stream, name) for name in stream.__dataclass_fields__}
    garbage = (float(stream.stamps[-1]) + 300.0, -1.0e6)  # far too late and far off
    return VanishedOutlet(**{**fields, "offsets": [*stream.offsets, garbage]})


def test_samples_past_the_footer_count_with_a_garbage_offset_are_dropped_as_pyxdf_drops_them(tmp_path):
    rng = np.random.default_rng(7)
    a, b, markers = _dyad(rng)
    markers.offsets = [(T0 + t, 0.0) for t in range(0, 25, 5)]
    streams = [_vanished(a), b, _vanished(markers)]
    path = Writer().write(tmp_path / "vanished.xdf", streams)
    reference = _reference(path, synchronize_clocks=True)
    by_name = {s["info"]["name"][0]: s for s in reference}
    assert len(by_name["amp-A"]["time_stamps"]) == len(a.stamps) - 1  # pyxdf dropped the extra sample
    assert len(by_name["events"]["time_series"]) == len(markers.stamps) - 1
    for block_bytes in BLOCK_SIZES:
        ours, _ = xdfreader.load_xdf(path, block_bytes=block_bytes)
        _assert_streams_equal(reference, ours)
    # pyxdf's warnings are the problems read_streams returns, and its logger is left as it was.
    handlers = list(logging.getLogger("pyxdf").handlers)
    index = xdfreader.index_xdf(path)
    _, problems = xdfreader.read_streams(index, list(index.streams))
    assert logging.getLogger("pyxdf").handlers == handlers
    assert sum("exceeds footer sample_count" in p for p in problems) == 2, problems
    assert sum("last clock offset is statistically anomalous" in p for p in problems) == 2, problems


def test_the_kernels_compile_on_first_use_and_are_kept(tmp_path, monkeypatch):
    """A fresh process reads with kernels it compiles on first use (the suite otherwise only ever
    sees them already compiled by an earlier test)."""
    streams = _dyad(np.random.default_rng(8))
    path = Writer().write(tmp_path / "dyad.xdf", streams)
    monkeypatch.setattr(xdfreader, "_kernels", None)
    ours, _ = xdfreader.load_xdf(path)
    _assert_streams_equal(_reference(path, synchronize_clocks=True), ours)
    kernels = xdfreader._kernels
    assert callable(kernels.unpack_records) and callable(kernels.deduce_stamps)
    xdfreader.load_xdf(path)
    assert xdfreader._kernels is kernels


def test_a_channel_outside_the_stream_is_refused(tmp_path):
    streams = _dyad(np.random.default_rng(9))
    path = Writer().write(tmp_path / "dyad.xdf", streams)
    index = xdfreader.index_xdf(path)
    for channels in ([8], [0, 8], [-1]):
        group = xdfreader.ChannelGroup(channels, np.float32)
        with pytest.raises(
            ValueError, match=rf"^stream 1 has 8 channels, asked for \[{', '.join(map(str, channels))}\]$"
        ):
            xdfreader.read_streams(index, [1], groups={1: [group]})
    last = xdfreader.read_streams(index, [1], groups={1: [xdfreader.ChannelGroup([7], np.float32)]})[0][1]
    np.testing.assert_array_equal(last.groups[0][0], streams[0].values[:, 7])


class RawHeader(Stream):
    """A stream whose header XML is given as bytes (damaged headers, invalid UTF-8)."""

    raw_header: bytes = b""

    def header_xml(self) -> bytes:
        return self.raw_header


def _with_header(stream: Stream, header: bytes) -> RawHeader:
    fields = {name: getattr(stream, name) for name in stream.__dataclass_fields__}
    raw = RawHeader(**fields)
    raw.raw_header = header
    return raw


def test_invalid_utf8_in_a_header_is_replaced_as_pyxdf_replaces_it(tmp_path):
    a, b, markers = _dyad(np.random.default_rng(10))
    header = a.header_xml().replace(b"<name>amp-A</name>", b"<name>amp-\xff\xfeA</name>")
    path = Writer().write(tmp_path / "latin.xdf", [_with_header(a, header), b, markers])
    reference = _reference(path, synchronize_clocks=True)
    assert reference[0]["info"]["name"] == ["amp-\ufffd\ufffdA"]
    ours, _ = xdfreader.load_xdf(path)
    _assert_streams_equal(reference, ours)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ((b"<info>", b"<stream>"), r"^stream 1's header has no <info> element$"),
        ((b"<channel_count>8<", b"<channel_count>eight<"), r"^stream 1's header lacks a valid channel_format, "),
        ((b">float32<", b">float16<"), r"^stream 1 has the unknown channel_format 'float16'$"),
        ((b"</name>", b""), r"^the stream 1's header XML does not parse \("),
    ],
    ids=["no info", "bad channel_count", "unknown format", "not XML"],
)
def test_a_damaged_stream_header_is_explained(tmp_path, change, message):
    a, b, markers = _dyad(np.random.default_rng(11))
    old, new = change
    header = a.header_xml().replace(old, new).replace(old.replace(b"<", b"</"), new.replace(b"<", b"</"))
    path = Writer().write(tmp_path / "damaged.xdf", [_with_header(a, header), b, markers])
    with pytest.raises(xdfreader.XdfIndexError, match=message):
        xdfreader.index_xdf(path)


def test_a_file_that_is_not_xdf_is_explained(tmp_path):
    path = tmp_path / "zipped.xdf"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(
        xdfreader.XdfIndexError, match=r"^the file does not start with 'XDF:' \(not XDF, or compressed\)$"
    ):
        xdfreader.index_xdf(path)


@pytest.mark.parametrize(("chunk", "block_bytes"), [(0, xdfreader.BLOCK_BYTES), (5, 64)])
def test_a_chunk_not_filled_by_its_samples_is_refused_wherever_it_is(tmp_path, chunk, block_bytes):
    """The first chunk of a stream in a block (index 0) counts too: the damaged chunk is the
    file's first, or every chunk is a block of its own."""
    writer = Writer()
    path = writer.write(tmp_path / "short.xdf", _dyad(np.random.default_rng(12)))
    data = bytearray(path.read_bytes())
    at = [o for o, tag in writer.offsets if tag == 3][chunk]
    count_at = at + 1 + data[at] + 2 + 4  # length field, tag, stream id: the NumSamples field
    assert data[count_at] == 1
    data[count_at + 1] += 1
    path.write_bytes(bytes(data))
    index = xdfreader.index_xdf(path)
    with pytest.raises(xdfreader.XdfIndexError, match="not filled exactly"):
        xdfreader.read_streams(index, list(index.streams), block_bytes=block_bytes)


class IrregularNumericStream(Stream):
    """A 0-Hz numeric stream (event codes) with every third sample stored without a timestamp."""

    def _deduced(self) -> np.ndarray:
        deduced = np.zeros(len(self.stamps), dtype=bool)
        deduced[2::3] = True
        return deduced


def test_numeric_samples_without_timestamps_at_low_and_zero_rates(tmp_path):
    rng = np.random.default_rng(13)
    n = 30
    slow_stamps = T0 + 2.0 * np.arange(n)
    slow_stamps[::4] += 0.125
    slow = Stream(
        4,
        "slow-numeric",
        "Misc",
        "int32",
        0.5,
        rng.integers(-9, 9, (n, 3)).astype(np.int32),
        slow_stamps,
        [7, 9, 14],
        compress=True,
    )
    codes = T0 + np.sort(rng.uniform(0, 40, n))
    codes[2::3] = codes[1::3][: len(codes[2::3])]
    irregular = IrregularNumericStream(
        5, "event-codes", "Markers", "double64", 0.0, rng.normal(size=(n, 1)), codes, [4, 26]
    )
    path = Writer().write(tmp_path / "numeric.xdf", [slow, irregular])
    assert slow._deduced().sum() >= 10
    reference = _reference(path, synchronize_clocks=True)
    np.testing.assert_array_equal(reference[0]["time_stamps"], slow_stamps)
    np.testing.assert_array_equal(reference[1]["time_stamps"], codes)
    for block_bytes in BLOCK_SIZES:
        ours, _ = xdfreader.load_xdf(path, block_bytes=block_bytes)
        _assert_streams_equal(reference, ours)
