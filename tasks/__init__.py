"""PsychoPy side of a dyadlab session: the task kit, the autopilot and the paradigms.

Importing this package loads no PsychoPy and opens no window; see ``docs/tasks.md``.

:class:`TaskContext` is what a paradigm gets (windows, markers on the next flip, per-participant
input); ``PARADIGMS`` maps task names to paradigms.
"""

import lazy_loader

# The public names, imported on first use so that importing the package stays cheap.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "kit": ["TaskContext", "SessionAborted", "PsychoPyImportError", "require_psychopy"],
        "paradigms": ["PARADIGMS", "get_paradigm", "validate_params"],
    },
)
