"""The HTML layer shared by the quick-check report and the group report: one style sheet,
escaping, number formatting, figures inlined as PNG, and the page around them.

Pages load nothing from outside (no scripts, fonts or style sheets), so a report can be mailed
or archived with the recording.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable
from typing import Any

__all__ = ["REPORT_CSS", "format_number", "html_escape", "page", "png_data_uri"]

REPORT_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.verdict{border-radius:6px;padding:1em 1.2em;margin:1em 0;background:#f6f8fa;border-left:6px solid #888}
.ok{border-left-color:#2e7d32} .check{border-left-color:#e65100}
.badge{display:inline-block;padding:.1em .5em;border-radius:4px;color:#fff;font-weight:600;font-size:.85em}
.b-ok{background:#2e7d32} .b-check{background:#e65100} .b-unverified{background:#757575}
.sig{background:#c8e6c9;font-weight:600} .warn li{margin:.2em 0} .small{color:#666;font-size:.85em}
img{max-width:100%} nav{margin:.5em 0 1em;line-height:1.6} h3{font-size:1em;margin:1em 0 .3em}
.behs{display:flex;flex-wrap:wrap;gap:0 2.5em} .beh p{margin:.6em 0 .2em}
"""


def png_data_uri(figure: Any) -> str:
    """A matplotlib figure as an ``<img>`` element with the PNG inlined as a base64 data URI.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        Laid out by the caller: saved at 80 dpi as it is.

    Returns
    -------
    str
        ``<img alt="figure" src="data:image/png;base64,...">``.
    """
    # No bbox_inches="tight" and no tight_layout on the many-panel figures: their text-extent
    # searches cost tens of seconds for 10 conditions x 4 bands; layouts are set by hand.
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return '<img alt="figure" src="data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode("ascii") + '">'


def html_escape(value: Any) -> str:
    """``str(value)`` escaped for HTML text and attribute values (``&``, ``<``, ``>``, quotes)."""
    return html.escape(str(value))


def format_number(value: Any, digits: int = 3) -> str:
    """A table cell's text: a float with ``digits`` significant digits (from 10 000 up rounded
    to an integer, never in exponent form), ``None`` as an en dash, anything else escaped."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return html_escape(value)


def page(title: str, parts: Iterable[str]) -> str:
    """A whole self-contained page: ``title`` as the document title and first heading, then
    ``parts`` (HTML fragments) in order."""
    head = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html_escape(title)}</title><style>{REPORT_CSS}</style></head><body>"
        f"<h1>{html_escape(title)}</h1>"
    )
    return "\n".join([head, *parts, "</body></html>"])
