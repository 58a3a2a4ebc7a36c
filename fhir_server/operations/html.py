"""A readable, printable Vietnamese HTML page of a document Bundle (the health book, a visit).

The page is the Composition's narrative and each section's narrative under its title, styled
with inline CSS for screen and print. A narrative is inserted as is only when it keeps the
FHIR narrative rules (``narrative.check_narrative``); any other is shown as escaped text, so a
document from elsewhere cannot put a script on the page.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fhir_server.operations.narrative import check_narrative, vn_date

__all__ = ["render_document"]

_STYLE = """
body { font-family: "Segoe UI", Roboto, "Noto Sans", Arial, sans-serif; color: #1a1a1a;
       max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.5rem; color: #0b5394; border-bottom: 2px solid #0b5394; }
h2 { font-size: 1.15rem; color: #0b5394; margin-top: 1.6rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.92rem; }
th, td { border: 1px solid #b7c4d1; padding: 0.3rem 0.45rem; text-align: left;
         vertical-align: top; }
th { background: #e8f0f8; }
ul { padding-left: 1.2rem; }
footer { margin-top: 2rem; font-size: 0.8rem; color: #555; }
@media print { body { margin: 0; max-width: none; } h2 { page-break-after: avoid; }
               tr { page-break-inside: avoid; } }
"""


def _div(narrative: Any) -> str:
    """The narrative's XHTML if it keeps the rules; otherwise its text, escaped."""
    div = str((narrative or {}).get("div", ""))
    if div and not check_narrative(div):
        return div
    return f"<p>{escape(div)}</p>" if div else ""


def _section(section: dict[str, Any]) -> str:
    title = escape(str(section.get("title", "")))
    inner = "".join(_section(s) for s in section.get("section") or [])
    return f"<section><h2>{title}</h2>{_div(section.get('text'))}{inner}</section>"


def _signed_by(signature: Any) -> str:
    """The footer's line on the document's own signature, if it has one."""
    if not isinstance(signature, dict):
        return ""
    who = escape(str((signature.get("who") or {}).get("display", "")))
    return f" · Ký số bởi {who} lúc {escape(vn_date(signature.get('when')))}"


def render_document(bundle: dict[str, Any]) -> str:
    """Return the HTML page of a document Bundle (its first entry is the Composition)."""
    entries = bundle.get("entry") or [{}]
    composition = entries[0].get("resource") or {}
    title = escape(str(composition.get("title", "Tài liệu")))
    body = _div(composition.get("text")) or f"<h1>{title}</h1>"
    body += "".join(_section(s) for s in composition.get("section") or [])
    identifier = escape(str((bundle.get("identifier") or {}).get("value", "")))
    stamp = escape(vn_date(bundle.get("timestamp"))) + _signed_by(bundle.get("signature"))
    return (
        '<!DOCTYPE html>\n<html lang="vi"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_STYLE}</style></head><body>{body}"
        f"<footer>Tạo lúc {stamp} · Mã tài liệu {identifier}</footer></body></html>"
    )
