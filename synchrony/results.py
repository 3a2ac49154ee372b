"""The quick-check result as typed models: the one definition of its JSON.

:func:`dyadlab.synchrony.check.run_check` returns a :class:`QuickCheckResult`; its JSON is
``result.model_dump_json()``, and the JSON Schema that ``docs/quickcheck-schema.json`` holds is
generated from these models (``python -m dyadlab.synchrony.results`` rewrites it; a test fails
when it is stale). ``docs/quickcheck-schema.md`` explains what the fields mean.

Files of every 1.x schema load (:func:`load_result`): keys added since 1.0 are optional, and
1.1's ``timing_s.pyxdf_load`` is read as ``xdf_read``. Unknown keys are refused, so a result
that drifts from this definition fails its own validation rather than a reader downstream.

Condition entries and contrasts carry fixed fields plus one entry per band or per contrast,
named by the user (``"alpha"``, ``"cooperation-vs-rest"``): those entries are typed extra
fields (:attr:`ConditionResult.bands`, :attr:`Contrasts.by_name`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dyadlab import DyadlabError

__all__ = [
    "ConditionResult",
    "Contrasts",
    "MetricCell",
    "QuickCheckResult",
    "ResultFileError",
    "json_schema",
    "load_result",
]

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "quickcheck-schema.json"
Number = float | None
Matrix = list[list[float | None]]


class ResultFileError(DyadlabError, ValueError):
    """A quick-check JSON file that does not fit the schema."""


class _Fixed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileInfo(_Fixed):
    path: str
    name: str
    size_bytes: int
    header: dict[str, str]
    load_problems: list[str]
    other_streams: list[str]


class Inputs(_Fixed):
    eeg: list[str] | None
    conditions: list[str] | None
    bands: dict[str, list[float]]
    metrics: list[str]
    epoch_length_s: float
    n_surrogates: int
    surrogate: str
    seed: int | None
    reject_z: float
    decimate: bool
    thresholds: dict[str, float]
    mains: float | str | None = None  # absent in files of 1.2 and before
    # dyadlab.synchrony.segments.BAND_FILTERS; absent in files of 1.2 and before (which all used butterworth)
    band_filter: Literal["butterworth", "hypyp", "hypyp-epochs"] = "butterworth"
    # dyadlab.synchrony.speech_roles.SpeechOptions.describe(); absent in files of 1.3 and before
    speech: dict[str, Any] | None = None


class Participant(_Fixed):
    stream: str
    source_id: str
    participant: dict[str, str]
    channels: list[str]


class SpectrumWindows(_Fixed):
    window_s: float
    windows: int
    available_windows: int
    max_windows: int


class ChannelQuality(_Fixed):
    """Per-channel quality; ``std_uv`` for streams in microvolts (or a convertible unit), ``std`` in
    the stream's own unit otherwise."""

    labels: list[str]
    std_uv: list[float | None] | None = None
    std: list[float | None] | None = None
    nan_samples: list[int]
    flat: list[str]
    railed: list[str]
    noisy: list[str]
    line_frequency_hz: float | None
    line_noise_db: list[float | None]
    line_noise_channels: list[str]
    spectrum: SpectrumWindows | None = None  # 1.1


class MarkerResiduals(_Fixed):
    lsl_markers: int
    board_markers: int
    matched: int
    median_ms: Number = None  # absent when no marker matched
    max_abs_ms: Number = None
    iqr_ms: Number = None


class ParticipantQuality(_Fixed):
    stream: str
    source_id: str
    participant: dict[str, str]
    unit: str
    channels_used: int
    excluded_channels: list[str]
    samples: int
    start: Number
    end: Number
    duration_s: Number
    nominal_rate_hz: float
    effective_rate_hz: Number
    rate_deviation: Number
    missing_samples: int
    gap_threshold_s: Number
    gaps: int
    largest_gap_s: Number
    total_gap_s: Number
    backward_jumps: int
    largest_backward_jump_s: Number
    clock_offsets: int
    clock_offset_range_ms: Number
    footer_sample_count: int | None
    dropped_packets: int | None
    nan_samples: int
    nan_spans_s: list[list[float]]
    channels: ChannelQuality
    alpha_peak_hz: Number
    marker_residuals: MarkerResiduals | None
    problems: list[str]
    verdict: str


class Overlap(_Fixed):
    start_difference_s: float
    end_difference_s: float
    overlap_s: float
    overlap_fraction: float


class Quality(_Fixed):
    """Per participant (``A``, ``B``) and the overlap of their recordings."""

    A: ParticipantQuality
    B: ParticipantQuality
    overlap: Overlap


class Alignment(_Fixed):
    rate_hz: float
    start: float
    duration_s: float
    valid_fraction: float
    notes: list[str]
    analysis_step: dict[str, int] | None = None


class Block(_Fixed):
    condition: str
    name: str
    start_s: float
    end_s: float


class EpochCounts(_Fixed):
    planned: int
    invalid_data: int
    rejected_artifacts: int
    used: int


class Rejection(_Fixed):
    rule: str
    margin_s: float | None = None  # 1.1
    invalid_data: int
    artifact_A: int
    artifact_B: int


class Segmentation(_Fixed):
    source: str
    blocks: list[Block]
    epochs: dict[str, EpochCounts]
    rejection: Rejection


class MetricCell(_Fixed):
    """One metric in one band of one condition: the mean over channel pairs, its surrogate z and
    p, the pair matrix (A's channels x B's) and the pair-level tests."""

    mean: Number
    z: Number
    p: Number
    null_mean: Number = None
    null_std: Number = None
    null_p95: Number = None
    matrix: Matrix | None
    pair_p_fdr: Matrix | None = None
    n_significant_pairs: int | None = None
    pair_p_fwer: Matrix | None = None  # 1.1
    n_significant_pairs_fwer: int | None = None  # 1.1


class ConditionResult(BaseModel):
    """A condition: its epochs and blocks, and per band (extra fields named by band) per metric a
    :class:`MetricCell`."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, dict[str, MetricCell]] = Field(init=False)

    n_epochs: int
    n_epochs_planned: int
    duration_s: float
    blocks: list[str]

    @property
    def bands(self) -> dict[str, dict[str, MetricCell]]:
        """Band name -> metric name -> cell."""
        return dict(self.__pydantic_extra__ or {})


class ContrastCell(_Fixed):
    difference: Number
    p: Number
    p_fdr: Number = None  # 1.1
    bias_corrected: bool | None = None
    n_runs: list[int] | None = None  # 1.1
    exact: bool | None = None  # 1.1


class Contrasts(BaseModel):
    """Condition contrasts: each task condition against the baseline and every two task conditions
    against each other; extra fields named ``"<first>-vs-<second>"`` hold band -> metric ->
    :class:`ContrastCell`, ``pairs`` names the two conditions of each."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, dict[str, dict[str, ContrastCell]]] = Field(init=False)

    baseline: str | None = None
    n_permutations: int | None = None
    run_length_epochs: int | None = None  # 1.1
    #: contrast name -> [first condition, second condition]; absent in files of 1.2 and before,
    #: whose contrasts are all ``<condition>-vs-<baseline>``.
    pairs: dict[str, list[str]] | None = None

    def conditions_of(self, name: str) -> tuple[str, str]:
        """The two conditions of contrast ``name`` (first minus second)."""
        if self.pairs and name in self.pairs:
            first, second = self.pairs[name]
            return first, second
        return name.removesuffix(f"-vs-{self.baseline}"), str(self.baseline)

    @property
    def by_name(self) -> dict[str, dict[str, dict[str, ContrastCell]]]:
        return dict(self.__pydantic_extra__ or {})


class AlphaPeaks(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    A: Number
    B: Number
    difference_B_minus_A: Number


class Diagnostics(_Fixed):
    alpha_peak_hz: AlphaPeaks | None = None
    common_mode: list[dict[str, Any]]


class Detection(_Fixed):
    condition: str
    band: str
    metric: str
    z: float
    p: float
    mean: float


class LineNoiseRelation(_Fixed):
    """Rank correlation over epochs of shared line-noise power and a band's synchrony
    (:func:`dyadlab.synchrony.mains.line_noise_relation`)."""

    rho: Number
    p: Number
    n_epochs: int
    follows_line_noise: bool


class MainsRemovalReport(_Fixed):
    """What the quick-check removed at the mains frequency before band filtering
    (:mod:`dyadlab.synchrony.mains`), and whether each band's synchrony follows shared line noise."""

    fundamental_hz: list[float]
    removed_hz: list[float]
    source: str
    method: str
    half_width_hz: float
    taper_hz: float
    notes: list[str]
    #: condition -> band -> metric -> relation
    relation: dict[str, dict[str, dict[str, LineNoiseRelation]]]
    relation_rule: str


class WithheldDetection(Detection):
    """A condition and band above chance whose synchrony follows shared line noise."""

    reason: str


class BehaviourSummary(_Fixed):
    """What the participants did in one block (:mod:`dyadlab.synchrony.behaviour`): ``measures``
    by name (``_ms`` in milliseconds, rates as fractions, counts as numbers)."""

    block: str
    condition: str | None
    task: str | None
    paradigm: str
    start_s: float
    measures: dict[str, Number]


class BandDefinition(_Fixed):
    """A band's filter as applied (:func:`dyadlab.synchrony.segments.describe_band_filter`): the
    design, what its edges mean, and its response measured on a 0.01 Hz grid (amplitude gains)."""

    design: Literal["butterworth", "hypyp", "hypyp-epochs"]  # dyadlab.synchrony.segments.BAND_FILTERS
    edges_hz: list[float]
    edges_meaning: str
    order: int | None = None  # Butterworth
    fir_taps: int | None = None  # FIR ("hypyp", "hypyp-epochs")
    fir_length_s: float | None = None
    passband_hz: list[float]  # gain >= 0.99
    minus_3db_hz: list[float]
    minus_6db_hz: list[float]
    transition_hz: list[float]  # low and high side: gain 0.99 down to 0.01
    ringing_s: float


class TimingChannelCheck(_Fixed):
    """One photodiode or TTL channel: its edges paired with the screen changes' marker stamps
    (:mod:`dyadlab.synchrony.timing_verification`); latencies are edge minus stamp."""

    participant: str
    stream: str
    channel: str
    kind: str  # "photodiode" or "ttl"
    polarity: str  # "rising" or "falling" (inverted sensor, active-low TTL)
    sample_period_ms: Number
    edges: int
    flips: int
    flips_outside_recording: int
    paired: int
    missed: int
    merged: int
    unmatched_edges: int
    latency_median_ms: Number
    latency_mean_ms: Number
    jitter_sd_ms: Number
    jitter_iqr_ms: Number
    latency_min_ms: Number
    latency_max_ms: Number
    problems: list[str]


class AmplifierLag(_Fixed):
    """The same pulse in A's and B's channel: B's edge minus A's, and its drift (robust line fit)."""

    kind: str
    channel_A: str
    channel_B: str
    pairs: int
    span_s: float
    lag_median_ms: float
    lag_start_ms: float
    lag_end_ms: float
    drift_ppm: float
    drift_ppm_ci: list[float]
    residual_sd_ms: float
    problems: list[str]


class TimingVerification(_Fixed):
    """Automatic photodiode / TTL timing check (``timing_verification``)."""

    channels: list[TimingChannelCheck]
    lags: list[AmplifierLag]
    notes: list[str]
    problems: list[str]


class CalibrationNote(_Fixed):
    """What one kind of test in the report was checked on: its null and the null data sets on
    which its false-positive rate was measured against the nominal one."""

    fields: list[str]
    null: str
    simulated: str | None
    real_data: str | None
    evidence: list[str]


class SpeechParticipant(_Fixed):
    speech_s: float
    n_turns: int
    median_turn_s: Number
    n_pauses: int
    median_pause_s: Number
    #: The partner's voice in this participant's microphone relative to the partner's own (dB).
    crosstalk_db: Number


class SpeechTurn(_Fixed):
    participant: str
    start_s: float
    end_s: float


class SpeakingStateEpochs(_Fixed):
    #: The quick-check condition (``<block condition>:<state>``; empty for ``mixed`` epochs).
    condition: str
    block_condition: str
    state: str
    n_epochs: int
    held_s: float


class LagCurve(_Fixed):
    value: list[Number]
    z: list[Number]
    p: list[Number]
    peak_lag_s: Number


class SpeakerListener(_Fixed):
    condition: str
    speaker: str
    listener: str
    lags_s: list[float]
    n_epochs: int
    bands: dict[str, dict[str, LagCurve]]


class Speech(_Fixed):
    """Speech and turns from the participants' microphones (``dyadlab.synchrony.speech``)."""

    frame_s: float
    duration_s: float
    participants: dict[str, SpeechParticipant]
    n_transfers: int
    n_gaps: int
    median_gap_s: Number
    n_overlaps: int
    median_overlap_s: Number
    state_s: dict[str, float]
    notes: list[str]
    turns: list[SpeechTurn]
    states: list[SpeakingStateEpochs]
    min_state_fraction: float
    min_epochs: int
    detector: dict[str, Any]
    speaker_listener: list[SpeakerListener] | None
    events_tsv: str | None


class Verdict(_Fixed):
    data_quality: str
    timing: str
    synchrony_above_chance: list[Detection]
    rule: str
    summary: list[str]
    n_warnings: int
    #: Above chance, but following shared line noise; absent in files of 1.2 and before.
    withheld: list[WithheldDetection] | None = None


class QuickCheckResult(_Fixed):
    """What ``dyadlab check`` writes (schema ``docs/quickcheck-schema.md``)."""

    schema_version: str
    generated_utc: str
    file: FileInfo
    inputs: Inputs
    versions: dict[str, str]
    participants: dict[str, Participant]
    quality: Quality
    alignment: Alignment
    segmentation: Segmentation
    conditions: dict[str, ConditionResult]
    contrasts: Contrasts
    diagnostics: Diagnostics
    warnings: list[str]
    timing_s: dict[str, float]
    verdict: Verdict
    summary: str
    behaviour: list[BehaviourSummary] | None = None  # absent in files of 1.2 and before
    mains: MainsRemovalReport | None = None  # absent in files of 1.2 and before and with --mains off
    band_definitions: dict[str, BandDefinition] | None = None  # absent in files of 1.2 and before
    timing_verification: TimingVerification | None = None  # absent in files of 1.2 and before
    calibration: dict[str, CalibrationNote] | None = None  # absent in files of 1.2 and before
    speech: Speech | None = None  # absent in files of 1.3 and before, and without both microphones

    @model_validator(mode="before")
    @classmethod
    def _older_versions(cls, data: Any) -> Any:
        """1.1 called the file-reading time ``pyxdf_load``."""
        if isinstance(data, dict) and isinstance(data.get("timing_s"), dict) and "pyxdf_load" in data["timing_s"]:
            timing = dict(data["timing_s"])
            timing.setdefault("xdf_read", timing.pop("pyxdf_load"))
            data = {**data, "timing_s": timing}
        return data


def load_result(path: str | Path) -> QuickCheckResult:
    """A quick-check JSON file of any 1.x schema as a :class:`QuickCheckResult`.

    Raises
    ------
    ResultFileError
        The file is not JSON, not a quick-check result, or of another major version.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ResultFileError(f"{path} cannot be read as JSON ({error}).") from error
    version = str(data.get("schema_version", "")) if isinstance(data, dict) else ""
    if not version.startswith("1."):
        raise ResultFileError(
            f"{path} is not a dyadlab quick-check result of schema 1.x (schema_version {version or 'missing'})."
        )
    try:
        return QuickCheckResult.model_validate(data)
    except ValueError as error:
        raise ResultFileError(f"{path} does not fit the quick-check schema {version}: {error}") from error


def json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`QuickCheckResult` (``docs/quickcheck-schema.json``)."""
    schema = QuickCheckResult.model_json_schema()
    schema["$id"] = "https://dyadlab.invalid/quickcheck-schema.json"
    schema["title"] = "dyadlab quick-check result"
    return schema


def _write_schema() -> None:
    SCHEMA_PATH.write_text(json.dumps(json_schema(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")


if __name__ == "__main__":
    _write_schema()
    sys.exit(0)
