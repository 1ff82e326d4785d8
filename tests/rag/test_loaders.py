"""Loaders: Markdown, plain text, HTML and PDF to a title and sections; files that cannot be used come back as
``Skipped`` with a reason instead of raising."""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

import pytest

from parley.rag.loaders import ParsedDocument, Skipped, load, supported


def minimal_pdf(paragraphs: list[str], *, title: str | None = None, width: int = 88) -> bytes:
    """A small valid PDF: Helvetica text (WinAnsi), 48 lines a page, an optional Info title. rag/samples/
    egg-storage.pdf was written with this function."""
    lines: list[str] = []
    for para in paragraphs:
        lines.extend(textwrap.wrap(para, width) or [""])
        lines.append("")
    pages = [lines[i : i + 48] for i in range(0, len(lines), 48)] or [[]]

    def esc(s: str) -> bytes:
        return s.encode("cp1252").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")

    page_ids = [4 + 2 * i for i in range(len(pages))]
    kids = b" ".join(b"%d 0 R" % p for p in page_ids)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for page_id, page in zip(page_ids, pages, strict=True):
        body = (
            b"BT /F1 11 Tf 14 TL 56 780 Td\n" + b"".join(b"(" + esc(x) + b") Tj T*\n" for x in page) + b"ET"
        )
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents %d 0 R >>" % (page_id + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(body) + body + b"\nendstream")
    if title is not None:
        objects.append(b"<< /Title (" + esc(title) + b") >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    info = b" /Info %d 0 R" % len(objects) if title is not None else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, info, xref)
    return out


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _parsed(path: Path) -> ParsedDocument:
    result = load(path)
    assert isinstance(result, ParsedDocument), result
    return result


def _skip_reason(path: Path) -> str:
    result = load(path)
    assert isinstance(result, Skipped), result
    assert result.path == path
    return result.reason


# --- Markdown ------------------------------------------------------------------------------------------------

MARKDOWN = """\
# Incubation guide

Intro with **bold**, _emphasis_, `code` and a [link](https://example.org).
A soft-wrapped second line.

## Chicken

| Species | Days | Temp |
|---|---|---|
| Chicken | 21 | 37.5 °C |
| Duck | 28 | 37.5 °C |

- Turn eggs three times a day
- Stop turning on day 18,
  before the hatch

```python
# a comment, not a heading
print("keep me")
```

### Lockdown

Raise the humidity.

Setext heading
--------------

Under the setext heading.
"""


def test_markdown_sections_headings_tables_lists_and_code(tmp_path: Path) -> None:
    doc = _parsed(_write(tmp_path, "guide.md", MARKDOWN))
    assert doc.title == "Incubation guide"
    # The sole H1 is the title: it is not repeated in every heading path.
    assert [(s.headings, s.text) for s in doc.sections] == [
        ((), "Intro with bold, emphasis, code and a link. A soft-wrapped second line."),
        (
            ("Chicken",),
            "Species: Chicken; Days: 21; Temp: 37.5 °C.\n"
            "Species: Duck; Days: 28; Temp: 37.5 °C.\n"
            "Turn eggs three times a day\n"
            "Stop turning on day 18, before the hatch\n"
            "# a comment, not a heading\n"
            'print("keep me")',
        ),
        (("Chicken", "Lockdown"), "Raise the humidity."),
        (("Setext heading",), "Under the setext heading."),
    ]
    assert len(doc.digest) == 64


def test_markdown_front_matter_title_and_untitled_files(tmp_path: Path) -> None:
    doc = _parsed(
        _write(tmp_path, "a.markdown", "---\ntitle: Egg storage\ntags: [x]\n---\n# Storing\n\nCool.\n")
    )
    assert doc.title == "Egg storage"
    assert doc.sections[0].headings == ("Storing",)  # not the title: kept in the path
    untitled = _parsed(_write(tmp_path, "egg-turning_notes.md", "Turn them daily.\n"))
    assert untitled.title == "Egg turning notes"
    assert untitled.sections[0].headings == ()


def test_markdown_with_only_headings_has_no_text(tmp_path: Path) -> None:
    assert _skip_reason(_write(tmp_path, "empty.md", "# Title\n\n## Section\n")) == "no text"


# --- plain text ----------------------------------------------------------------------------------------------


def test_text_first_short_line_is_the_title_and_short_lines_are_headings(tmp_path: Path) -> None:
    text = (
        "Farm house rules\n\nEggs are collected three times a day. Wash your\nhands after.\n\n"
        "Broody hens\n\nA broody hen gets 12 eggs.\n- one\n- two\n"
    )
    doc = _parsed(_write(tmp_path, "rules.txt", text))
    assert doc.title == "Farm house rules"
    assert [(s.headings, s.text) for s in doc.sections] == [
        ((), "Eggs are collected three times a day. Wash your hands after."),
        (("Broody hens",), "A broody hen gets 12 eggs.\none\ntwo"),
    ]


def test_text_without_a_title_line_uses_the_file_name(tmp_path: Path) -> None:
    doc = _parsed(_write(tmp_path, "notes.txt", "This is a whole sentence, not a title.\n"))
    assert doc.title == "Notes"
    assert doc.sections[0].text == "This is a whole sentence, not a title."


def test_text_with_a_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    doc = _parsed(_write(tmp_path, "bom.txt", "\ufeffTitle line\r\n\r\nBody text here.\r\n".encode()))
    assert doc.title == "Title line"
    assert doc.sections[0].text == "Body text here."


# --- HTML ----------------------------------------------------------------------------------------------------

HTML = """<!DOCTYPE html><html><head><title>Brooding | Farm</title>
<style>p { color: red }</style><script>var secret = "script text";</script></head>
<body><nav>Home | About</nav>
<h1>Brooding chicks</h1><p>Start at <b>35 °C</b>,
   then lower.</p>
<h2>Week two</h2><p>Lower to 32 °C.</p>
<ul><li>Item one</li><li>Item <i>two</i></li></ul>
<table><tr><th>Week</th><th>Temp</th></tr><tr><td>1</td><td>35 °C</td></tr></table>
<h3>Deep</h3><div>Div text<br>after a break</div><pre>line one
line two</pre>
<footer>Copyright footer</footer></body></html>"""


def test_html_title_heading_paths_and_dropped_chrome(tmp_path: Path) -> None:
    doc = _parsed(_write(tmp_path, "brooding.html", HTML))
    assert doc.title == "Brooding | Farm"
    assert [(s.headings, s.text) for s in doc.sections] == [
        (("Brooding chicks",), "Start at 35 °C, then lower."),
        (("Brooding chicks", "Week two"), "Lower to 32 °C.\nItem one\nItem two\nWeek: 1; Temp: 35 °C."),
        (("Brooding chicks", "Week two", "Deep"), "Div text\nafter a break\nline one\nline two"),
    ]
    everything = " ".join(s.text for s in doc.sections)
    for dropped in ("script text", "color", "Home", "Copyright"):
        assert dropped not in everything


def test_html_title_from_the_first_h1(tmp_path: Path) -> None:
    doc = _parsed(_write(tmp_path, "page.htm", "<h1>Candling</h1><p>Use a torch.</p>"))
    assert doc.title == "Candling"
    assert [(s.headings, s.text) for s in doc.sections] == [((), "Use a torch.")]


def test_html_with_no_text(tmp_path: Path) -> None:
    assert _skip_reason(_write(tmp_path, "blank.html", "<html><body><script>x()</script></body></html>")) == (
        "no text"
    )


def test_deeply_nested_html_does_not_recurse(tmp_path: Path) -> None:
    doc = _parsed(_write(tmp_path, "deep.html", "<div>" * 5000 + "<p>deep text</p>" + "</div>" * 5000))
    assert doc.sections[0].text == "deep text"


# --- PDF -----------------------------------------------------------------------------------------------------


def test_pdf_title_from_metadata_and_pages_joined(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i} says that eggs are stored at 15 °C before incubation." for i in range(40)]
    path = _write(tmp_path, "storage.pdf", minimal_pdf(paragraphs, title="Storing eggs"))
    doc = _parsed(path)
    assert doc.title == "Storing eggs"
    text = "\n".join(s.text for s in doc.sections)
    assert "Paragraph 0 says" in text and "Paragraph 39 says" in text  # the second page too
    assert "15 °C" in text


def test_pdf_title_from_the_first_line_without_metadata(tmp_path: Path) -> None:
    doc = _parsed(_write(tmp_path, "leaflet.pdf", minimal_pdf(["Egg storage", "Keep eggs cool."])))
    assert doc.title == "Egg storage"
    assert doc.sections[0].text == "Keep eggs cool."


def test_pdf_encrypted_with_a_password_is_skipped(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(minimal_pdf(["Secret text."]))))
    writer.encrypt(user_password="secret", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    assert _skip_reason(_write(tmp_path, "locked.pdf", out.getvalue())) == "encrypted PDF"


def test_pdf_with_only_an_owner_password_opens(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(minimal_pdf(["Title", "Open text."]))))
    writer.encrypt(user_password="", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    assert _parsed(_write(tmp_path, "restricted.pdf", out.getvalue())).sections[0].text == "Open text."


def test_pdf_broken_or_not_a_pdf(tmp_path: Path) -> None:
    assert _skip_reason(_write(tmp_path, "fake.pdf", "just text")).startswith("not a PDF")
    truncated = minimal_pdf(["Some text."])[:60]
    assert _skip_reason(_write(tmp_path, "broken.pdf", truncated))  # a reason, not an exception
    assert _skip_reason(_write(tmp_path, "blank.pdf", minimal_pdf([]))).startswith("no text")


# --- files that cannot be used -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        ("latin1.txt", "Température: 37,5 °C".encode("latin-1"), "not UTF-8"),
        ("empty.md", b"", "empty file"),
        ("blank.txt", b"  \n\n \t\n", "empty file"),
        ("report.docx", b"PK\x03\x04", "unsupported type .docx"),
        ("Makefile", b"all:\n", "unsupported type (no extension)"),
    ],
)
def test_unusable_files_are_skipped_with_a_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    assert _skip_reason(_write(tmp_path, name, content)) == reason


def test_special_and_missing_files_are_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "folder.md"
    folder.mkdir()
    assert _skip_reason(folder) == "not a regular file"
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # reading it would block forever
    assert _skip_reason(fifo) == "not a regular file"
    assert _skip_reason(tmp_path / "gone.md").startswith("unreadable")


def test_supported_extensions() -> None:
    assert all(supported(Path(f"x{ext}")) for ext in (".md", ".MARKDOWN", ".txt", ".html", ".htm", ".pdf"))
    assert not supported(Path("x.docx"))
