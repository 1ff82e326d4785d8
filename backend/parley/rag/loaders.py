"""Files -> parsed documents: a title and sections (heading path, text), or ``Skipped`` with the reason.

One loader per format: Markdown, plain text, HTML (selectolax/lexbor) and PDF (pypdf). A section's text holds one
block per line (a paragraph with its soft line breaks joined, a list item, a table row as "Header: value; ...", a
line of code), so the chunker can split it along blocks, then sentences. Loaders never raise for a bad file: an
unreadable, binary, empty or unsupported one comes back as ``Skipped`` and the ingest run goes on.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selectolax.lexbor import LexborNode

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 50 * 1024 * 1024
_SNIFF_BYTES = 8192


@dataclass(frozen=True, slots=True)
class Section:
    headings: tuple[str, ...]  # outermost first; () for text before the first heading
    text: str  # one block per line


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    path: Path
    title: str
    sections: tuple[Section, ...]
    digest: str  # sha256 of the file's bytes


@dataclass(frozen=True, slots=True)
class Skipped:
    path: Path
    reason: str


class _Unreadable(Exception):
    """A file that cannot be parsed; the message is the reason shown to the user."""


def load(path: Path) -> ParsedDocument | Skipped:
    """Parse one file. Never raises for the file's content: a file that cannot be used gives ``Skipped``."""
    suffix = path.suffix.lower()
    parser = _PARSERS.get(suffix)
    if parser is None:
        return Skipped(path, f"unsupported type {suffix}" if suffix else "unsupported type (no extension)")
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read forever
            return Skipped(path, "not a regular file")
        size = info.st_size
        if size > MAX_FILE_BYTES:
            return Skipped(path, f"file too large ({size // (1024 * 1024)} MB)")
        data = path.read_bytes()
    except OSError as exc:
        return Skipped(path, f"unreadable: {exc.strerror or exc}")
    if not data.strip():
        return Skipped(path, "empty file")
    try:
        title, sections = parser(path, data)
    except _Unreadable as exc:
        return Skipped(path, str(exc))
    except Exception as exc:  # a parser bug or a malformed file must not end the run
        logger.warning("could not parse %s", path, exc_info=True)
        return Skipped(path, f"could not parse: {type(exc).__name__}: {exc}")
    kept = tuple(s for s in sections if s.text.strip())
    if not kept:
        return Skipped(path, "no text")
    return ParsedDocument(path=path, title=title, sections=kept, digest=hashlib.sha256(data).hexdigest())


def supported(path: Path) -> bool:
    return path.suffix.lower() in _PARSERS


# --- shared helpers ----------------------------------------------------------------------------------------


def _decode_text(data: bytes) -> str:
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise _Unreadable("binary file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _Unreadable("not UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _title_from_stem(path: Path) -> str:
    words = re.sub(r"[_\-.]+", " ", path.stem).strip()
    return words[:1].upper() + words[1:] if words else path.name


_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_TERMINAL = re.compile(r"[.!?:;,。！？]$")


def _table_lines(header: list[str] | None, rows: Iterable[list[str]]) -> list[str]:
    """Table rows as self-contained lines: "Species: Duck; Days: 28." (or "Duck; 28." without a header)."""
    lines = []
    for cells in rows:
        if not any(cells):
            continue
        if header and len(header) == len(cells):
            parts = [f"{h}: {c}" if h else c for h, c in zip(header, cells, strict=True) if c]
        else:
            parts = [c for c in cells if c]
        line = "; ".join(parts)
        lines.append(line if _TERMINAL.search(line) else line + ".")
    return lines


class _SectionBuilder:
    """Collects blocks under the current heading path."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._levels: list[tuple[int, str]] = []
        self._blocks: list[str] = []
        self.headings_seen: list[tuple[int, str]] = []

    def heading(self, level: int, text: str) -> None:
        self.flush()
        text = " ".join(text.split())
        if not text:
            return
        self._levels = [(lv, h) for lv, h in self._levels if lv < level] + [(level, text)]
        self.headings_seen.append((level, text))

    def block(self, text: str) -> None:
        if text.strip():
            self._blocks.append(text.rstrip())

    def flush(self) -> None:
        if self._blocks:
            headings = tuple(h for _, h in self._levels)
            self.sections.append(Section(headings, "\n".join(self._blocks)))
        self._blocks = []

    def finish(self, title: str) -> list[Section]:
        """Sections; a sole top-level heading that is the title is dropped from the heading paths."""
        self.flush()
        top = min((lv for lv, _ in self.headings_seen), default=0)
        tops = [h for lv, h in self.headings_seen if lv == top]
        if len(tops) == 1 and tops[0] == title:
            return [
                Section(s.headings[1:] if s.headings[:1] == (title,) else s.headings, s.text)
                for s in self.sections
            ]
        return self.sections


# --- Markdown ----------------------------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])([ \t]*\1){2,}[ \t]*$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_INLINE = [
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images -> alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links -> text
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # reference links
    (re.compile(r"`([^`]+)`"), r"\1"),
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w_])_(?=\S)([^_]+?)(?<=\S)_(?![\w_])"), r"\1"),
    (re.compile(r"~~(.+?)~~"), r"\1"),
    (re.compile(r"<br\s*/?>", re.I), " "),
    (re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>])"), r"\1"),
]


def _md_inline(text: str) -> str:
    for pattern, repl in _INLINE:
        text = pattern.sub(repl, text)
    return " ".join(text.split())


def _split_row(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [_md_inline(c) for c in re.split(r"(?<!\\)\|", line)]


def _front_matter(lines: list[str]) -> tuple[str, int]:
    """(title from YAML front matter or "", index of the first line after it)."""
    if not lines or lines[0].strip() != "---":
        return "", 0
    for i in range(1, min(len(lines), 100)):
        if lines[i].strip() in ("---", "..."):
            title = ""
            for line in lines[1:i]:
                m = re.match(r"^title:\s*(.+?)\s*$", line)
                if m:
                    title = m.group(1).strip("\"'")
            return title, i + 1
    return "", 0


def _parse_markdown(path: Path, data: bytes) -> tuple[str, list[Section]]:
    text = _HTML_COMMENT.sub("", _decode_text(data))
    lines = text.split("\n")
    fm_title, i = _front_matter(lines)
    out = _SectionBuilder()
    para: list[str] = []
    in_item = False

    def end_para() -> None:
        nonlocal in_item
        if para:
            out.block(_md_inline(" ".join(para)))
            para.clear()
        in_item = False

    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:  # code is kept as text, line by line
            end_para()
            marker = fence.group(1)
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker[0] * len(marker)):
                out.block(lines[i])
                i += 1
            i += 1
            continue
        atx = _ATX.match(line)
        if atx:
            end_para()
            out.heading(len(atx.group(1)), _md_inline(atx.group(2) or ""))
            i += 1
            continue
        setext = _SETEXT.match(line)
        if setext and len(para) == 1 and not in_item:
            heading = para.pop()
            out.heading(1 if setext.group(1)[0] == "=" else 2, _md_inline(heading))
            i += 1
            continue
        stripped = line.strip()
        if not stripped or setext or _RULE.match(line):  # blank line or a thematic break
            end_para()
            i += 1
            continue
        if stripped.startswith("|") and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1]):
            end_para()
            header = _split_row(line)
            i += 2
            rows = []
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append(_split_row(lines[i]))
                i += 1
            for row in _table_lines(header, rows):
                out.block(row)
            continue
        stripped = re.sub(r"^(>\s?)+", "", stripped)
        bullet = _BULLET.match(stripped)
        if bullet:
            end_para()
            in_item = True
            stripped = stripped[bullet.end() :]
        para.append(stripped)
        i += 1
    end_para()
    h1s = [h for lv, h in out.headings_seen if lv == 1]
    title = fm_title or (h1s[0] if h1s else "") or (out.headings_seen[0][1] if out.headings_seen else "")
    title = title or _title_from_stem(path)
    return title, out.finish(title)


# --- plain text ----------------------------------------------------------------------------------------------


def _paragraphs(text: str) -> list[list[str]]:
    paras: list[list[str]] = [[]]
    for line in text.split("\n"):
        if line.strip():
            paras[-1].append(line.strip())
        elif paras[-1]:
            paras.append([])
    return [p for p in paras if p]


def _join_lines(lines: list[str], out: _SectionBuilder, *, wrapped: bool = False) -> None:
    """Soft-wrapped lines joined into one block; a bullet starts a new block. ``wrapped`` (PDF text, where blank
    lines between paragraphs are lost): a clearly short line that ends a sentence also ends the block."""
    current = ""
    width = max((len(line) for line in lines), default=0)
    for line in lines:
        if _BULLET.match(line):
            out.block(current)
            current = _BULLET.sub("", line)
        elif current.endswith("-") and line[:1].islower():  # a word broken at the wrap: keep the hyphen
            current += line
        else:
            current = f"{current} {line}" if current else line
        if wrapped and len(line) < 0.75 * width and re.search(r"[.!?:][\"'”’)]?$", line):
            out.block(current)
            current = ""
    out.block(current)


def _looks_like_heading(para: list[str]) -> bool:
    line = para[0]
    return (
        len(para) == 1 and len(line.split()) <= 8 and not _TERMINAL.search(line) and not _BULLET.match(line)
    )


def _parse_text(path: Path, data: bytes) -> tuple[str, list[Section]]:
    paras = _paragraphs(_decode_text(data))
    title = _title_from_stem(path)
    if paras:
        first = paras[0][0]
        if len(first) <= 80 and not _TERMINAL.search(first) and (len(paras[0]) > 1 or len(paras) > 1):
            title = first
            paras[0] = paras[0][1:]
            if paras[0] and re.fullmatch(r"[=\-~*#]{3,}", paras[0][0]):  # an underline under the title
                paras[0] = paras[0][1:]
    out = _SectionBuilder()
    for para in (p for p in paras if p):
        if len(para) == 2 and re.fullmatch(r"[=\-~]{3,}", para[1]):  # underlined heading
            out.heading(1 if para[1][0] == "=" else 2, para[0])
        elif _looks_like_heading(para):
            out.heading(1, para[0])
        else:
            _join_lines(para, out)
    return title, out.finish(title)


# --- HTML ----------------------------------------------------------------------------------------------------

_DROP = "script, style, nav, footer, noscript, template, svg, iframe"
_BLOCK_TAG_NAMES = (
    "p div li dt dd blockquote section article main header aside figure figcaption ul ol dl hr address details "
    "summary br caption form fieldset body"
)
_BLOCK_TAGS = frozenset(_BLOCK_TAG_NAMES.split())
_HEADINGS = {f"h{n}": n for n in range(1, 7)}


def _parse_html(path: Path, data: bytes) -> tuple[str, list[Section]]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_decode_text(data))
    for node in tree.css(_DROP):
        node.decompose()
    title_node = tree.css_first("title") or tree.css_first("h1")
    title = " ".join(title_node.text(deep=True).split()) if title_node is not None else ""
    title = title or _title_from_stem(path)
    root = tree.body or tree.root
    out = _SectionBuilder()
    if root is None:
        return title, []
    inline: list[str] = []

    def flush_inline() -> None:
        out.block(" ".join("".join(inline).split()))
        inline.clear()

    # An explicit stack (not recursion): deep documents cannot exhaust Python's stack. None marks a block's end.
    stack: list[LexborNode | None] = [root]
    while stack:
        item = stack.pop()
        if item is None:
            flush_inline()
            continue
        node = item
        tag = node.tag
        if tag == "-text":
            inline.append(node.text_content or "")
            continue
        if tag in _HEADINGS:
            flush_inline()
            out.heading(_HEADINGS[tag], node.text(deep=True, separator=" "))
            continue
        if tag == "pre":
            flush_inline()
            for line in node.text(deep=True).split("\n"):
                out.block(line)
            continue
        if tag == "table":
            flush_inline()
            for line in _html_table(node):
                out.block(line)
            continue
        children = list(node.iter(include_text=True))
        if tag in _BLOCK_TAGS:
            flush_inline()
            stack.append(None)
        stack.extend(reversed(children))
    flush_inline()
    return title, out.finish(title)


def _html_table(table: LexborNode) -> list[str]:
    rows: list[list[str]] = []
    header: list[str] | None = None
    for tr in table.css("tr"):
        cells = [c for c in tr.iter() if c.tag in ("th", "td")]
        texts = [" ".join(c.text(deep=True, separator=" ").split()) for c in cells]
        if header is None and not rows and cells and all(c.tag == "th" for c in cells):
            header = texts
        else:
            rows.append(texts)
    return _table_lines(header, rows)


# --- PDF -----------------------------------------------------------------------------------------------------


def _parse_pdf(path: Path, data: bytes) -> tuple[str, list[Section]]:
    if not data.startswith(b"%PDF-"):
        raise _Unreadable("not a PDF (no %PDF- header)")
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))
            except Exception:
                opened = False
            if not opened:
                raise _Unreadable("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except PdfReadError as exc:
        raise _Unreadable(f"unreadable PDF: {exc}") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise _Unreadable("no text (a scanned PDF?)")
    paras = _paragraphs(text)
    title = " ".join(str(meta_title).split())
    if not title:
        first = paras[0][0]
        if len(first) <= 100:
            title = first
            paras[0] = paras[0][1:]
        else:
            title = _title_from_stem(path)
    out = _SectionBuilder()
    for para in paras:
        if para:
            _join_lines(para, out, wrapped=True)
    return title, out.finish(title)


_Parser = Callable[[Path, bytes], tuple[str, list[Section]]]
_PARSERS: dict[str, _Parser] = {
    ".md": _parse_markdown,
    ".markdown": _parse_markdown,
    ".txt": _parse_text,
    ".text": _parse_text,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".pdf": _parse_pdf,
}
