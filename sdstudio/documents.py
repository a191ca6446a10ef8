"""Documents -> token-aware chunks with provenance: inputs (files, globs, folders, uploads) and chunking.

Loading each format lives in ``loaders.py``; this module decides what to load and how to cut it.

Chunking. Size and overlap are in tokens. Counting tokens for every word would make a 500-page PDF
slow with a real tokenizer, so a chunk's end is first *estimated* in characters (a chars-per-token
ratio, recalibrated from each exact count), placed on the best boundary before it, and then *verified*
with one count of the whole chunk; only a chunk that turns out too long is cut back and counted again.
Boundaries, best first: a paragraph break (blank line) in the second half of the window, the end of a
sentence there, a line break there, then any space. A chunk never starts or ends inside a word; the one
exception is a single "word" longer than a whole chunk (a base64 blob, say), which is cut where it must.
The next chunk starts inside the previous one, at the earliest sentence start (else word start) whose
tail fits the overlap budget, so consecutive chunks share at most ``overlap`` tokens.

Decisions for a batch of files: a path, glob or folder that matches nothing is a ConfigError (a typo
costs nothing to fix before a run); a file that cannot be used (corrupt, encrypted, empty, binary,
unsupported type, no text) is reported by name and skipped while the others are processed; folders and
globs pick supported types only, skipping hidden files and Office lock files; the same bytes under two
names are used once. Only when no file at all is usable is the whole batch an error.
"""
from __future__ import annotations

import glob
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import ConfigError
from .home import init_home
from .loaders import SUPPORTED, Document, DocumentError, load_bytes, sha256_of

__all__ = [
    "SUPPORTED",
    "Chunk",
    "Corpus",
    "Document",
    "DocumentError",
    "chunk_document",
    "chunk_spans",
    "estimate_tokens",
    "load_corpus",
    "resolve_files",
    "save_upload",
]

DEFAULT_CHUNK_TOKENS, DEFAULT_CHUNK_OVERLAP = 512, 64
CHARS_PER_TOKEN = 4.0
_SENTENCE_END = re.compile(r"[.!?\u2026][)\]\"'\u2019\u201d\u00bb]*(?=\s)")
_SENTENCE_GAP = re.compile(r"[.!?\u2026][)\]\"'\u2019\u201d\u00bb]*\s+|\n[ \t]*\n\s*")
_SPACE = re.compile(r"\s+")
_GLOB_CHARS = set("*?[")

TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """~4 characters a token: the estimate ``tokens.count_tokens`` uses for models without a local tokenizer."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


# -- inputs ---------------------------------------------------------------------------------------

def resolve_files(patterns: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """(files in a stable order, notes). A file named explicitly is taken whatever its type (an unsupported
    one is then reported by the loader); folders (recursively) and globs yield supported types only."""
    files: list[Path] = []
    notes: list[str] = []
    for pattern in patterns:
        text = str(pattern).strip()
        if not text:
            continue
        path = Path(text).expanduser()
        if _GLOB_CHARS & set(text):
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True)) if Path(m).is_file()]
            picked = [m for m in matches if _wanted(m)]
            if not picked:
                raise ConfigError(f"{text} matches no supported document ({', '.join(sorted(SUPPORTED))})")
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file())
            picked = [m for m in matches if _wanted(m)]
            if not picked:
                raise ConfigError(f"folder {text} holds no supported document ({', '.join(sorted(SUPPORTED))})")
        elif path.exists():
            matches = picked = [path]
        else:
            raise ConfigError(f"document {text} does not exist")
        ignored = len(matches) - len(picked)
        if ignored:
            notes.append(f"{text}: ignored {ignored} file(s) of unsupported types")
        files.extend(picked)
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        raise ConfigError("no documents given; name files, folders or globs")
    return unique, notes


def _wanted(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED and not path.name.startswith((".", "~$"))


def save_upload(data: bytes | bytearray | memoryview, name: str, home: str | Path | None = None) -> Path:
    """Keep an uploaded file as ``SDSTUDIO_HOME/uploads/<sha256>/<name>`` and return that path. The same
    bytes uploaded again (under any name) reuse the stored file, so nothing is duplicated."""
    data = bytes(data)
    clean = Path(str(name).replace("\\", "/")).name.strip()
    if not clean or clean in (".", ".."):
        raise DocumentError(f"an upload needs a file name, got {name!r}")
    folder = init_home(home) / "uploads" / sha256_of(data)
    if folder.is_dir():
        stored = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if stored:
            return stored[0]
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{clean}.part"
    partial.write_bytes(data)
    partial.replace(folder / clean)  # atomic: a reader never sees half a file
    return folder / clean


# -- chunks ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    """A piece of one document, small enough to generate from, and exactly where it came from."""

    label: str               # the document's name, unique in its corpus
    file: str
    path: str
    sha256: str
    index: int               # position among the document's chunks, from 0
    text: str                # == document.text[char_start:char_end]
    char_start: int
    char_end: int
    pages: tuple[int, ...] | None
    tokens: int

    @property
    def id(self) -> str:
        """Stable name of the chunk within a job (a record's ``topic``)."""
        return f"{self.label}#{self.index}"

    @property
    def source(self) -> str:
        """Where the chunk is from, as a prompt or a table shows it: 'manual.pdf, pages 3-4'."""
        if not self.pages:
            return self.file
        if len(self.pages) == 1:
            return f"{self.file}, page {self.pages[0]}"
        return f"{self.file}, pages {self.pages[0]}-{self.pages[-1]}"

    def provenance(self) -> dict[str, Any]:
        return {"file": self.file, "path": self.path, "sha256": self.sha256,
                "pages": list(self.pages) if self.pages else None, "char_start": self.char_start,
                "char_end": self.char_end, "chunk_index": self.index, "tokens": self.tokens, "text": self.text}


def chunk_spans(text: str, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, overlap: int = DEFAULT_CHUNK_OVERLAP,
                count: TokenCounter | None = None) -> list[tuple[int, int, int]]:
    """(start, end, tokens) of each chunk of ``text`` (see the module docstring for the rules)."""
    if chunk_tokens < 1 or overlap < 0 or overlap >= chunk_tokens:
        raise ConfigError(f"chunk overlap ({overlap}) must be at least 0 and below the chunk size ({chunk_tokens})")
    count = count or estimate_tokens
    ratio = CHARS_PER_TOKEN
    stop = len(text.rstrip())
    spans: list[tuple[int, int, int]] = []
    start = _skip_space(text, 0, stop)
    while start < stop:
        limit = start + max(1, int(chunk_tokens * ratio))
        end = stop if limit >= stop else _break_before(text, start, limit)
        tokens = count(text[start:end])
        while tokens > chunk_tokens and end - start > 1:  # the estimate was optimistic: cut back, recount
            ratio = max(0.25, (end - start) / tokens)
            limit = start + max(1, int((end - start) * chunk_tokens / tokens * 0.95))
            end = _break_before(text, start, limit)
            tokens = count(text[start:end])
        if tokens >= chunk_tokens // 2:  # big enough a sample to learn the ratio from
            ratio = (ratio + (end - start) / max(tokens, 1)) / 2
        spans.append((start, end, tokens))
        if end >= stop:
            break
        start = _next_start(text, start, end, stop, overlap, ratio, count)
    return spans


def _skip_space(text: str, position: int, stop: int) -> int:
    while position < stop and text[position].isspace():
        position += 1
    return position


def _trim_end(text: str, start: int, end: int) -> int:
    while end > start + 1 and text[end - 1].isspace():
        end -= 1
    return end


def _break_before(text: str, start: int, limit: int) -> int:
    """The best end in (start, limit]: paragraph, sentence, line, then word boundary."""
    half = start + (limit - start) // 2
    cut = text.rfind("\n\n", half, limit + 1)
    if cut > start:
        return _trim_end(text, start, cut)
    last = None
    for last in _SENTENCE_END.finditer(text, half, limit + 1):
        pass
    if last is not None and last.end() <= limit:
        return last.end()
    cut = text.rfind("\n", half, limit + 1)
    if cut > start:
        return _trim_end(text, start, cut)
    if text[limit].isspace():
        return _trim_end(text, start, limit)
    cut = max(text.rfind(" ", start + 1, limit), text.rfind("\n", start + 1, limit), text.rfind("\t", start + 1, limit))
    if cut > start:
        return _trim_end(text, start, cut)
    return limit  # one "word" longer than a chunk: the only place a cut falls inside it


def _next_start(text: str, start: int, end: int, stop: int, overlap: int, ratio: float,
                count: TokenCounter) -> int:
    """Where the chunk after [start, end) begins: inside it by at most ``overlap`` tokens, on a sentence
    start if the overlap holds one, else on a word start; right after it when nothing fits."""
    after = _skip_space(text, end, stop)
    if overlap <= 0:
        return after
    low = max(start + 1, end - int(overlap * ratio))
    candidate = _start_in(text, low, end)
    for _ in range(64):
        if candidate is None:
            return after
        if count(text[candidate:end]) <= overlap:
            return candidate
        candidate = _word_start_in(text, candidate + 1, end)
    return after


def _start_in(text: str, low: int, high: int) -> int | None:
    match = _SENTENCE_GAP.search(text, low, high)
    if match is not None and match.end() < high:
        return match.end()
    return _word_start_in(text, low, high)


def _word_start_in(text: str, low: int, high: int) -> int | None:
    if low < high and text[low - 1].isspace() and not text[low].isspace():
        return low
    match = _SPACE.search(text, low, high)
    return match.end() if match is not None and match.end() < high else None


def chunk_document(document: Document, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                   overlap: int = DEFAULT_CHUNK_OVERLAP, count: TokenCounter | None = None,
                   label: str | None = None) -> list[Chunk]:
    chunks = []
    for index, (start, end, tokens) in enumerate(chunk_spans(document.text, chunk_tokens, overlap, count)):
        pages = document.pages_between(start, end)
        chunks.append(Chunk(label=label or document.name, file=document.name, path=document.path,
                            sha256=document.sha256, index=index, text=document.text[start:end], char_start=start,
                            char_end=end, pages=tuple(pages) if pages else None, tokens=tokens))
    return chunks


# -- a batch of documents -------------------------------------------------------------------------

@dataclass
class Corpus:
    """The usable documents of a batch, their chunks, and what went wrong with the others."""

    documents: list[Document]
    chunks: list[Chunk]
    file_hashes: dict[str, str | None]   # resolved path -> sha256 of every file asked for (None: unreadable)
    problems: list[str] = field(default_factory=list)  # one line per skipped file, naming it
    notes: list[str] = field(default_factory=list)     # warnings: pages without text, duplicates, ignored files

    def messages(self) -> list[str]:
        """Problems then warnings, each one line: what a job reports besides its counts."""
        return [f"skipped {problem}" for problem in self.problems] + self.notes

    def frame(self):
        """The chunk preview table (one row per chunk, with provenance) for a notebook."""
        import pandas as pd

        rows = [{"chunk": c.id, "file": c.file, "pages": ", ".join(map(str, c.pages)) if c.pages else "",
                 "char_start": c.char_start, "char_end": c.char_end, "tokens": c.tokens, "text": c.text,
                 "sha256": c.sha256} for c in self.chunks]
        return pd.DataFrame(rows, columns=["chunk", "file", "pages", "char_start", "char_end", "tokens", "text",
                                           "sha256"])


def load_corpus(files: Sequence[str | Path], *, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                chunk_overlap: int = DEFAULT_CHUNK_OVERLAP, password: str | None = None,
                count: TokenCounter | None = None) -> Corpus:
    """Load and chunk a batch. Raises ConfigError for paths that match nothing, DocumentError when no file
    is usable; otherwise bad files are listed in ``problems`` and skipped."""
    from .spark_io import is_spark_source

    lake = [str(f) for f in files if is_spark_source(str(f))]
    local = [f for f in files if not is_spark_source(str(f))]
    paths, notes = resolve_files(local) if local or not lake else ([], [])
    corpus = Corpus(documents=[], chunks=[], file_hashes={}, notes=list(notes))
    seen: dict[str, str] = {}
    names: set[str] = set()
    for path, data in _file_bytes(paths, lake, corpus):
        name = PurePosixPath(path).name if isinstance(path, str) else path.name
        digest = corpus.file_hashes[str(path)] = sha256_of(data)
        if digest in seen:
            corpus.notes.append(f"{name} is the same file as {seen[digest]}; used once")
            continue
        seen[digest] = name
        try:
            document = load_bytes(data, name, password=password, path=str(path))
        except DocumentError as exc:
            corpus.problems.append(str(exc))
            continue
        label = document.name if document.name not in names else f"{document.name} [{digest[:8]}]"
        names.add(label)
        corpus.documents.append(document)
        corpus.notes.extend(document.warnings)
        corpus.chunks.extend(chunk_document(document, chunk_tokens, chunk_overlap, count, label=label))
    if not corpus.chunks:
        raise DocumentError(f"no usable document among {len(corpus.file_hashes)} file(s): {'; '.join(corpus.problems)}")
    return corpus


def _file_bytes(paths: list[Path], uris: list[str], corpus: Corpus) -> Iterable[tuple[Path | str, bytes]]:
    """(where, bytes) of each local file (one that cannot be read is a problem, not an error), then of each
    document under a URI Spark reads (``spark_io.binary_files``: a folder or glob on HDFS, S3, file:...)."""
    for path in paths:
        try:
            yield path, path.read_bytes()
        except OSError as exc:
            corpus.file_hashes[str(path)] = None
            corpus.problems.append(f"{path.name}: cannot read it ({exc.strerror or exc})")
    for uri in uris:
        from .spark_io import binary_files

        found = 0
        for path, data in binary_files(uri, sorted(SUPPORTED)):
            found += 1
            yield path, data
        if not found:
            raise ConfigError(f"{uri} holds no supported document ({', '.join(sorted(SUPPORTED))})")
