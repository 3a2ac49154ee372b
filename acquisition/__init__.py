"""Acquisition: EEG sources (BrainFlow boards, the coupled-dyad simulator) bridged into LSL,
markers, the crash-safe XDF recorder and preflight checks.

Typical use: a :class:`BrainFlowSource` (or :class:`CoupledDyadSimulator`) per participant, a
:class:`BoardBridge` pumping it into an LSL outlet, :class:`MarkerHub` for session markers and
:class:`LslRecorder` writing every stream into one XDF file with :class:`XdfWriter`.
"""

import lazy_loader

# The public names, imported on first use so that importing the package stays cheap.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "brainflow_source": ["BoardSpec", "BrainFlowSource"],
        "bridge": ["BoardBridge"],
        "markers": ["Marker", "MarkerHub", "MarkerOutlet"],
        "recorder": ["LslRecorder", "RecordingSummary", "StreamSelector"],
        "simulator": ["CoupledDyadSimulator", "simulate_dyad"],
        "xdf": ["XdfWriter"],
        "xdfinspect": ["inspect_xdf"],
        "preflight": ["PreflightConfig", "PreflightReport", "run_preflight"],
    },
)
