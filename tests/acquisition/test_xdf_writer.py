"""XdfWriter: byte layout, pyxdf round trips of all formats, footers, safety rules, threads."""

from __future__ import annotations

import os
import struct
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf

from dyadlab.acquisition.xdf import XdfWriter, XdfWriterError, encode_varlen
from dyadlab.xdf_format import BOUNDARY_UUID


def stream_info_xml(name: str, channel_format: str, channel_count: int, srate: float) -> str:
    """The header XML exactly as the recorder will pass it: a real pylsl StreamInfo."""
    return pylsl.StreamInfo(name, "Test", channel_count, srate, channel_format, f"dyadlab.test.{name}").as_xml()


def load_raw(path: Path) -> tuple[list[dict], dict]:
    """pyxdf without any timestamp processing, so values and stamps come back as written."""
    return pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False, handle_clock_resets=False)


def by_name(streams: list[dict]) -> dict[str, dict]:
    return {s["info"]["name"][0]: s for s in streams}


NUMERIC_CASES = {
    "int8": np.array([[-128, 127], [0, 1], [5, -5]], dtype=np.int8),
    "int16": np.array([[-32768, 32767], [0, 1], [7, -7]], dtype=np.int16),
    "int32": np.array([[-(2**31), 2**31 - 1], [0, 1], [9, -9]], dtype=np.int32),
    "int64": np.array([[-(2**63), 2**63 - 1], [0, 1], [2**40 + 1, -(2**53) - 3]], dtype=np.int64),
    "float32": np.array([[np.nan, np.inf], [-np.inf, 1.5], [-0.0, 3.4e38]], dtype=np.float32),
    "double64": np.array([[np.nan, np.inf], [-np.inf, 1e-300], [np.pi, -1.7e308]], dtype=np.float64),
}


def test_every_numeric_format_round_trips_through_pyxdf(tmp_path: Path) -> None:
    path = tmp_path / "numeric.xdf"
    timestamps = np.array([10.0, 10.001, 10.002])
    with XdfWriter(path) as writer:
        for stream_id, (fmt, values) in enumerate(NUMERIC_CASES.items(), start=1):
            writer.add_stream(stream_id, stream_info_xml(fmt, fmt, 2, 1000.0))
            # two chunks, to check that chunks of one stream are concatenated in order
            writer.write_samples(stream_id, timestamps[:1], values[:1])
            writer.write_samples(stream_id, timestamps[1:], values[1:])
        for stream_id in range(1, len(NUMERIC_CASES) + 1):
            writer.write_footer(stream_id)

    streams = by_name(load_raw(path)[0])
    assert set(streams) == set(NUMERIC_CASES)
    for fmt, values in NUMERIC_CASES.items():
        stream = streams[fmt]
        assert stream["time_series"].dtype == values.dtype, fmt
        np.testing.assert_array_equal(stream["time_series"], values, err_msg=fmt)
        np.testing.assert_array_equal(stream["time_stamps"], timestamps)
        footer = stream["footer"]["info"]
        assert footer["sample_count"] == ["3"]
        assert float(footer["first_timestamp"][0]) == 10.0
        assert float(footer["last_timestamp"][0]) == 10.002


def test_strings_round_trip_utf8_empty_long_and_multichannel(tmp_path: Path) -> None:
    path = tmp_path / "strings.xdf"
    long_text = "x" * 300 + "é"  # > 255 bytes: 4-byte length form
    huge_text = "日本" * 40_000  # > 65535 bytes, still the 4-byte form
    samples = [
        ['{"event": "trial_start", "code": 3}', ""],
        ["Grüße, 世界 🧠", long_text],
        ["", huge_text],
        [b"raw bytes", "ok"],
    ]
    timestamps = np.array([1.5, 2.5, 3.5, 4.5])
    with XdfWriter(path) as writer:
        writer.add_stream(7, stream_info_xml("markers", "string", 2, 0.0))
        writer.write_samples(7, timestamps, samples)
        writer.write_footer(7)

    (stream,) = load_raw(path)[0]
    expected = [[v.decode() if isinstance(v, bytes) else v for v in sample] for sample in samples]
    assert stream["time_series"] == expected
    np.testing.assert_array_equal(stream["time_stamps"], timestamps)
    assert stream["footer"]["info"]["sample_count"] == ["4"]


def test_footer_reports_exact_stats_offsets_and_measured_rate(tmp_path: Path) -> None:
    path = tmp_path / "footer.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, stream_info_xml("eeg", "float32", 3, 250.0))
        writer.add_stream(2, stream_info_xml("empty", "string", 1, 0.0))
        writer.write_clock_offset(1, 100.25, -2.5e-5)
        first = 100.123456789012345
        for start in range(0, 1000, 250):
            ts = first + np.arange(start, start + 250) / 250.0
            writer.write_samples(1, ts, np.ones((250, 3), dtype=np.float32))
        writer.write_samples(1, np.empty(0), np.empty((0, 3)))  # writes nothing
        writer.write_clock_offset(1, 104.5, -3.0e-5)
        stats = writer.stream_stats(1)
        writer.write_footer(1)
        writer.write_footer(2)

    assert stats.sample_count == 1000
    assert stats.first_timestamp == first
    assert stats.last_timestamp == first + 999 / 250.0
    assert stats.clock_offsets == [(100.25, -2.5e-5), (104.5, -3.0e-5)]
    assert stats.measured_srate == pytest.approx(250.0)

    streams = by_name(load_raw(path)[0])
    footer = streams["eeg"]["footer"]["info"]
    assert int(footer["sample_count"][0]) == 1000
    assert float(footer["first_timestamp"][0]) == stats.first_timestamp  # repr precision: exact
    assert float(footer["last_timestamp"][0]) == stats.last_timestamp
    assert float(footer["measured_srate"][0]) == pytest.approx(250.0)
    offsets = footer["clock_offsets"][0]["offset"]
    assert [(float(o["time"][0]), float(o["value"][0])) for o in offsets] == stats.clock_offsets
    np.testing.assert_array_equal(streams["eeg"]["clock_times"], [100.25, 104.5])
    np.testing.assert_array_equal(streams["eeg"]["clock_values"], [-2.5e-5, -3.0e-5])
    assert len(streams["eeg"]["time_stamps"]) == 1000
    # and pyxdf's default processing (clock sync with the two offsets, dejittering) accepts it
    synced = by_name(pyxdf.load_xdf(str(path))[0])
    assert len(synced["eeg"]["time_stamps"]) == 1000
    assert synced["eeg"]["info"]["effective_srate"] == pytest.approx(250.0, rel=1e-5)
    empty_footer = streams["empty"]["footer"]["info"]
    assert empty_footer["sample_count"] == ["0"]
    assert len(streams["empty"]["time_stamps"]) == 0


def test_file_header_has_version_datetime_and_escaped_metadata(tmp_path: Path) -> None:
    path = tmp_path / "header.xdf"
    metadata = {"study": "S&P <pilot>", "dyad": "d01", "session": "ses-1", "recorder": "dyadlab 0.1"}
    with XdfWriter(path, file_metadata=metadata) as writer:
        writer.add_stream(1, stream_info_xml("m", "string", 1, 0.0))
        writer.write_footer(1)
    _, header = load_raw(path)
    info = header["info"]
    assert info["version"] == ["1.0"]
    assert "T" in info["datetime"][0] and ("+" in info["datetime"][0] or "-" in info["datetime"][0][10:])
    for key, value in metadata.items():
        assert info[key] == [value]


def test_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "precious.xdf"
    path.write_bytes(b"the only recording of a patient")
    with pytest.raises(FileExistsError, match="never overwrites"):
        XdfWriter(path)
    assert path.read_bytes() == b"the only recording of a patient"


def test_invalid_use_gives_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a valid XML element name"):
        XdfWriter(tmp_path / "bad-meta.xdf", file_metadata={"bad key": "x"})
    with XdfWriter(tmp_path / "errors.xdf") as writer:
        with pytest.raises(ValueError, match="does not parse"):
            writer.add_stream(1, "<info><name>x</name>")
        with pytest.raises(ValueError, match="lacks <channel_format>"):
            writer.add_stream(1, "<info><channel_count>1</channel_count><nominal_srate>0</nominal_srate></info>")
        with pytest.raises(ValueError, match="not an XDF format"):
            writer.add_stream(1, stream_info_xml("u", "int16", 1, 0).replace("int16", "uint16"))
        with pytest.raises(XdfWriterError, match="no StreamHeader"):
            writer.write_samples(99, np.array([1.0]), np.array([[1.0]]))
        with pytest.raises(XdfWriterError, match="no StreamHeader"):
            writer.write_clock_offset(99, 1.0, 0.0)
        writer.add_stream(1, stream_info_xml("eeg", "int16", 2, 100.0))
        with pytest.raises(XdfWriterError, match="already used"):
            writer.add_stream(1, stream_info_xml("eeg2", "int16", 2, 100.0))
        with pytest.raises(ValueError, match=r"shape \(n_samples, n_channels\) = \(1, 2\)"):
            writer.write_samples(1, np.array([1.0]), np.array([[1, 2, 3]]))
        with pytest.raises(ValueError, match="do not fit int16"):
            writer.write_samples(1, np.array([1.0]), np.array([[1, 70000]]))
        with pytest.raises(ValueError, match="do not fit int16"):
            writer.write_samples(1, np.array([1.0]), np.array([[1.5, 2.0]]))
        writer.write_samples(1, np.array([1.0]), np.array([[1.0, 2.0]]))  # integral floats are fine
        writer.write_footer(1)
        with pytest.raises(XdfWriterError, match="StreamFooter was already written"):
            writer.write_samples(1, np.array([2.0]), np.array([[1, 2]]))
        with pytest.raises(XdfWriterError, match="StreamFooter was already written"):
            writer.write_footer(1)
    with pytest.raises(XdfWriterError, match="already closed"):
        writer.write_boundary()
    writer.close()  # idempotent
    (stream,) = load_raw(tmp_path / "errors.xdf")[0]
    np.testing.assert_array_equal(stream["time_series"], [[1, 2]])


def test_chunks_reach_the_os_within_flush_interval(tmp_path: Path) -> None:
    path = tmp_path / "flushed.xdf"
    with XdfWriter(path, flush_interval=0.0) as writer:
        writer.add_stream(1, stream_info_xml("eeg", "double64", 4, 500.0))
        writer.write_samples(1, np.array([1.0, 2.0]), np.zeros((2, 4)))
        # another handle sees every byte without close(): nothing is left in a Python buffer
        assert os.path.getsize(path) == writer.bytes_written
        writer.write_clock_offset(1, 1.0, 0.0)
        assert os.path.getsize(path) == writer.bytes_written


def test_tiny_file_matches_hand_computed_bytes(tmp_path: Path) -> None:
    path = tmp_path / "tiny.xdf"
    info = (
        '<?xml version="1.0"?><info><name>t</name><channel_count>1</channel_count>'
        "<channel_format>int16</channel_format><nominal_srate>0</nominal_srate></info>"
    )
    marker_info = info.replace("int16", "string")
    with XdfWriter(path, file_metadata={"dyad": "d1"}) as writer:
        writer.add_stream(0x02C0FFEE, info)
        writer.add_stream(3, marker_info)
        writer.write_samples(0x02C0FFEE, np.array([1.0, 2.0]), np.array([[5], [-2]]))
        writer.write_samples(3, np.array([2.0]), [["hé"]])
        writer.write_clock_offset(0x02C0FFEE, 1.5, -0.25)
        writer.write_boundary()
    data = path.read_bytes()

    assert data[:4] == b"XDF:"
    header_len = data[5]
    assert data[4] == 1 and data[6:8] == b"\x01\x00"
    header_xml = data[8 : 4 + 2 + header_len]
    root = ET.fromstring(header_xml)
    assert root.findtext("version") == "1.0" and root.findtext("dyad") == "d1"
    rest = data[4 + 2 + header_len :]

    info_bytes = info.encode()
    marker_bytes = marker_info.encode()
    expected = (
        # StreamHeader: Length = tag 2 + id 4 + XML
        bytes([0x01, 2 + 4 + len(info_bytes), 0x02, 0x00, 0xEE, 0xFF, 0xC0, 0x02])
        + info_bytes
        + bytes([0x01, 2 + 4 + len(marker_bytes), 0x02, 0x00, 0x03, 0x00, 0x00, 0x00])
        + marker_bytes
        # Samples: Length 30 = 2 + 4 + (01 02) + 2 * (08 + f8 + i16)
        + bytes.fromhex("011e0300eeffc0020102")
        + bytes.fromhex("08000000000000f03f0500")
        + bytes.fromhex("080000000000000040feff")
        # string Samples: Length 22 = 2 + 4 + (01 01) + 08 + f8 + (01 03) + 'h' c3 a9
        + bytes.fromhex("01160300030000000101080000000000000040010368c3a9")
        # ClockOffset: Length 22 = 2 + 4 + 16
        + bytes.fromhex("01160400eeffc002000000000000f83f000000000000d0bf")
        # Boundary: Length 18 = 2 + 16
        + bytes.fromhex("0112050043a546dccbf5410fb30ed5467383cbe4")
    )
    assert rest == expected
    assert BOUNDARY_UUID == bytes.fromhex("43a546dccbf5410fb30ed5467383cbe4")


def test_varlen_widths() -> None:
    assert encode_varlen(0) == b"\x01\x00"
    assert encode_varlen(255) == b"\x01\xff"
    assert encode_varlen(256) == b"\x04" + struct.pack("<I", 256)
    assert encode_varlen(0xFFFFFFFF) == b"\x04\xff\xff\xff\xff"
    assert encode_varlen(0x1_0000_0000) == b"\x08" + struct.pack("<Q", 0x1_0000_0000)


def test_large_chunk_uses_four_byte_length(tmp_path: Path) -> None:
    path = tmp_path / "eeg.xdf"
    rng = np.random.default_rng(0)
    values = rng.normal(size=(500, 64)).astype(np.float32)
    timestamps = 5.0 + np.arange(500) / 1000.0
    with XdfWriter(path) as writer:
        writer.add_stream(1, stream_info_xml("eeg64", "float32", 64, 1000.0))
        before = writer.bytes_written
        writer.write_samples(1, timestamps, values)
        writer.write_footer(1)
    chunk = path.read_bytes()[before:]
    assert chunk[0] == 4
    (length,) = struct.unpack("<I", chunk[1:5])
    assert length == 2 + 4 + 5 + 500 * (1 + 8 + 64 * 4)
    (stream,) = load_raw(path)[0]
    np.testing.assert_array_equal(stream["time_series"], values)


def test_concurrent_writers_produce_a_valid_file(tmp_path: Path) -> None:
    """Several threads write interleaved chunks of their own stream plus boundaries."""
    path = tmp_path / "threads.xdf"
    n_threads, n_chunks, chunk_size = 4, 150, 7
    errors: list[BaseException] = []
    with XdfWriter(path, flush_interval=0.0) as writer:
        for stream_id in range(n_threads):
            fmt = "string" if stream_id == 0 else "int32"
            writer.add_stream(stream_id, stream_info_xml(f"s{stream_id}", fmt, 2, 0.0 if fmt == "string" else 100.0))

        def produce(stream_id: int) -> None:
            try:
                for chunk_index in range(n_chunks):
                    start = chunk_index * chunk_size
                    index = np.arange(start, start + chunk_size)
                    if stream_id == 0:
                        values = [[str(i), "é" * (i % 300)] for i in index]
                    else:
                        values = np.stack([index, index * stream_id], axis=1)
                    writer.write_samples(stream_id, index / 100.0, values)
                    if chunk_index % 10 == 0:
                        writer.write_clock_offset(stream_id, float(chunk_index), -1e-5)
                        writer.write_boundary()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for stream_id in range(n_threads):
            writer.write_footer(stream_id)
    assert not errors

    streams = by_name(load_raw(path)[0])
    total = n_chunks * chunk_size
    for stream_id in range(n_threads):
        stream = streams[f"s{stream_id}"]
        assert int(stream["footer"]["info"]["sample_count"][0]) == total
        assert len(stream["time_stamps"]) == total
        np.testing.assert_array_equal(stream["time_stamps"], np.arange(total) / 100.0)
        if stream_id == 0:
            assert [int(v[0]) for v in stream["time_series"]] == list(range(total))
        else:
            np.testing.assert_array_equal(stream["time_series"][:, 1], np.arange(total) * stream_id)
        assert len(stream["clock_times"]) == n_chunks // 10


def test_file_metadata_is_validated_before_any_file_exists(tmp_path: Path) -> None:
    from dyadlab.acquisition.xdf import validate_file_metadata

    validate_file_metadata({"study": "pilot", "dyad_id": "d01", "x.y-z": "1"})
    for bad, reason in (
        ({"1st": "x"}, "not a valid XML element name"),
        ({"xmlns": "x"}, "not a valid XML"),
        ({"datetime": "x"}, "reserved"),
    ):
        with pytest.raises(ValueError, match=reason):
            validate_file_metadata(bad)
        with pytest.raises(ValueError, match=reason):
            XdfWriter(tmp_path / "bad.xdf", file_metadata=bad)
        assert not (tmp_path / "bad.xdf").exists()
