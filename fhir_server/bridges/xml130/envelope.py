"""The GIAMDINHHS envelope of XML 130 (../docs/xml130-mapping.md, "The envelope").

``decode_envelope`` reads the bytes a facility sends to the insurance portal: the facility code,
the date the file was made, and one ``Hoso`` per visit (``HOSO``), each holding the decoded
tables (``FILEHOSO``: ``LOAIHOSO`` plus the base64 of the table's own UTF-8 XML). Nothing is
verified here (the facility's signature is another issue's); the bytes are kept as received.

A malformed envelope raises ``BadRequest`` (400). A problem inside one visit (bad base64, a
table whose inner root is not the one its ``LOAIHOSO`` names, an unknown table) is recorded on
that visit as an ``Issue``, so the other visits of the file can still be imported.

``encode_envelope`` writes the same shape (unsigned), for the synthetic corpus and the export.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lxml import etree

from fhir_server.errors import BadRequest, Issue

__all__ = [
    "Envelope",
    "Hoso",
    "TableFile",
    "TableShape",
    "decode_envelope",
    "encode_envelope",
    "encode_table",
    "problem",
]

ROOT = "GIAMDINHHS"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          huge_tree=False, remove_comments=True, remove_pis=True)


@dataclass(frozen=True)
class TableShape:
    """Where a table's records sit in its XML: root element, list element (or none), record."""

    root: str
    record: str
    list: str | None = None


@dataclass(frozen=True)
class TableFile:
    """One decoded ``FILEHOSO``: its table (``LOAIHOSO``), position (from 1), the inner root
    seen, the records (field name -> text), and the decoded XML bytes."""

    kind: str
    position: int
    root: str
    records: tuple[dict[str, str], ...]
    content: bytes


@dataclass(frozen=True)
class Hoso:
    """One visit (``HOSO``, from 1): its tables and the problems found while decoding them."""

    position: int
    files: tuple[TableFile, ...]
    problems: tuple[Issue, ...] = ()

    def tables(self, kind: str) -> list[TableFile]:
        """The files of table ``kind`` (normally one)."""
        return [f for f in self.files if f.kind == kind]


@dataclass(frozen=True)
class Envelope:
    """A decoded envelope: facility code (``MACSKCB``), creation date (``NGAYLAP``), visits,
    and whether it has a ``CHUKYDONVI`` (where a signature would be)."""

    facility: str
    created: str
    visits: tuple[Hoso, ...]
    raw: bytes = field(repr=False)
    signed: bool = False


def problem(message_id: str, where: str, vi: str, en: str, severity: str = "error") -> Issue:
    """An issue about the XML at ``where`` (``XML2[3].LIEU_DUNG``), in Vietnamese and English."""
    code = "invalid" if severity in ("error", "fatal") else "informational"
    return Issue(severity, code, message_id, f"{where}: {vi} / {en}", (where,))


def _parse(data: bytes) -> etree._Element:
    root = etree.fromstring(data, _PARSER)
    if getattr(root.getroottree().docinfo, "doctype", ""):
        raise ValueError("a DOCTYPE is not allowed")
    return root


def _text(element: etree._Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _bad_envelope(en: str, vi: str) -> BadRequest:
    return BadRequest(f"{vi} / {en}", message_id="MSG_XML130_ENVELOPE",
                      expression=(ROOT,))


def decode_envelope(data: bytes, shapes: Mapping[str, TableShape],
                    skipped: Mapping[str, str] | None = None) -> Envelope:
    """Decode an envelope. ``shapes`` are the tables to read, ``skipped`` the known tables that
    are reported as not imported (with the reason). Raises ``BadRequest``."""
    try:
        root = _parse(data)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise _bad_envelope(f"the envelope is not well-formed XML ({exc})",
                            "tệp không phải XML hợp lệ") from None
    if root.tag != ROOT:
        raise _bad_envelope(f"the root element is {root.tag}, not {ROOT}",
                            f"phần tử gốc là {root.tag}, không phải {ROOT}")
    visits = root.findall("THONGTINHOSO/DANHSACHHOSO/HOSO")
    if not visits:
        raise _bad_envelope("the envelope holds no HOSO (THONGTINHOSO/DANHSACHHOSO/HOSO)",
                            "tệp không có hồ sơ (HOSO) nào")
    return Envelope(
        facility=_text(root.find("THONGTINDONVI/MACSKCB")),
        created=_text(root.find("THONGTINHOSO/NGAYLAP")),
        visits=tuple(_hoso(n, h, shapes, skipped or {}) for n, h in enumerate(visits, start=1)),
        raw=data,
        signed=root.find("CHUKYDONVI") is not None,
    )


def _hoso(position: int, element: etree._Element, shapes: Mapping[str, TableShape],
          skipped: Mapping[str, str]) -> Hoso:
    files: list[TableFile] = []
    problems: list[Issue] = []
    for number, item in enumerate(element.iterchildren("FILEHOSO"), start=1):
        kind = _text(_child(item, "LOAIHOSO")).upper()
        if kind in skipped:
            problems.append(problem("MSG_XML130_TABLE_NOT_IMPORTED", kind,
                                    "bảng không được nhập vào sổ sức khỏe",
                                    f"the table is not imported: {skipped[kind]}", "warning"))
            continue
        decoded = _file(number, kind, item, shapes, problems)
        if decoded is not None:
            files.append(decoded)
    return Hoso(position, tuple(files), tuple(problems))


def _child(element: etree._Element, tag: str) -> etree._Element | None:
    """The first child named ``tag`` (``find`` without its path language)."""
    return next(element.iterchildren(tag), None)


def _file(number: int, kind: str, item: etree._Element, shapes: Mapping[str, TableShape],
          problems: list[Issue]) -> TableFile | None:
    where = kind or f"FILEHOSO[{number}]"
    shape = shapes.get(kind)
    if shape is None:
        problems.append(problem("MSG_XML130_TABLE_UNKNOWN", where,
                                f"bảng '{kind}' không được hỗ trợ, không nhập",
                                f"table '{kind}' is not known; it is not imported", "warning"))
        return None
    try:
        content = base64.b64decode("".join(_text(_child(item, "NOIDUNGFILE")).split()),
                                   validate=True)
        content.decode("utf-8")  # the standard's encoding, whatever the declaration says
        inner = _parse(content)
    except UnicodeDecodeError:
        problems.append(problem("MSG_XML130_INNER_XML", f"{where}.NOIDUNGFILE",
                                "nội dung bảng không phải UTF-8", "the table is not UTF-8"))
        return None
    except (binascii.Error, ValueError) as exc:
        problems.append(problem("MSG_XML130_BASE64", f"{where}.NOIDUNGFILE",
                                "NOIDUNGFILE không phải base64 hợp lệ",
                                f"NOIDUNGFILE is not valid base64 ({exc})"))
        return None
    except etree.XMLSyntaxError as exc:
        problems.append(problem("MSG_XML130_INNER_XML", f"{where}.NOIDUNGFILE",
                                "nội dung bảng không phải XML UTF-8 hợp lệ",
                                f"the table is not well-formed UTF-8 XML ({exc})"))
        return None
    if inner.tag != shape.root:
        problems.append(problem("MSG_XML130_ROOT_MISMATCH", where,
                                f"LOAIHOSO là {kind} nhưng phần tử gốc là {inner.tag} "
                                f"(cần {shape.root})",
                                f"LOAIHOSO says {kind} but the content's root is {inner.tag} "
                                f"(expected {shape.root})"))
        return None
    return TableFile(kind, number, inner.tag, _records(inner, shape), content)


def _records(inner: etree._Element, shape: TableShape) -> tuple[dict[str, str], ...]:
    rows = [inner] if inner.tag == shape.record else list(inner.iter(shape.record))
    return tuple({child.tag: (child.text or "").strip()
                  for child in row.iterchildren(etree.Element)} for row in rows)


def encode_table(shape: TableShape, records: Iterable[Mapping[str, str]],
                 order: Sequence[str]) -> bytes:
    """The UTF-8 XML of one table: its records' fields in ``order`` (empty ones included)."""
    root = etree.Element(shape.root)
    holder = root if shape.list is None else etree.SubElement(root, shape.list)
    for record in records:
        row = root if shape.record == shape.root else etree.SubElement(holder, shape.record)
        for name in order:
            etree.SubElement(row, name).text = record.get(name, "")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def encode_envelope(facility: str, created: str,
                    visits: Sequence[Sequence[tuple[str, bytes]]]) -> bytes:
    """An unsigned envelope: one ``HOSO`` per visit of (``LOAIHOSO``, table XML) pairs."""
    root = etree.Element(ROOT)
    etree.SubElement(etree.SubElement(root, "THONGTINDONVI"), "MACSKCB").text = facility
    info = etree.SubElement(root, "THONGTINHOSO")
    etree.SubElement(info, "NGAYLAP").text = created
    etree.SubElement(info, "SOLUONGHOSO").text = str(len(visits))
    listing = etree.SubElement(info, "DANHSACHHOSO")
    for tables in visits:
        hoso = etree.SubElement(listing, "HOSO")
        for kind, content in tables:
            item = etree.SubElement(hoso, "FILEHOSO")
            etree.SubElement(item, "LOAIHOSO").text = kind
            etree.SubElement(item, "NOIDUNGFILE").text = base64.b64encode(content).decode()
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))
