"""Where paradigms come from: the bundled ones, installed packages, and the lab's own files.

A protocol block's ``task`` is looked up in this order:

1. a bundled paradigm (``rest``, ``joint-press``, ``tapping``, ``conversation``, ``probe``);
2. a paradigm an installed package registers in the entry point group ``dyadlab.paradigms``
   (entry name = task name, value = ``module:ClassName``), e.g. in the package's ``pyproject.toml``::

       [project.entry-points."dyadlab.paradigms"]
       mirror-game = "mylab_tasks.mirror:MirrorGame"

3. a reference written in the block itself: ``path/to/file.py:ClassName`` (a relative path is
   read from the protocol file's folder, then from the working directory) or
   ``package.module:ClassName`` (an importable module).

Whatever its origin, a paradigm is a :class:`~dyadlab.tasks.paradigms.base.Paradigm` subclass
with a ``name`` (used as ``task`` in its markers and CSV rows) and a ``Params`` model derived from
:class:`~dyadlab.tasks.paradigms.base.ParadigmParams`; it is checked when it is loaded, so a
protocol naming a broken paradigm fails validation, not the session. Loading a file or module runs
its code, like any Python script the lab runs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import metadata
from pathlib import Path
from typing import Any

from dyadlab import DyadlabError
from dyadlab.tasks.paradigms.base import Paradigm, ParadigmParams

logger = logging.getLogger(__name__)

#: Entry point group through which installed packages register paradigms.
ENTRY_POINT_GROUP = "dyadlab.paradigms"

#: A paradigm's ``name``: it becomes the ``task`` of its markers and CSV rows.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# Folders a relative ``file.py:Class`` reference is read from (the protocol file's folder while it loads).
_base_folders: ContextVar[tuple[Path, ...]] = ContextVar("dyadlab_paradigm_folders", default=())


class ParadigmLoadError(DyadlabError, KeyError):
    """A block's task names no paradigm, or one that cannot be loaded.

    Attributes
    ----------
    message : str
        What is wrong.
    fix : str
        What to do about it.
    """

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message, fix)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:  # KeyError would print the arguments' repr
        return f"{self.message}; {self.fix}"


def is_reference(task: str) -> bool:
    """Whether ``task`` names a paradigm by ``file.py:Class`` or ``module:Class`` (not by name)."""
    return ":" in task


class ParadigmRegistry(Mapping[str, type[Paradigm[Any]]]):
    """Task name or reference -> paradigm class.

    Iterating lists the bundled and the entry-point paradigms (the names ``dyadlab validate
    --list-tasks`` shows); looking up also accepts ``file.py:Class`` and ``module:Class``
    references. Loaded paradigms are kept, so a reference resolved while the protocol was
    validated is the same class when the session runs it.

    Parameters
    ----------
    bundled : sequence of Paradigm subclasses
    """

    def __init__(self, bundled: tuple[type[Paradigm[Any]], ...]) -> None:
        self._bundled: dict[str, type[Paradigm[Any]]] = {paradigm.name: paradigm for paradigm in bundled}
        self._loaded: dict[str, type[Paradigm[Any]]] = {}

    # ---- Mapping ---------------------------------------------------------------------------
    def __getitem__(self, task: str) -> type[Paradigm[Any]]:
        if not isinstance(task, str):
            raise ParadigmLoadError(f"a task is a name or a reference, not {task!r}", self._known_fix())
        if task in self._bundled:
            return self._bundled[task]
        if task not in self._loaded:
            self._loaded[task] = self._load(task)
        return self._loaded[task]

    def __iter__(self) -> Iterator[str]:
        yield from self._bundled
        yield from (name for name in self._entry_points() if name not in self._bundled)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, task: object) -> bool:
        try:
            self[task]  # type: ignore[index]
        except KeyError:
            return False
        return True

    # ---- relative file references ------------------------------------------------------------
    @contextmanager
    def files_relative_to(self, folder: Path) -> Iterator[None]:
        """Read relative ``file.py:Class`` references from ``folder`` (then the working directory)."""
        token = _base_folders.set((Path(folder), *_base_folders.get()))
        try:
            yield
        finally:
            _base_folders.reset(token)

    # ---- loading -----------------------------------------------------------------------------
    def _known_fix(self) -> str:
        return (
            f"use one of: {', '.join(sorted(self))}, or your own paradigm as 'path/to/file.py:ClassName' "
            "or 'package.module:ClassName' (see docs/paradigms.md)"
        )

    @staticmethod
    def _entry_points() -> dict[str, metadata.EntryPoint]:
        return {entry.name: entry for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}

    def _load(self, task: str) -> type[Paradigm[Any]]:
        if not is_reference(task):
            entry = self._entry_points().get(task)
            if entry is None:
                raise ParadigmLoadError(f"unknown task {task!r}", self._known_fix())
            origin = f"entry point {task!r} ({entry.value}) of group {ENTRY_POINT_GROUP}"
            try:
                found = entry.load()
            except Exception as error:
                raise ParadigmLoadError(
                    f"the {origin} cannot be loaded: {type(error).__name__}: {error}",
                    f'check the package that registers it (`python -c "import {entry.value.split(":")[0]}"`)',
                ) from error
            return self._checked(found, origin, expected_name=task)
        where, _, attribute = task.rpartition(":")
        if not where or not attribute.isidentifier():
            raise ParadigmLoadError(
                f"task {task!r} is not a paradigm reference",
                "write 'path/to/file.py:ClassName' or 'package.module:ClassName'",
            )
        module = self._load_file(where, task) if where.endswith(".py") else self._import_module(where, task)
        found = getattr(module, attribute, None)
        if found is None:
            classes = [name for name, value in vars(module).items() if _is_paradigm_class(value)]
            raise ParadigmLoadError(
                f"{where} has no {attribute!r}",
                f"its paradigm classes are: {', '.join(classes) or 'none'}",
            )
        return self._checked(found, task)

    @staticmethod
    def _import_module(module_name: str, task: str) -> Any:
        if not _MODULE.match(module_name):
            raise ParadigmLoadError(
                f"task {task!r}: {module_name!r} is neither a .py file nor a module name",
                "write 'path/to/file.py:ClassName' or 'package.module:ClassName'",
            )
        try:
            return importlib.import_module(module_name)
        except Exception as error:
            raise ParadigmLoadError(
                f"task {task!r}: the module {module_name!r} cannot be imported ({type(error).__name__}: {error})",
                "install the package that provides it in this environment, or name a .py file instead",
            ) from error

    @staticmethod
    def _load_file(file: str, task: str) -> Any:
        path = Path(file).expanduser()
        candidates = [path] if path.is_absolute() else [folder / path for folder in (*_base_folders.get(), Path.cwd())]
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        if found is None:
            raise ParadigmLoadError(
                f"task {task!r}: no file {file!r} (looked in {', '.join(str(c.parent) for c in candidates)})",
                "give the path of the paradigm's .py file, relative to the protocol file or absolute",
            )
        found = found.resolve()
        # One module per file, named after its path: loading the same file twice gives the same classes.
        stem = re.sub(r"\W", "_", found.stem)
        module_name = f"dyadlab_lab_paradigm_{stem}_{hashlib.sha1(str(found).encode()).hexdigest()[:10]}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, found)
        if spec is None or spec.loader is None:
            raise ParadigmLoadError(f"task {task!r}: {found} cannot be loaded as Python", "name a .py file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # pydantic resolves the Params annotations through it
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[module_name]
            raise ParadigmLoadError(
                f"task {task!r}: {found} failed while loading ({type(error).__name__}: {error})",
                f"run `python {found}` to see the whole traceback",
            ) from error
        logger.info("Loaded the lab paradigm file %s", found)
        return module

    def _checked(self, found: Any, origin: str, expected_name: str | None = None) -> type[Paradigm[Any]]:
        """``found`` if it is a usable paradigm class, else a :class:`ParadigmLoadError` saying why."""
        if not _is_paradigm_class(found):
            raise ParadigmLoadError(
                f"{origin} is not a paradigm class ({found!r})",
                "subclass dyadlab.tasks.paradigms.Paradigm (see docs/paradigms.md)",
            )
        if inspect.isabstract(found):
            missing = ", ".join(sorted(getattr(found, "__abstractmethods__", ())))
            raise ParadigmLoadError(f"{origin}: {found.__name__} does not define {missing}", "implement them")
        name = getattr(found, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ParadigmLoadError(
                f"{origin}: {found.__name__}.name is {name!r}",
                "set name to a short task name of letters, digits, '-' and '_' (it labels the markers and CSV)",
            )
        if name in self._bundled and self._bundled[name] is not found:
            raise ParadigmLoadError(
                f"{origin}: {found.__name__}.name {name!r} is the name of a bundled paradigm",
                "give your paradigm its own name, so that its markers are not read as the bundled one's",
            )
        if expected_name is not None and name != expected_name:
            raise ParadigmLoadError(
                f"{origin}: the class is named {name!r}, not {expected_name!r}",
                "make the entry point's name and the class's name the same",
            )
        params = getattr(found, "Params", None)
        if not (inspect.isclass(params) and issubclass(params, ParadigmParams)):
            raise ParadigmLoadError(
                f"{origin}: {found.__name__}.Params is {params!r}",
                "set Params to a subclass of dyadlab.tasks.paradigms.ParadigmParams",
            )
        return found


def _is_paradigm_class(value: Any) -> bool:
    return inspect.isclass(value) and issubclass(value, Paradigm) and value is not Paradigm
