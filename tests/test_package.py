"""The installed package: one namespace, nothing shadowed, one error contract on the command line."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dyadlab import DyadlabError
from dyadlab.protocols import cli
from tests.synchrony.foreign_dyad import CONDITIONS, write_foreign_dyad

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("acquisition", "tasks", "protocols", "synchrony")


def _modules() -> list[Path]:
    return [p for folder in (*SUBPACKAGES, "dyadlab") for p in (ROOT / folder).rglob("*.py")]


def test_no_module_imports_a_bare_top_level_name():
    """Every import of the project's own code goes through ``dyadlab.``: a third-party package
    called ``tasks`` or ``synchrony`` can never stand in for ours."""
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in SUBPACKAGES
            ]
    assert offenders == []


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dyadlab"):
                offenders += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
    assert offenders == []


@pytest.mark.slow
def test_pip_install_puts_only_dyadlab_into_site_packages(tmp_path):
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    installed = {p.name for p in target.iterdir()} - {"bin"}
    assert {name for name in installed if not name.startswith("dyadlab-")} == {"dyadlab"}
    package = target / "dyadlab"
    assert {p.name for p in package.iterdir() if p.is_dir()} >= set(SUBPACKAGES)
    assert (package / "protocols" / "bundled" / "demo.yaml").is_file()


@pytest.mark.integration
def test_packages_named_like_ours_on_the_path_change_nothing(tmp_path):
    """Packages ``acquisition``, ``tasks``, ``protocols`` and ``synchrony`` that break on import,
    first on ``sys.path``, in a folder outside the repository: the command line, every module
    and a quick-check still work."""
    hostile = tmp_path / "third-party"
    for name in SUBPACKAGES:
        (hostile / name).mkdir(parents=True)
        (hostile / name / "__init__.py").write_text(f"raise ImportError('the third-party {name} was imported')\n")
    xdf = write_foreign_dyad(tmp_path / "foreign.xdf", block_seconds=20.0, n_blocks=2)
    environment = {**os.environ, "PYTHONPATH": str(hostile)}
    modules = sorted(
        "dyadlab." + ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in _modules()
        if p.parts[-2:] != ("dyadlab", "__main__.py") and p.relative_to(ROOT).parts[0] != "dyadlab"
    )
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('imported', len(sys.argv) - 1)"
    done = subprocess.run(
        [sys.executable, "-c", code, *modules],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    check = [sys.executable, "-m", "dyadlab", "check", str(xdf), "--surrogates", "0", "--no-progress"]
    for condition in CONDITIONS:
        check += ["--condition", condition]
    done = subprocess.run(check, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    done = subprocess.run(
        [sys.executable, "-m", "dyadlab", "validate", "demo"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _with_command(monkeypatch, error: Exception) -> None:
    @click.command()
    def failing() -> None:
        raise error

    monkeypatch.setitem(cli._COMMANDS, "failing", f"{__name__}:_FAILING")
    monkeypatch.setattr(sys.modules[__name__], "_FAILING", failing, raising=False)


def test_a_domain_error_is_its_message_and_exit_code_2(monkeypatch):
    _with_command(monkeypatch, DyadlabError("the amplifier is off; switch it on and run again"))
    result = CliRunner().invoke(cli.main, ["failing"])
    assert result.exit_code == 2
    assert "the amplifier is off; switch it on and run again" in result.output
    assert "Traceback" not in result.output


def test_a_bug_is_one_line_with_the_traceback_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    _with_command(monkeypatch, ZeroDivisionError("division by zero"))
    result = CliRunner().invoke(cli.main, ["failing"])
    assert result.exit_code == 70
    assert "stopped on a bug (ZeroDivisionError: division by zero)" in result.output
    logs = list((tmp_path / "dyadlab-logs").glob("crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in result.output
    assert "ZeroDivisionError" in logs[0].read_text() and "Traceback" in logs[0].read_text()


def test_every_domain_error_is_a_dyadlab_error():
    from dyadlab.acquisition.lslconfig import LslConfigError
    from dyadlab.acquisition.recorder import RecorderError
    from dyadlab.acquisition.sources import SourceError
    from dyadlab.acquisition.storage import InsufficientSpaceError
    from dyadlab.acquisition.xdf import XdfWriterError
    from dyadlab.protocols.runner import SessionError
    from dyadlab.protocols.schema import ParadigmImportError, ProtocolError
    from dyadlab.synchrony.check import QuickCheckError
    from dyadlab.synchrony.group import GroupError
    from dyadlab.synchrony.io import XdfLoadError
    from dyadlab.synchrony.segments import SegmentationError
    from dyadlab.synchrony.xdfreader import XdfIndexError
    from dyadlab.tasks.kit import PsychoPyImportError
    from dyadlab.tasks.paradigms import ParadigmParamsError

    for error in (LslConfigError, RecorderError, SourceError, InsufficientSpaceError, XdfWriterError, SessionError,
                  ProtocolError, QuickCheckError, GroupError, XdfLoadError, SegmentationError, XdfIndexError,
                  ParadigmParamsError, ParadigmImportError, PsychoPyImportError):  # fmt: skip
        assert issubclass(error, DyadlabError), error


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    name = ".".join(parts if parts[0] == "dyadlab" else ("dyadlab", *parts))
    return name.removesuffix(".__init__")


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any depth of the file, lazy imports included)."""
    modules = {_module_name(p): p for p in _modules()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            found = []
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            targets |= {f for f in found if f in modules and f != name}
        graph[name] = targets - {"dyadlab"}
    return graph


def test_no_import_cycle_among_the_modules():
    graph = _import_graph()
    cycles = []
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(trail[trail.index(target) :] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_lower_layers_never_import_higher_ones():
    """Data flows protocols -> tasks/acquisition -> XDF -> synchrony (docs/architecture.md)."""
    allowed = {
        "acquisition": {"acquisition"},
        "tasks": {"tasks", "acquisition"},
        "synchrony": {"synchrony"},
        "protocols": {"protocols", "tasks", "acquisition", "synchrony"},
    }
    offenders = [
        f"{module} imports {target}"
        for module, targets in _import_graph().items()
        for target in targets
        # the root package's own modules (dyadlab.cli_support...) are shared by every layer
        if module.split(".")[1] in allowed
        and target.split(".")[1] in SUBPACKAGES
        and target.split(".")[1] not in allowed[module.split(".")[1]]
    ]
    assert offenders == []
