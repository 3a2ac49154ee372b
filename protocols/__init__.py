"""Protocols: the protocol file schema, the bundled protocols, the session runner and the
``dyadlab`` command line.

:func:`load_protocol` validates a protocol file (or a bundled name such as ``"demo"``);
:class:`SessionRunner` runs it: preflight, acquisition, tasks, recording and the quick-check.
"""

import lazy_loader

# The public names, imported on first use so that importing the package stays cheap.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "schema": ["LoadedProtocol", "Protocol", "ProtocolError", "load_protocol", "bundled_protocols"],
        "runner": ["SessionError", "SessionResult", "SessionRunner"],
    },
)
