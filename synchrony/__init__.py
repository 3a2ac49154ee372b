"""Inter-brain synchrony quick-check of hyperscanning XDF recordings.

The entry point is :func:`run_check` (``dyadlab check`` on the command line); its JSON report is
documented in ``docs/quickcheck-schema.md``. :func:`load_dyad` reads a dyad's XDF file (exactly
as pyxdf does, see :mod:`dyadlab.synchrony.xdfreader`), :func:`run_group` analyses many sessions.
Sub-modules: ``io`` (XDF loading), ``xdfreader``, ``quality``, ``segments`` (conditions,
alignment, filtering, epochs, rejection), ``metrics``, ``surrogates``, ``stats``, ``report``
(HTML), ``group``.
"""

import lazy_loader

# The public names, imported on first use so that importing the package stays cheap.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "check": ["QuickCheckError", "run_check"],
        "io": ["DyadRecording", "ParticipantEeg", "XdfLoadError", "load_dyad"],
        "group": ["GroupError", "run_group"],
        "metrics": ["inter_brain_connectivity"],
        "xdfreader": ["index_xdf", "read_streams"],
    },
)
