"""Loading and chunking a 500-page PDF vs. raw pypdf text extraction of the same file.

sdstudio's cost over pypdf is text cleaning, page bookkeeping and token-aware chunking (with the ~4
chars/token estimate used for remote models). Prints both times and their ratio (goal <= 1.2).
Run: .venv/bin/python benchmarks/documents.py
"""
from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pypdf import PdfReader

from sdstudio.documents import load_corpus
from tests.test_documents import make_pdf, page_text  # the tests' hand-written PDF writer

PAGES, RUNS = 500, 3


def raw_pypdf(data: bytes) -> int:
    return sum(len(page.extract_text() or "") for page in PdfReader(io.BytesIO(data)).pages)


def main() -> None:
    data = make_pdf([page_text(n, lines=45) for n in range(1, PAGES + 1)])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.pdf"
        path.write_bytes(data)
        raw, ours = [], []
        for _ in range(RUNS):
            started = time.perf_counter()
            chars = raw_pypdf(path.read_bytes())
            raw.append(time.perf_counter() - started)
            started = time.perf_counter()
            corpus = load_corpus([path], chunk_tokens=512, chunk_overlap=64)
            ours.append(time.perf_counter() - started)
    base, mine = statistics.median(raw), statistics.median(ours)
    print(f"{PAGES} pages, {len(data) / 1e6:.1f} MB, {chars:,} chars -> {len(corpus.chunks)} chunks")
    print(f"raw pypdf extraction: {base:.3f} s")
    print(f"sdstudio load+chunk:  {mine:.3f} s")
    print(f"ratio: {mine / base:.3f} (goal <= 1.2)")


if __name__ == "__main__":
    main()
