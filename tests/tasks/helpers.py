"""Helpers of the task tests: reading the event streams back, CSV rows, blank-image check."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dyadlab.acquisition.markers import Marker, MarkerHub, MarkerOutlet

needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display: run under xvfb-run")


@dataclass
class EventStreams:
    """Marker hub and response outlet of a test session, with an inlet on each."""

    hub: MarkerHub
    responses: MarkerOutlet
    marker_inlet: Any
    response_inlet: Any

    def _drain(self, inlet: Any) -> list[tuple[Marker, float]]:
        received: list[tuple[Marker, float]] = []
        while True:
            sample, stamp = inlet.pull_sample(timeout=0.5)
            if sample is None:
                return received
            received.append((Marker.from_json(sample[0]), stamp))

    def markers(self) -> list[tuple[Marker, float]]:
        """Every marker received so far (blocks until the stream is quiet for 0.5 s)."""
        return self._drain(self.marker_inlet)

    def response_events(self) -> list[tuple[Marker, float]]:
        """Every response received so far."""
        return self._drain(self.response_inlet)


def events(markers: list[tuple[Marker, float]]) -> list[str]:
    """The event names in order."""
    return [marker.event for marker, _ in markers]


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a PsychoPy wide-text CSV (UTF-8 with BOM)."""
    import csv

    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def drawn_pixels(path: Path) -> int:
    """How many pixels of a PNG differ from its background (its most common grey level); 0 = blank.

    A fixation point is a few dozen pixels on a uniform screen, so a spread measure (standard
    deviation) would call it blank; this counts what was drawn.
    """
    import numpy as np
    from PIL import Image

    grey = np.asarray(Image.open(path).convert("L"), dtype=int)
    background = np.bincount(grey.ravel()).argmax()
    return int(np.count_nonzero(np.abs(grey - background) > 8))
