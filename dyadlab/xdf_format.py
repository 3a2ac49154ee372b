"""XDF 1.0 format constants shared by the writer and inspector (:mod:`dyadlab.acquisition`) and
the reader (:mod:`dyadlab.synchrony`): magic, chunk tags, the Boundary UUID and value formats.

Layout: ``[NumLengthBytes in {1, 4, 8}][Length][Tag: u16][Content]``, little-endian; see the
XDF specification (sccn/xdf wiki, "Specifications") and LabRecorder's ``xdfwriter``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BOUNDARY_UUID",
    "CHANNEL_FORMATS",
    "MAGIC",
    "NUMERIC_FORMATS",
    "TAGS_WITH_STREAM_ID",
    "TAG_BOUNDARY",
    "TAG_CLOCK_OFFSET",
    "TAG_FILE_HEADER",
    "TAG_NAMES",
    "TAG_SAMPLES",
    "TAG_STREAM_FOOTER",
    "TAG_STREAM_HEADER",
]

MAGIC = b"XDF:"
TAG_FILE_HEADER = 1
TAG_STREAM_HEADER = 2
TAG_SAMPLES = 3
TAG_CLOCK_OFFSET = 4
TAG_BOUNDARY = 5
TAG_STREAM_FOOTER = 6
TAG_NAMES = {
    TAG_FILE_HEADER: "FileHeader",
    TAG_STREAM_HEADER: "StreamHeader",
    TAG_SAMPLES: "Samples",
    TAG_CLOCK_OFFSET: "ClockOffset",
    TAG_BOUNDARY: "Boundary",
    TAG_STREAM_FOOTER: "StreamFooter",
}
#: Tags whose chunk carries a 4-byte StreamId before the content.
TAGS_WITH_STREAM_ID = frozenset({TAG_STREAM_HEADER, TAG_SAMPLES, TAG_CLOCK_OFFSET, TAG_STREAM_FOOTER})

#: The 16 bytes of a Boundary chunk (identical in LabRecorder, pyxdf and xdf-Matlab).
BOUNDARY_UUID = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")

#: XDF channel_format -> little-endian numpy dtype.
NUMERIC_FORMATS: dict[str, np.dtype] = {
    "int8": np.dtype("<i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "float32": np.dtype("<f4"),
    "double64": np.dtype("<f8"),
}
CHANNEL_FORMATS = frozenset(NUMERIC_FORMATS) | {"string"}
