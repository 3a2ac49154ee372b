"""dyadlab: EEG hyperscanning sessions, from PsychoPy tasks and BrainFlow acquisition over LSL
to crash-safe XDF recordings and inter-brain synchrony quick-checks.

The sub-packages live in the repository's top-level folders and are installed inside this
namespace (``pyproject.toml``, ``[tool.setuptools] package-dir``):

- :mod:`dyadlab.acquisition`: sources (BrainFlow boards, simulator) to LSL, markers, the XDF
  recorder, preflight;
- :mod:`dyadlab.tasks`: the PsychoPy task kit and paradigms;
- :mod:`dyadlab.protocols`: protocol files, the session runner and the ``dyadlab`` command line;
- :mod:`dyadlab.synchrony`: XDF reading, data quality, inter-brain synchrony, reports.

Importing ``dyadlab`` loads none of them.
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["DyadlabError", "__version__"]

try:
    __version__ = metadata.version("dyadlab")
except metadata.PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"


class DyadlabError(Exception):
    """Base of every error dyadlab raises for bad input or a failed device, file or session.

    The command line turns it into its message and exit code 2; anything else is a bug.
    """
