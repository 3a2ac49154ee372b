"""``dyadlab monitor``: the live dyad monitor in the browser (docs/monitor.md).

A separate process and a pure LSL consumer: :mod:`.lslwatch` finds the session's streams and
reads them with its own inlets (traces, per-channel quality, rate, dropped samples, latency,
markers, live synchrony); :mod:`.server` serves the page (``static/``) and streams decimated
traces and status to it over a WebSocket. Nothing it does reaches the recording: the recorder
has its own inlets, and an outlet serves each inlet independently.
"""
