"""The XDF reader against pyxdf, on files dyadlab's writer did not write (``independent_xdf``).

Every file is read three ways and must agree to the last bit: ``pyxdf.load_xdf`` (the oracle,
clock synchronisation on, de-jittering off), :func:`dyadlab.synchrony.xdfreader.load_xdf` and
:func:`dyadlab.synchrony.io.load_dyad`, each of ours with the default block size and with blocks so
small that every chunk is read on its own (the path a large file takes for its large chunks).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import pyxdf

from dyadlab.synchrony import xdfreader
from dyadlab.synchrony.check import run_check
from dyadlab.synchrony.io import load_dyad
from tests.synchrony.foreign_dyad import CONDITIONS, write_foreign_dyad
from tests.synchrony.independent_xdf import Stream, Writer, split

FS = 256.0
SECONDS = 20.0
T0 = 1000.0
EEG8 = [(name, "EEG", "microvolts") for name in ("Fz", "Cz", "Pz", "Oz", "C3", "C4", "P3", "P4")]
# Marker and counter channels among the EEG channels, not at the end: the EEG rows are not consecutive.
MIXED = [
    ("Fz", "EEG", "microvolts"),
    ("Marker", "Markers", ""),
    ("Cz", "EEG", "microvolts"),
    ("Pz", "EEG", "microvolts"),
    ("package_num", "", ""),
    ("Oz", "EEG", "microvolts"),
]
BLOCK_SIZES = (xdfreader.BLOCK_BYTES, 64)


def _values(rng: np.random.Generator, n: int, channels: int, fmt: str) -> np.ndarray:
    eeg = rng.standard_normal((n, channels)) * 20.0
    if fmt.startswith("int"):
        bits = int(fmt[3:])
        return np.clip(np.round(eeg * (2 ** (bits - 8) / 20.0)), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).astype(
            f"int{bits}"
        )
    return eeg.astype(np.float32 if fmt == "float32" else np.float64)


def _receiver_offsets(
    stamps: np.ndarray, offset: float, drift: float, rng: np.random.Generator, every: float = 5.0
) -> list[tuple[float, float]]:
    """ClockOffsets of a sender whose clock reads ``true * (1 + drift) - offset``: pairs of
    (sender time, receiver minus sender), with 50 us of measurement noise."""
    times = np.arange(stamps[0], stamps[-1] + every, every)
    true = (times + offset) / (1.0 + drift)
    return [(float(t), float(v)) for t, v in zip(times, true - times + rng.normal(0, 50e-6, times.size))]


def _eeg(
    stream_id: int,
    label: str,
    rng: np.random.Generator,
    *,
    fmt: str = "float32",
    channels: list | None = None,
    chunks=32,
    start: float = T0,
    offset: float = 0.0,
    drift: float = 0.0,
    compress: bool = False,
) -> Stream:
    layout = EEG8 if channels is None else channels
    n = int(SECONDS * FS)
    true = start + np.arange(n) / FS + rng.normal(0, 1e-4, n)
    if compress:  # runs of exactly periodic timestamps (deduced), every 7th sample off the grid (stored)
        true = start + np.arange(n) / FS
        for k in range(1, n):
            true[k] = true[k - 1] + 1.0 / FS + (1e-5 if k % 7 == 0 else 0.0)
    stamps = true * (1.0 + drift) - offset
    values = _values(rng, n, len(layout) if layout else 8, fmt)
    if channels is not None and any(kind == "Markers" for _, kind, _ in layout):
        marker = [i for i, (_, kind, _) in enumerate(layout) if kind == "Markers"][0]
        counter = [i for i, (lab, _, _) in enumerate(layout) if lab == "package_num"][0]
        values[:, marker] = 0
        values[rng.choice(n, 12, replace=False), marker] = rng.integers(1, 9, 12)
        values[:, counter] = np.arange(n) % 256
    return Stream(
        stream_id=stream_id,
        name=f"amp-{label}",
        type="EEG",
        channel_format=fmt,
        nominal_srate=FS,
        values=values,
        stamps=stamps,
        chunks=split(n, chunks),
        channels=layout or [],
        compress=compress,
        offsets=_receiver_offsets(stamps, offset, drift, rng),
    )


def _markers(stream_id: int, rng: np.random.Generator) -> Stream:
    texts = [["rest_on"], ["rest_off"], ["coop_on"], ["coop_off"], ["ünïcode ✓"], [""]]
    stamps = T0 + np.sort(rng.uniform(0.5, SECONDS - 0.5, len(texts)))
    return Stream(
        stream_id=stream_id,
        name="events",
        type="Markers",
        channel_format="string",
        nominal_srate=0.0,
        values=texts,
        stamps=stamps,
        chunks=[1] * len(texts),
        offsets=_receiver_offsets(stamps, 0, 0, rng),
    )


def _dyad(rng, **eeg_options) -> list[Stream]:
    b_options = {key[2:]: value for key, value in eeg_options.items() if key.startswith("b_")}
    common = {key: value for key, value in eeg_options.items() if not key.startswith("b_")}
    return [_eeg(1, "A", rng, **common), _eeg(7, "B", rng, **{**common, **b_options}), _markers(3, rng)]


def _clock_reset(rng) -> list[Stream]:
    """B's computer restarts halfway: its clock (timestamps and offsets) jumps back 500 s."""
    a, b, markers = _dyad(rng, b_offset=3.2)
    half = len(b.stamps) // 2
    b.stamps[half:] -= 500.0
    b.offsets = [
        (t - 500.0 if t >= b.stamps[half] + 500.0 else t, v + 500.0 if t >= b.stamps[half] + 500.0 else v)
        for t, v in b.offsets
    ]
    return [a, b, markers]


def _dropped(rng) -> list[Stream]:
    """Half a second of A's samples lost (a dropped packet burst) and a few single samples."""
    a, b, markers = _dyad(rng)
    keep = np.ones(len(a.stamps), bool)
    keep[2000:2128] = False
    keep[[3000, 3500, 4001]] = False
    a.values, a.stamps = a.values[keep], a.stamps[keep]
    a.chunks = split(len(a.stamps), 32)
    return [a, b, markers]


def _with_aux(rng) -> list[Stream]:
    streams = _dyad(rng, channels=None, chunks=[1, 2, 3, 40, 200, 7])
    aux = replace(_eeg(9, "AUX", rng, fmt="double64", channels=[]), name="accelerometer", type="ACC")
    return streams + [aux]


CASES = {
    "eeg-only float32, offset and drift": lambda rng: _dyad(rng, b_offset=3.2, b_drift=500e-6),
    "eeg-only double64, one chunk per stream": lambda rng: _dyad(rng, fmt="double64", chunks=int(SECONDS * FS)),
    "int16, marker and counter channels between EEG": lambda rng: _dyad(rng, fmt="int16", channels=MIXED),
    "int32, marker and counter channels, thousands of chunks": lambda rng: _dyad(
        rng, fmt="int32", channels=MIXED, chunks=[1, 2, 3]
    ),
    "int64 and int8": lambda rng: [_eeg(1, "A", rng, fmt="int64"), _eeg(2, "B", rng, fmt="int8"), _markers(3, rng)],
    "untyped channels, LabRecorder timestamp compression": lambda rng: _dyad(rng, channels=[], compress=True),
    "irregular chunk sizes and an AUX stream": _with_aux,
    "clock reset": _clock_reset,
    "dropped samples": _dropped,
    "stream starting late": lambda rng: _dyad(rng, b_start=T0 + 6.0),
}


def _pyxdf(path: Path) -> tuple[list[dict], dict]:
    return pyxdf.load_xdf(str(path), synchronize_clocks=True, handle_clock_resets=True, dejitter_timestamps=False)


def _assert_streams_equal(reference: list[dict], ours: list[dict]) -> None:
    assert [s["info"]["name"] for s in ours] == [s["info"]["name"] for s in reference]
    for ref, got in zip(reference, ours):
        if isinstance(ref["time_series"], list):
            assert got["time_series"] == ref["time_series"]
        else:
            assert got["time_series"].dtype == ref["time_series"].dtype
            assert got["time_series"].shape == ref["time_series"].shape
            # Bit for bit, NaN payloads included.
            assert np.ascontiguousarray(got["time_series"]).tobytes() == ref["time_series"].tobytes()
        assert got["time_stamps"].tobytes() == np.asarray(ref["time_stamps"], dtype=np.float64).tobytes()
        assert list(got["clock_times"]) == list(ref["clock_times"])
        assert list(got["clock_values"]) == list(ref["clock_values"])
        assert got.get("footer") == ref.get("footer")


def _eeg_rows(stream: dict) -> list[int]:
    desc = stream["info"]["desc"][0]
    entries = desc["channels"][0]["channel"] if isinstance(desc, dict) and "channels" in desc else []
    types = [entry["type"][0] for entry in entries]
    n = stream["time_series"].shape[1]
    if len(types) != n:
        return list(range(n))
    return [i for i, kind in enumerate(types) if kind == "EEG"]


def _assert_dyad_equal(path: Path, reference: list[dict], block_bytes: int) -> None:
    recording = load_dyad(path, block_bytes=block_bytes, eeg=("amp-A", "amp-B"))
    by_name = {s["info"]["name"][0]: s for s in reference}
    for participant in recording.participants:
        ref = by_name[participant.stream_name]
        expected = np.ascontiguousarray(ref["time_series"][:, _eeg_rows(ref)].T, dtype=np.float32)
        assert participant.data.dtype == np.float32 and participant.data.shape == expected.shape
        assert participant.data.tobytes() == expected.tobytes()
        assert participant.timestamps.tobytes() == ref["time_stamps"].tobytes()
        assert list(participant.clock_times) == list(ref["clock_times"])
        if participant.board_markers is not None:
            marker = [lab for lab, _, _ in MIXED].index("Marker")
            assert np.array_equal(participant.board_markers, ref["time_series"][:, marker].astype(np.float64))
    events = by_name["events"]
    assert [m.text for m in recording.markers] == [row[0] for row in events["time_series"]]
    assert [m.time for m in recording.markers] == list(events["time_stamps"])


@pytest.mark.parametrize("case", list(CASES))
def test_reader_equals_pyxdf_on_independent_files(tmp_path, case):
    path = Writer().write(tmp_path / "case.xdf", CASES[case](np.random.default_rng(11)))
    reference, header = _pyxdf(path)
    for block_bytes in BLOCK_SIZES:
        ours, our_header = xdfreader.load_xdf(path, block_bytes=block_bytes)
        assert our_header == header
        _assert_streams_equal(reference, ours)
        _assert_dyad_equal(path, reference, block_bytes)


def test_offsets_and_drift_are_applied(tmp_path):
    """B's clock 3.2 s behind and 500 ppm fast: after synchronisation A and B stamps of the same
    instant agree to the offsets' noise (without it they would be 2.7 s apart)."""
    streams = _dyad(np.random.default_rng(3), b_offset=3.2, b_drift=500e-6)
    path = Writer().write(tmp_path / "drift.xdf", streams)
    recording = load_dyad(path, eeg=("amp-A", "amp-B"))
    assert np.max(np.abs(recording.a.timestamps - recording.b.timestamps)) < 1e-3
    assert np.max(np.abs(streams[1].stamps - recording.b.timestamps)) > 2.5  # -3.2 s + 500 ppm of ~1000 s


def test_wide_length_fields_late_header_and_nan_payloads(tmp_path):
    rng = np.random.default_rng(5)
    streams = _dyad(rng, fmt="float32")
    streams[0].values[100:110, 2] = np.float32(np.nan)
    streams[0].values[200, 3] = np.frombuffer(b"\x01\x00\xc0\x7f", "<f4")[0]  # a NaN with a payload
    path = Writer(wide_lengths=True, boundary_every=3, late=[7]).write(tmp_path / "wide.xdf", streams)
    reference, _ = _pyxdf(path)
    for block_bytes in BLOCK_SIZES:
        _assert_streams_equal(reference, xdfreader.load_xdf(path, block_bytes=block_bytes)[0])
        _assert_dyad_equal(path, reference, block_bytes)


def _cut_inside_last(path: Path, writer: Writer, tag: int) -> None:
    offset = [at for at, chunk_tag in writer.offsets if chunk_tag == tag][-1]
    data = path.read_bytes()
    path.write_bytes(data[: offset + 25])


def test_file_cut_inside_a_samples_chunk_reads_what_pyxdf_reads(tmp_path):
    writer = Writer()
    path = writer.write(tmp_path / "cut.xdf", [replace(s, footer=False) for s in _dyad(np.random.default_rng(2))])
    _cut_inside_last(path, writer, 3)
    reference, _ = _pyxdf(path)
    index = xdfreader.index_xdf(path)
    assert any("ends inside chunk" in p and "Samples" in p for p in index.problems)
    for block_bytes in BLOCK_SIZES:
        _assert_streams_equal(reference, xdfreader.load_xdf(path, block_bytes=block_bytes)[0])
        _assert_dyad_equal(path, reference, block_bytes)
    recording = load_dyad(path, eeg=("amp-A", "amp-B"))
    assert any("ends inside chunk" in p for p in recording.file_problems)


def test_file_cut_inside_a_clock_offset_is_read_up_to_it(tmp_path):
    """pyxdf fails on such a file; the reader keeps everything before the cut chunk, which is what
    pyxdf reads of the file cut just before that chunk."""
    writer = Writer()
    path = writer.write(tmp_path / "cut.xdf", [replace(s, footer=False) for s in _dyad(np.random.default_rng(4))])
    offset = [at for at, tag in writer.offsets if tag == 4][-1]
    before = tmp_path / "before.xdf"
    before.write_bytes(path.read_bytes()[:offset])
    path.write_bytes(path.read_bytes()[: offset + 12])
    reference, _ = _pyxdf(before)
    _assert_streams_equal(reference, xdfreader.load_xdf(path, block_bytes=64)[0])


def test_damaged_middle_falls_back_to_pyxdf_and_says_so(tmp_path, caplog):
    """A chunk whose length field is garbage: the index gives up, pyxdf scans forward to the next
    boundary, and load_dyad returns pyxdf's samples with the damage reported."""
    writer = Writer(boundary_every=4)
    path = writer.write(tmp_path / "damaged.xdf", _dyad(np.random.default_rng(6)))
    data = bytearray(path.read_bytes())
    samples = [at for at, tag in writer.offsets if tag == 3]
    data[samples[len(samples) // 2]] = 3  # no such length-field width
    path.write_bytes(bytes(data))
    with pytest.raises(xdfreader.XdfIndexError, match="width 3"):
        xdfreader.index_xdf(path)
    with caplog.at_level(logging.ERROR, logger="pyxdf"):
        reference, _ = _pyxdf(path)
    recording = load_dyad(path, eeg=("amp-A", "amp-B"))
    assert any("damaged" in p for p in recording.file_problems)
    by_name = {s["info"]["name"][0]: s for s in reference}
    expected = np.ascontiguousarray(by_name["amp-A"]["time_series"].T, dtype=np.float32)
    assert recording.a.data.tobytes() == expected.tobytes()
    assert recording.a.timestamps.tobytes() == by_name["amp-A"]["time_stamps"].tobytes()


def test_samples_that_do_not_fill_their_chunk_fall_back_to_pyxdf(tmp_path):
    """A Samples chunk whose count says one sample more than it holds: pyxdf misreads from there
    on; the reader refuses to guess and load_dyad reports the damage (pyxdf's reading)."""
    writer = Writer()
    streams = _dyad(np.random.default_rng(8))
    path = writer.write(tmp_path / "short.xdf", streams)
    data = bytearray(path.read_bytes())
    at = [o for o, tag in writer.offsets if tag == 3][5]
    width = data[at]
    count_at = at + 1 + width + 2 + 4  # length field, tag, stream id: the NumSamples field
    assert data[count_at] == 1
    data[count_at + 1] += 1
    path.write_bytes(bytes(data))
    index = xdfreader.index_xdf(path)
    with pytest.raises(xdfreader.XdfIndexError, match="not filled exactly"):
        xdfreader.read_streams(index, list(index.streams))
    recording = load_dyad(path, eeg=("amp-A", "amp-B"))
    assert any("damaged" in p for p in recording.file_problems)


def test_labrecorder_fixture_equals_pyxdf():
    path = Path(__file__).resolve().parents[1] / "data" / "labrecorder_eeg_markers.xdf"
    reference, header = _pyxdf(path)
    for block_bytes in BLOCK_SIZES:
        ours, our_header = xdfreader.load_xdf(path, block_bytes=block_bytes)
        assert our_header == header
        _assert_streams_equal(reference, ours)


@pytest.fixture(scope="module")
def foreign_dyad(tmp_path_factory):
    return write_foreign_dyad(tmp_path_factory.mktemp("foreign") / "foreign.xdf")


@pytest.mark.parametrize("block_bytes", [xdfreader.BLOCK_BYTES, 4096])
def test_quick_check_finds_the_coupling_planted_in_a_foreign_recording(foreign_dyad, block_bytes, monkeypatch):
    """The issue's case, scaled down: EEG-only float32 streams from another writer, B's clock off
    and drifting, alpha coupling in cooperation only. Every block size gives pyxdf's samples and
    the check finds the coupling, and nothing at rest."""
    monkeypatch.setattr(xdfreader, "BLOCK_BYTES", block_bytes)
    reference, _ = _pyxdf(foreign_dyad)
    by_name = {s["info"]["name"][0]: s for s in reference}
    recording = load_dyad(foreign_dyad)
    for participant, name in zip(recording.participants, ("Amp1-EEG", "Amp2-EEG")):
        assert participant.data.tobytes() == np.ascontiguousarray(by_name[name]["time_series"].T).tobytes()
        assert participant.timestamps.tobytes() == by_name[name]["time_stamps"].tobytes()

    result = run_check(foreign_dyad, conditions=CONDITIONS, progress=False, n_surrogates=100)
    detected = {(d["condition"], d["band"]) for d in result["verdict"]["synchrony_above_chance"]}
    assert detected == {("coop", "alpha")}
    coop, rest = result["conditions"]["coop"]["alpha"]["plv"], result["conditions"]["rest"]["alpha"]["plv"]
    assert coop["z"] > 3 and coop["mean"] > 0.7
    assert rest["z"] < 2 and rest["mean"] < 0.4
