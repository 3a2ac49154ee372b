"""A simulated inter-brain plasticity study with a known answer (``dyadlab study simulate``).

The study follows the model of Sened, Zilcha-Mano & Shamay-Tsoory (2022): repeated
high-synchrony therapy sessions raise a patient's ability to synchronise, first with the
therapist, then with other people, and symptoms fall with it. :func:`simulate_study` writes a
whole study folder (``study.yaml``, ``outcomes.tsv``, one XDF + ``session.json`` per session,
``truth.json``) straight to disk: each session is synthesised offline by the coupled-dyad
simulator's signal model (:func:`dyadlab.acquisition.simulator.simulate_dyad`, seconds per
session rather than real time) and written with dyadlab's XDF writer and stream metadata, as the
session runner would.

Planted trajectories (``docs/study.md``), for patient ``p`` at session ``k = 1..K`` with an
individual plasticity gain ``g_p`` (uniform in ``[1 - gain_spread, 1 + gain_spread]``):

* coupling with the therapist ``c_T = baseline + g_p * therapist_rate * (k - 1)``;
* coupling with a stranger ``c_S = baseline + g_p * stranger_rate * max(0, k - stranger_onset)``
  (flat up to the onset session, rising later);
* symptom score ``y = y0_p - outcome_per_coupling * (c_T - baseline) + noise`` (falling as the
  patient's synchrony with the therapist rises).

The *null* study has the same people, sessions and noise but no trajectory (``c = baseline``
throughout) and symptom scores that change over sessions independently of synchrony (each
patient drifts at an own random rate): what an analysis must not call an effect.
The coupling is that of the simulator (coherence of the two participants' band sources) in the
probe condition and band; the rest of the session is uncoupled.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dyadlab.synchrony.study import (
    RECORDINGS_DIR,
    AnalysisSettings,
    Dyad,
    Person,
    PlannedSession,
    Study,
    StudyError,
    write_outcomes_template,
    write_study,
)

__all__ = ["StudyDesign", "simulate_study", "write_simulated_session"]

logger = logging.getLogger(__name__)

TRUTH_FILE = "truth.json"
#: LSL time of the first sample of every simulated session (any positive value).
_T0 = 1000.0
#: Seconds of uncoupled baseline before, between and after the probe blocks.
_GAP_S = 2.0
_PROTOCOL_LABEL = "probe"
_OUTCOME_MEASURE = "symptoms"


@dataclass(frozen=True)
class StudyDesign:
    """Who, how often, and which trajectories are planted.

    Attributes
    ----------
    n_patients, n_sessions : int
        Patients and sessions per patient (a therapist at every session).
    stranger_sessions : tuple of int
        Sessions at which each patient also does the probe with a new stranger.
    n_therapists : int
        Therapists, each seeing every ``n_therapists``-th patient.
    null : bool
        No trajectory: coupling at ``baseline`` throughout, symptoms unrelated to synchrony.
    baseline, therapist_rate, stranger_rate : float
        Simulator coupling (0..1) at session 1 and its rise per session (see the module docstring).
    stranger_onset : int
        The last session at which stranger coupling is still at baseline.
    gain_spread : float
        Half-width of the uniform spread of the patients' plasticity gains around 1.
    symptom_baseline, symptom_between_sd, symptom_noise_sd : float
        Mean and between-patient SD of the session-1 symptom score, and its session-to-session noise SD.
    outcome_per_coupling : float
        Symptom points lost per unit of therapist coupling gained.
    null_symptom_drift_sd : float
        Null study: SD of each patient's own symptom change per session (mean -0.5).
    condition, band : str
        The probe condition (simulated in ``n_blocks`` blocks of ``block_seconds``) and the coupled band.
    n_blocks : int
    block_seconds : float
    sampling_rate : float
    channels : tuple of str
        10-20 labels (the alpha rhythm of the simulator is posterior: keep posterior channels).
    seed : int
    """

    n_patients: int = 12
    n_sessions: int = 8
    stranger_sessions: tuple[int, ...] = (1, 4, 8)
    n_therapists: int = 3
    null: bool = False
    baseline: float = 0.1
    therapist_rate: float = 0.06
    stranger_rate: float = 0.12
    stranger_onset: int = 4
    gain_spread: float = 0.6
    symptom_baseline: float = 30.0
    symptom_between_sd: float = 4.0
    symptom_noise_sd: float = 1.0
    outcome_per_coupling: float = 30.0
    null_symptom_drift_sd: float = 0.5
    condition: str = "cooperation"
    band: str = "alpha"
    n_blocks: int = 2
    block_seconds: float = 20.0
    sampling_rate: float = 128.0
    channels: tuple[str, ...] = ("Pz", "O1", "Oz", "O2")
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_patients < 1 or self.n_sessions < 1 or self.n_therapists < 1:
            raise StudyError("a simulated study needs at least one patient, session and therapist")
        outside = [k for k in self.stranger_sessions if not 1 <= k <= self.n_sessions]
        if outside:
            raise StudyError(f"stranger sessions {outside} lie outside sessions 1..{self.n_sessions}")
        top = self.baseline + (1 + self.gain_spread) * max(
            self.therapist_rate * (self.n_sessions - 1),
            self.stranger_rate * max(0, self.n_sessions - self.stranger_onset),
        )
        if not (0 <= self.baseline and top <= 1 and 0 <= self.gain_spread < 1):
            raise StudyError(
                f"the planted coupling reaches {top:.2f}; simulator couplings are 0..1: lower the rates or the gain spread"
            )

    def therapist_coupling(self, gain: float, session: int) -> float:
        """Planted therapist coupling of a patient with plasticity ``gain`` at ``session``."""
        return self.baseline if self.null else self.baseline + gain * self.therapist_rate * (session - 1)

    def stranger_coupling(self, gain: float, session: int) -> float:
        """Planted stranger coupling of a patient with plasticity ``gain`` at ``session``."""
        rise = max(0, session - self.stranger_onset)
        return self.baseline if self.null else self.baseline + gain * self.stranger_rate * rise


def _schedule(design: StudyDesign) -> tuple[float, list[tuple[str, float]], list[tuple[float, str]]]:
    """Session length, simulator schedule and (time, marker JSON) events of one probe session."""
    from dyadlab.acquisition.markers import Marker

    schedule: list[tuple[str, float]] = []
    events = [(0.5, Marker("session_start").to_json())]
    t = 0.0
    for index in range(design.n_blocks):
        schedule += [("rest", _GAP_S), (design.condition, design.block_seconds)]
        t += _GAP_S
        block = f"{design.condition}-{index + 1}"
        events.append(
            (t, Marker("block_start", task=design.condition, block=block, condition=design.condition).to_json())
        )
        t += design.block_seconds
        events.append(
            (t, Marker("block_end", task=design.condition, block=block, condition=design.condition).to_json())
        )
    events.append((t + 0.5, Marker("session_end", value="complete").to_json()))
    return t + _GAP_S, schedule, events


def write_simulated_session(
    path: Path,
    *,
    study: str,
    dyad: str,
    session: int,
    people: dict[str, tuple[str, str]],
    eeg: tuple[np.ndarray, np.ndarray],
    rate: float,
    channels: Sequence[str],
    events: list[tuple[float, str]],
) -> Path:
    """Write one session as a recorded one: both EEG streams (with the board marker channel) and the marker stream.

    Parameters
    ----------
    path : Path
        The XDF file to create (must not exist).
    people : dict of label -> (id, role)
    eeg : (A's, B's) arrays, shape (n_channels, n_samples), µV
    events : list of (seconds from the first sample, marker JSON)
    """
    from dyadlab.acquisition.markers import Marker
    from dyadlab.acquisition.streams import ParticipantInfo, SourceLayout, eeg_stream_info, event_stream_info
    from dyadlab.acquisition.xdf import XdfWriter

    metadata = {"study": study, "dyad": dyad, "session": str(session), "recorder": "dyadlab.protocols.study_simulation"}
    board = SourceLayout(rate, list(channels), description={"board": "dyadlab-study-simulator"})
    with XdfWriter(path, file_metadata=metadata, flush_interval=60.0) as writer:
        for stream_id, (label, data) in enumerate(zip(("A", "B"), eeg), start=1):
            person_id, role = people[label]
            writer.add_stream(
                stream_id, eeg_stream_info(study, dyad, ParticipantInfo(label, person_id, role), board).as_xml()
            )
            n = data.shape[1]
            codes = np.zeros(n)
            for t_event, text in events:
                sample = int(np.ceil(t_event * rate))
                if sample < n:
                    codes[sample] = Marker.from_json(text).code
            stamps = _T0 + np.arange(n) / rate
            chunk = int(rate)  # one chunk per second, as the bridge pushes them
            for first in range(0, n, chunk):
                values = np.vstack([data[:, first : first + chunk], codes[None, first : first + chunk]]).T
                writer.write_samples(stream_id, stamps[first : first + chunk], values.astype(np.float32))
            writer.write_clock_offset(stream_id, stamps[-1], 0.0)
            writer.write_footer(stream_id)
        writer.add_stream(3, event_stream_info(study, dyad, "markers").as_xml())
        writer.write_samples(3, _T0 + np.array([t for t, _ in events]), [[text] for _, text in events])
        writer.write_clock_offset(3, _T0, 0.0)
        writer.write_footer(3)
    return path


def _plan(design: StudyDesign, name: str) -> tuple[Study, dict[str, float]]:
    """The study file and each patient's plasticity gain."""
    rng = np.random.default_rng([design.seed, 1])
    people = [Person(id=f"ther-{t + 1}", role="therapist") for t in range(design.n_therapists)]
    dyads: list[Dyad] = []
    sessions: list[PlannedSession] = []
    gains: dict[str, float] = {}
    for p in range(design.n_patients):
        patient = f"pat-{p + 1:02d}"
        gains[patient] = float(rng.uniform(1 - design.gain_spread, 1 + design.gain_spread))
        people.append(Person(id=patient, role="patient"))
        therapy = f"D{p + 1:02d}"
        dyads.append(Dyad(id=therapy, A=patient, B=f"ther-{p % design.n_therapists + 1}"))
        for k in range(1, design.n_sessions + 1):
            sessions.append(PlannedSession(dyad=therapy, session=k))
            if k in design.stranger_sessions:
                stranger = f"str-{p + 1:02d}-{k:02d}"  # a new stranger each time
                people.append(Person(id=stranger, role="stranger"))
                dyads.append(Dyad(id=f"D{p + 1:02d}S{k:02d}", A=patient, B=stranger))
                sessions.append(PlannedSession(dyad=dyads[-1].id, session=k))
    analysis = AnalysisSettings(condition=design.condition, band=design.band, outcome=_OUTCOME_MEASURE)
    return Study(name=name, people=people, dyads=dyads, sessions=sessions, analysis=analysis), gains


def _symptoms(design: StudyDesign, study: Study, gains: dict[str, float]) -> dict[tuple[str, int], dict[str, float]]:
    """Planted symptom scores per (patient, session)."""
    rng = np.random.default_rng([design.seed, 2])
    scores: dict[tuple[str, int], dict[str, float]] = {}
    for patient, gain in gains.items():
        start = design.symptom_baseline + design.symptom_between_sd * rng.standard_normal()
        drift = -0.5 + design.null_symptom_drift_sd * rng.standard_normal()
        for k in range(1, design.n_sessions + 1):
            if design.null:
                mean = start + drift * (k - 1)
            else:
                mean = start - design.outcome_per_coupling * (design.therapist_coupling(gain, k) - design.baseline)
            scores[(patient, k)] = {_OUTCOME_MEASURE: float(mean + design.symptom_noise_sd * rng.standard_normal())}
    return scores


def simulate_study(
    folder: str | Path,
    design: StudyDesign | None = None,
    *,
    name: str = "plasticity",
    sessions: Sequence[tuple[str, int]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write a simulated plasticity study to ``folder`` (see the module docstring).

    Parameters
    ----------
    folder : str or Path
        The study folder; its ``recordings`` must not hold files of the sessions written.
    design : StudyDesign, optional
    name : str
        The study's name (in every file header and stream id).
    sessions : sequence of (dyad, session), optional
        Write only these planned sessions (the study file and outcomes always list all); a lab's
        study with missing sessions, or one session added later.
    progress : callable (done, total), optional

    Returns
    -------
    dict
        The ground truth also written to ``truth.json``: the design, each patient's gain, the
        planted coupling and simulator seed of every planned session (``written``: whether this
        call wrote it), and what an analysis should recover.
    """
    design = design or StudyDesign()
    folder = Path(folder)
    study, gains = _plan(design, name)
    write_study(folder, study)
    write_outcomes_template(folder, study, [_OUTCOME_MEASURE], _symptoms(design, study, gains))
    duration, schedule, events = _schedule(design)
    wanted = None if sessions is None else {(d, int(k)) for d, k in sessions}
    todo = [s for s in study.sessions if wanted is None or (s.dyad, s.session) in wanted]
    seeds = np.random.SeedSequence([design.seed, 3]).spawn(len(study.sessions))
    seed_of = {(s.dyad, s.session): int(seq.generate_state(1)[0]) for s, seq in zip(study.sessions, seeds)}
    planted = {
        (s.dyad, s.session): {
            "dyad": s.dyad,
            "session": s.session,
            "person": study.focal_and_partner(s.dyad)[0],
            "partner": study.focal_and_partner(s.dyad)[1],
            "partner_type": study.partner_type(s.dyad),
            "coupling": (
                design.therapist_coupling if study.partner_type(s.dyad) == "therapist" else design.stranger_coupling
            )(gains[study.focal_and_partner(s.dyad)[0]], s.session),
            "seed": seed_of[(s.dyad, s.session)],
            "written": False,
        }
        for s in study.sessions
    }
    from dyadlab.acquisition.simulator import simulate_dyad

    for done, planned in enumerate(todo, start=1):
        truth_of = planted[(planned.dyad, planned.session)]
        dyad = simulate_dyad(
            duration,
            schedule,
            sampling_rate=design.sampling_rate,
            channel_names=design.channels,
            coupling={design.condition: {design.band: truth_of["coupling"]}, "rest": {}},
            seed=truth_of["seed"],
        )
        stem = f"sub-{planned.dyad}_ses-{planned.session:02d}_task-{_PROTOCOL_LABEL}_run-01"
        target = folder / RECORDINGS_DIR / f"sub-{planned.dyad}" / f"ses-{planned.session:02d}"
        target.mkdir(parents=True, exist_ok=True)
        people = {label: (entry["id"], entry["role"]) for label, entry in study.people_of(planned.dyad).items()}
        write_simulated_session(
            target / f"{stem}.xdf",
            study=name,
            dyad=planned.dyad,
            session=planned.session,
            people=people,
            eeg=(dyad.a, dyad.b),
            rate=design.sampling_rate,
            channels=design.channels,
            events=events,
        )
        record = {
            "dyadlab_session_schema": 1,
            "complete": True,
            "status": "complete",
            "study": name,
            "dyad": planned.dyad,
            "session": planned.session,
            "participants": [{"label": label, "id": pid, "role": role} for label, (pid, role) in people.items()],
            "created_wall": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "simulator": {
                "coupling": {design.condition: {design.band: truth_of["coupling"]}},
                "seed": truth_of["seed"],
            },
            "quickcheck": None,
        }
        (target / f"{stem}_session.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        truth_of["written"] = True
        if progress is not None:
            progress(done, len(todo))
    mean_gain = float(np.mean(list(gains.values())))
    truth = {
        "design": {
            **asdict(design),
            "stranger_sessions": list(design.stranger_sessions),
            "channels": list(design.channels),
        },
        "gains": gains,
        "planted": list(planted.values()),
        "expected": {
            "therapist_coupling_slope": 0.0 if design.null else mean_gain * design.therapist_rate,
            "stranger_rises": not design.null,
            "outcome_link": "none" if design.null else "negative",
        },
    }
    (folder / TRUTH_FILE).write_text(json.dumps(truth, indent=1), encoding="utf-8")
    logger.info("simulated study %s: %d sessions written to %s", name, len(todo), folder)
    return truth
