"""Synchrony by speaking role: the quick-check's conversation blocks split by who speaks.

With both participants' microphones in the file (``docs/audio.md``), :func:`detect` finds speech
and turns (:mod:`dyadlab.synchrony.speech`), and :func:`split_by_state` makes each speaking state
a condition of its own within the conversation blocks: ``<block condition>:A-speaks`` (B
listens), ``...:B-speaks``, ``...:overlap`` and ``...:silence``. The epochs stay those the
quick-check planned and screened over the whole block (artifact rejection sees the conversation
as one condition); an epoch belongs to a state when the state holds for at least
:attr:`SpeechOptions.min_state_fraction` of it, and epochs of mixed state are left out. A state
with fewer epochs than the surrogate statistics need (the check's ``MIN_EPOCHS_STATS``, 8: an
epoch shuffle of n epochs has only n! pairings, 8! = 40,320) gets a note saying so, and how to
get more.

The directional question (:func:`speaker_listener_lags`, ``dyadlab check --speech-lags``): in
the epochs where X speaks, the coupling between the speaker's EEG at time t and the listener's at
t + lag, for lags 0 to :data:`MAX_LAG_S` (the range speaker-listener studies report, e.g. Pérez
et al. 2017, Sci Rep 7:4190), as PLV and envelope correlation with a partner-epoch-shuffle null at
every lag (the listener's window from another epoch of the same state, same lag).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dyadlab.synchrony import segments as seg
from dyadlab.synchrony import speech as speech_mod
from dyadlab.synchrony.io import DyadRecording

logger = logging.getLogger(__name__)

#: Conditions whose blocks are split by speaking state unless the user names others.
DEFAULT_SPEECH_CONDITIONS = ("conversation",)
#: Speaker-to-listener lags (seconds) of :func:`speaker_listener_lags`.
LAG_STEP_S = 0.1
MAX_LAG_S = 1.0
#: Metrics of the lag analysis: phase (PLV) and amplitude (envelope correlation) coupling.
LAG_METRICS = ("plv", "envcorr")


@dataclass(frozen=True)
class SpeechOptions:
    """What the quick-check does with the participants' microphones.

    Attributes
    ----------
    conditions : tuple of str
        Conditions whose blocks are split by speaking state (the whole recording when the file has
        no blocks).
    min_state_fraction : float
        An epoch belongs to a state that holds for at least this fraction of it.
    lags : bool
        Also measure speaker-to-listener coupling at lags (:func:`speaker_listener_lags`).
    detector : SpeechSettings
    """

    conditions: tuple[str, ...] = DEFAULT_SPEECH_CONDITIONS
    min_state_fraction: float = 0.75
    lags: bool = False
    detector: speech_mod.SpeechSettings = dataclasses.field(default_factory=speech_mod.SpeechSettings)

    def __post_init__(self) -> None:
        if not 0.5 < self.min_state_fraction <= 1.0:
            raise speech_mod.SpeechError(
                f"min_state_fraction must be above 0.5 (most of the epoch) and at most 1, got {self.min_state_fraction}."
            )

    def describe(self) -> dict[str, Any]:
        """The report's ``inputs.speech``."""
        return {
            "conditions": list(self.conditions),
            "min_state_fraction": self.min_state_fraction,
            "lags": self.lags,
            "detector": dataclasses.asdict(self.detector),
        }


def detect(
    recording: DyadRecording, options: SpeechOptions, warnings: list[str]
) -> speech_mod.ConversationSpeech | None:
    """Speech of both participants from the file's microphone streams; ``None`` without both."""
    labels = (recording.a.label, recording.b.label)
    present = [label for label in labels if label in recording.audio]
    if len(present) < 2:
        if present:
            warnings.append(
                f"Only participant {present[0]}'s microphone is in the file: speech and speaking roles need both "
                "participants' microphones (docs/audio.md); synchrony is not split by speaking role."
            )
        return None
    microphones = [
        speech_mod.Microphone.from_arrays(
            label,
            recording.audio[label].samples,
            recording.audio[label].timestamps,
            recording.audio[label].nominal_rate,
        )
        for label in labels
    ]
    found = speech_mod.detect_speech(microphones, options.detector)
    warnings.extend(found.notes)
    return found


@dataclass
class RoleSplit:
    """The blocks, plans and kept-epoch masks after the split, and the report's ``speech.states``."""

    blocks: list[seg.Block]
    plans: list[seg.EpochGrid]
    keep: list[np.ndarray]
    states: list[dict[str, Any]]
    notes: list[str]
    #: Per speaking-state condition, every conversation block's plan and the mask of its kept
    #: epochs in that state (the lag analysis cuts the listener's windows from the whole block).
    sources: dict[str, list[tuple[seg.EpochGrid, np.ndarray]]]


def split_by_state(
    plans: Sequence[seg.EpochGrid],
    keep: Sequence[np.ndarray],
    speech: speech_mod.ConversationSpeech,
    options: SpeechOptions,
    *,
    grid_start: float,
    rate: float,
    epoch_length: float,
    min_epochs: int,
) -> RoleSplit:
    """Replace the plans of conversation blocks (``options.conditions``, or the whole recording)
    by one block and plan per speaking state, holding the epochs of that state (module docstring).

    The new plans share their conversation block's filtered spectra, so the band signals are the
    same as without the split. A state block spans its conversation block (``Block.start``,
    ``end``); its time in the state is in the report's ``speech.states``.
    """
    split_conditions = set(options.conditions) | {seg.WHOLE_RECORDING}
    new_blocks: list[seg.Block] = []
    new_plans: list[seg.EpochGrid] = []
    new_keep: list[np.ndarray] = []
    held: dict[str, float] = {}
    counts: dict[str, dict[str, Any]] = {}
    sources: dict[str, list[tuple[seg.EpochGrid, np.ndarray]]] = {}
    for plan, kept in zip(plans, keep):
        block = plan.block
        if block.condition not in split_conditions:
            new_plans.append(plan)
            new_keep.append(kept)
            if block not in new_blocks:
                new_blocks.append(block)
            continue
        times = grid_start + plan.starts / rate
        states = speech_mod.assign_epochs(speech, times, epoch_length, options.min_state_fraction)
        inside = speech.state_fractions(np.array([block.start]), block.end - block.start)
        for state in speech.state_names:
            condition = f"{block.condition}:{state}"
            held[condition] = held.get(condition, 0.0) + float(inside[state][0]) * (block.end - block.start)
            entry = counts.setdefault(
                condition, {"condition": condition, "block_condition": block.condition, "state": state, "n_epochs": 0}
            )
            mine = states == state
            entry["n_epochs"] += int((kept & mine).sum())
            sources.setdefault(condition, []).append((plan, kept & mine))
            if not mine.any():
                continue
            sub_block = seg.Block(condition, block.start, block.end, f"{block.name}:{state}")
            new_blocks.append(sub_block)
            new_plans.append(
                dataclasses.replace(
                    plan,
                    block=sub_block,
                    starts=plan.starts[mine],
                    valid=plan.valid[mine],
                    spectra=dict(plan.spectra),
                    line_power={side: power[mine] for side, power in plan.line_power.items()},
                )
            )
            new_keep.append(kept[mine])
        mixed = int((kept & (states == "")).sum())
        if mixed:
            counts.setdefault(
                f"{block.condition}:mixed",
                {"condition": "", "block_condition": block.condition, "state": "mixed", "n_epochs": 0},
            )["n_epochs"] += mixed
    notes = []
    for entry in counts.values():
        entry["held_s"] = round(held.get(entry["condition"], 0.0), 3)
        if entry["state"] == "mixed" or entry["n_epochs"] >= min_epochs:
            continue
        notes.append(
            f"Speaking state {entry['state']!r} in {entry['block_condition']!r}: {entry['n_epochs']} clean epoch(s) of "
            f"{epoch_length:g} s in which it holds for at least {100 * options.min_state_fraction:.0f} % "
            f"({entry['held_s']:.1f} s in the state in all); surrogate z and p need at least {min_epochs} "
            f"(an epoch shuffle of fewer has under {math.factorial(min_epochs):,} pairings), so this state has "
            "means only, or no entry. Longer conversations or a shorter --epoch-length give more."
        )
    ordered = sorted(new_blocks, key=lambda b: b.start)
    return RoleSplit(ordered, new_plans, new_keep, list(counts.values()), notes, sources)


def speaker_listener_lags(
    aligned: seg.AlignedDyad,
    split: RoleSplit,
    speech: speech_mod.ConversationSpeech,
    *,
    bands: dict[str, tuple[float, float]],
    epoch_length: float,
    channels: tuple[np.ndarray, np.ndarray],
    n_surrogates: int,
    min_epochs: int,
    rng: np.random.Generator,
    decimate: bool = True,
    mains: Any = None,
    band_filter: str = "butterworth",
) -> list[dict[str, Any]]:
    """Speaker-to-listener coupling at lags 0 to :data:`MAX_LAG_S`, per speaking state, band and metric.

    For the epochs where X speaks alone, the speaker's band signal over the epoch is paired with
    the listener's over the same length starting ``lag`` later (taken from the conversation
    block's continuous signal; epochs whose lagged window leaves the block are left out at every
    lag, so that all lags use the same epochs). Each lag's mean over channel pairs and epochs gets
    a partner-epoch-shuffle null (one plan for all lags and bands) and its z and p.

    Must run before the synchrony stage takes the plans' spectra (it uses copies of the
    conversation blocks' plans). Returns the report's ``speech.speaker_listener``.
    """
    from dyadlab.synchrony import stats, surrogates

    labels = speech.labels
    lag_seconds = np.round(np.arange(0.0, MAX_LAG_S + 1e-9, LAG_STEP_S), 3)
    out = []
    for k, speaker in enumerate(labels):
        listener = labels[1 - k]
        for condition, pairs in split.sources.items():
            if not condition.endswith(f":{speaker}-speaks"):
                continue
            plans = [dataclasses.replace(plan, spectra=dict(plan.spectra)) for plan, _ in pairs]
            masks = [mask for _, mask in pairs]
            entry: dict[str, Any] = {
                "condition": condition,
                "speaker": speaker,
                "listener": listener,
                "lags_s": lag_seconds.tolist(),
                "n_epochs": 0,
                "bands": {},
            }
            out.append(entry)
            if sum(int(m.sum()) for m in masks) < min_epochs:
                continue
            shuffle = None
            band_epochs = seg.iter_condition_epochs(
                aligned,
                plans,
                masks,
                epoch_length,
                bands,
                channels[0],
                channels[1],
                decimate=decimate,
                continuous=True,
                mains=mains,
                band_filter=band_filter,
            )
            for band, epochs in band_epochs:
                rate = epochs.blocks[0].rate
                n_times = epochs.blocks[0].epoch_samples
                lags = np.round(lag_seconds * rate).astype(int)
                lead, follow = _lagged_windows(epochs.blocks, k, lags, n_times)
                n = lead.shape[0]
                entry["n_epochs"] = n
                if n < min_epochs:
                    break
                if shuffle is None:
                    shuffle = surrogates.shuffle_plan(n, n_surrogates, rng)
                curves: dict[str, dict[str, list[float]]] = {m: {"value": [], "z": [], "p": []} for m in LAG_METRICS}
                for j in range(lags.size):
                    found = surrogates.shuffle_null(lead, np.ascontiguousarray(follow[:, j]), shuffle, LAG_METRICS)
                    for metric in LAG_METRICS:
                        value = float(np.nanmean(found.observed[metric]))
                        z, p = stats.surrogate_z_p(np.asarray(value), np.nanmean(found.null[metric], axis=(1, 2)))
                        curves[metric]["value"].append(value)
                        curves[metric]["z"].append(float(z))
                        curves[metric]["p"].append(float(p))
                entry["bands"][band] = {
                    metric: {**curve, "peak_lag_s": float(lag_seconds[int(np.nanargmax(curve["z"]))])}
                    for metric, curve in curves.items()
                }
    return out


def _lagged_windows(
    blocks: Sequence[seg.BlockSignal], speaker: int, lags: np.ndarray, n_times: int
) -> tuple[np.ndarray, np.ndarray]:
    """Speaker epochs (n, C_s, T) and listener windows at every lag (n, n_lags, C_l, T)."""
    leads, follows = [], []
    for block in blocks:
        lead_signal, follow_signal = (block.za, block.zb) if speaker == 0 else (block.zb, block.za)
        fits = block.starts + lags.max() + n_times <= follow_signal.shape[1]
        for start in block.starts[fits].tolist():
            leads.append(lead_signal[:, start : start + n_times])
            follows.append(np.stack([follow_signal[:, start + lag : start + lag + n_times] for lag in lags.tolist()]))
    if not leads:
        n_lead = blocks[0].za.shape[0] if speaker == 0 else blocks[0].zb.shape[0]
        n_follow = blocks[0].zb.shape[0] if speaker == 0 else blocks[0].za.shape[0]
        return (
            np.empty((0, n_lead, n_times), np.complex64),
            np.empty((0, lags.size, n_follow, n_times), np.complex64),
        )
    return np.stack(leads), np.stack(follows)


class _Timeline(Protocol):
    """What :func:`apply` reads of the quick-check's timeline stage."""

    @property
    def aligned(self) -> seg.AlignedDyad: ...


class _Epochs(Protocol):
    """What :func:`apply` reads of the quick-check's epoch stage."""

    @property
    def plans(self) -> list[Any]: ...
    @property
    def keep(self) -> list[np.ndarray]: ...
    @property
    def mains(self) -> Any: ...


class _Settings(Protocol):
    """What :func:`apply` reads of the quick-check's settings."""

    @property
    def speech(self) -> SpeechOptions | None: ...
    @property
    def epoch_length(self) -> float: ...
    @property
    def bands(self) -> dict[str, tuple[float, float]]: ...
    @property
    def n_surrogates(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def decimate(self) -> bool: ...
    @property
    def band_filter(self) -> str: ...


def apply(
    speech: speech_mod.ConversationSpeech,
    timeline: _Timeline,
    epochs: _Epochs,
    used: dict[str, np.ndarray],
    settings: _Settings,
    warnings: list[str],
    *,
    min_epochs: int,
) -> tuple[RoleSplit, dict[str, Any]]:
    """The quick-check's speech stage: conversation blocks split by speaking state (and the lags).

    Returns the split (the quick-check's blocks, plans and kept-epoch masks from here on) and the
    report's ``speech`` section (without ``events_tsv``, which the caller adds when it writes the
    table).
    """
    options = settings.speech
    if options is None:
        raise ValueError("apply() needs settings.speech (the check's speech options).")
    aligned = timeline.aligned
    split = split_by_state(
        epochs.plans,
        epochs.keep,
        speech,
        options,
        grid_start=aligned.start,
        rate=aligned.rate,
        epoch_length=settings.epoch_length,
        min_epochs=min_epochs,
    )
    warnings.extend(split.notes)
    section = speech.summary(origin=aligned.start)
    section.update(
        states=split.states,
        min_state_fraction=options.min_state_fraction,
        min_epochs=min_epochs,
        detector=dataclasses.asdict(options.detector),
        speaker_listener=None,
        events_tsv=None,
    )
    if options.lags:
        section["speaker_listener"] = speaker_listener_lags(
            aligned,
            split,
            speech,
            bands=settings.bands,
            epoch_length=settings.epoch_length,
            channels=(used["A"], used["B"]),
            n_surrogates=settings.n_surrogates,
            min_epochs=min_epochs,
            # A generator of its own: the other conditions' surrogates stay those of a run without lags.
            rng=np.random.default_rng([settings.seed, 1]),
            decimate=settings.decimate,
            mains=epochs.mains,
            band_filter=settings.band_filter,
        )
    if not split.states:
        warnings.append(
            "No conversation block (conditions " + ", ".join(repr(c) for c in options.conditions) + ") was found, so "
            "synchrony is not split by speaking role; name the conversation's condition with --speech-condition."
        )
    return split, section


def finish(result: dict[str, Any], section: dict[str, Any]) -> None:
    """Each speaking-state condition's ``duration_s``: its time in the state, not its blocks' length."""
    for entry in section["states"]:
        condition = result["conditions"].get(entry["condition"])
        if condition is not None:
            condition["duration_s"] = entry["held_s"]
