"""The HTML pages a citizen sees: consent, apps with access, no health book, errors, and the
development identity provider's sign-in form. Vietnamese by default, English with ``lang=en``.

Every value is escaped; the pages load nothing from elsewhere and carry no script. Forms post
back to this server with their CSRF token (checked by ``authorization.launch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from fhir_server.authorization.consent import describe, texts
from fhir_server.authorization.launch import Page

__all__ = ["dev_sign_in_page", "render"]

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;"
          "color:#1b1b1b}li{margin:.4rem 0}button{font-size:1rem;padding:.5rem 1.2rem;"
          "margin:.3rem}.dev{background:#b00020;color:#fff;padding:.6rem;font-weight:bold}"
          ".note{color:#555}")


def _document(title: str, body: str, language: str) -> str:
    return (f'<!DOCTYPE html><html lang="{escape(language)}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>{body}</body></html>")


def _switch(path: str, query: Mapping[str, str], language: str) -> str:
    other = "en" if language == "vi" else "vi"
    href = path + "?" + urlencode({**query, "lang": other})
    label = escape(texts(language)["ui"]["other_lang"])
    return f'<p><a id="language" href="{escape(href)}">{label}</a></p>'


def render(page: Page, language: str, base_url: str) -> str:
    """Return the HTML of a page of the launch flow."""
    ui: dict[str, str] = texts(language)["ui"]
    if page.kind == "consent":
        return _consent(page.data, language, base_url)
    if page.kind == "apps":
        return _apps(page.data, language, base_url)
    if page.kind == "no-patient":
        back = page.data.get("back")
        link = f'<p><a id="back" href="{escape(back)}">←</a></p>' if back else ""
        body = (f"<h1>{escape(ui['no_patient_title'])}</h1>"
                f"<p id=\"no-patient\">{escape(ui['no_patient_text'])}</p>{link}")
        return _document(ui["no_patient_title"], body, language)
    reason = ui["error_text"].format(reason=str(page.data.get("reason", "")))
    body = f"<h1>{escape(ui['error_title'])}</h1><p id=\"error\">{escape(reason)}</p>"
    return _document(ui["error_title"], body, language)


def _consent(data: Mapping[str, Any], language: str, base_url: str) -> str:
    ui: dict[str, str] = texts(language)["ui"]
    items = "".join(
        f'<li><label><input type="checkbox" name="scope" value="{escape(word)}" checked> '
        f"{escape(text)}</label></li>" for word, text in data["scopes"])
    who = escape(ui["signed_in_as"].format(name=data["person"])) if data["person"] else ""
    body = (
        f"{_switch(base_url + '/auth/consent', {'request': data['request']}, language)}"
        f"<h1>{escape(ui['consent_title'])}</h1><p>{who}</p>"
        f"<p>{escape(ui['consent_intro'].format(app=data['app']))}</p>"
        f'<form method="post" action="{escape(base_url)}/auth/consent">'
        f'<input type="hidden" name="request" value="{escape(data["request"])}">'
        f'<input type="hidden" name="csrf" value="{escape(data["csrf"])}">'
        f"<ul>{items}</ul><p class=\"note\">{escape(ui['always'])}</p>"
        f"<p class=\"note\">{escape(ui['consent_hint'])}</p>"
        f'<button id="approve" name="decision" value="approve">{escape(ui["approve"])}</button>'
        f'<button id="deny" name="decision" value="deny">{escape(ui["deny"])}</button></form>')
    return _document(ui["consent_title"], body, language)


def _apps(data: Mapping[str, Any], language: str, base_url: str) -> str:
    ui: dict[str, str] = texts(language)["ui"]
    rows = []
    for app in data["apps"]:
        since = datetime.fromtimestamp(app["since"], UTC).strftime("%d/%m/%Y")
        scopes = "".join(f"<li>{escape(describe(w, language))}</li>" for w in app["scopes"]
                         if w != "launch/patient")
        rows.append(
            f'<li class="app"><strong>{escape(app["app"])}</strong> '
            f"<span class=\"note\">{escape(ui['apps_since'].format(date=since))}</span>"
            f"<ul>{scopes}</ul>"
            f'<form method="post" action="{escape(base_url)}/auth/apps">'
            f'<input type="hidden" name="csrf" value="{escape(data["csrf"])}">'
            f'<input type="hidden" name="client_id" value="{escape(app["client_id"])}">'
            f'<button class="revoke" data-client="{escape(app["client_id"])}">'
            f"{escape(ui['revoke'])}</button></form></li>")
    listing = f"<ul>{''.join(rows)}</ul>" if rows else f"<p>{escape(ui['apps_none'])}</p>"
    notice = ""
    if data.get("notice"):
        notice = f"<p id=\"notice\">{escape(ui['revoked'].format(app=data['notice']))}</p>"
    body = (f"{_switch(base_url + '/auth/apps', {}, language)}"
            f"<h1>{escape(ui['apps_title'])}</h1>{notice}{listing}")
    return _document(ui["apps_title"], body, language)


def dev_sign_in_page(action: str, params: Mapping[str, str], error: str | None = None) -> str:
    """The development identity provider's form: a CCCD and a name, no password."""
    hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                     for k, v in params.items())
    problem = f'<p id="error">{escape(error)}</p>' if error else ""
    body = (
        '<p class="dev">NHÀ CUNG CẤP ĐỊNH DANH THỬ NGHIỆM — CHỈ DÙNG KHI PHÁT TRIỂN. '
        "DEVELOPMENT IDENTITY PROVIDER — NOT FOR REAL USE: anyone can sign in as anyone.</p>"
        f"<h1>Đăng nhập (thử nghiệm)</h1>{problem}"
        f'<form method="post" action="{escape(action)}">{hidden}'
        '<p><label>Số CCCD <input id="cccd" name="cccd" inputmode="numeric" '
        'pattern="[0-9]{12}" required></label></p>'
        '<p><label>Họ và tên <input id="name" name="name"></label></p>'
        '<button id="sign-in">Đăng nhập</button></form>')
    return _document("Development identity provider", body, "vi")
