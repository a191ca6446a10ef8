"""Document files -> plain text with page offsets: PDF (pypdf), DOCX (python-docx), HTML, TXT, Markdown.

Each loader turns a file's bytes into one text (paragraphs separated by a blank line, so the chunker can
split on them) plus, for PDFs, where each page starts in that text, so every chunk can say which pages
it came from. Character offsets in provenance index this extracted text, not the file's bytes.

Every problem a user can cause (a corrupt or encrypted file, an empty one, binary bytes in a .txt, an
unsupported extension, a scan with no text layer) is a ``DocumentError`` whose one-line message starts
with the file's name, so a batch can report it and carry on with the other files. Pages without
extractable text are not an error while other pages have text: they become a warning listing them.
"""
from __future__ import annotations

import hashlib
import io
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SdstudioError

SUPPORTED = {".pdf": "pdf", ".docx": "docx", ".txt": "text", ".text": "text", ".md": "markdown",
             ".markdown": "markdown", ".html": "html", ".htm": "html"}
PARAGRAPH = "\n\n"
# Decompression-bomb limits: real documents stay far below them; a hostile one is refused before it can
# cost minutes of CPU or gigabytes of RAM (a 144 KB PDF can hold a 70 MB stream shared by 50 pages).
MAX_UNPACKED_MB = 200  # DOCX: the zip's members, inflated
MAX_PDF_CONTENT_MB = 150  # PDF: the pages' content streams, decoded, summed over pages
MAX_PAGE_CONTENT_MB = 32  # PDF: one page's (text extraction walks every drawing operator, ~1 s per 10 MB)
# Elements whose text is never content: code, styling, and the page chrome around an article.
HTML_DROP = ("script", "style", "noscript", "template", "iframe", "svg", "nav", "header", "footer", "aside",
             "form", "button", "head")
HTML_BLOCKS = ("p", "div", "section", "article", "main", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3",
               "h4", "h5", "h6", "table", "tr", "pre", "blockquote", "figure", "figcaption", "hr", "br",
               "address", "details", "summary", "caption")
_BLOCK_MARK = "\ue000"  # private-use character: marks block boundaries while whitespace is collapsed
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING = re.compile(r"[ \t]+\n")


class DocumentError(SdstudioError):
    """A document cannot be used; the message is one line that starts with the file's name."""


@dataclass(frozen=True)
class Document:
    """One loaded file: its text and where it came from."""

    name: str                # file name shown in provenance
    path: str                # where it was read from
    sha256: str              # of the file's bytes: identifies the exact version used
    kind: str                # pdf | docx | text | markdown | html
    text: str                # extracted text; paragraphs separated by a blank line
    pages: tuple[tuple[int, int], ...] = ()  # (page number, offset where it starts in text); PDFs only
    page_count: int | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def pages_between(self, start: int, end: int) -> list[int] | None:
        """Page numbers that the text span [start, end) touches (None when the format has no pages)."""
        if not self.pages:
            return None
        from bisect import bisect_right

        offsets = [offset for _, offset in self.pages]
        first = max(bisect_right(offsets, start) - 1, 0)
        last = max(bisect_right(offsets, max(end - 1, start)) - 1, first)
        return [number for number, _ in self.pages[first:last + 1]]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_document(path: str | Path, *, password: str | None = None, name: str | None = None) -> Document:
    """Read and extract one file. Raises DocumentError (one line naming the file) when it is unusable."""
    file = Path(path)
    label = name or file.name
    if not file.exists():
        raise DocumentError(f"{label}: no such file ({file})")
    if file.is_dir():
        raise DocumentError(f"{label}: is a folder, not a document")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{label}: cannot read it ({exc.strerror or exc})") from None
    return load_bytes(data, label, password=password, path=str(file))


def load_bytes(data: bytes, name: str, *, password: str | None = None, path: str | None = None) -> Document:
    """Extract a document from its bytes; ``name``'s extension picks the format (an upload widget's file)."""
    suffix = Path(name).suffix.lower()
    kind = SUPPORTED.get(suffix)
    if kind is None:
        known = ", ".join(sorted(SUPPORTED))
        raise DocumentError(f"{name}: unsupported file type {suffix or '(no extension)'!r}; use one of {known}")
    if not data.strip():
        raise DocumentError(f"{name}: the file is empty")
    warnings: list[str] = []
    pages: list[tuple[int, int]] = []
    page_count = None
    if kind == "pdf":
        page_texts, page_count = _pdf_pages(data, name, password)
        empty = [number for number, text in page_texts if not text]
        texts = [(number, text) for number, text in page_texts if text]
        if empty and texts:
            warnings.append(f"{name}: {_pages_phrase(empty)} no extractable text (scanned images?); "
                            "skipped, run OCR first to use them")
        text = ""
        for number, page_text in texts:
            if text:
                text += PARAGRAPH
            pages.append((number, len(text)))
            text += page_text
    elif kind == "docx":
        text = _docx_text(data, name)
    elif kind == "html":
        text = _html_text(_decode(data, name, warnings), name)
    else:
        text = _clean(_decode(data, name, warnings))
    if not text.strip():
        hint = " (a scanned PDF? run OCR first)" if kind == "pdf" else ""
        raise DocumentError(f"{name}: no extractable text{hint}")
    return Document(name=name, path=path or name, sha256=sha256_of(data), kind=kind, text=text,
                    pages=tuple(pages), page_count=page_count, warnings=tuple(warnings))


def _pages_phrase(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:20]) + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")
    return f"page {shown} has" if len(numbers) == 1 else f"pages {shown} have"


# -- formats --------------------------------------------------------------------------------------

def _pdf_pages(data: bytes, name: str, password: str | None) -> tuple[list[tuple[int, str]], int]:
    # pypdf logs every repair it makes ("EOF marker not found"...); the user gets one line per file instead
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _read_pdf(data, name, password)
    finally:
        logger.setLevel(level)


def _read_pdf(data: bytes, name: str, password: str | None) -> tuple[list[tuple[int, str]], int]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        # pypdf already tried the empty user password, which opens owner-password-only PDFs
        if reader.is_encrypted and password is not None and not reader.decrypt(password):
            raise DocumentError(f"{name}: wrong password for this encrypted PDF")
        pages = reader.pages
        count = len(pages)
    except FileNotDecryptedError:
        raise DocumentError(f"{name}: the PDF is encrypted; give its password (password_env: NAME of the "
                            "environment variable holding it, or --password-env)") from None
    except DependencyError as exc:
        raise DocumentError(f"{name}: cannot decrypt this PDF ({exc})") from None
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise DocumentError(f"{name}: not a readable PDF ({_brief(exc)})") from None
    texts = []
    budget = MAX_PDF_CONTENT_MB * 2**20
    for number, page in enumerate(pages, start=1):
        size = _content_bytes(page)
        budget -= size
        if size > MAX_PAGE_CONTENT_MB * 2**20 or budget < 0:
            raise DocumentError(f"{name}: refused: its pages unpack to more than {MAX_PAGE_CONTENT_MB} MB a page "
                                f"or {MAX_PDF_CONTENT_MB} MB in all (a decompression bomb?)")
        try:
            raw = page.extract_text() or ""
        except Exception:  # noqa: BLE001 - one broken page must not lose the rest of the document
            raw = ""
        texts.append((number, _clean(raw)))
    return texts, count


def _content_bytes(page: Any) -> int:
    """Decoded size of a page's content stream(s); pypdf caches the decoded data, so a stream shared by
    many pages is decoded once but counts for every page that draws it."""
    try:
        contents = page.get_contents()
        return len(contents.get_data()) if contents is not None else 0
    except Exception:  # noqa: BLE001 - a broken stream is extract_text's problem, reported per page
        return 0


def _check_unpacked_size(data: bytes, name: str) -> None:
    """Refuse a DOCX whose zip would inflate past the limit, before any XML parser sees it."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DocumentError(f"{name}: not a readable DOCX ({_brief(exc)})") from None
    if unpacked > MAX_UNPACKED_MB * 2**20:
        raise DocumentError(f"{name}: refused: it unpacks to {unpacked / 2**20:,.0f} MB, over the "
                            f"{MAX_UNPACKED_MB} MB limit (a decompression bomb?)")


def _docx_text(data: bytes, name: str) -> str:
    """Paragraphs and tables in document order; a table row is its cells joined by ' | '."""
    import zipfile

    import docx
    from docx.table import Table

    _check_unpacked_size(data, name)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                rows = []
                for row in block.rows:
                    cells = list(dict.fromkeys(cell.text.strip() for cell in row.cells))  # merged cells repeat
                    if any(cells):
                        rows.append(" | ".join(cells))
                blocks.append("\n".join(rows))
            else:
                blocks.append(block.text)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, AttributeError) as exc:
        raise DocumentError(f"{name}: not a readable DOCX ({_brief(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - python-docx/lxml raise their own kinds for corrupt parts
        raise DocumentError(f"{name}: not a readable DOCX ({_brief(exc)})") from None
    return _clean(PARAGRAPH.join(b.strip() for b in blocks if b and b.strip()))


def _html_text(markup: str, name: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")  # stdlib parser: same result everywhere, no C build
    for tag in soup.find_all(HTML_DROP):
        tag.decompose()
    for tag in soup.find_all(attrs={"role": ["navigation", "banner", "contentinfo"]}):
        tag.decompose()
    for tag in soup.find_all(HTML_BLOCKS):
        tag.insert_before(_BLOCK_MARK)
        tag.insert_after(_BLOCK_MARK)
    for tag in soup.find_all(("td", "th")):
        tag.insert_after(" | ")
    text = re.sub(r"\s+", " ", soup.get_text())  # HTML whitespace, newlines included, is one space
    blocks = (block.strip(" |") for block in text.split(_BLOCK_MARK))
    return _clean(PARAGRAPH.join(block for block in blocks if block))


def _decode(data: bytes, name: str, warnings: list[str]) -> str:
    """UTF-8 (with or without BOM) or BOM-marked UTF-16; else Windows-1252 with a warning. NUL bytes or
    many control characters mean a binary file, which is refused rather than fed to a model."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    if b"\x00" in data[:65536]:
        raise DocumentError(f"{name}: holds binary data, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            raise DocumentError(f"{name}: not UTF-8 text (binary data, or another encoding: save it as UTF-8)") from None
        warnings.append(f"{name}: not valid UTF-8; read as Windows-1252")
    sample = text[:65536]
    controls = sum(1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f")
    if controls > max(8, len(sample) // 100):
        raise DocumentError(f"{name}: holds binary data, not text")
    return text


def _clean(text: str) -> str:
    """One newline style, no control characters, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    text = _CONTROL.sub("", text)
    text = _TRAILING.sub("\n", text)
    text = _BLANK_RUNS.sub(PARAGRAPH, text)
    return text.strip()


def _brief(exc: BaseException) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    return message if len(message) <= 160 else message[:157] + "..."
