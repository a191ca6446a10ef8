"""Documents: loaders, token-aware chunking with provenance, uploads, and grounded Q/A on the fake server.

Fixture documents are built here: PDFs written by hand (text pages in Helvetica, and image-only pages
like a scan), encrypted with pypdf; DOCX with python-docx; HTML, TXT and Markdown as text.
"""
from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sdstudio.config import DocumentJob, ModelParameters, ModelSpec, RunSettings
from sdstudio.documents import chunk_spans, estimate_tokens, load_corpus, resolve_files, save_upload
from sdstudio.errors import ConfigError
from sdstudio.loaders import DocumentError, load_bytes, load_document
from sdstudio.workflows.documents import DocumentRun, chunk_targets, generate_documents, preview
from tests.fakes.openai_server import requested_schema

ROOT = Path(__file__).resolve().parent.parent
FAST = RunSettings(backoff_base_s=0.01, backoff_max_s=0.05, concurrency=8)
WORDS = ("pump valve seal motor rotor gasket filter pressure flow meter housing bearing shaft impeller "
         "coupling inlet outlet manual warranty service").split()


# -- fixture documents ----------------------------------------------------------------------------

def make_pdf(pages: list[str | None]) -> bytes:
    """A valid PDF; page i shows ``pages[i]`` line by line, or (None) only a grey box, like a scan."""
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b"",
                            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for page in pages:
        if page is None:
            stream = b"0.5 g 72 72 400 600 re f"
        else:
            shown = "".join(f"({escape(line)}) Tj T* " for line in page.split("\n"))
            stream = f"BT /F1 9 Tf 11 TL 40 760 Td {shown}ET".encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                       b"/Contents %d 0 R >>" % len(objects))
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n%s" % (len(objects) + 1, b"".join(b"%010d 00000 n \n" % o for o in offsets))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def encrypt(pdf: bytes, password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def sentences(seed: int, count: int) -> list[str]:
    """Deterministic filler sentences, different for each seed."""
    out = []
    for i in range(count):
        words = [WORDS[(seed * 7 + i * 5 + k * 3) % len(WORDS)] for k in range(6 + (seed + i) % 7)]
        out.append(f"The {' '.join(words)} number {seed}-{i} is checked.")
    return out


def page_text(number: int, lines: int = 12) -> str:
    return "\n".join(sentences(number, lines))


def manual_pdf(pages: int = 5, phrase_page: int = 3) -> bytes:
    texts = [page_text(n) for n in range(1, pages + 1)]
    lines = texts[phrase_page - 1].split("\n")
    texts[phrase_page - 1] = "\n".join([*lines[:6], "The zeppelin calibration torque is 42 newton metres.", *lines[6:]])
    return make_pdf(texts)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Pump manual", level=1)
    document.add_paragraph("Before the table: check the seal.")
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([("Part", "Torque"), ("Impeller bolt", "12 Nm")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("After the table: close the housing.")
    document.save(path)
    return path


HTML = """<html><head><title>T</title><style>body { color: red }</style><script>var secret = 1;</script></head>
<body><header>Site header</header><nav><a href="/">Home</a> | <a href="/x">Products</a></nav>
<article><h1>Seal replacement</h1><p>Drain the <b>pump</b> first.
Then remove the cover.</p><ul><li>Use a 10 mm key.</li><li>Keep the gasket.</li></ul></article>
<aside>Related links</aside><footer>Copyright 2024</footer><script>track();</script></body></html>"""


# -- loaders --------------------------------------------------------------------------------------

def test_a_phrase_on_page_3_comes_back_in_chunks_whose_provenance_says_page_3(tmp_path):
    path = write(tmp_path / "manual.pdf", manual_pdf())
    corpus = load_corpus([path], chunk_tokens=64, chunk_overlap=16)
    document = corpus.documents[0]
    assert document.page_count == 5 and [n for n, _ in document.pages] == [1, 2, 3, 4, 5]
    hits = [c for c in corpus.chunks if "zeppelin calibration torque" in c.text]
    assert hits and all(3 in c.pages for c in hits) and any(c.pages == (3,) for c in hits)
    for chunk in corpus.chunks:
        assert document.text[chunk.char_start:chunk.char_end] == chunk.text
        assert chunk.sha256 == document.sha256 and chunk.file == "manual.pdf"
    assert [c.index for c in corpus.chunks] == list(range(len(corpus.chunks)))
    assert {p for c in corpus.chunks for p in c.pages} == {1, 2, 3, 4, 5}


def test_pages_without_text_are_listed_in_a_warning_and_skipped(tmp_path):
    path = write(tmp_path / "scan.pdf", make_pdf([page_text(1), None, page_text(3), None]))
    document = load_document(path)
    assert [n for n, _ in document.pages] == [1, 3]
    assert document.warnings == (("scan.pdf: pages 2, 4 have no extractable text (scanned images?); skipped, "
                                  "run OCR first to use them"),)
    with pytest.raises(DocumentError, match=r"^allscan\.pdf: no extractable text \(a scanned PDF\? run OCR first\)$"):
        load_bytes(make_pdf([None, None]), "allscan.pdf")


def test_an_encrypted_pdf_needs_its_password(tmp_path):
    path = write(tmp_path / "secret.pdf", encrypt(manual_pdf(3, 2), "s3cret"))
    with pytest.raises(DocumentError, match=r"^secret\.pdf: the PDF is encrypted; give its password"):
        load_document(path)
    with pytest.raises(DocumentError, match=r"^secret\.pdf: wrong password"):
        load_document(path, password="nope")
    assert "zeppelin calibration torque" in load_document(path, password="s3cret").text


@pytest.mark.parametrize("name, data, message", [
    ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog broken", "not a readable PDF"),
    ("broken.docx", b"PK\x03\x04 not really a zip archive", "not a readable DOCX"),
    ("empty.txt", b"", "the file is empty"),
    ("blank.md", b"  \n\n ", "the file is empty"),
    ("binary.txt", bytes(range(256)) * 4, "holds binary data, not text"),
    ("photo.png", b"\x89PNG\r\n\x1a\n....", "unsupported file type '.png'"),
    ("notes", b"no extension", "unsupported file type '(no extension)'"),
])
def test_an_unusable_file_fails_with_one_line_naming_it(tmp_path, name, data, message):
    with pytest.raises(DocumentError) as info:
        load_document(write(tmp_path / name, data))
    text = str(info.value)
    assert text.startswith(f"{name}: ") and message in text and "\n" not in text


def test_docx_paragraphs_and_tables_come_out_in_document_order(tmp_path):
    text = load_document(make_docx(tmp_path / "manual.docx")).text
    assert text == ("Pump manual\n\nBefore the table: check the seal.\n\nPart | Torque\nImpeller bolt | 12 Nm"
                    "\n\nAfter the table: close the housing.")


def test_html_keeps_the_content_and_drops_scripts_styles_and_navigation():
    text = load_bytes(HTML.encode(), "page.html").text
    assert text == ("Seal replacement\n\nDrain the pump first. Then remove the cover.\n\nUse a 10 mm key.\n\n"
                    "Keep the gasket.")


def test_text_files_are_read_as_utf8_with_one_newline_style():
    text = load_bytes("\ufeffCaf\u00e9 first line\r\nsame paragraph\r\n\r\n\r\n\r\nnext\x07 one".encode(), "a.md").text
    assert text == "Caf\u00e9 first line\nsame paragraph\n\nnext one"
    latin = load_bytes("caf\u00e9 cr\u00e8me".encode("cp1252"), "old.txt")
    assert latin.text == "caf\u00e9 cr\u00e8me" and "Windows-1252" in latin.warnings[0]


# -- chunking -------------------------------------------------------------------------------------

def long_text(paragraphs: int = 30) -> str:
    return "\n\n".join(" ".join(sentences(p, 2 + p % 5)) for p in range(paragraphs))


@pytest.mark.parametrize("size, overlap, count", [
    (64, 16, None), (100, 0, None), (48, 24, lambda t: len(t.split())), (40, 10, lambda t: 2 * len(t.split())),
])
def test_chunks_respect_size_and_overlap_and_never_split_a_word(size, overlap, count):
    text = long_text()
    measure = count or estimate_tokens
    spans = chunk_spans(text, size, overlap, count)
    assert len(spans) > 3
    for i, (start, end, tokens) in enumerate(spans):
        assert tokens == measure(text[start:end]) <= size
        assert (start == 0 or text[start - 1].isspace()) and not text[start].isspace()
        assert (end == len(text) or text[end].isspace()) and not text[end - 1].isspace()
        if i:
            previous_start, previous_end, _ = spans[i - 1]
            assert start > previous_start
            shared = text[start:previous_end] if start < previous_end else ""
            assert measure(shared) <= overlap if shared else True
            assert bool(shared) == (overlap > 0)  # overlap asked -> overlap given; none asked -> none
    covered = set().union(*(range(s, e) for s, e, _ in spans))
    assert all(m.start() in covered for m in re.finditer(r"\S", text))  # nothing lost


def test_chunks_end_at_paragraph_or_sentence_boundaries_when_they_can():
    text = long_text()
    spans = chunk_spans(text, 80, 10)
    assert all(text[end - 1] == "." for _, end, _ in spans)  # a sentence, when no paragraph fits
    starts = [start for start, _, _ in chunk_spans(text, 80, 0)[1:]]
    assert all(text[s - 2] == "." or text[s - 1] == "\n" for s in starts)  # without overlap: sentence starts
    paragraphs = "\n\n".join(" ".join(sentences(p, 5)) for p in range(10))  # ~100 tokens each
    spans = chunk_spans(paragraphs, 250, 0)
    assert all(end == len(paragraphs) or paragraphs[end:end + 2] == "\n\n" for _, end, _ in spans)
    assert len(spans) < 10  # whole paragraphs packed together, not one each


def test_a_word_longer_than_a_chunk_is_the_only_thing_cut_inside():
    blob = "x" * 1000
    spans = chunk_spans(f"Intro words here. {blob} tail end.", 50, 0)
    assert all(tokens <= 50 for _, _, tokens in spans) and len(spans) > 4


def test_overlap_must_stay_below_half_the_chunk_size():
    with pytest.raises(Exception, match="at most half of chunk_tokens"):
        DocumentJob(files=["a.pdf"], chunk_tokens=100, chunk_overlap=60)
    with pytest.raises(ConfigError, match="below the chunk size"):
        chunk_spans("some text", 10, 10)


def test_a_total_is_spread_evenly_across_chunks():
    ids = [f"c{i}" for i in range(4)]
    assert chunk_targets(ids, None, 10) == {"c0": 2, "c1": 3, "c2": 2, "c3": 3}
    assert chunk_targets(ids, None, 2) == {"c1": 1, "c3": 1}  # fewer items than chunks: evenly spaced ones
    assert chunk_targets(ids, 5, None) == dict.fromkeys(ids, 5)
    assert chunk_targets(ids, None, None) == dict.fromkeys(ids, 3)


# -- inputs and uploads ---------------------------------------------------------------------------

def test_folders_and_globs_pick_supported_files_and_a_missing_path_is_an_error(tmp_path):
    write(tmp_path / "docs" / "a.md", "alpha")
    write(tmp_path / "docs" / "sub" / "b.txt", "beta")
    write(tmp_path / "docs" / "logo.png", b"\x89PNG")
    write(tmp_path / "docs" / ".hidden.md", "hidden")
    write(tmp_path / "docs" / "~$lock.docx", b"lock")
    files, notes = resolve_files([tmp_path / "docs", str(tmp_path / "docs" / "*.md")])
    assert [f.name for f in files] == ["a.md", "b.txt"]  # the glob's a.md is the folder's: once
    assert any("ignored 3 file(s)" in note for note in notes)
    with pytest.raises(ConfigError, match=r"document .*missing\.pdf does not exist"):
        resolve_files([tmp_path / "missing.pdf"])
    with pytest.raises(ConfigError, match="matches no supported document"):
        resolve_files([str(tmp_path / "*.pdf")])


def test_an_upload_is_stored_once_under_its_hash(home):
    first = save_upload(b"same bytes", "manual.md", home)
    again = save_upload(memoryview(b"same bytes"), "copy-of-manual.md", home)
    other = save_upload(b"other bytes", "../../escape.md", home)
    assert first == again and first.read_bytes() == b"same bytes"
    assert first.parent.parent == home / "uploads" and len(first.parent.name) == 64
    assert other.parent.parent == home / "uploads" and other.name == "escape.md"
    assert sorted(p.name for p in (home / "uploads").rglob("*") if p.is_file()) == ["escape.md", "manual.md"]


def test_a_batch_reports_bad_files_and_keeps_the_good_ones(tmp_path):
    good = write(tmp_path / "good.md", long_text(4))
    copy = write(tmp_path / "copy.md", long_text(4))
    bad = write(tmp_path / "bad.pdf", b"%PDF-1.4 garbage")
    corpus = load_corpus([good, copy, bad, write(tmp_path / "empty.txt", b"")])
    assert [d.name for d in corpus.documents] == ["good.md"]  # copy.md has the same bytes
    assert "copy.md is the same file as good.md; used once" in corpus.notes
    assert [p.split(":")[0] for p in corpus.problems] == ["bad.pdf", "empty.txt"]
    assert set(corpus.file_hashes) == {str(p.resolve()) for p in (good, copy, bad, tmp_path / "empty.txt")}
    with pytest.raises(DocumentError, match=r"^no usable document among 2 file\(s\): bad\.pdf: .*; empty\.txt: "):
        load_corpus([bad, tmp_path / "empty.txt"])


# -- generation on the fake server ----------------------------------------------------------------

def job(server, files, **fields) -> DocumentJob:
    spec = ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url,
                     parameters=ModelParameters(max_tokens=800))
    return DocumentJob(files=[str(f) for f in files], model=spec, run=FAST, **fields)


def test_a_document_job_stores_qa_items_with_their_chunk_provenance(openai_server, store, tmp_path):
    pdf = write(tmp_path / "manual.pdf", manual_pdf())
    notes = write(tmp_path / "notes.md", long_text(3))
    config = job(openai_server, [pdf, notes], chunk_tokens=96, chunk_overlap=16, per_chunk=2)
    run = DocumentRun(config, store=store)
    result = run.run()
    chunks = run.corpus.chunks
    assert (result.status, result.ok, result.failed) == ("done", 2 * len(chunks), 0)
    assert len(openai_server.requests) == len(chunks)  # 2 items per chunk in one call
    rows = list(store.records("generation", result.job_id, "ok"))
    by_chunk = {c.id: c for c in chunks}
    for row in rows:
        chunk, provenance = by_chunk[row["topic"]], row["provenance"]
        assert provenance == {"file": chunk.file, "path": str(Path(chunk.path)), "sha256": chunk.sha256,
                              "pages": list(chunk.pages) if chunk.pages else None, "char_start": chunk.char_start,
                              "char_end": chunk.char_end, "chunk_index": chunk.index, "tokens": chunk.tokens,
                              "text": chunk.text}
        assert set(row["output"]) == {"question", "answer", "evidence"}
    page3 = [r for r in rows if "zeppelin" in r["provenance"]["text"]]
    assert page3 and all(r["provenance"]["pages"] == [3] for r in page3)
    assert {r["provenance"]["file"] for r in rows} == {"manual.pdf", "notes.md"}
    prompts = [body["messages"][-1]["content"] for body in openai_server.requests]  # any order: concurrent
    assert all(sum(chunk.text in prompt for prompt in prompts) == 1 for chunk in chunks)
    assert any("<source>manual.pdf, page 3</source>" in prompt for prompt in prompts)
    meta = store.get_job("generation", result.job_id)
    assert (meta["technique"], meta["use_case"], meta["topics"]) == ("documents", "document_qa", ["manual.pdf", "notes.md"])
    assert meta["config"]["chunk_tokens"] == 96 and meta["config"]["chunk_overlap"] == 16
    assert meta["config"]["file_hashes"] == {str(pdf.resolve()): chunks[0].sha256,
                                             str(notes.resolve()): chunks[-1].sha256}


def test_running_the_same_job_again_sends_nothing_and_a_changed_file_makes_a_new_job(openai_server, store, tmp_path):
    notes = write(tmp_path / "notes.md", long_text(3))
    config = job(openai_server, [notes], per_chunk=1)
    first = DocumentRun(config, store=store).run()
    sent = len(openai_server.requests)
    again = DocumentRun(config, store=store).run()
    assert (again.job_id, again.resumed, again.requests_sent, again.ok) == (first.job_id, True, 0, first.ok)
    assert len(openai_server.requests) == sent
    write(notes, long_text(3) + "\n\nA new closing paragraph.")
    changed = DocumentRun(config, store=store).run()
    assert changed.job_id != first.job_id and not changed.resumed
    with pytest.raises(ConfigError, match="notes.md is not the file this job's config was saved with"):
        DocumentRun(DocumentJob.model_validate(store.get_job("generation", first.job_id)["config"]), store=store)


def test_grounding_filters_unsupported_answers_with_the_reason_and_asks_again(openai_server, store, tmp_path):
    notes = write(tmp_path / "notes.md", "The X200 pump runs at 3000 rpm. Its seal lasts five years.")
    asked: list[int] = []

    def reply(body):
        schema = requested_schema(body)
        prompt = body["messages"][-1]["content"]
        if "supported" in schema["properties"]:
            invented = "invented" in prompt.split("<answer>")[1]
            return json.dumps({"supported": not invented, "reason": "the passage never says so" if invented else "ok",
                               "evidence": "" if invented else "Runs at  3000 RPM"})  # case and spaces differ
        count = schema["properties"]["items"]["minItems"] if "items" in schema["properties"] else 1
        asked.append(count)
        items = [{"question": f"How fast does the X200 pump run ({len(asked)}-{i})?",
                  "answer": "an invented 5000 rpm" if (len(asked), i) == (1, 1) else "It runs at 3000 rpm.",
                  "evidence": "runs at 3000 rpm"} for i in range(count)]
        return json.dumps({"items": items} if count > 1 else items[0])

    openai_server.reply = reply
    result = DocumentRun(job(openai_server, [notes], per_chunk=2, grounding=True, dedup_threshold=None),
                         store=store).run()
    assert asked == [2, 1]  # the unsupported item was asked for again
    assert (result.status, result.ok, result.filtered, result.failed) == ("done", 2, 1, 0)
    filtered = list(store.records("generation", result.job_id, "filtered"))
    assert filtered[0]["error"] == "not supported by its chunk: the passage never says so"
    assert filtered[0]["output"]["answer"] == "an invented 5000 rpm"
    ok = list(store.records("generation", result.job_id, "ok"))
    assert all(r["provenance"]["grounding"] == {"supported": True, "reason": "ok", "evidence": "Runs at 3000 RPM",
                                                "judge": "fake-model"} for r in ok)
    # two generation calls, three checks; the server (llama.cpp's dialect) refused json_schema once: a call all the same
    assert result.requests_sent == result.attempts - 1 == 2 + 3
    before = len(openai_server.requests)
    again = DocumentRun(job(openai_server, [notes], per_chunk=2, grounding=True, dedup_threshold=None),
                        store=store).run()
    assert (again.requests_sent, again.ok, len(openai_server.requests)) == (0, 2, before)


def test_a_job_cancelled_while_checking_resumes_without_checking_any_item_twice(openai_server, store, tmp_path):
    import threading

    openai_server.latency = 0.02
    notes = write(tmp_path / "notes.md", long_text(12))
    config = job(openai_server, [notes], per_chunk=2, grounding=True, chunk_tokens=64, chunk_overlap=0)
    cancel = threading.Event()

    def on_progress(progress):
        if progress.note.startswith("grounding check") and progress.done > 12:
            cancel.set()

    first = DocumentRun(config, store=store).run(on_progress=on_progress, cancel_event=cancel)
    assert first.status == "cancelled" and store.get_job("generation", first.job_id)["status"] == "cancelled"
    done = DocumentRun(config, store=store).run()
    assert (done.job_id, done.status) == (first.job_id, "done")
    rows = list(store.records("generation", done.job_id))
    checked = [r for r in rows if r["provenance"] and "grounding" in r["provenance"]]
    assert all("grounding" in r["provenance"] for r in rows if r["status"] == "ok")
    checks = [b for b in openai_server.requests if "supported" in json.dumps(requested_schema(b) or {})]
    assert len(checks) == len(checked) == first.requests_sent + done.requests_sent - (
        len(openai_server.requests) - len(checks))


def test_generate_documents_takes_uploads_as_bytes_and_reports_bad_ones(openai_server, home):
    spec = ModelSpec(provider="openai_compatible", model="fake-model", base_url=openai_server.url)
    progress = []
    result = generate_documents(files=[("guide.md", long_text(2).encode()), {"name": "bad.docx", "content": b"xx"}],
                                home=home, model=spec, run=FAST, per_chunk=1, on_progress=progress.append)
    assert result.status == "done" and result.ok >= 1
    assert any(note.startswith("skipped bad.docx: not a readable DOCX") for note in result.notes)
    assert len(list((home / "uploads").glob("*/*"))) == 2 and progress and progress[-1].done >= 1


def test_preview_shows_the_first_prompt_and_estimate_without_a_call(openai_server, tmp_path):
    notes = write(tmp_path / "notes.md", long_text(6))
    shown = preview(job(openai_server, [notes], chunk_tokens=64, chunk_overlap=0, total=5, grounding=True))
    assert shown.items == 5 and shown.grounding_requests == 5 and shown.chunks > 5
    assert "<passage>" in shown.prompt and shown.requests == 5 and openai_server.requests == []


# -- the CLI --------------------------------------------------------------------------------------

def sdstudio(*args: str, home: Path, check_exit: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sdstudio.cli", "documents", *args, "--home", str(home)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    if check_exit is not None:
        assert proc.returncode == check_exit, proc.stderr
    return proc


def fake(server) -> list[str]:
    return ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url]


def test_cli_runs_a_batch_reports_the_bad_file_and_prints_one_json_summary(openai_server, tmp_path):
    docs = tmp_path / "docs"
    write(docs / "manual.pdf", manual_pdf(3, 2))
    make_docx(docs / "manual.docx")
    write(docs / "broken.pdf", b"%PDF-1.4 nonsense")
    out = sdstudio("--files", str(docs), *fake(openai_server), "--chunk-tokens", "128", "--chunk-overlap", "16",
                   "--per-chunk", "2", "--json", home=tmp_path)
    summary = json.loads(out.stdout)
    assert summary["status"] == "done" and summary["ok"] > 0 and summary["failed"] == 0
    assert any(n.startswith("skipped broken.pdf: not a readable PDF") for n in summary["notes"])
    with sqlite3.connect(tmp_path / "metadata.db") as conn:
        files = {json.loads(p)["file"] for (p,) in conn.execute("SELECT provenance FROM records")}
        technique, = conn.execute("SELECT technique FROM generation_metadata").fetchone()
    assert files == {"manual.pdf", "manual.docx"} and technique == "documents"
    again = json.loads(sdstudio("--resume", str(summary["job_id"]), *fake(openai_server), "--json", home=tmp_path).stdout)
    assert (again["job_id"], again["requests_sent"], again["ok"]) == (summary["job_id"], 0, summary["ok"])


def test_cli_dry_run_renders_the_prompt_and_makes_no_call_and_writes_nothing(openai_server, tmp_path):
    home = tmp_path / "fresh"
    notes = write(tmp_path / "notes.md", long_text(3))
    out = sdstudio("--files", str(notes), *fake(openai_server), "--dry-run", home=home)
    assert "<passage>" in out.stdout and "chunks" in out.stderr
    assert openai_server.requests == [] and not home.exists()


@pytest.mark.parametrize("files, message", [
    (["missing.pdf"], "document missing.pdf does not exist"),
    (["empty.txt"], "no usable document among 1 file(s): empty.txt: the file is empty"),
    (["broken.pdf", "empty.txt"], "broken.pdf: not a readable PDF"),
])
def test_cli_exits_2_with_one_line_for_bad_input(tmp_path, files, message):
    write(tmp_path / "empty.txt", b"")
    write(tmp_path / "broken.pdf", b"%PDF-1.4 nonsense")
    proc = subprocess.run([sys.executable, "-m", "sdstudio.cli", "documents", "--files", *files, "--home",
                           str(tmp_path / "home")], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          check=False)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_shipped_documents_example_runs(openai_server, tmp_path):
    out = sdstudio("--config", str(ROOT / "examples" / "documents.yaml"), *fake(openai_server), "--json",
                   home=tmp_path)
    summary = json.loads(out.stdout)
    assert summary["status"] == "done" and summary["ok"] + summary["filtered"] > 0 and summary["failed"] == 0
