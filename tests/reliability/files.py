"""Small builders for the bad-input corpus: hand-made PDFs and DOCX files, written into a test's tmp dir
(big and hostile files are generated, never committed)."""
from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path


def pdf_bytes(pages: list[bytes], *, compress: bool = False, repeat_page: int = 1) -> bytes:
    """A minimal valid PDF: one Helvetica font, one content stream per page (``repeat_page`` pages share each
    stream object, which is how a PDF bomb multiplies one stream's cost)."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below, once the page tree's number is known
    pages_id = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    kids = []
    for content in pages:
        data = zlib.compress(content, 9) if compress else content
        extra = b" /Filter /FlateDecode" if compress else b""
        stream = add(b"<< /Length %d%s >>\nstream\n" % (len(data), extra) + data + b"\nendstream")
        for _ in range(repeat_page):
            kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                            b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (pages_id, stream, font)))
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id
    objects[pages_id - 1] = (b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids)
                             + b"] /Count %d >>" % len(kids))
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, catalog, xref))
    return out.getvalue()


def text_page(*lines: str) -> bytes:
    ops = [b"BT /F1 12 Tf 72 720 Td 14 TL"]
    for line in lines:
        ops.append(b"(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")
                   + b") Tj T*")
    ops.append(b"ET")
    return b"\n".join(ops)


def text_pdf(*paragraphs: str) -> bytes:
    return pdf_bytes([text_page(*paragraphs)])


def encrypted_pdf(password: str, *paragraphs: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf(*paragraphs))))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(*paragraphs: str) -> bytes:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def docx_bomb(path: Path, expanded_mb: int = 1000) -> Path:
    """A valid-looking DOCX of ~1/400 its size whose word/document.xml expands to ``expanded_mb`` MB."""
    template = zipfile.ZipFile(io.BytesIO(docx_bytes("seed")))
    xml = template.read("word/document.xml").decode()
    head, rest = xml.split("<w:body>", 1)
    tail = rest[rest.index("<w:sectPr"):] if "<w:sectPr" in rest else "</w:body></w:document>"
    block = ("<w:p><w:r><w:t>bomb</w:t></w:r></w:p>" * 26_000).encode()  # ~1 MB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in template.infolist():
            if info.filename != "word/document.xml":
                bomb.writestr(info, template.read(info.filename))
                continue
            with bomb.open("word/document.xml", "w", force_zip64=True) as part:
                part.write((head + "<w:body>").encode())
                for _ in range(expanded_mb):
                    part.write(block)
                part.write(tail.encode())
    return path
