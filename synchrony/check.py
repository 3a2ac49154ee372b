"""The synchrony quick-check: from one XDF file to a JSON report, an HTML report and a verdict.

:func:`run_check` is the public entry point (the session runner calls it after every session,
``dyadlab check`` wraps it). The JSON it returns and writes follows the versioned schema in
``docs/quickcheck-schema.md``.

The pipeline is a chain of stages, each a function here with typed input and output:
:meth:`CheckSettings.from_options` (validated options) -> :func:`~dyadlab.synchrony.io.load_dyad`
-> :func:`assess_quality` (per participant, :mod:`dyadlab.synchrony.quality`; photodiode / TTL
edges against the markers, :mod:`dyadlab.synchrony.timing_verification`) ->
:func:`build_timeline` (common grid, condition blocks from markers) -> :func:`select_epochs`
(mains and harmonics removed and line-noise power per epoch measured,
:mod:`dyadlab.synchrony.mains`; union artifact rejection) -> :func:`measure_synchrony` (per
condition and band, two bands at a time, each made when analysed: inter-brain metrics,
:mod:`dyadlab.synchrony.metrics`, and their partner-epoch-shuffle null from one stratified plan
shared by the bands, :mod:`dyadlab.synchrony.surrogates`; z and empirical p of the mean over
pairs; per pair, FDR and max-statistic FWER, :mod:`dyadlab.synchrony.stats`; then
:func:`mains_section`, each band's relation to shared line noise) -> :func:`compare_conditions` (contrasts
against rest and between task conditions) -> diagnostics and verdict (:mod:`dyadlab.synchrony.verdict`) ->
:func:`assemble_result` -> :func:`write_outputs` (JSON, and the HTML of
:mod:`dyadlab.synchrony.report`).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import logging
import math
import platform
import time
import warnings as warnings_module
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dyadlab import DyadlabError
from dyadlab.cli_support import ProgressBar
from dyadlab.synchrony import mains as mains_mod
from dyadlab.synchrony import quality as quality_mod
from dyadlab.synchrony import segments as seg
from dyadlab.synchrony import speech_roles
from dyadlab.synchrony import verdict as verdict_mod
from dyadlab.synchrony.behaviour import summarise_behaviour
from dyadlab.synchrony.figures import SpectrumFigure, TimelineEvents
from dyadlab.synchrony.io import DyadRecording, ParticipantEeg, load_dyad
from dyadlab.synchrony.report import ReportFigures
from dyadlab.synchrony.speech_roles import SpeechOptions
from dyadlab.synchrony.timing_verification import TimingOptions, verify_timing

if TYPE_CHECKING:
    from dyadlab.synchrony import surrogates as surrogates_mod

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1.4"
MIN_EPOCHS_WARN = 60
#: Fewest clean epochs for surrogate statistics: an epoch shuffle of n epochs has only n!
#: distinct surrogates (5! = 120, many of them nearly the real pairing); 8! = 40,320.
MIN_EPOCHS_STATS = 8
CONTRAST_PERMUTATIONS = 1000
#: Seed of the surrogate and permutation generators unless one is given: `dyadlab check` and the
#: session runner's in-session check both use it, so the same file gives the same numbers everywhere.
DEFAULT_SEED = 0
#: Smallest circular shift of B (seconds), beyond the signals' autocorrelation time.
CIRCULAR_MIN_SHIFT_S = 2.0
#: Matrices in the JSON are rounded to this many decimals (keeps a 32 x 32-channel report small).
MATRIX_DECIMALS = 5
#: Highest declared sampling rate the check accepts (Hz); EEG amplifiers stay far below it.
MAX_RATE_HZ = 100_000.0
#: Longest epoch accepted (seconds): a condition block is rarely longer than a few minutes.
MAX_EPOCH_LENGTH_S = 600.0
#: Channels per participant in the report's traces around block starts (the first used ones).
TRACE_CHANNELS = 8
#: Bands of a condition computed at once (in threads) by the quick-check.
_BANDS_AT_ONCE = 2
BASELINE_NAMES = ("rest", "baseline", "resting", "rest-facing", "rest_facing")
RESERVED_CONDITION_KEYS = ("n_epochs", "n_epochs_planned", "duration_s", "blocks")


class QuickCheckError(DyadlabError, ValueError):
    """The file cannot be checked as asked (the message says why and what to do)."""


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - started, 3)


def json_ready(value: Any) -> Any:
    """NaN/inf -> None, numpy -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":  # whole matrices at once: NaN -> None without a Python loop per element
            cells = value.astype(object)
            cells[~np.isfinite(value)] = None
            return cells.tolist()
        return json_ready(value.tolist())
    if isinstance(value, (np.floating, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("dyadlab", "numpy", "scipy", "pyxdf", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def _full_matrix(values: np.ndarray, used_a: np.ndarray, used_b: np.ndarray) -> np.ndarray:
    """(used_a, used_b) values placed in an (all A channels, all B channels) matrix, NaN elsewhere."""
    full = np.full((used_a.size, used_b.size), np.nan)
    full[np.ix_(np.flatnonzero(used_a), np.flatnonzero(used_b))] = values
    return full


def conditions_and_blocks(
    recording: DyadRecording, conditions: Sequence[str] | None, recording_span: tuple[float, float]
) -> tuple[list[seg.Block], str, list[str]]:
    """Blocks and where they came from: ``condition-specs``, ``markers`` or ``whole-recording``."""
    start, end = recording_span
    if conditions:
        specs = [seg.parse_condition_spec(text) for text in conditions]
        blocks, warnings = seg.blocks_from_specs(recording.markers, specs, end)
        if not blocks:
            raise QuickCheckError(
                "None of the --condition specifications matched the file's markers: " + " ".join(warnings)
            )
        return blocks, "condition-specs", warnings
    blocks, warnings = seg.blocks_from_markers(recording.markers, end)
    if blocks:
        return blocks, "markers", warnings
    if not recording.marker_streams:
        why = "The file has no marker stream"
    else:
        strings = list(dict.fromkeys(m.text for m in recording.markers))
        shown = ", ".join(repr(s[:60]) for s in strings[:6]) or "none"
        why = (
            f"The marker stream(s) {', '.join(recording.marker_streams)} hold no dyadlab block_start/block_end "
            f"events (marker strings: {shown})"
        )
    warnings.append(
        f"{why}, so the whole overlap of the two recordings is analysed as one condition "
        f"'{seg.WHOLE_RECORDING}'. To analyse conditions, pass --condition NAME=START:END (repeatable; START and "
        "END are marker strings or regular expressions), e.g. --condition cooperation=start_coop:end_coop."
    )
    return [seg.Block(seg.WHOLE_RECORDING, start, end, seg.WHOLE_RECORDING)], "whole-recording", warnings


def _traces(
    recording: DyadRecording,
    aligned: seg.AlignedDyad,
    blocks: Sequence[seg.Block],
    used_a: np.ndarray,
    used_b: np.ndarray,
) -> list[dict[str, Any]]:
    """Broadband snippets (2 s before to 3 s after) around the first block start of each condition."""
    out = []
    for condition in seg.condition_names(blocks):
        block = next(b for b in blocks if b.condition == condition)
        first = aligned.index(block.start - 2.0)
        stop = aligned.index(block.start + 3.0)
        if first < 0 or stop > aligned.n_samples or stop - first < 10:
            continue
        snippet = {"condition": condition, "time": (np.arange(first, stop) - aligned.index(block.start)) / aligned.rate}
        for side, data, used, p in (("a", aligned.a, used_a, recording.a), ("b", aligned.b, used_b, recording.b)):
            channels = np.flatnonzero(used)[:TRACE_CHANNELS]
            ext_first = max(first - int(aligned.rate), 0)
            ext_stop = min(stop + int(aligned.rate), aligned.n_samples)
            filtered = seg.block_analytic(
                data[channels, ext_first:ext_stop], aligned.rate, {"bb": (1.0, min(40.0, 0.45 * aligned.rate))}
            )["bb"].real
            snippet[side] = filtered[:, first - ext_first : stop - ext_first]
            snippet[f"{side}_labels"] = [p.channel_labels[c] for c in channels]
            board = []
            if p.board_markers is not None:
                hits = np.flatnonzero(np.nan_to_num(p.board_markers) != 0)
                times = p.timestamps[hits] - block.start
                board = times[(times >= -2.0) & (times <= 3.0)].tolist()
            snippet[f"{side}_board_markers"] = board
        snippet["lsl_markers"] = [
            m.time - block.start for m in recording.markers if -2.0 <= m.time - block.start <= 3.0
        ]
        out.append(snippet)
    return out


def _spectra(recording: DyadRecording) -> dict[str, SpectrumFigure]:
    """Each participant's Welch spectrum for the report, estimated as the quality check does."""
    from dyadlab.channel_quality import welch_spectrum

    spectra = {}
    for p in recording.participants:
        spectrum = welch_spectrum(p.data, p.nominal_rate)
        spectra[p.label] = SpectrumFigure(spectrum.freqs, spectrum.psd, list(p.channel_labels), p.unit)
    return spectra


def _timeline_events(
    recording: DyadRecording, aligned: seg.AlignedDyad, plans: Sequence[Any], keep: Sequence[np.ndarray]
) -> TimelineEvents:
    """Markers, invalid stretches and every planned epoch's fate, in seconds from the grid start."""
    invalid = np.flatnonzero(np.diff(np.concatenate([[0], (~aligned.valid).astype(np.int8), [0]])))
    starts = np.concatenate([p.starts for p in plans] or [np.empty(0)]) / aligned.rate
    valid = np.concatenate([p.valid for p in plans] or [np.empty(0, bool)])
    kept = np.concatenate(list(keep) or [np.empty(0, bool)])
    return TimelineEvents(
        markers=[
            (m.time - aligned.start, m.event or m.text[:20])
            for m in sorted([*recording.markers, *recording.responses], key=lambda m: m.time)
        ],
        invalid_spans=[(a / aligned.rate, b / aligned.rate) for a, b in invalid.reshape(-1, 2)],
        epoch_starts=starts,
        epoch_status=np.where(kept, "used", np.where(valid, "artifact", "invalid")),
        kept_epoch_starts={
            condition: np.concatenate(
                [p.starts[k] / aligned.rate for p, k in zip(plans, keep) if p.block.condition == condition]
                or [np.empty(0)]
            )
            for condition in dict.fromkeys(p.block.condition for p in plans)
        },
    )


def _baseline(conditions: Sequence[str]) -> str | None:
    for name in conditions:
        if name.lower() in BASELINE_NAMES:
            return name
    return None


@dataclass(frozen=True)
class CheckSettings:
    """The validated options of one quick-check (see :func:`run_check` for their meaning)."""

    eeg: tuple[str, ...] | None
    conditions: tuple[str, ...] | None
    bands: dict[str, tuple[float, float]]
    metrics: tuple[str, ...]
    epoch_length: float
    n_surrogates: int
    surrogate: str
    seed: int
    reject_z: float
    decimate: bool
    thresholds: quality_mod.QualityThresholds
    #: 50.0 or 60.0 (Hz), "off" (no removal) or None (detected): :func:`dyadlab.synchrony.mains.parse_mains`.
    mains: float | str | None = None
    #: The bands' filter design, one of :data:`dyadlab.synchrony.segments.BAND_FILTERS`.
    band_filter: str = "butterworth"
    #: Photodiode / TTL channels and edge rules; ``None``: the defaults, warning at residual_warn_ms.
    timing: TimingOptions | None = None
    #: Speaking roles from the participants' microphones (:mod:`dyadlab.synchrony.speech_roles`);
    #: ``None``: microphones ignored.
    speech: SpeechOptions | None = None

    @classmethod
    def from_options(
        cls,
        *,
        eeg: Sequence[str] | None = None,
        conditions: Sequence[str] | None = None,
        bands: dict[str, tuple[float, float]] | Sequence[str] | str | None = None,
        epoch_length: float = 2.0,
        n_surrogates: int = 200,
        seed: int = DEFAULT_SEED,
        metrics: Sequence[str] | None = None,
        surrogate: str = "epoch-shuffle",
        reject_z: float = 5.0,
        decimate: bool = True,
        thresholds: quality_mod.QualityThresholds | None = None,
        mains: float | str | None = None,
        band_filter: str = "butterworth",
        timing: TimingOptions | None = None,
        speech: SpeechOptions | None = None,
    ) -> CheckSettings:
        """Validate the options; :class:`QuickCheckError` names the first that does not fit."""
        from dyadlab.synchrony import metrics as metrics_mod

        band_map = seg.parse_bands(bands)
        for name in band_map:
            if name in RESERVED_CONDITION_KEYS:
                raise QuickCheckError(f"A band cannot be called {name!r} (reserved key of the report).")
        if not (math.isfinite(epoch_length) and 0 < epoch_length <= MAX_EPOCH_LENGTH_S):
            raise QuickCheckError(
                f"epoch_length must be a number of seconds above 0 and at most {MAX_EPOCH_LENGTH_S:g}, got {epoch_length}."
            )
        if n_surrogates < 0:
            raise QuickCheckError(f"n_surrogates must be >= 0, got {n_surrogates}.")
        if surrogate not in ("epoch-shuffle", "circular-shift"):
            raise QuickCheckError(f"surrogate must be 'epoch-shuffle' or 'circular-shift', got {surrogate!r}.")
        if not math.isfinite(reject_z) or reject_z <= 0:
            raise QuickCheckError(f"reject_z must be a positive number, got {reject_z}.")
        if band_filter not in seg.BAND_FILTERS:
            raise QuickCheckError(
                f"band_filter must be one of {', '.join(map(repr, seg.BAND_FILTERS))}, got {band_filter!r} ('hypyp' "
                "reproduces HyPyP's default FIR band filters, for values comparable with HyPyP analyses; "
                "'hypyp-epochs' also filters each epoch on its own, as HyPyP's default pipeline)."
            )
        if band_filter == seg.EPOCHWISE_FILTER:
            if surrogate == "circular-shift":
                raise QuickCheckError(
                    f"band_filter={seg.EPOCHWISE_FILTER!r} filters each epoch on its own, so there is no continuous "
                    "signal to shift circularly: use surrogate='epoch-shuffle' (--surrogate-method epoch-shuffle), or "
                    "band_filter='hypyp' (the same filters on the continuous blocks)."
                )
            if speech is not None and speech.lags:
                raise QuickCheckError(
                    f"Speaker-to-listener lags (--speech-lags) shift the listener's continuous band signal, which "
                    f"band_filter={seg.EPOCHWISE_FILTER!r} does not make (it filters each epoch on its own): use "
                    "band_filter='hypyp' (the same filters on the continuous blocks) or the default."
                )
            if mains is None:  # HyPyP removes no mains: reproduce it unless the user asks for removal
                mains = "off"
        try:
            mains_choice = mains_mod.parse_mains(mains)
        except ValueError as error:
            raise QuickCheckError(str(error)) from error
        return cls(
            eeg=tuple(eeg) if eeg else None,
            conditions=tuple(conditions) if conditions else None,
            bands=band_map,
            metrics=tuple(metrics_mod.validate_metrics(metrics or metrics_mod.METRICS)),
            epoch_length=float(epoch_length),
            n_surrogates=int(n_surrogates),
            surrogate=surrogate,
            seed=seed,
            reject_z=float(reject_z),
            decimate=decimate,
            thresholds=thresholds or quality_mod.QualityThresholds(),
            mains=mains_choice,
            band_filter=band_filter,
            timing=timing,
            speech=speech,
        )

    def inputs(self) -> dict[str, Any]:
        """The report's ``inputs`` section."""
        return {
            "eeg": list(self.eeg) if self.eeg else None,
            "conditions": list(self.conditions) if self.conditions else None,
            "bands": {k: list(v) for k, v in self.bands.items()},
            "metrics": list(self.metrics),
            "epoch_length_s": self.epoch_length,
            "n_surrogates": self.n_surrogates,
            "surrogate": self.surrogate,
            "seed": self.seed,
            "reject_z": self.reject_z,
            "decimate": self.decimate,
            "thresholds": quality_mod.thresholds_dict(self.thresholds),
            "mains": self.mains,
            "band_filter": self.band_filter,
            "speech": self.speech.describe() if self.speech is not None else None,
        }


class _Run:
    """What every stage reports to: the progress bar, the stage timings and the warnings."""

    def __init__(self, progress: bool) -> None:
        self.bar = ProgressBar(progress)
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []

    def stage(self, description: str, total: int = 1) -> None:
        """Start a stage of the check: on the progress bar, and in the log."""
        self.bar.stage(description, total)
        logger.info("%s", description)

    def timed(self, name: str) -> AbstractContextManager[None]:
        return _timed(self.timings, name)


@dataclass
class QualityStage:
    """Per-participant quality (the report's ``quality``) and the channels the analysis uses."""

    quality: dict[str, Any]
    used: dict[str, np.ndarray]  # label -> bool mask over the participant's channels
    #: The report's ``timing_verification`` (photodiode / TTL edges against the markers).
    timing_verification: dict[str, Any] | None = None


@dataclass
class TimelineStage:
    """Both participants on one sample grid, and the condition blocks that lie on it."""

    aligned: seg.AlignedDyad
    blocks: list[seg.Block]
    block_source: str


@dataclass
class EpochStage:
    """Planned epochs per block, which ones are kept, and the rejection bookkeeping."""

    plans: list[Any]
    rejection: Any
    keep: list[np.ndarray]
    margin: float
    high: float
    #: What is removed before band filtering and whose line noise is tracked per epoch.
    mains: mains_mod.MainsRemoval | None = None


@dataclass
class SynchronyStage:
    """Per condition: the report's entry (epochs and per band, per metric, the cells) and what the
    contrasts need (per-epoch means over pairs and the block of each epoch)."""

    conditions: dict[str, Any] = field(default_factory=dict)
    epochs_table: dict[str, Any] = field(default_factory=dict)
    epoch_means: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    epoch_blocks: dict[str, np.ndarray] = field(default_factory=dict)
    #: The mains removed before band filtering, and the JSON's ``mains`` section
    #: (:func:`mains_section`: what was removed, and per condition, band and metric, the relation
    #: of the per-epoch synchrony to shared line noise).
    mains: mains_mod.MainsRemoval | None = None
    mains_report: dict[str, Any] | None = None


def _check_analysable(p: ParticipantEeg) -> None:
    """A stream the check can put on a time grid: a declared regular rate and finite timestamps."""
    if not (math.isfinite(p.nominal_rate) and 0 < p.nominal_rate <= MAX_RATE_HZ):
        raise QuickCheckError(
            f"Participant {p.describe()} declares a sampling rate of {p.nominal_rate:g} Hz; the quick-check needs a "
            f"regularly sampled EEG stream between 0 and {MAX_RATE_HZ:g} Hz. Check the amplifier's LSL outlet "
            "(nominal_srate in the stream header: `dyadlab inspect FILE.xdf`)."
        )
    bad_stamps = int(np.count_nonzero(~np.isfinite(p.timestamps)))
    if bad_stamps:
        bad_offsets = int(np.count_nonzero(~np.isfinite(p.clock_values) | ~np.isfinite(p.clock_times)))
        cause = (
            f"{bad_offsets} of its {p.clock_values.size} clock offsets are not numbers, so synchronised time is unknown"
            if bad_offsets
            else "the file holds timestamps that are not numbers"
        )
        raise QuickCheckError(
            f"Participant {p.describe()}: {bad_stamps} of {p.n_samples} timestamps are not finite ({cause}). The "
            "recording's timing is damaged; `dyadlab inspect FILE.xdf` shows where."
        )


def assess_quality(recording: DyadRecording, settings: CheckSettings, run: _Run) -> QualityStage:
    """Data quality of each participant and of their overlap; the usable channels."""
    for participant in recording.participants:
        _check_analysable(participant)
    quality: dict[str, Any] = {}
    for p in recording.participants:
        quality[p.label], problems = quality_mod.participant_quality(
            p,
            recording.markers,
            settings.thresholds,
            line_freq=settings.mains if isinstance(settings.mains, float) else None,
        )
        run.warnings.extend(problems)
    quality["overlap"], problems = quality_mod.recording_overlap(recording.a, recording.b, settings.thresholds)
    run.warnings.extend(problems)
    used = {}
    for p in recording.participants:
        channels = quality[p.label]["channels"]
        excluded = set(channels["flat"]) | set(channels["railed"]) | set(channels["noisy"])
        used[p.label] = np.array([label not in excluded for label in p.channel_labels])
        if not used[p.label].any():
            raise QuickCheckError(
                f"Participant {p.label} has no usable EEG channel (flat: {channels['flat']}, railed: "
                f"{channels['railed']}, noisy: {channels['noisy']}); nothing to analyse."
            )
    with run.timed("timing_verification"):
        options = settings.timing or TimingOptions(lag_warn_ms=settings.thresholds.residual_warn_ms)
        verification = verify_timing(recording, options)
    run.warnings.extend(verification["problems"])
    return QualityStage(quality, used, verification)


def build_timeline(recording: DyadRecording, settings: CheckSettings, run: _Run) -> TimelineStage:
    """Align both participants on one grid and find the condition blocks within their overlap."""
    try:
        aligned = seg.align_dyad(recording.a, recording.b, gap_samples=settings.thresholds.gap_samples)
    except seg.SegmentationError as error:
        raise QuickCheckError(str(error)) from error
    # The recorded samples are on the grid now (quality is done): free them for the heavy part.
    recording.a.data = recording.b.data = np.zeros((0, 0), np.float32)
    run.warnings.extend(aligned.notes)
    too_high = [
        f"{name} {low:g}-{high:g} Hz" for name, (low, high) in settings.bands.items() if high >= 0.45 * aligned.rate
    ]
    if too_high:
        raise QuickCheckError(
            f"Band(s) {', '.join(too_high)} reach the Nyquist frequency of the data ({aligned.rate / 2:g} Hz at "
            f"{aligned.rate:g} Hz); choose bands below {0.45 * aligned.rate:g} Hz with --bands (e.g. --bands "
            "theta=4-7,alpha=8-12,beta=13-30)."
        )
    span = (aligned.start, aligned.start + (aligned.n_samples - 1) / aligned.rate)
    try:
        blocks, block_source, block_warnings = conditions_and_blocks(recording, settings.conditions, span)
    except seg.SegmentationError as error:
        raise QuickCheckError(str(error)) from error
    run.warnings.extend(block_warnings)
    outside = [b for b in blocks if b.end <= span[0] or b.start >= span[1]]
    if outside:
        run.warnings.append(
            f"{len(outside)} block(s) lie outside the overlap of the two recordings and are skipped: "
            + ", ".join(b.name for b in outside[:5])
        )
    blocks = [b for b in blocks if b not in outside]
    if not blocks:
        raise QuickCheckError("No condition block lies within the overlap of the two recordings.")
    return TimelineStage(aligned, blocks, block_source)


def select_epochs(
    recording: DyadRecording,
    timeline: TimelineStage,
    quality: QualityStage,
    settings: CheckSettings,
    figures: ReportFigures,
) -> EpochStage:
    """Plan the epochs of every block and reject invalid and artifactual ones (union over A and B)."""
    aligned, used = timeline.aligned, quality.used
    high = max(high for _, high in settings.bands.values())
    detected = [quality.quality[label]["channels"]["line_frequency_hz"] for label in ("A", "B")]
    removal = mains_mod.choose_removal(settings.mains, detected, aligned.rate)
    plans, rejection, keep = seg.select_epochs(
        aligned,
        timeline.blocks,
        settings.epoch_length,
        high,
        used["A"],
        used["B"],
        settings.reject_z,
        bands=settings.bands,
        decimate=settings.decimate,
        mains=removal,
        band_filter=settings.band_filter,
    )
    margin = seg.rejection_margin(aligned.rate, high, settings.bands, settings.band_filter, removal.removed)
    figures.traces = _traces(recording, aligned, timeline.blocks, used["A"], used["B"])
    figures.timeline = _timeline_events(recording, aligned, plans, keep)
    if all(plan.spectra for plan, kept in zip(plans, keep) if kept.any()):
        # The band signals are made from the spectra the screening kept: free the grid samples
        # (460 MB for 60 minutes of 2 x 32 channels at 500 Hz) for the heavy part.
        aligned.a = aligned.b = np.zeros((0, 0), np.float32)
    return EpochStage(plans, rejection, keep, margin, high, removal)


def measure_synchrony(
    timeline: TimelineStage,
    epochs: EpochStage,
    quality: QualityStage,
    settings: CheckSettings,
    rng: np.random.Generator,
    figures: ReportFigures,
    run: _Run,
) -> SynchronyStage:
    """Every condition's inter-brain metrics per band, with their surrogate statistics."""
    conditions = seg.condition_names(timeline.blocks)
    stage = SynchronyStage(mains=epochs.mains)
    run.stage("Synchrony and surrogates", total=len(conditions) * len(settings.bands))
    with ThreadPoolExecutor(max_workers=_BANDS_AT_ONCE, thread_name_prefix="dyadlab-synchrony") as pool:
        for condition in conditions:
            index = [i for i, p in enumerate(epochs.plans) if p.block.condition == condition]
            stage.conditions[condition] = _condition_synchrony(
                condition,
                [epochs.plans[i] for i in index],
                [epochs.keep[i] for i in index],
                timeline,
                quality,
                settings,
                rng,
                figures,
                run,
                stage,
                pool,
            )
    stage.mains_report = mains_section(epochs, stage, settings, run)
    return stage


def mains_section(
    epochs: EpochStage, stage: SynchronyStage, settings: CheckSettings, run: _Run
) -> dict[str, Any] | None:
    """The JSON's ``mains`` section: what was removed before band filtering and, per condition,
    band and metric, whether the per-epoch synchrony follows the line noise both participants
    carry (:func:`dyadlab.synchrony.mains.line_noise_relation`); ``None`` without a
    :class:`~dyadlab.synchrony.mains.MainsRemoval`. A band that follows it is named in a warning
    (the verdict withholds it)."""
    if epochs.mains is None:
        return None
    section = epochs.mains.describe()
    run.warnings.extend(epochs.mains.notes)
    relation: dict[str, Any] = {}
    for condition in stage.conditions:
        plans = [(p, k) for p, k in zip(epochs.plans, epochs.keep) if p.block.condition == condition and k.any()]
        if not plans or not all(p.line_power for p, _ in plans):
            continue
        shared = mains_mod.shared_line_power(
            np.concatenate([p.line_power["a"][k] for p, k in plans]),
            np.concatenate([p.line_power["b"][k] for p, k in plans]),
        )
        relation[condition] = {}
        for band in settings.bands:
            relation[condition][band] = {}
            for metric in settings.metrics:
                means = stage.epoch_means.get((condition, band, metric))
                if means is None:
                    continue
                found = mains_mod.line_noise_relation(shared, means)
                relation[condition][band][metric] = found.describe()
                if found.follows and metric == verdict_mod.VERDICT_METRIC:
                    run.warnings.append(
                        f"{condition}/{band}: the epochs' {metric.upper()} rises with the mains line noise both "
                        f"participants carry (rank correlation {found.rho:.2f}, p {found.p:.3f} over "
                        f"{found.n_epochs} epochs): this band's synchrony follows shared line noise, not the brains."
                    )
    section["relation"] = relation
    section["relation_rule"] = (
        "Spearman rho over kept epochs between the smaller of A's and B's log line-noise power (within "
        f"{mains_mod.NOTCH_HALF_WIDTH_HZ:g} Hz of the mains, before its removal) and the epoch's synchrony; one-sided "
        "p from Student's t on the effective number of epochs (Bartlett's correction for autocorrelation); follows "
        f"when rho > 0 and p < {mains_mod.RELATION_P:g}"
    )
    return section


def _condition_synchrony(
    condition: str,
    plans: list[Any],
    keep: list[np.ndarray],
    timeline: TimelineStage,
    quality: QualityStage,
    settings: CheckSettings,
    rng: np.random.Generator,
    figures: ReportFigures,
    run: _Run,
    stage: SynchronyStage,
    pool: ThreadPoolExecutor,
) -> dict[str, Any]:
    """One condition's report entry; its epoch bookkeeping goes into ``stage``."""
    from dyadlab.synchrony import stats, surrogates

    used = quality.used
    planned = int(sum(p.starts.size for p in plans))
    invalid = int(sum((~p.valid).sum() for p in plans))
    n_used = int(sum(k.sum() for k in keep))
    stage.epochs_table[condition] = {
        "planned": planned,
        "invalid_data": invalid,
        "rejected_artifacts": planned - invalid - n_used,
        "used": n_used,
    }
    entry: dict[str, Any] = {
        "n_epochs": n_used,
        "n_epochs_planned": planned,
        "duration_s": round(sum(p.block.end - p.block.start for p in plans), 3),
        "blocks": [p.block.name for p in plans],
    }
    stage.epoch_blocks[condition] = np.repeat(np.arange(len(plans)), [int(k.sum()) for k in keep])
    with_stats = bool(settings.n_surrogates) and n_used >= MIN_EPOCHS_STATS
    if 0 < n_used < MIN_EPOCHS_STATS and settings.n_surrogates:
        run.warnings.append(
            f"Condition {condition!r}: only {n_used} clean epoch(s); surrogate z and p need at least "
            f"{MIN_EPOCHS_STATS} and are not computed (means only)."
        )
    elif n_used < MIN_EPOCHS_WARN:
        run.warnings.append(
            f"Condition {condition!r}: {n_used} clean epoch(s) of {settings.epoch_length:g} s (of {planned}); at "
            f"least {MIN_EPOCHS_WARN} are recommended for stable synchrony estimates."
        )
    if n_used == 0:
        for band in settings.bands:
            entry[band] = {m: {"mean": None, "z": None, "p": None, "matrix": None} for m in settings.metrics}
            run.bar.advance()
        return entry
    with run.timed("filter_epochs"):
        # Each band's epochs are made when the loop below submits the band.
        band_epochs = seg.iter_condition_epochs(
            timeline.aligned,
            plans,
            keep,
            settings.epoch_length,
            settings.bands,
            used["A"],
            used["B"],
            decimate=settings.decimate,
            continuous=settings.surrogate == "circular-shift",
            mains=stage.mains,
            band_filter=settings.band_filter,
        )
    # One null for all bands of the condition (the same epoch pairings, or the same time shifts),
    # so that the family-wise correction over bands sees a joint null.
    shuffle = shift_fractions = None
    if with_stats and settings.surrogate == "epoch-shuffle":
        shuffle = surrogates.shuffle_plan(n_used, settings.n_surrogates, rng)
    elif with_stats:
        shift_fractions = rng.random(settings.n_surrogates)
    observed_by_band: dict[str, dict[str, np.ndarray]] = {}
    null_by_band: dict[str, dict[str, np.ndarray]] = {}
    # Two bands at a time: the metrics' element-wise NumPy work runs on one core, the matrix
    # products and the PLI/wPLI kernel on both, so two bands keep both cores busy. A band's epochs
    # are made only when a worker is free for them and are dropped when its job ends: at most two
    # bands' epochs are alive (all four default bands of a 30-min condition of 2 x 32 channels at
    # 500 Hz: 410 MB).
    jobs: dict[str, Future] = {}
    for band in settings.bands:
        with run.timed("filter_epochs"):
            # A generator expression: no name in this frame keeps a band's epochs alive.
            jobs.update(
                (name, pool.submit(_band_synchrony, epochs, settings.metrics, shuffle, shift_fractions))
                for name, epochs in itertools.islice(band_epochs, _BANDS_AT_ONCE - len(jobs))
            )
        with run.timed("synchrony"):
            per_epoch, null = jobs.pop(band).result()
            with np.errstate(all="ignore"), warnings_module.catch_warnings():
                warnings_module.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs stay NaN
                observed = {m: np.nanmean(v, axis=0) for m, v in per_epoch.items()}
                for m, v in per_epoch.items():
                    stage.epoch_means[(condition, band, m)] = np.nanmean(v, axis=(1, 2))
        del per_epoch
        if with_stats and null is None:
            run.warnings.append(
                f"Condition {condition!r}: its blocks together are too short for circular shifts of at least "
                f"{CIRCULAR_MIN_SHIFT_S:g} s both ways; no z or p."
            )
        entry[band] = {}
        for metric in settings.metrics:
            matrix = observed[metric]
            cell: dict[str, Any] = {"mean": float(np.nanmean(matrix)), "z": None, "p": None}
            if null is not None:
                null_means = np.nanmean(null[metric], axis=(1, 2))
                z, p = stats.surrogate_z_p(cell["mean"], null_means)
                cell.update(
                    z=float(z),
                    p=float(p),
                    null_mean=float(np.mean(null_means)),
                    null_std=float(np.std(null_means, ddof=1)),
                    null_p95=float(np.percentile(null_means, 95)),
                )
                figures.nulls[(condition, band, metric)] = null_means
            cell["matrix"] = np.round(_full_matrix(matrix, used["A"], used["B"]), MATRIX_DECIMALS)
            entry[band][metric] = cell
        if null is not None:
            observed_by_band[band], null_by_band[band] = observed, null
        run.bar.advance()
    if null_by_band:
        with run.timed("pair_statistics"):
            _pair_statistics(entry, observed_by_band, null_by_band, settings.metrics, used["A"], used["B"])
    return entry


def assemble_result(
    path: Path,
    recording: DyadRecording,
    settings: CheckSettings,
    quality: QualityStage,
    timeline: TimelineStage,
    epochs: EpochStage,
    synchrony: SynchronyStage,
    contrasts: dict[str, Any],
    diagnostics: dict[str, Any],
    run: _Run,
) -> dict[str, Any]:
    """The report (schema :data:`SCHEMA_VERSION`, ``docs/quickcheck-schema.md``) as strict JSON values."""
    from dyadlab.synchrony import stats

    aligned = timeline.aligned
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "file": {
            "path": str(path.resolve()),
            "name": path.name,
            "size_bytes": path.stat().st_size,
            "header": recording.file_header,
            "load_problems": recording.file_problems,
            "other_streams": recording.other_streams,
        },
        "inputs": settings.inputs(),
        "versions": _versions(),
        "participants": {
            p.label: {
                "stream": p.stream_name,
                "source_id": p.source_id,
                "participant": p.participant,
                "channels": p.channel_labels,
            }
            for p in recording.participants
        },
        "quality": quality.quality,
        "alignment": {
            "rate_hz": aligned.rate,
            "start": aligned.start,
            "duration_s": (aligned.n_samples - 1) / aligned.rate,
            "valid_fraction": float(aligned.valid.mean()),
            "notes": aligned.notes,
            "analysis_step": {
                b: seg.analysis_step(aligned.rate, hi, settings.decimate) for b, (_, hi) in settings.bands.items()
            },
        },
        "band_definitions": {
            name: seg.describe_band_filter(band, aligned.rate, settings.band_filter)
            for name, band in settings.bands.items()
        },
        "segmentation": {
            "source": timeline.block_source,
            "blocks": seg.describe_blocks(timeline.blocks, aligned.start),
            "epochs": synchrony.epochs_table,
            "rejection": {
                "rule": f"union over A and B: an invalid sample (gap, NaN, lost sample) or the recording's start or end "
                f"within {epochs.margin:.2f} s (the band-pass filters' ringing down to 1 % of its peak), or any used "
                f"channel's epoch log-variance > {settings.reject_z:g} robust z above its median within the condition "
                f"(1-{min(epochs.high, 0.45 * aligned.rate):g} Hz)",
                "margin_s": round(epochs.margin, 3),
                "invalid_data": epochs.rejection.invalid,
                "artifact_A": epochs.rejection.artifact_a,
                "artifact_B": epochs.rejection.artifact_b,
            },
        },
        "conditions": synchrony.conditions,
        "contrasts": contrasts,
        "diagnostics": diagnostics,
        "mains": synchrony.mains_report,
        "timing_verification": quality.timing_verification,
        "calibration": stats.calibration_notes(settings.surrogate) if settings.n_surrogates else None,
        "warnings": list(dict.fromkeys(run.warnings)),
        "timing_s": {**run.timings, "xdf_read": round(recording.load_seconds, 3)},
    }
    result["verdict"] = verdict_mod.build_verdict(result, settings.bands)
    result["summary"] = verdict_mod.one_line(result["verdict"])
    return json_ready(result)


def _writable(path: str | Path | None, option: str) -> Path | None:
    """``path`` if a report can be written there: found before the analysis, not after it."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise QuickCheckError(f"{option} {path} is a folder; give a file name.")
    if not path.parent.is_dir():
        raise QuickCheckError(f"{option} {path}: the folder {path.parent} does not exist.")
    existed = path.exists()
    try:  # the one test that holds for root, read-only and virtual file systems alike
        with open(path, "ab"):
            pass
    except OSError as error:
        raise QuickCheckError(f"{option} {path} cannot be written ({error.strerror}); choose another place.") from error
    if not existed:
        path.unlink()
    return path


def write_outputs(result: dict[str, Any], figures: ReportFigures, json_out: Path | None, html_out: Path | None) -> None:
    """The JSON and the self-contained HTML report."""
    if json_out is not None:
        # Compact: json's C encoder only runs without indentation (10x faster on an hour's matrices).
        json_out.write_text(json.dumps(result, allow_nan=False), encoding="utf-8")
    if html_out is not None:
        from dyadlab.synchrony.report import write_html
        from dyadlab.synchrony.results import QuickCheckResult

        write_html(html_out, QuickCheckResult.model_validate(result), figures, json_out)


def run_check(
    xdf_path: str | Path,
    *,
    eeg: Sequence[str] | None = None,
    conditions: Sequence[str] | None = None,
    bands: dict[str, tuple[float, float]] | Sequence[str] | str | None = None,
    epoch_length: float = 2.0,
    n_surrogates: int = 200,
    json_out: str | Path | None = None,
    html_out: str | Path | None = None,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
    metrics: Sequence[str] | None = None,
    surrogate: str = "epoch-shuffle",
    reject_z: float = 5.0,
    decimate: bool = True,
    thresholds: quality_mod.QualityThresholds | None = None,
    mains: float | str | None = None,
    band_filter: str = "butterworth",
    timing: TimingOptions | None = None,
    speech: SpeechOptions | bool = True,
    speech_tsv: str | Path | None = None,
) -> dict[str, Any]:
    """Check one hyperscanning recording: data quality, timing and inter-brain synchrony.

    Parameters
    ----------
    xdf_path : str or Path
        The XDF file.
    eeg : pair of str, optional
        Participant A's and B's EEG streams by name or source_id, when the file's metadata does
        not identify them.
    conditions : sequence of str, optional
        ``NAME=START:END`` condition definitions (marker strings or regular expressions) for files
        without dyadlab block markers. Default: dyadlab ``block_start``/``block_end`` markers.
    bands : dict or str or sequence of str, optional
        ``{"alpha": (8, 12)}`` or ``"alpha=8-12,beta=13-30"``; default theta 4-7, alpha 8-12,
        beta 13-30, gamma 30-45 Hz.
    epoch_length : float
        Epoch length in seconds (non-overlapping epochs inside condition blocks).
    n_surrogates : int
        Surrogates per condition (0 skips the statistics).
    json_out, html_out : str or Path, optional
        Where to write the JSON and the self-contained HTML report (checked before the analysis).
    seed : int
        Seed of the surrogate generator (the result is reproducible); default :data:`DEFAULT_SEED`,
        which ``dyadlab check`` and the session runner's in-session check use too.
    progress : bool
        Show a rich progress bar on stderr.
    metrics : sequence of str, optional
        Default :data:`dyadlab.synchrony.metrics.METRICS`.
    surrogate : {"epoch-shuffle", "circular-shift"}
        The null: partner-epoch shuffle within condition, or circular shift of B's epochs.
    reject_z : float
        Artifact rejection threshold (robust z of epoch log-variance).
    decimate : bool
        Compute metrics on the analytic signal at >= 4 samples per period of each band's upper
        edge (see :func:`dyadlab.synchrony.segments.analysis_step`); ``False`` uses every sample.
    thresholds : QualityThresholds, optional
    mains : {50, 60, "off"} or None
        The lab's mains frequency (Hz), removed with its harmonics before band filtering
        (:mod:`dyadlab.synchrony.mains`); ``None`` (default) uses the frequency the quality
        stage detects, or both 50 and 60 Hz when it finds none (with ``band_filter="hypyp-epochs"``:
        ``"off"``, as HyPyP; ``"auto"`` detects then too); ``"off"`` removes nothing.
    band_filter : {"butterworth", "hypyp", "hypyp-epochs"}
        The bands' filter design (:data:`dyadlab.synchrony.segments.BAND_FILTERS`): the default puts
        -6 dB at the band edges; ``"hypyp"`` applies the FIR HyPyP's ``compute_freq_bands`` applies
        (MNE's defaults: passband to the edges, -6 dB half a transition band outside), on the
        continuous blocks, for values comparable with HyPyP analyses (needs MNE). The report's
        ``band_definitions`` state each band's measured response. ``"hypyp-epochs"`` reproduces
        HyPyP's default pipeline exactly: the same FIR applied by MNE to each epoch separately,
        the Hilbert transform per epoch, and no mains removal unless ``mains`` asks for it (then
        removed from the continuous block first); for comparability only, as per-epoch filtering
        inflates envelope correlation between independent signals. Needs the epoch-shuffle null.
    timing : TimingOptions, optional
        Which channels carry a photodiode or TTL and how their edges are found and paired with
        the markers (:mod:`dyadlab.synchrony.timing_verification`); default: found by label.
    speech : SpeechOptions or bool
        With both participants' microphone streams in the file (``docs/audio.md``): speech and
        turns are found and the conversation blocks split by speaking state
        (:mod:`dyadlab.synchrony.speech_roles`); ``True``: the default options; ``False``: the
        microphones are ignored. The report's ``speech`` section holds the turns and states.
    speech_tsv : str or Path, optional
        Where to write the speech events table (TSV, :meth:`dyadlab.synchrony.speech.ConversationSpeech.events`).

    Returns
    -------
    dict
        The report (schema ``docs/quickcheck-schema.md``, version :data:`SCHEMA_VERSION`; typed by
        :class:`dyadlab.synchrony.results.QuickCheckResult`).

    Raises
    ------
    dyadlab.synchrony.io.XdfLoadError
        The file cannot be read or does not hold two EEG streams.
    QuickCheckError
        An option does not fit, an output cannot be written, the recordings do not overlap,
        conditions cannot be built, or no channel is usable.

    Notes
    -----
    The stages, each a function of this module: :meth:`CheckSettings.from_options` ->
    :func:`~dyadlab.synchrony.io.load_dyad` -> :func:`assess_quality` -> :func:`build_timeline`
    -> :func:`select_epochs` -> :func:`measure_synchrony` -> :func:`compare_conditions` ->
    diagnostics and verdict (:mod:`dyadlab.synchrony.verdict`) -> :func:`assemble_result` ->
    :func:`write_outputs`.
    """
    started = time.perf_counter()
    settings = CheckSettings.from_options(
        eeg=eeg,
        conditions=conditions,
        bands=bands,
        epoch_length=epoch_length,
        n_surrogates=n_surrogates,
        seed=seed,
        metrics=metrics,
        surrogate=surrogate,
        reject_z=reject_z,
        decimate=decimate,
        thresholds=thresholds,
        mains=mains,
        band_filter=band_filter,
        timing=timing,
        speech=SpeechOptions() if speech is True else speech or None,
    )
    json_path, html_path = _writable(json_out, "--json"), _writable(html_out, "--report")
    tsv_path = _writable(speech_tsv, "--speech-tsv")
    rng = np.random.default_rng(settings.seed)
    figures = ReportFigures()
    run = _Run(progress)
    with run.bar:
        run.stage("Loading XDF")
        with run.timed("load"):
            recording = load_dyad(xdf_path, eeg=settings.eeg)
        run.warnings.extend(recording.warnings)
        run.stage("Data quality")
        with run.timed("quality"):
            quality = assess_quality(recording, settings, run)
            figures.spectra = _spectra(recording)
        run.stage("Aligning and epoching")
        with run.timed("align"):
            timeline = build_timeline(recording, settings, run)
        with run.timed("epochs"):
            epochs = select_epochs(recording, timeline, quality, settings, figures)
        spoken = speech_section = None
        if settings.speech is not None:
            run.stage("Speech and turns")
            with run.timed("speech"):
                spoken = speech_roles.detect(recording, settings.speech, run.warnings)
                if spoken is not None:
                    split, speech_section = speech_roles.apply(
                        spoken, timeline, epochs, quality.used, settings, run.warnings, min_epochs=MIN_EPOCHS_STATS
                    )
                    timeline = replace(timeline, blocks=split.blocks)
                    epochs = replace(epochs, plans=split.plans, keep=split.keep)
        synchrony = measure_synchrony(timeline, epochs, quality, settings, rng, figures, run)
    figures.epoch_means = synchrony.epoch_means
    with run.timed("contrasts"):
        contrasts = compare_conditions(synchrony, timeline, settings, figures, rng)
    diagnostics, problems = verdict_mod.diagnostics(
        synchrony.conditions, quality.quality, settings.bands, settings.metrics
    )
    run.warnings.extend(problems)
    run.timings["total"] = round(time.perf_counter() - started, 3)
    result = assemble_result(
        Path(xdf_path), recording, settings, quality, timeline, epochs, synchrony, contrasts, diagnostics, run
    )
    result["behaviour"] = json_ready(
        summarise_behaviour(recording.markers, recording.responses, timeline.aligned.start)
    )
    if spoken is not None and speech_section is not None:
        if tsv_path is not None:
            speech_section["events_tsv"] = str(spoken.write_tsv(tsv_path))
        speech_roles.finish(result, speech_section)
        result["speech"] = json_ready(speech_section)
        figures.conversation = spoken
    write_outputs(result, figures, json_path, html_path)
    return result


def compare_conditions(
    synchrony: SynchronyStage,
    timeline: TimelineStage,
    settings: CheckSettings,
    figures: ReportFigures,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Each task condition against the baseline (rest) and against each other, per band and metric
    (:func:`_contrasts`)."""
    return _contrasts(
        seg.condition_names(timeline.blocks),
        settings.bands,
        settings.metrics,
        synchrony.epoch_means,
        synchrony.epoch_blocks,
        figures.nulls,
        rng,
        epoch_length=settings.epoch_length,
    )


def _band_synchrony(
    epochs: seg.BandEpochs,
    metrics: Sequence[str],
    shuffle: surrogates_mod.ShufflePlan | None,
    shift_fractions: np.ndarray | None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """One band of one condition: per-epoch observed values (n_epochs, C_a, C_b) per metric and
    the surrogate null (n_surrogates, C_a, C_b) per metric, or ``None`` without statistics.

    ``shuffle``: the condition's :class:`dyadlab.synchrony.surrogates.ShufflePlan` for the epoch
    shuffle; ``shift_fractions`` for the circular shift; neither, no null.
    """
    from dyadlab.synchrony import metrics as metrics_mod
    from dyadlab.synchrony import surrogates

    if shuffle is not None:
        shuffled = surrogates.shuffle_null(epochs.za, epochs.zb, shuffle, metrics)
        return shuffled.observed, shuffled.null
    per_epoch = metrics_mod.inter_brain_connectivity(epochs.za, epochs.zb, metrics, epochs_average=False)
    return per_epoch, None if shift_fractions is None else _circular_null(epochs, shift_fractions, metrics)


def _circular_null(
    epochs: seg.BandEpochs, shift_fractions: np.ndarray, metrics: Sequence[str]
) -> dict[str, np.ndarray] | None:
    """Circular-shift null of a condition, or ``None`` when its blocks are too short.

    The condition's blocks are joined into one ring (B's signal from another block of the
    same condition is as good a partner as its own block's), so every epoch of the observed
    mean is also in the null. The lag of surrogate s is the same fraction ``shift_fractions[s]``
    of the usable range in every band, i.e. the same time shift whatever the band's analysis rate.
    """
    from dyadlab.synchrony import surrogates

    za = np.concatenate([block.za for block in epochs.blocks], axis=1)
    zb = np.concatenate([block.zb for block in epochs.blocks], axis=1)
    offsets = np.cumsum([0] + [block.za.shape[1] for block in epochs.blocks[:-1]])
    starts = np.concatenate([block.starts + offset for block, offset in zip(epochs.blocks, offsets)])
    rate, n_samples = epochs.blocks[0].rate, za.shape[1]
    min_shift = int(np.ceil(CIRCULAR_MIN_SHIFT_S * rate))
    if n_samples - 2 * min_shift < 1:
        return None
    lags = min_shift + np.floor(shift_fractions * (n_samples - 2 * min_shift + 1)).astype(np.intp)
    return surrogates.circular_shift_surrogates(
        za,
        zb,
        lags.size,
        metrics,
        sfreq=rate,
        epoch_starts=starts,
        epoch_samples=epochs.blocks[0].epoch_samples,
        min_shift_s=CIRCULAR_MIN_SHIFT_S,
        lags=lags,
    )


def _pair_statistics(
    entry: dict[str, Any],
    observed: dict[str, dict[str, np.ndarray]],
    nulls: dict[str, dict[str, np.ndarray]],
    metrics: Sequence[str],
    used_a: np.ndarray,
    used_b: np.ndarray,
) -> None:
    """Per-pair significance over the pairs and bands of each metric, written into ``entry``:
    ``pair_p_fdr`` / ``n_significant_pairs`` (Benjamini-Hochberg on parametric p) and
    ``pair_p_fwer`` / ``n_significant_pairs_fwer`` (max statistic), see
    :func:`dyadlab.synchrony.stats.pair_tests`. Valid over bands because every band's null comes from
    the same surrogate pairings or time shifts."""
    from dyadlab.synchrony import stats

    bands = list(nulls)
    for metric in metrics:
        values = np.stack([observed[band][metric] for band in bands])  # (n_bands, C_a, C_b)
        null = np.stack([nulls[band][metric] for band in bands], axis=1)  # (n_surrogates, n_bands, C_a, C_b)
        tests = stats.pair_tests(values, null, alpha=verdict_mod.P_DETECT)
        for k, band in enumerate(bands):
            cell = entry[band][metric]
            cell["pair_p_fdr"] = np.round(_full_matrix(tests.p_fdr[k], used_a, used_b), MATRIX_DECIMALS)
            cell["n_significant_pairs"] = int(tests.reject_fdr[k].sum())
            cell["pair_p_fwer"] = np.round(_full_matrix(tests.p_fwer[k], used_a, used_b), MATRIX_DECIMALS)
            cell["n_significant_pairs_fwer"] = int(tests.reject_fwer[k].sum())


def _contrasts(
    names: Sequence[str],
    bands: dict[str, Any],
    metrics: Sequence[str],
    epoch_means: dict[tuple[str, str, str], np.ndarray],
    epoch_blocks: dict[str, np.ndarray],
    nulls: dict[tuple[str, str, str], np.ndarray],
    rng: np.random.Generator,
    *,
    epoch_length: float,
    run_s: float = 10.0,
) -> dict[str, Any]:
    """Each non-baseline condition against the baseline (rest), and every two non-baseline conditions
    against each other (``<first>-vs-<second>``, listed in ``pairs``), per band and metric.

    :func:`dyadlab.synchrony.stats.condition_contrast` on the per-epoch means over pairs: the
    difference of the conditions' means, each minus its own surrogate mean when both nulls
    exist (bias-corrected), with a two-sided permutation p that exchanges runs of
    ``ceil(run_s / epoch_length)`` consecutive epochs (consecutive epochs are autocorrelated);
    runs stop at block boundaries (``epoch_blocks``: the block of each epoch in
    ``epoch_means``). ``p_fdr``: Benjamini-Hochberg over all contrasts and bands of each
    metric, the family the report scans.
    """
    from dyadlab.synchrony import stats

    baseline = _baseline(names)
    tasks = [name for name in names if name != baseline]
    # Each task condition against the baseline, then every two task conditions against each other
    # (the design's own question, e.g. cooperation vs competition); the baseline ones first so that
    # their permutations draw the same random numbers as when they were the only contrasts.
    compared = [(name, baseline) for name in tasks if baseline is not None] + list(itertools.combinations(tasks, 2))
    if not compared:
        return {}
    # The small tolerance keeps e.g. 10 / 0.1 = 100.00000000000001 from becoming 101 epochs.
    run_length = max(1, math.ceil(run_s / epoch_length - 1e-9))
    out: dict[str, Any] = {
        "baseline": baseline,
        "n_permutations": CONTRAST_PERMUTATIONS,
        "run_length_epochs": run_length,
        "pairs": {f"{name}-vs-{other}": [name, other] for name, other in compared},
    }
    cells: dict[str, list[dict[str, Any]]] = {metric: [] for metric in metrics}  # FDR families
    for name, other in compared:
        pair: dict[str, Any] = {}
        for band in bands:
            pair[band] = {}
            for metric in metrics:
                key, other_key = (name, band, metric), (other, band, metric)
                this, that = epoch_means.get(key), epoch_means.get(other_key)
                if this is None or that is None or this.size < 2 or that.size < 2:
                    pair[band][metric] = {
                        "difference": None,
                        "p": None,
                        "p_fdr": None,
                        "bias_corrected": False,
                        "n_runs": None,
                        "exact": None,
                    }
                    continue
                corrected = key in nulls and other_key in nulls
                result = stats.condition_contrast(
                    this,
                    that,
                    nulls[key] if corrected else None,
                    nulls[other_key] if corrected else None,
                    run_length=run_length,
                    blocks_a=epoch_blocks[name],
                    blocks_b=epoch_blocks[other],
                    n_permutations=CONTRAST_PERMUTATIONS,
                    rng=rng,
                )
                cell = pair[band][metric] = {
                    "difference": float(result.difference),
                    "p": float(result.p),
                    "p_fdr": None,
                    "bias_corrected": corrected,
                    "n_runs": [result.n_runs_a, result.n_runs_b],
                    "exact": result.exact,
                }
                cells[metric].append(cell)
        out[f"{name}-vs-{other}"] = pair
    for family in cells.values():
        if family:
            _, adjusted = stats.fdr(np.array([cell["p"] for cell in family]))
            for cell, p_fdr in zip(family, adjusted):
                cell["p_fdr"] = float(p_fdr)
    return out
