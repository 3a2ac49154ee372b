"""Mutation testing of the modules where a silent error costs a study (``make mutate``).

``python -m tests.mutation [--module synchrony/xdfreader.py ...] [--workdir DIR]`` runs mutmut 3
(``pip install -e '.[mutate]'``) on each module against the tests listed for it in
``pyproject.toml`` (``[tool.dyadlab.mutation]``), and writes, per module, the counts and the
surviving mutants' diffs to ``test-artifacts/mutation/<module>.txt`` (and ``summary.json``).

Why a copy: mutmut names a mutant after its file path (``dyadlab/synchrony/xdfreader.py`` ->
``dyadlab.synchrony.xdfreader``) and the tests import ``dyadlab.*``, but the repository keeps the
sub-packages in top-level folders (``synchrony/``, mapped by ``package-dir``). So each run works in
a temporary copy of the repository (``git ls-files``; the working tree is never touched) whose
``dyadlab/`` holds real copies of the sub-packages, with a ``[tool.mutmut]`` section written for
that module; mutmut then copies that into ``mutants/`` and puts it first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.planted_bugs import REPO, copy_repository, repository_files

ARTIFACTS = REPO / "test-artifacts" / "mutation"


def settings(root: Path = REPO) -> dict:
    """``[tool.dyadlab.mutation]`` of pyproject.toml."""
    import tomllib

    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["dyadlab"]["mutation"]


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(value) for value in values) + "]"


def write_mutmut_config(root: Path, module: str, tests: list[str], config: dict) -> None:
    """Write mutmut's section for ``module`` at the end of the copy's pyproject.toml (replacing one
    written before)."""
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    if "\n[tool.mutmut]\n" in text:
        pyproject.write_text(text.split("\n[tool.mutmut]\n", 1)[0] + "\n", encoding="utf-8")
    target = f"dyadlab/{module}"
    section = "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["dyadlab"]',
            f"only_mutate = {_toml_list([target])}",
            f"pytest_add_cli_args = {_toml_list(config.get('pytest_args', []))}",
            f"pytest_add_cli_args_test_selection = {_toml_list(tests)}",
            f"timeout_multiplier = {float(config.get('timeout_multiplier', 15.0))}",
            "use_git_change_detection = false",
            "",
        ]
    )
    with open(root / "pyproject.toml", "a", encoding="utf-8") as handle:
        handle.write(section)


def _mutmut(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # mutmut puts mutants/ first itself
    env["DYADLAB_TEST_ARTIFACTS"] = str(root / "test-artifacts")
    # mutmut runs the tests once, then forks a child per mutant; GNU OpenMP (numba's default
    # threading layer here) kills a process forked after its parent ran a parallel kernel, which
    # showed as mutants "ended by SIGTERM" whatever they changed (docs/testing.md, surrogates.py).
    env.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    command = [sys.executable, "-m", "mutmut", *args]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


def _exit_codes(root: Path, module: str) -> dict[str, int | None]:
    """mutmut's verdict (its exit code) per mutant of ``module``, from its ``.meta`` file."""
    meta = root / "mutants" / "dyadlab" / f"{module}.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}


# A mutant that crashes the test process (a numba kernel writing out of bounds: SIGABRT, SIGSEGV)
# fails the suite as surely as a failed assertion; mutmut calls it "suspicious" or "segfault".
_CRASHES = (-6, -11)


def _statuses(codes: dict[str, int | None]) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    return {name: "killed (crash)" if code in _CRASHES else status_by_exit_code[code] for name, code in codes.items()}


def _refresh_tests(root: Path) -> None:
    """Copy the working tree's current tests into an existing copy (mutmut copies them on to mutants/)."""
    for name in repository_files(REPO):
        if name.startswith("tests/"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)


def mutate_module(
    module: str, tests: list[str], config: dict, workdir: Path, max_children: int, rerun_survivors: bool = False
) -> dict:
    """Run mutmut on one module in a fresh copy; return its counts and survivors.

    ``rerun_survivors``: in the copy kept from an earlier run (``--workdir``), with the tests as they
    are now, run only the mutants that survived it (after new assertions were written for them).
    """
    root = workdir / module.replace("/", "_").removesuffix(".py")
    names: list[str] = []
    before: dict[str, int | None] = {}
    if rerun_survivors and (root / "mutants").is_dir():
        # A new test selection makes mutmut forget every verdict: keep the earlier ones here.
        before = _exit_codes(root, module)
        names = [name for name, status in _statuses(before).items() if not status.startswith("killed")]
        _refresh_tests(root)
    else:
        if root.exists():
            shutil.rmtree(root)
        copy_repository(root, link_packages=False)
    write_mutmut_config(root, module, tests, config)
    started = time.monotonic()
    run = _mutmut(root, "run", "--max-children", str(max_children), *names, check=False)
    seconds = time.monotonic() - started
    if run.returncode != 0:
        raise RuntimeError(f"mutmut run failed for {module}:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}")
    after = _exit_codes(root, module)
    codes = {name: after.get(name) if after.get(name) is not None else before.get(name) for name in after}
    statuses = _statuses(codes)
    counts = dict(Counter(statuses.values()))
    counts["total"] = len(statuses)
    survivors = sorted(name for name, status in statuses.items() if not status.startswith("killed"))
    diffs = {name: _mutmut(root, "show", name, check=False).stdout for name in survivors}
    return {
        "module": module,
        "tests": tests,
        "seconds": round(seconds, 1),
        "counts": counts,
        "rerun": bool(names),
        "survivors": [{"name": name, "status": statuses[name], "diff": diffs[name]} for name in survivors],
        "copy": str(root),
    }


def report(result: dict) -> str:
    c = result["counts"]
    others = ", ".join(
        f"{n} {status}" for status, n in sorted(c.items()) if status not in ("total", "killed", "survived")
    )
    lines = [
        f"{result['module']}: {c['total']} mutants, {c.get('killed', 0)} killed, {c.get('survived', 0)} survived"
        + (f", {others}" if others else "")
        + f" ({result['seconds']:.0f} s{', survivors of the previous run only' if result['rerun'] else ''}; "
        f"tests: {' '.join(result['tests'])})",
    ]
    for survivor in result["survivors"]:
        lines += ["", f"--- {survivor['name']} ({survivor['status']})", survivor["diff"].rstrip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    config = settings()
    modules: dict[str, list[str]] = config["modules"]
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(modules), help="mutate this module (repeatable)")
    parser.add_argument("--workdir", type=Path, help="where the copies go (default: a temporary folder, removed)")
    parser.add_argument("--max-children", type=int, default=int(config.get("max_children", os.cpu_count() or 2)))
    parser.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="with --workdir of an earlier run: test only its survivors, against the tests as they are now",
    )
    args = parser.parse_args(argv)
    if args.rerun_survivors and args.workdir is None:
        parser.error("--rerun-survivors needs the --workdir of an earlier run")

    chosen = args.module or list(modules)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dyadlab-mutation-"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    summary_path = ARTIFACTS / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    failed = False
    try:
        for module in chosen:
            print(f"{module}: mutating against {' '.join(modules[module])}", flush=True)
            try:
                result = mutate_module(
                    module, modules[module], config, workdir, args.max_children, args.rerun_survivors
                )
            except RuntimeError as error:
                print(f"  {error}")
                failed = True
                continue
            text = report(result)
            (ARTIFACTS / (module.replace("/", "_").removesuffix(".py") + ".txt")).write_text(text)
            print("  " + text.splitlines()[0])
            summary[module] = {key: result[key] for key in ("seconds", "counts", "tests")} | {
                "survivors": [s["name"] for s in result["survivors"]]
            }
            summary_path.write_text(json.dumps(summary, indent=2))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"survivors and their diffs: {ARTIFACTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
