"""A broken PsychoPy or paradigm registry is reported as what it is, never as an "unknown task".

Every case runs a fresh interpreter whose imports really fail: a ``psychopy`` package first on
``sys.path`` whose import raises what a missing system library raises, or an import hook that
makes one paradigm module fail the same way. Nothing is patched inside dyadlab.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LIBGL = "libGL.so.1: cannot open shared object file: No such file or directory"


def _environment(extra_path: Path | None = None) -> dict[str, str]:
    environment = {**os.environ, "COLUMNS": "1000"}  # rich wraps nothing
    if extra_path is not None:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), os.environ.get("PYTHONPATH")]))
    return environment


def _python(args: list[str], cwd: Path, environment: dict[str, str]) -> tuple[int, str]:
    """Exit code and output (stdout + stderr, whitespace collapsed) of ``python ARGS``."""
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=240
    )
    return done.returncode, " ".join((done.stdout + "\n" + done.stderr).split())


def _fake_psychopy(folder: Path, body: str) -> Path:
    """A ``psychopy`` package in ``folder`` whose import runs ``body``; the folder, for PYTHONPATH."""
    package = folder / "psychopy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def broken_psychopy(tmp_path: Path) -> dict[str, str]:
    """The environment of a process in which ``import psychopy`` fails as without libGL."""
    folder = _fake_psychopy(tmp_path / "broken-site", f"raise ImportError({LIBGL!r})")
    environment = _environment(folder)
    code, output = _python(["-c", "import psychopy"], tmp_path, environment)
    assert code != 0 and LIBGL in output, output  # the fake really stands in for the real PsychoPy
    return environment


def test_validation_needs_no_psychopy(broken_psychopy, tmp_path):
    code, output = _python(["-m", "dyadlab", "validate", "demo"], tmp_path, broken_psychopy)
    assert code == 0, output
    assert "OK" in output
    assert "unknown task" not in output


@pytest.mark.display
def test_a_run_names_the_broken_psychopy_before_anything_starts(broken_psychopy, tmp_path):
    out = tmp_path / "out"
    command = ["-m", "dyadlab", "run", "demo", "--simulate", "--autopilot", "--no-quickcheck", "--out", str(out)]
    code, output = _python(command, tmp_path, broken_psychopy)
    assert code == 1, output
    assert f"PsychoPy is installed but cannot be imported: ImportError: {LIBGL}" in output
    assert "unknown task" not in output
    assert "recording" not in output and not out.exists()  # no device, outlet or file was started


_REQUIRE = (
    "from dyadlab.tasks.kit import PsychoPyImportError, require_psychopy\n"
    "try:\n"
    "    require_psychopy()\n"
    "except PsychoPyImportError as error:\n"
    "    print('PsychoPyImportError:', error)\n"
    "    raise SystemExit(3)\n"
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"raise ImportError({LIBGL!r})", f"ImportError: {LIBGL}"),
        (f"raise OSError({LIBGL!r})", f"OSError: {LIBGL}"),  # ctypes failing to load a library
        ("import dyadlab_test_missing_dependency", "No module named 'dyadlab_test_missing_dependency'"),
    ],
    ids=["import-error", "os-error", "missing-dependency"],
)
def test_require_psychopy_names_the_real_import_problem(tmp_path, body, expected):
    environment = _environment(_fake_psychopy(tmp_path / "site", body))
    code, output = _python(["-c", _REQUIRE], tmp_path, environment)
    assert code == 3, output
    assert "PsychoPyImportError: PsychoPy is installed but cannot be imported" in output
    assert expected in output
    assert "not installed" not in output


_NOT_INSTALLED = """
import sys


class NotInstalled:
    '''Finds no psychopy, and says so as the import system does for a package not installed.'''

    def find_spec(self, name, path=None, target=None):
        if name == "psychopy":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
"""


def test_require_psychopy_says_when_psychopy_is_not_installed(tmp_path):
    code, output = _python(["-c", _NOT_INSTALLED + _REQUIRE], tmp_path, _environment())
    assert code == 3, output
    assert "PsychoPy is not installed" in output
    assert "pip install 'dyadlab[tasks]'" in output


_BROKEN_PARADIGM = f"""
import sys


class MissingLibrary:
    '''Fails the import of one paradigm module the way a missing shared library does.'''

    def find_spec(self, name, path=None, target=None):
        if name == "dyadlab.tasks.paradigms.tapping":
            raise ImportError({LIBGL!r})
        return None


sys.meta_path.insert(0, MissingLibrary())
from dyadlab.protocols.cli import main

main(sys.argv[1:], prog_name="dyadlab")
"""


@pytest.mark.parametrize("arguments", [["validate", "demo"], ["validate", "--list-tasks"]], ids=["demo", "list"])
def test_a_paradigm_registry_that_fails_to_import_is_named_not_read_as_unknown_tasks(tmp_path, arguments):
    code, output = _python(["-c", _BROKEN_PARADIGM, *arguments], tmp_path, _environment())
    assert code == 2, output
    assert f"the task paradigms (dyadlab.tasks.paradigms) cannot be imported: ImportError: {LIBGL}" in output
    assert "unknown task" not in output
    assert "Traceback" not in output
