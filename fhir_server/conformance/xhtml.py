"""The FHIR narrative rules for ``Narrative.div`` (R4 narrative.html#xhtml, txt-1 and txt-2).

A ``div`` must be well-formed XML whose root is an XHTML ``div`` and that holds only the basic
HTML formatting elements and attributes (HTML 4.0 chapters 7-11 and 15, links, images, tables,
inline styles): no scripts, forms, frames, objects, event attributes (``onclick``), other
namespaces, DOCTYPEs, or styles and links that fetch or run something (``url(``,
``javascript:``). It must also have some non-whitespace text or an image (txt-2).

Both the structural validation of incoming resources and the narrative the server generates
(``fhir_server.operations.narrative``) use these rules.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from typing import Any

from fhir_server.errors import Issue

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "ALLOWED_ELEMENTS",
    "XHTML_NS",
    "check_div",
    "check_narrative",
]

XHTML_NS = "http://www.w3.org/1999/xhtml"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
#: The elements FHIR narrative allows (HTML 4.0 chapters 7-11 and 15, links, images).
_ELEMENT_NAMES = (
    "a abbr acronym b big blockquote br caption cite code col colgroup dd dfn div dl dt em "
    "h1 h2 h3 h4 h5 h6 hr i img kbd li ol p pre q samp small span strong sub sup table tbody "
    "td tfoot th thead tr tt ul var"
)
#: Their non-event attributes (core, i18n, links, images, tables, lists).
_ATTRIBUTE_NAMES = (
    "style class id lang dir title href name colspan rowspan src alt width height border "
    "cellpadding cellspacing summary align valign span scope abbr headers charoff char frame "
    "rules start type value datetime cite"
)
ALLOWED_ELEMENTS = frozenset(_ELEMENT_NAMES.split())
ALLOWED_ATTRIBUTES = frozenset(_ATTRIBUTE_NAMES.split())
#: Namespaced attributes allowed besides the plain ones (xml:lang).
_ALLOWED_QUALIFIED = frozenset({f"{{{_XML_NS}}}lang"})
#: Schemes that would run code when a reader follows a link or loads an image.
_ACTIVE_URL = re.compile(r"^\s*(javascript|vbscript|livescript)\s*:", re.IGNORECASE)
#: Style constructs that fetch a resource or run script (CSS url() other than an inline
#: ``data:`` one, IE expression(), @import). ``url(data:...)`` holds its image itself and
#: fetches nothing: R4's own examples use it (191 of them), and R4 allows style attributes.
_ACTIVE_STYLE = re.compile(r"url\s*\((?!\s*[\"']?\s*data:)|expression\s*\(|@import"
                           r"|javascript\s*:", re.IGNORECASE)
_DOCTYPE = re.compile(r"<!(DOCTYPE|ENTITY)", re.IGNORECASE)
_TXT_1 = "txt-1: The narrative SHALL contain only the basic html formatting elements and attributes"
_TXT_2 = "txt-2: The narrative SHALL have some non-whitespace content"


def check_narrative(resource: dict[str, Any]) -> list[Issue]:
    """Return an issue per narrative rule broken by any ``text.div`` of ``resource``.

    The resource's own narrative, those of contained resources and of resources nested in
    other elements (``Bundle.entry.resource``, ``Parameters.parameter.resource``) are checked.
    """
    issues: list[Issue] = []
    for path, div in _divs(resource, str(resource.get("resourceType", "Resource"))):
        issues += check_div(div, path)
    return issues


def _divs(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Yield (FHIRPath, div) for every ``text.div`` of a resource found under ``value``."""
    if isinstance(value, dict):
        text = value.get("text")
        if "resourceType" in value and isinstance(text, dict) and "div" in text:
            yield f"{path}.text.div", text["div"]
        for key, item in value.items():
            if isinstance(item, (dict, list)) and key != "text":
                yield from _divs(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _divs(item, f"{path}[{index}]")


def check_div(div: object, path: str) -> list[Issue]:
    """Return the ways the XHTML ``div`` at ``path`` breaks the FHIR narrative rules."""
    if not isinstance(div, str):
        return [_issue("MSG_NARRATIVE_NOT_XHTML", "Narrative.div must be a string", path)]
    if _DOCTYPE.search(div):
        return [
            _issue("MSG_NARRATIVE_NOT_XHTML", "DOCTYPE/ENTITY declarations are not allowed", path)
        ]
    try:
        root = ElementTree.fromstring(div)
    except ElementTree.ParseError as exc:
        return [_issue("MSG_NARRATIVE_NOT_XHTML", f"not well-formed XHTML: {exc}", path)]
    if root.tag != f"{{{XHTML_NS}}}div":
        message = f'the root element must be an XHTML div (xmlns="{XHTML_NS}"), not {root.tag}'
        return [_issue("MSG_NARRATIVE_NAMESPACE", message, path)]  # its children would repeat it
    issues: list[Issue] = []
    for node in root.iter():
        issues += [
            _issue("MSG_INVARIANT_TXT_1", f"{_TXT_1}: {p}", path) for p in _node_problems(node)
        ]
    if not _has_content(root):
        # A warning: R4's own examples include narratives of whitespace only (4 of them),
        # published by the specification's build, whose validator does not refuse them.
        issues.append(_issue("MSG_INVARIANT_TXT_2", _TXT_2, path, "warning"))
    return issues


def _node_problems(node: ElementTree.Element) -> list[str]:
    if not isinstance(node.tag, str):  # comments and processing instructions are dropped
        return []
    namespace, _, local = node.tag[1:].partition("}") if node.tag[0] == "{" else ("", "", node.tag)
    if namespace != XHTML_NS or local not in ALLOWED_ELEMENTS:
        return [f"element {node.tag} is not allowed"]
    return [
        problem
        for name, value in node.attrib.items()
        if (problem := _attribute_problem(local, name, value))
    ]


def _attribute_problem(element: str, name: str, value: str) -> str | None:
    if name not in ALLOWED_ATTRIBUTES and name not in _ALLOWED_QUALIFIED:
        return f"attribute {name} on {element} is not allowed"
    if name in ("href", "src", "cite") and _ACTIVE_URL.search(value):
        return f"attribute {name} on {element} must not run script"
    if name == "style" and _ACTIVE_STYLE.search(value):
        return f"style on {element} must not load or run anything (url(), expression(), @import)"
    return None


def _has_content(root: ElementTree.Element) -> bool:
    """txt-2: some non-whitespace text, or an image."""
    if "".join(root.itertext()).strip():
        return True
    return any(node.tag == f"{{{XHTML_NS}}}img" for node in root.iter())


def _issue(message_id: str, diagnostics: str, path: str, severity: str = "error") -> Issue:
    return Issue(severity, "invariant", message_id, diagnostics, (path,))
