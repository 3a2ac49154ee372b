"""Planted bugs: each one must fail the tests that claim to guard against it.

Run ``python -m tests.planted_bugs`` (``--only NAME`` for some, ``--list`` to see them). For each
planted bug the script

1. copies the repository's files (``git ls-files``: tracked files, plus new files not ignored) to a
   temporary folder -- the working tree is never touched;
2. lays out the ``dyadlab`` package there (``dyadlab/acquisition`` -> ``acquisition/`` ...), so that
   with the copy first on ``PYTHONPATH`` every ``dyadlab.*`` import finds the copy's code and not
   the editable install's (checked before any test runs);
3. applies the bug as one exact text replacement (the script stops if the original text is gone:
   update the bug with the code);
4. runs the guarding tests in the copy and lists which of them failed.

A bug that no guarding test fails has *survived*; so has one whose guarding tests were all skipped.
Before the bugs, the same tests run once on an unmodified copy (``--no-baseline`` skips this): a
guarding test that fails there proves nothing. The exit status is non-zero if the baseline fails or
any bug survives. Display tests need an X server: without ``DISPLAY`` the tests run under
``xvfb-run`` with the two-screen layout of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
XVFB = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24 -screen 1 1280x800x24 +xinerama"]


@dataclass(frozen=True)
class PlantedBug:
    """One bug: ``original`` (found exactly once in ``path``) becomes ``replacement``."""

    name: str
    description: str
    path: str
    original: str
    replacement: str
    tests: tuple[str, ...]


E2E = "tests/protocols/test_session_e2e.py"
PARADIGMS = "tests/tasks/test_paradigms.py"

BUGS: tuple[PlantedBug, ...] = (
    PlantedBug(
        "quickcheck-wrong-keyword",
        "the runner passes a wrong keyword to run_check: TypeError, logged, {'error': ...} stored",
        "protocols/runner.py",
        "epoch_length=settings.epoch_seconds,",
        "epoch_seconds=settings.epoch_seconds,",
        (f"{E2E}::test_escape_mid_block_leaves_complete_xdf_and_incomplete_session",),
    ),
    PlantedBug(
        "simulator-b-is-a",
        "the live simulator streams A's EEG as B's (every inter-brain PLV would be 1)",
        "acquisition/simulator.py",
        "source._buffer(eeg[index], timestamps, start)",
        "source._buffer(eeg[0], timestamps, start)",
        ("tests/acquisition/test_simulator.py::test_sources_are_eeg_sources_paced_in_real_time_on_local_clock",),
    ),
    PlantedBug(
        "marker-hub-30ms-late",
        "MarkerHub.push sleeps 30 ms before inserting the board markers",
        "acquisition/markers.py",
        "            stamp = self.outlet.push(marker, timestamp)\n            for sink in self._sinks:",
        "            stamp = self.outlet.push(marker, timestamp)\n"
        "            __import__('time').sleep(0.03)\n"
        "            for sink in self._sinks:",
        ("tests/acquisition/test_dyad_timing.py::test_board_markers_match_lsl_markers_within_one_sample",),
    ),
    PlantedBug(
        "xdfreader-no-clock-sync-by-default",
        "read_streams (the quick-check's loading) no longer synchronises clocks by default",
        "synchrony/xdfreader.py",
        "    synchronize_clocks: bool = True,\n    block_bytes: int = BLOCK_BYTES,\n) -> tuple[dict[int, StreamSamples]",
        "    synchronize_clocks: bool = False,\n    block_bytes: int = BLOCK_BYTES,\n) -> tuple[dict[int, StreamSamples]",
        ("tests/synchrony/test_xdfreader.py::test_offsets_and_drift_are_applied",),
    ),
    PlantedBug(
        "xdfreader-skips-synchronize",
        "read_streams never calls _synchronize (no clock offsets applied anywhere)",
        "synchrony/xdfreader.py",
        "    if synchronize_clocks:\n        problems = _synchronize(readings)",
        "    if False:\n        problems = _synchronize(readings)",
        (
            "tests/synchrony/test_xdfreader.py::test_offsets_and_drift_are_applied",
            "tests/synchrony/test_xdfreader.py::test_reader_equals_pyxdf_on_independent_files",
        ),
    ),
    PlantedBug(
        "tapping-asynchrony-plus-100ms",
        "100 ms added to every tapping asynchrony in the CSV",
        "tasks/paradigms/tapping.py",
        "nearest = t_down - self.ticks[nearest_index]",
        "nearest = t_down - self.ticks[nearest_index] + 0.1",
        (f"{PARADIGMS}::test_tapping_pacer_taps_and_csv[human]",),
    ),
    PlantedBug(
        "joint-press-never-counts",
        "the joint-press paradigm never counts a response",
        "tasks/paradigms/joint_press.py",
        "    return min(valid, key=lambda r: r.t_down) if valid else None",
        "    return None",
        (f"{PARADIGMS}::test_joint_press_markers_responses_and_csv",),
    ),
    PlantedBug(
        "cli-ignores-options",
        "dyadlab check ignores --epoch-length and --surrogates (uses the defaults)",
        "synchrony/cli.py",
        "            epoch_length=epoch_length,\n            n_surrogates=n_surrogates,",
        "            epoch_length=2.0,\n            n_surrogates=200,",
        ("tests/synchrony/test_check.py::test_cli_writes_json_and_html_and_prints_the_summary",),
    ),
    PlantedBug(
        "conversation-same-screen",
        "per-participant screens: both participants see 'Your turn to speak'",
        "tasks/paradigms/conversation.py",
        "                        own = view.participants[0] == speaker",
        "                        own = True",
        (f"{PARADIGMS}::test_structured_conversation_turns",),
    ),
    PlantedBug(
        "group-null-from-pseudo-only",
        "group_level draws the reference means from the pseudo-dyads alone (a too narrow null)",
        "synchrony/stats.py",
        "    pool = np.concatenate([real, pseudo])",
        "    pool = pseudo",
        ("tests/synchrony/test_surrogates.py::test_pseudo_dyad_group_null_is_calibrated",),
    ),
    PlantedBug(
        "run-02-overwrites-run-01-csv",
        "a second run writes its behavioural CSV over run 01's (the XDF names stay right)",
        "protocols/runner.py",
        '"behaviour": stem.with_name(stem.name + "_beh.csv"),',
        '"behaviour": stem.with_name(stem.name.replace("run-02", "run-01") + "_beh.csv"),',
        (f"{E2E}::test_files_follow_the_output_pattern_and_never_overwrite",),
    ),
    PlantedBug(
        "recording-failure-not-raised",
        "the runner forgets a failed recording when the session ends (no RecordingFailed)",
        "protocols/runner.py",
        "            if self.recording_failure is not None and not isinstance(self.error, RecordingFailed):",
        "            if False:",
        (
            "tests/protocols/test_disk_full_session.py"
            "::test_disk_full_mid_session_ends_it_keeps_the_recording_and_releases_devices",
        ),
    ),
)


# -- the copy ----------------------------------------------------------------------------------
def repository_files(repo: Path = REPO) -> list[str]:
    """Tracked files and new files that are not ignored (what a commit of the work tree would hold)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if name and (repo / name).is_file()})


def package_dirs(root: Path) -> dict[str, str]:
    """``dyadlab.X`` -> folder, from pyproject.toml's ``[tool.setuptools.package-dir]``."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the section is a flat table of quoted strings
        section = text.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
        return dict(re.findall(r'^"([^"]+)"\s*=\s*"([^"]+)"', section, flags=re.M))
    return dict(tomllib.loads(text)["tool"]["setuptools"]["package-dir"])


def copy_repository(dest: Path, repo: Path = REPO, *, link_packages: bool = True) -> Path:
    """Copy the repository's files to ``dest`` and lay out the ``dyadlab`` package there.

    ``dest/dyadlab/<sub>`` points to ``dest/<folder>`` (a symlink; a full copy when
    ``link_packages`` is false, for tools that must see real folders). Returns ``dest``.
    """
    for name in repository_files(repo):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)
    for package, folder in package_dirs(dest).items():
        parts = package.split(".")
        if len(parts) != 2 or parts[0] != "dyadlab":
            continue
        inside = dest / "dyadlab" / parts[1]
        if inside.exists() or inside.is_symlink():
            continue
        if link_packages:
            inside.symlink_to(Path("..") / folder, target_is_directory=True)
        else:
            shutil.copytree(dest / folder, inside)
    return dest


def copy_environment(root: Path) -> dict[str, str]:
    """The environment of a process that must import the copy at ``root``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    env["DYADLAB_TEST_ARTIFACTS"] = str(root / "test-artifacts")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def check_imports_copy(root: Path, python: str = sys.executable) -> dict[str, str]:
    """Import every sub-package from ``root`` and fail unless each comes from the copy."""
    code = (
        "import importlib, json\n"
        "names = ['dyadlab', 'dyadlab.acquisition', 'dyadlab.tasks', 'dyadlab.protocols', 'dyadlab.synchrony']\n"
        "print(json.dumps({n: importlib.import_module(n).__file__ for n in names}))\n"
    )
    done = subprocess.run(
        [python, "-c", code], cwd=root, env=copy_environment(root), capture_output=True, text=True, check=True
    )
    files = json.loads(done.stdout.strip().splitlines()[-1])
    outside = {name: path for name, path in files.items() if not Path(path).is_relative_to(root)}
    if outside:
        raise RuntimeError(f"the copy at {root} does not shadow the installed package: {outside}")
    return files


def plant(root: Path, bug: PlantedBug) -> None:
    """Apply ``bug`` to the copy at ``root``; the original text must occur exactly once."""
    path = root / bug.path
    text = path.read_text(encoding="utf-8")
    count = text.count(bug.original)
    if count != 1:
        raise RuntimeError(
            f"planted bug {bug.name!r}: the original text occurs {count} times in {bug.path} (expected once); "
            f"update tests/planted_bugs.py.\n--- original text ---\n{bug.original}"
        )
    path.write_text(text.replace(bug.original, bug.replacement), encoding="utf-8")


@contextmanager
def repository_copy(keep: bool = False, **options: bool) -> Iterator[Path]:
    """A fresh copy of the repository in a temporary folder (removed afterwards unless ``keep``)."""
    folder = Path(tempfile.mkdtemp(prefix="dyadlab-copy-"))
    try:
        yield copy_repository(folder / "repo", **options)
    finally:
        if keep:
            print(f"  kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


# -- running tests ----------------------------------------------------------------------------
@dataclass
class Outcome:
    """Per test id: "passed", "failed", "error" or "skipped"; ``seconds`` of the whole run."""

    results: dict[str, str]
    seconds: float
    returncode: int
    output: str

    def with_status(self, *statuses: str) -> list[str]:
        return [test for test, status in self.results.items() if status in statuses]


def _test_id(case: ET.Element) -> str:
    classname, name = case.get("classname", ""), case.get("name", "")
    parts = classname.split(".")
    # "tests.tasks.test_paradigms" (+ ".Class") -> tests/tasks/test_paradigms.py[::Class]
    for cut in range(len(parts), 0, -1):
        module = "/".join(parts[:cut]) + ".py"
        if Path(module).name.startswith("test_"):
            return "::".join([module, *parts[cut:], name])
    return f"{classname}::{name}"


def run_tests(root: Path, tests: Sequence[str], python: str = sys.executable) -> Outcome:
    """Run ``tests`` (pytest node ids) in the copy at ``root``; outcome per test."""
    report = root / f"junit-{time.monotonic_ns()}.xml"
    command = [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", "--tb=short", f"--junitxml={report}"]
    command += list(tests)
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        command = [*XVFB, *command]
    started = time.monotonic()
    done = subprocess.run(command, cwd=root, env=copy_environment(root), capture_output=True, text=True)
    seconds = time.monotonic() - started
    results: dict[str, str] = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            status = "passed"
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    status = {"failure": "failed"}.get(child.tag, child.tag)
            results[_test_id(case)] = status
    return Outcome(results, seconds, done.returncode, done.stdout + done.stderr)


def _failure_lines(outcome: Outcome, limit: int = 6) -> list[str]:
    """pytest's one-line summaries of the failed tests (``-rfE``) with the first assertion lines."""
    summary = [line for line in outcome.output.splitlines() if line.startswith(("FAILED tests", "ERROR tests"))]
    errors = [line for line in outcome.output.splitlines() if line.startswith("E   ")]
    return summary[:limit] + errors[:limit]


# -- main ---------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.planted_bugs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run this bug only (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the planted bugs and their guarding tests")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the tests on an unmodified copy")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens, also in a log file

    bugs = list(BUGS)
    if args.only:
        unknown = set(args.only) - {bug.name for bug in bugs}
        if unknown:
            parser.error(f"unknown bug(s) {sorted(unknown)}; --list shows them")
        bugs = [bug for bug in bugs if bug.name in args.only]
    if args.list:
        for bug in bugs:
            print(f"{bug.name}: {bug.description}\n  in {bug.path}; guarded by")
            for test in bug.tests:
                print(f"    {test}")
        return 0

    failed_setup = False
    started = time.monotonic()
    if not args.no_baseline:
        tests = list(dict.fromkeys(test for bug in bugs for test in bug.tests))
        print(f"baseline: {len(tests)} guarding test(s) on an unmodified copy", flush=True)
        with repository_copy(args.keep) as root:
            files = check_imports_copy(root)
            print(f"  dyadlab.synchrony imported from {files['dyadlab.synchrony']}")
            outcome = run_tests(root, tests)
        bad = outcome.with_status("failed", "error")
        skipped = outcome.with_status("skipped")
        print(
            f"  {len(outcome.with_status('passed'))} passed, {len(bad)} failed, {len(skipped)} skipped ({outcome.seconds:.0f} s)"
        )
        if bad or skipped or not outcome.results:
            failed_setup = True
            for line in _failure_lines(outcome) or outcome.output.splitlines()[-15:]:
                print(f"    {line}")
            print("  the baseline must pass (and not skip) for the planted bugs to mean anything")

    survived: list[str] = []
    stale: list[str] = []
    for bug in bugs:
        print(f"\n{bug.name}: {bug.description} ({bug.path})", flush=True)
        with repository_copy(args.keep) as root:
            check_imports_copy(root)
            try:
                plant(root, bug)
            except RuntimeError as error:
                print(f"  CANNOT PLANT: {error}")
                stale.append(bug.name)
                continue
            outcome = run_tests(root, bug.tests)
        caught = outcome.with_status("failed", "error")
        for test in bug.tests:
            matching = {k: v for k, v in outcome.results.items() if k == test or k.startswith(test + "[")}
            statuses = ", ".join(f"{k.removeprefix(test) or 'ran'}: {v}" for k, v in matching.items()) or "not run"
            print(f"  {test}\n    {statuses}")
        if caught:
            print(f"  CAUGHT by {len(caught)} test(s) ({outcome.seconds:.0f} s)")
            for line in _failure_lines(outcome, 3):
                print(f"    {line[:300]}")
        else:
            reason = "all skipped" if outcome.results and not outcome.with_status("passed") else "every test passed"
            if not outcome.results:
                reason = "no test ran:\n" + "\n".join(outcome.output.splitlines()[-10:])
            print(f"  SURVIVED ({reason}; {outcome.seconds:.0f} s)")
            survived.append(bug.name)

    total = time.monotonic() - started
    caught = len(bugs) - len(survived) - len(stale)
    print(f"\n{caught} of {len(bugs)} planted bugs caught in {total:.0f} s")
    if survived:
        print("survived: " + ", ".join(survived))
    if stale:
        print("could not be planted (the code changed; update the bug): " + ", ".join(stale))
    if failed_setup:
        print("the baseline failed: see above")
    return 1 if survived or stale or failed_setup else 0


if __name__ == "__main__":
    sys.exit(main())
