"""Loaders: each file type gives blocks with 1-based line ranges and heading paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.rag.loaders import Unreadable, load


def test_markdown_headings_lines_and_fences(tmp_path: Path) -> None:
    p = tmp_path / "a.md"
    p.write_text(
        "# Guide\n\nIntro.\n\n## Setup\n\n```\nx = 1\n\n# not a heading\n```\n\n## Use\n\nGo.\n"
    )
    blocks = load(p)
    assert [(b.heading, b.start_line, b.end_line) for b in blocks] == [
        (("Guide",), 3, 3),
        (("Guide", "Setup"), 7, 11),
        (("Guide", "Use"), 15, 15),
    ]
    assert "# not a heading" in blocks[1].text and "\n\n" in blocks[1].text


def test_rst_titles_by_adornment(tmp_path: Path) -> None:
    p = tmp_path / "a.rst"
    p.write_text(
        "=====\nTitle\n=====\n\nIntro.\n\nPart\n----\n\nText one.\n\nOther\n-----\n\nTwo.\n"
    )
    blocks = load(p)
    assert [(b.heading, b.start_line) for b in blocks] == [
        (("Title",), 5),
        (("Title", "Part"), 10),
        (("Title", "Other"), 15),
    ]


def test_html_visible_text_headings_and_lines(tmp_path: Path) -> None:
    p = tmp_path / "a.html"
    p.write_text(
        "<html><head><title>T</title><style>p{}</style></head><body>\n"
        "<h1>Top</h1>\n<p>First &amp; para\ncontinues</p>\n<script>var x;</script>\n"
        "<h2>Sub</h2>\n<ul><li>item</li></ul></body></html>\n"
    )
    blocks = load(p)
    assert [(b.text, b.heading, b.start_line) for b in blocks] == [
        ("First & para continues", ("Top",), 3),
        ("item", ("Top", "Sub"), 7),
    ]


def test_code_blocks_under_definitions(tmp_path: Path) -> None:
    p = tmp_path / "m.py"
    p.write_text("import os\n\n\ndef f():\n    return 1\n\n\nclass A:\n    x = 2\n")
    blocks = load(p)
    assert [(b.heading, b.start_line, b.end_line) for b in blocks] == [
        ((), 1, 1),
        (("def f",), 4, 5),
        (("class A",), 8, 9),
    ]


def test_text_paragraphs(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("one\ntwo\n\n\nthree\n")
    assert [(b.text, b.start_line, b.end_line) for b in load(p)] == [
        ("one\ntwo", 1, 2),
        ("three", 5, 5),
    ]


def write_pdf(path: Path, pages: list[str]) -> None:
    """A minimal hand-written PDF (Helvetica text, one line per Tj) that pypdf reads."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for text in pages:
        stream = (
            "BT /F1 12 Tf 72 720 Td "
            + " ".join(f"({line}) Tj 0 -14 Td" for line in text.split("\n"))
            + " ET"
        )
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        content = len(objs)
        objs.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Contents {content} 0 R /Resources << /Font << /F1 FONT 0 R >> >> >>"
        )
        kids.append(len(objs))
    objs.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    font = len(objs)
    objs = [o.replace("FONT", str(font)) for o in objs]
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out = b"%PDF-1.4\n"
    offsets = []
    for n, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{o}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)


def test_pdf_pages_as_headings(tmp_path: Path) -> None:
    p = tmp_path / "a.pdf"
    write_pdf(p, ["Hello from page one", "Second page text"])
    blocks = load(p)
    assert [b.heading for b in blocks] == [("page 1",), ("page 2",)]
    assert "page one" in blocks[0].text and "Second page" in blocks[1].text
    assert blocks[1].start_line > blocks[0].end_line


@pytest.mark.parametrize(
    ("data", "reason"), [(b"\x00\x01\x02", "binary"), (b"caf\xe9 ok", "UTF-8")]
)
def test_unreadable_files_say_why(tmp_path: Path, data: bytes, reason: str) -> None:
    p = tmp_path / "x.txt"
    p.write_bytes(data)
    with pytest.raises(Unreadable, match=reason):
        load(p)


def test_broken_pdf_is_unreadable(tmp_path: Path) -> None:
    p = tmp_path / "x.pdf"
    p.write_bytes(b"%PDF-1.4 garbage")
    with pytest.raises(Unreadable):
        load(p)
