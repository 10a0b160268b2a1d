"""Reading documents for an index: .txt, .md, .html/.htm (tags stripped) and .jsonl ({"id", "text", "meta"}).

A bad document (empty, binary, not UTF-8, a malformed JSONL line) is a `DocumentError` naming the file (and
line): by default the build stops on it; with `skip_bad=True` it is skipped and reported as a warning instead.
Files of other types inside a folder are ignored (counted); one given by name is an error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
JSONL_SUFFIXES = (".jsonl",)
SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + JSONL_SUFFIXES
BINARY_PROBE = 8192  # a NUL byte in the first 8 KiB: a binary file, not text


class DocumentError(ValueError):
    """A document that cannot be indexed; the message names the file (and line) and what is wrong."""


@dataclass(frozen=True)
class Document:
    doc_id: str  # stable: the path under the --docs root (files) or the record's "id" (JSONL)
    text: str
    source: str  # what citations show: the file's path as given under its root
    file: str  # the resolved file path (incremental add deletes documents whose file is gone)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """What incremental add compares: the text and the metadata."""
        payload = json.dumps([self.text, self.meta], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class ReadReport:
    documents: list[Document]
    files: list[str]  # every resolved file read (or skipped as bad)
    skipped: list[str]  # the warnings of skipped bad documents
    ignored: int  # files of other types inside the folders


def read_documents(paths: Sequence[str | Path], skip_bad: bool = False) -> ReadReport:
    """Every document under `paths` (files or folders, walked recursively; hidden entries skipped)."""
    report = ReadReport([], [], [], 0)
    seen: dict[str, str] = {}
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise DocumentError(f"--docs {str(root)!r} does not exist")
        for file, display in _files(root, report):
            report.files.append(str(file.resolve()))
            try:
                docs = list(read_file(file, display))
            except DocumentError as exc:
                if not skip_bad:
                    raise
                report.skipped.append(str(exc))
                continue
            for doc in docs:
                if doc.doc_id in seen:
                    raise DocumentError(f"document id {doc.doc_id!r} appears twice: in {seen[doc.doc_id]} and "
                                        f"{doc.source}; ids must be unique within an index")
                seen[doc.doc_id] = doc.source
                report.documents.append(doc)
    return report


def _files(root: Path, report: ReadReport) -> Iterator[tuple[Path, str]]:
    if root.is_file():
        if root.suffix.lower() not in SUFFIXES:
            raise DocumentError(f"{root}: unsupported file type {root.suffix or '(none)'!r}; index "
                                f"{', '.join(SUFFIXES)} files")
        yield root, root.name
        return
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not file.is_file():
            continue
        if file.suffix.lower() not in SUFFIXES:
            report.ignored += 1
            continue
        yield file, (Path(root.resolve().name) / relative).as_posix()


def read_file(file: Path, display: str) -> Iterator[Document]:
    text = _decode(file)
    suffix = file.suffix.lower()
    resolved = str(file.resolve())
    if suffix in JSONL_SUFFIXES:
        yield from _jsonl(text, file, display, resolved)
        return
    meta: dict[str, Any] = {}
    if suffix in HTML_SUFFIXES:
        text, title = html_text(text)
        if title:
            meta["title"] = title
    if not text.strip():
        raise DocumentError(f"{file}: the document is empty (no text to index)")
    yield Document(display, text, display, resolved, meta)


def _decode(file: Path) -> str:
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{file}: cannot be read ({exc.strerror or exc})") from None
    if b"\x00" in raw[:BINARY_PROBE]:
        raise DocumentError(f"{file}: a binary file (it contains NUL bytes), not text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{file}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                            "convert it to UTF-8") from None


def _jsonl(text: str, file: Path, display: str, resolved: str) -> Iterator[Document]:
    count = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DocumentError(f"{where}: each line must be a JSON object {{\"id\", \"text\", \"meta\"}}")
        doc_id, body, meta = record.get("id"), record.get("text"), record.get("meta", {})
        if isinstance(doc_id, bool) or not isinstance(doc_id, str | int) or str(doc_id) == "":
            raise DocumentError(f"{where}: \"id\" must be a non-empty string or an integer")
        if not isinstance(body, str) or not body.strip():
            raise DocumentError(f"{where}: \"text\" must be a non-empty string (document {doc_id!r})")
        if not isinstance(meta, dict):
            raise DocumentError(f"{where}: \"meta\" must be an object")
        count += 1
        yield Document(str(doc_id), body, display, resolved, meta)
    if count == 0:
        raise DocumentError(f"{file}: the JSONL file holds no records")


class _TextOnly(HTMLParser):
    """Visible text of an HTML page: scripts and styles dropped, block elements end a paragraph."""

    BLOCKS: ClassVar[set[str]] = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
                                  "table", "section", "article", "header", "footer", "pre", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        self._in_title = tag == "title" or self._in_title
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        if tag == "title":
            self._in_title = False
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def html_text(html: str) -> tuple[str, str]:
    """(the page's visible text, its title)."""
    parser = _TextOnly()
    parser.feed(html)
    parser.close()
    paragraphs = [" ".join(p.split()) for p in "".join(parser.parts).split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p), " ".join("".join(parser.title).split())
