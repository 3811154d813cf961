#!/usr/bin/env python3
"""Make the question set of bench/rag.py from the Python 3.11 documentation sources.

    python bench/make_rag_questions.py [--docs DIR] [--n 160] [--out bench/data/rag_questions.json]

The corpus is the reST sources Debian's python3.11-doc package ships
(/usr/share/doc/python3.11/html/_sources, files named *.rst.txt): the prose folders
tutorial, howto, faq, reference and using (FOLDERS). Get it with
`apt-get install python3.11-doc`, or without installing:
`apt-get download python3.11-doc && dpkg -x python3.11-doc_*.deb ROOT` and --docs
ROOT/usr/share/doc/python3.11/html/_sources.

Every question comes from one section (a reST title and the lines up to the next title)
and is answered by that section's file, and more narrowly by its line range. Two kinds, alternating, so that neither search wins by
construction:

* "heading": the title turned into a question ("What about Sorting Basics?" style
  templates) -- short, few words to match, where meaning matters;
* "content": the section's first prose sentence (markup removed, at most 30 words) with
  the title left out -- the way a user pastes a half-remembered line.

Only titles that occur once in the whole corpus are used (so the answer is one file), and
only sections whose first paragraph is prose of 12+ words. Sections are taken at an even
stride over all eligible ones (sorted by file and line), so the set is spread over the
corpus and the same on every run: this script has no randomness. The fixture records each
file's SHA-256 so bench/rag.py can tell a different doc version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_DOCS = "/usr/share/doc/python3.11/html/_sources"
FOLDERS = ("tutorial", "howto", "faq", "reference", "using")
OUT = Path(__file__).resolve().parent / "data" / "rag_questions.json"

_ADORN = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")
_ROLE = re.compile(r":[\w:.-]+:`([^`]+)`")  # :func:`x`, :ref:`text <target>`
_LINK = re.compile(r"`([^`<]+?)(?:\s*<[^>]+>)?`_{1,2}")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\"'][.!?])\s+(?=[A-Z])")
_NOT_PROSE = (" ", "\t", "..", ":", ">>>", "|", "+", "*", "-", "#")
TEMPLATES = (
    "What does the documentation explain about {t}?",
    "How does {t} work in Python?",
    "Where can I read about {t}?",
    "Tell me about {t}.",
)


@dataclass
class Question:
    id: int
    kind: str
    question: str
    file: str  # relative to the corpus root, with .rst (the name bench/rag.py gives it)
    section: str
    line: int  # 1-based line of the section title
    end_line: int  # last line of the section (before the next title of any level)


def clean(text: str) -> str:
    """reST inline markup removed: roles, links, literals, emphasis, escapes."""
    text = _ROLE.sub(lambda m: _role_text(m.group(1)), text)
    text = _LINK.sub(r"\1", text)
    text = text.replace("``", "").replace("**", "").replace("\\", "")
    text = re.sub(r"(?<!\w)\*(\S[^*]*?)\*(?!\w)", r"\1", text)
    return " ".join(text.split())


def _role_text(body: str) -> str:
    """What Sphinx prints for a role: `text <target>` -> text, `~a.b.c` -> c, `!x` -> x."""
    if body.endswith(">") and " <" in body:
        return body[: body.rindex(" <")]
    if body.startswith("~"):
        return body[1:].rsplit(".", 1)[-1]
    return body.lstrip("!")


def sections(lines: list[str]) -> list[tuple[int, int, str, str]]:
    """(title line, last line, title, first prose paragraph) of each titled section of a
    reST file; a section ends where the next title of any level starts."""
    out: list[tuple[int, int, str, str]] = []
    for i in range(len(lines) - 1):
        title, under = lines[i].rstrip(), lines[i + 1].rstrip()
        if not title.strip() or _ADORN.match(title) or not _ADORN.match(under):
            continue
        if len(under) < len(title.strip()) or title.startswith((" ", "..", ":")):
            continue
        if out:  # the previous section ends before this title
            out[-1] = (out[-1][0], i, *out[-1][2:])
        out.append((i + 1, len(lines), clean(title), _first_paragraph(lines, i + 2)))
    return out


def _first_paragraph(lines: list[str], start: int) -> str:
    """The first paragraph after `start` that is prose (not a directive, field, list, code
    or indented block), up to the next title; "" when there is none."""
    para: list[str] = []
    skipping = False  # inside a paragraph that is not prose
    for j in range(start, len(lines)):
        line = lines[j]
        if j + 1 < len(lines) and _ADORN.match(lines[j + 1].rstrip()) and line.strip():
            break  # the next title
        if not line.strip():
            if para:
                break
            skipping = False
        elif para:
            para.append(line.strip())
        elif not skipping:
            if line.startswith(_NOT_PROSE) or _ADORN.match(line):
                skipping = True
            else:
                para.append(line.strip())
    return " ".join(para)


def first_sentence(paragraph: str, min_words: int = 10, max_words: int = 30) -> str:
    """The paragraph's first sentence; sentences are added while under `min_words` (a
    "Yes, there are many." alone says nothing); at most `max_words` words."""
    parts = _SENTENCE_END.split(clean(paragraph))
    words: list[str] = []
    for p in parts:
        words += p.split()
        if len(words) >= min_words:
            break
    return " ".join(words[:max_words])


def corpus_files(docs: Path, folders: tuple[str, ...] = FOLDERS) -> list[Path]:
    return sorted(p for f in folders for p in (docs / f).rglob("*.rst.txt"))


def rel_name(path: Path, docs: Path) -> str:
    """`howto/sorting.rst.txt` -> `howto/sorting.rst`: corral reads .rst as reST."""
    return str(path.relative_to(docs)).removesuffix(".txt")


def make(docs: Path, n: int) -> dict:
    files = corpus_files(docs)
    if not files:
        raise SystemExit(f"no *.rst.txt under {docs}/{{{','.join(FOLDERS)}}}: see --help")
    found: list[tuple[str, int, int, str, str]] = []
    for f in files:
        lines = f.read_text(encoding="utf-8").splitlines()
        for line, end, title, para in sections(lines):
            found.append((rel_name(f, docs), line, end, title, para))
    counts: dict[str, int] = {}
    for _, _, _, title, _ in found:
        counts[title.lower()] = counts.get(title.lower(), 0) + 1
    eligible = [
        s for s in found
        if counts[s[3].lower()] == 1 and len(s[3].split()) >= 2 and len(s[3]) <= 80
        and len(clean(s[4]).split()) >= 12
    ]  # fmt: skip
    stride = max(1, len(eligible) // n)
    questions: list[Question] = []
    for k, (file, line, end, title, para) in enumerate(eligible[::stride][:n]):
        if k % 2 == 0:
            # FAQ titles are questions already; the others get a question around them
            template = "{t}" if title.endswith("?") else TEMPLATES[(k // 2) % len(TEMPLATES)]
            text = template.format(t=title.rstrip(".:"))
            questions.append(Question(k, "heading", text, file, title, line, end))
        else:
            questions.append(Question(k, "content", first_sentence(para), file, title, line, end))
    return {
        "corpus": "Python 3.11 documentation sources (Debian python3.11-doc, html/_sources)",
        "folders": list(FOLDERS),
        "files": {
            rel_name(f, docs): hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files
        },  # fmt: skip
        "eligible_sections": len(eligible),
        "questions": [asdict(q) for q in questions],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", default=DEFAULT_DOCS, help=f"reST sources (default {DEFAULT_DOCS})")
    ap.add_argument("--n", type=int, default=160, help="questions (default 160)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    data = make(Path(args.docs), args.n)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(data['questions'])} questions from {len(data['files'])} files "
          f"({data['eligible_sections']} eligible sections) -> {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
