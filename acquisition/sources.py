"""What an EEG source is: the contract between amplifiers (or the simulator) and the LSL bridge.

A source produces one participant's EEG in chunks whose timestamps are already on LSL's
``local_clock()``. :class:`~dyadlab.acquisition.bridge.BoardBridge` pumps any source into LSL; the
BrainFlow boards, the coupled-dyad simulator and existing LSL streams
(:mod:`dyadlab.acquisition.lsl_source`) are the kinds of source. A source without a board marker
channel says so with a class attribute ``has_marker_channel = False`` (see
:func:`carries_board_markers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from dyadlab import DyadlabError


class SourceError(DyadlabError, RuntimeError):
    """A source failed; the message says what and how to fix it."""


class SourceConfigError(SourceError, ValueError):
    """A source's configuration is invalid (detected before anything streams)."""


class SourceDisconnectedError(SourceError):
    """A source stopped delivering data (cable pulled, amplifier off, out of range)."""


@dataclass(frozen=True)
class SourceChunk:
    """The samples a source delivered since the previous read.

    Attributes
    ----------
    eeg : np.ndarray, shape (n_eeg_channels, n_samples)
        EEG in microvolts.
    aux : np.ndarray, shape (n_aux_channels, n_samples)
        Extra rows (accelerometer, battery, ...); zero rows when the source has none.
    timestamps : np.ndarray, shape (n_samples,)
        Sample times on LSL's ``local_clock()``.
    markers : np.ndarray, shape (n_samples,)
        Marker code carried by each sample; 0 where there is none.
    package_num : np.ndarray | None, shape (n_samples,)
        The device's packet counter, when it has one, for dropped-packet detection.
    """

    eeg: np.ndarray
    aux: np.ndarray
    timestamps: np.ndarray
    markers: np.ndarray
    package_num: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        """Number of samples in the chunk."""
        return int(self.timestamps.shape[0])

    @classmethod
    def empty(cls, n_eeg: int, n_aux: int) -> SourceChunk:
        """A chunk with no samples."""
        return cls(
            eeg=np.empty((n_eeg, 0)),
            aux=np.empty((n_aux, 0)),
            timestamps=np.empty(0),
            markers=np.empty(0),
            package_num=None,
        )


def carries_board_markers(source: object) -> bool:
    """Whether ``source`` tags samples with marker codes (a board marker channel): true unless it
    sets ``has_marker_channel = False`` (an amplifier's own LSL stream has no such channel)."""
    return bool(getattr(source, "has_marker_channel", True))


@runtime_checkable
class EegSource(Protocol):
    """One participant's EEG, read in chunks (prepare -> start -> read... -> stop -> release)."""

    sampling_rate: float
    eeg_channel_names: list[str]
    aux_channel_names: list[str]
    description: dict[str, str]

    def prepare(self) -> None:
        """Open the device; raise :class:`SourceConfigError` if the configuration is wrong."""

    def start(self) -> None:
        """Start streaming."""

    def read(self) -> SourceChunk:
        """Return what arrived since the last read, without blocking (possibly empty)."""

    def insert_marker(self, code: float) -> None:
        """Tag the next sample with a non-zero marker code."""

    def stop(self) -> None:
        """Stop streaming (the device stays open)."""

    def release(self) -> None:
        """Close the device; idempotent and safe to call after any failure."""
