"""The bad-input corpus: every case is one `sdstudio` run on a hostile or broken input. Each must end with exit 2
and one stderr line that names the problem, leave nothing half-written (no records, no job left running, no
export or partial file), stay within a memory budget, and never hang.

Small inputs live in tests/reliability/corpus/; big and hostile ones (bombs, 50 MB lines) are generated into the
test's tmp dir. Cases run as subprocesses, three at a time, in one batch per module.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import free_port
from tests.reliability.files import docx_bomb, encrypted_pdf, pdf_bytes, text_page, text_pdf

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "corpus"
TIMEOUT_S = 60  # "never hangs": far above any case's normal run, far below a hang
MEMORY_BUDGET_MB = 1500
GOOD_KEY = "sk-corpus-good-key"


@dataclass
class Case:
    name: str
    argv: Callable[["Ctx"], list[str]]  # the sdstudio arguments (after the subcommand's model flags are added)
    expect: str  # a fragment the error line must contain
    env: dict[str, str] = field(default_factory=dict)
    model: bool = True  # add the fake server's model flags
    xfail: str | None = None  # a known problem awaiting its fix (the reason says where)
    timeout: float | None = None  # seconds before the run counts as hung (default TIMEOUT_S)


@dataclass
class Ctx:
    dir: Path
    server: FakeOpenAIServer

    def write(self, name: str, content: bytes | str) -> str:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def corpus(self, name: str) -> str:
        return str(CORPUS / name)


def gen(*extra: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["generate", "--topics", "Heaps", "--per-topic", "1", *extra]


def docs(make: Callable[[Ctx], str], *extra: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["documents", "--files", make(c), *extra]


def config(kind_cmd: str, text: str, *extra: str) -> Callable[[Ctx], list[str]]:
    return lambda c: [kind_cmd, "--config", c.write("job.yaml", text), *extra]


def use_case(name: str, generate: str, yaml_text: str | None = None) -> Callable[[Ctx], list[str]]:
    def build(c: Ctx) -> list[str]:
        folder = c.dir / "home" / "templates" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "use_case.yaml").write_text(yaml_text or (
            "description: a user's own use case\noutput_schema:\n  type: object\n  required: [question, answer]\n"
            "  properties:\n    question: {type: string}\n    answer: {type: string}\n"))
        if generate is not None:
            (folder / "generate.jinja").write_text(generate)
        (folder / "evaluate.jinja").write_text("Score {{ prompt }} / {{ completion }}")
        return ["generate", "--use-case", name, "--topics", "Heaps", "--per-topic", "1"]
    return build


GOOD_USE_CASE = ("description: a user's own use case\noutput_schema:\n  type: object\n  required: [question, answer]\n"
                 "  properties:\n    question: {type: string}\n    answer: {type: string}\n")


def use_case_folder(yaml_text: str) -> Callable[[Ctx], list[str]]:
    """``--use-case DIR``: a use case folder outside the home, by its path."""
    def build(c: Ctx) -> list[str]:
        use_case("unused", "{{ topic }}", yaml_text)(c)
        folder = c.dir / "cases" / "mine"
        folder.parent.mkdir(parents=True, exist_ok=True)
        (c.dir / "home" / "templates" / "unused").rename(folder)
        return ["generate", "--use-case", str(folder), "--topics", "Heaps", "--per-topic", "1"]
    return build


def preset(text: str) -> Callable[[Ctx], list[str]]:
    """A workflow from a user's own preset (``templates/workflows/mine.yaml`` in the home) whose YAML is ``text``."""
    def build(c: Ctx) -> list[str]:
        c.write("home/templates/workflows/mine.yaml", text)
        return ["workflow", "--input", c.write("rows.csv", "question,answer\nWhat is a heap?,A tree\n"), "--preset",
                "mine", "--set", "column=question"]
    return build


def priced(text: str) -> Callable[[Ctx], list[str]]:
    """A generation job in a home whose prices.yaml is ``text``."""
    def build(c: Ctx) -> list[str]:
        c.write("home/prices.yaml", text)
        return gen()(c)
    return build


PRESET_STEPS = 'steps: [{name: "${column}_new", template: "Rewrite {{ ${column} }}"}]\n'


def grounded(name: str, ground: str) -> Callable[[Ctx], list[str]]:
    """A documents job with the grounding check on, from a copy of document_qa whose ground.jinja is ``ground``."""
    def build(c: Ctx) -> list[str]:
        folder = c.dir / "home" / "templates" / name
        folder.mkdir(parents=True, exist_ok=True)
        for part in ("use_case.yaml", "generate.jinja", "evaluate.jinja"):
            (folder / part).write_text((ROOT / "templates" / "document_qa" / part).read_text())
        (folder / "ground.jinja").write_text(ground)
        return ["documents", "--files", c.corpus("manual.md"), "--use-case", name, "--grounding"]
    return build


def workflow(template: str, *extra: str, columns: str = "question,answer\nWhat is a heap?,A tree\n") -> Callable:
    def build(c: Ctx) -> list[str]:
        data = c.write("rows.csv", columns)
        steps = json.dumps([{"name": "rewrite", "template": template}])
        return ["workflow", "--config", c.write("wf.yaml", f"kind: workflow\ninput_file: {data}\nsteps: {steps}\n"),
                *extra]
    return build


def billion_laughs() -> str:
    lines = ["kind: generation", "topics: [Heaps]", "examples:", "  - question: q", "    solution: s",
             "    explanation: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"    e{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def pdf_bomb(c: Ctx) -> str:
    """144 KB on disk: one 70 MB content stream shared by 50 pages."""
    stream = text_page("Real text on the page.") + b"\n" + b"0 0 m 1 1 l S\n" * 5_000_000
    return c.write("bomb.pdf", pdf_bytes([stream], compress=True, repeat_page=50))


def zip_without_document(c: Ctx) -> str:
    path = c.dir / "nodoc.docx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
    return str(path)


def deep_json(c: Ctx) -> str:
    return c.write("deep.json", "[" * 200_000 + "]" * 200_000)


def duplicate_parquet(c: Ctx) -> str:
    """A Parquet file whose schema names `question` twice (pyarrow allows it; pandas would rename one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = c.dir / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["q1"]), pa.array(["a1"]), pa.array(["q2"])],
                                        names=["question", "answer", "question"]), path)
    return str(path)


def judge(template: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["evaluate", "--config", c.write("ev.yaml", (
        "kind: evaluation\ninput_file: " + c.write("pairs.csv", "q,a\nhi,there\n")
        + f"\nprompt_column: q\ncompletion_column: a\ntemplate: {json.dumps(template)}\n"))]


BIG_TEXT = "{% set big = 'x' * 3999999 %}"
CLOSED_PORT = free_port()  # nothing listens there

CASES = [
    # -- documents ------------------------------------------------------------------------------------
    Case("pdf_corrupt", docs(lambda c: c.corpus("corrupt.pdf")), "corrupt.pdf: not a readable PDF"),
    Case("pdf_truncated", docs(lambda c: c.write("cut.pdf", text_pdf("Some text.")[:60])), "cut.pdf"),
    Case("pdf_encrypted_no_password", docs(lambda c: c.write("locked.pdf", encrypted_pdf("s3cret", "Hidden text."))),
         "locked.pdf: the PDF is encrypted"),
    Case("pdf_encrypted_wrong_password", docs(lambda c: c.write("locked.pdf", encrypted_pdf("s3cret", "Hidden.")),
                                              "--password-env", "PDF_PW"),
         "locked.pdf: wrong password", env={"PDF_PW": "not-it"}),
    Case("pdf_password_env_unset", docs(lambda c: c.write("locked.pdf", encrypted_pdf("s3cret", "Hidden.")),
                                        "--password-env", "NO_SUCH_PDF_PW"), "NO_SUCH_PDF_PW"),
    Case("pdf_empty_file", docs(lambda c: c.write("empty.pdf", b"")), "empty.pdf: the file is empty"),
    Case("pdf_no_text_layer", docs(lambda c: c.write("scan.pdf", pdf_bytes([b"0 0 m 100 100 l S"]))),
         "scan.pdf: no extractable text"),
    Case("pdf_decompression_bomb", docs(pdf_bomb), "bomb.pdf: refused: its pages unpack to more than", timeout=20),
    Case("docx_decompression_bomb", docs(lambda c: str(docx_bomb(c.dir / "bomb.docx", 1000))),
         "bomb.docx: refused: it unpacks to"),
    Case("docx_corrupt", docs(lambda c: c.corpus("corrupt.docx")), "corrupt.docx: not a readable DOCX"),
    Case("docx_zip_without_document", docs(zip_without_document), "nodoc.docx: not a readable DOCX"),
    Case("txt_invalid_utf8", docs(lambda c: c.corpus("invalid-utf8.txt")), "invalid-utf8.txt: not UTF-8 text"),
    Case("txt_binary", docs(lambda c: c.write("blob.txt", bytes(range(256)) * 64)), "blob.txt: holds binary data"),
    Case("txt_empty", docs(lambda c: c.write("nothing.txt", b"")), "nothing.txt: the file is empty"),
    Case("md_whitespace_only", docs(lambda c: c.write("blank.md", " \n\t\n  \n")), "blank.md: the file is empty"),
    Case("html_script_only", docs(lambda c: c.write("page.html", "<html><script>alert(1)</script></html>")),
         "page.html: no extractable text"),
    Case("doc_unsupported_type", docs(lambda c: c.write("tool.exe", b"MZ\x90\x00")), "unsupported file type '.exe'"),
    Case("doc_missing_file", docs(lambda c: str(c.dir / "nowhere.pdf")), "does not exist"),
    Case("doc_empty_folder", docs(lambda c: (c.dir / "empty-folder").mkdir() or str(c.dir / "empty-folder")),
         "holds no supported document"),
    Case("doc_glob_matches_nothing", docs(lambda c: str(c.dir / "*.pdf")), "matches no supported document"),
    Case("doc_chunk_tokens_zero", docs(lambda c: c.corpus("manual.md"), "--chunk-tokens", "0"), "chunk_tokens"),
    Case("doc_overlap_over_half", docs(lambda c: c.corpus("manual.md"), "--chunk-tokens", "100", "--chunk-overlap",
                                       "80"), "chunk_overlap (80) must be at most half"),
    Case("doc_total_negative", docs(lambda c: c.corpus("manual.md"), "--total", "-3"), "total"),
    # -- seeds and user datasets --------------------------------------------------------------------
    Case("topics_json_object", lambda c: ["generate", "--topics-file", c.write("t.json", '{"topic": "Heaps"}')],
         "expected a JSON list of strings"),
    Case("topics_json_numbers", lambda c: ["generate", "--topics-file", c.write("t.json", "[1, 2, 3]")],
         "expected a JSON list of strings"),
    Case("topics_json_invalid", lambda c: ["generate", "--topics-file", c.write("t.json", '["Heaps", ')],
         "not valid JSON"),
    Case("topics_invalid_utf8", lambda c: ["generate", "--topics-file", c.corpus("invalid-utf8.txt")],
         "cannot read topics file"),
    Case("topics_only_comments", lambda c: ["generate", "--topics-file", c.write("t.txt", "# nothing\n\n")],
         "topic list is empty"),
    Case("rows_json_scalar", workflow("Rewrite {{ question }}", "--input", "IGNORED"), "expected a JSON array"),
    Case("rows_json_too_deep", lambda c: ["workflow", "--input", deep_json(c), "--preset", "paraphrase", "--set",
                                          "column=question"], "deep.json"),
    Case("rows_unknown_column", workflow("Rewrite {{ question }}", "--columns", "question", "nope"),
         "no column 'nope'"),
    Case("rows_template_unknown_column", workflow("Rewrite {{ qestion }}"), "qestion"),
    Case("rows_empty_csv", workflow("Rewrite {{ question }}", columns="question,answer\n"), "has no rows"),
    Case("eval_unknown_prompt_column", lambda c: ["evaluate", "--input", c.write("pairs.csv", "q,a\nhi,there\n"),
                                                  "--prompt-col", "prompt", "--completion-col", "a"],
         "prompt column 'prompt'"),
    Case("eval_missing_input", lambda c: ["evaluate", "--input", str(c.dir / "none.csv"), "--prompt-col", "q",
                                          "--completion-col", "a"], "does not exist"),
    # -- YAML configs ----------------------------------------------------------------------------------
    Case("yaml_unknown_key", config("generate", "kind: generation\nnum_per_topc: 3\n"), "unknown key 'num_per_topc'"),
    Case("yaml_nested_unknown_key", config("generate", "kind: generation\nmodel:\n  temprature: 0.2\n"),
         "unknown key 'temprature' at model.temprature"),
    Case("yaml_wrong_type", config("generate", "kind: generation\nnum_per_topic: many\n"), "num_per_topic"),
    Case("yaml_list_for_string", config("generate", "kind: generation\nuse_case: [a, b]\n"), "use_case"),
    Case("yaml_syntax_error", config("generate", "kind: generation\ntopics: [Heaps, [Tries\n"), "invalid YAML"),
    Case("yaml_top_level_list", config("generate", "- kind: generation\n"), "must be a mapping"),
    Case("yaml_empty", config("generate", "\n"), "the config is empty"),
    Case("yaml_missing_kind", config("generate", "topics: [Heaps]\n"), "missing 'kind'"),
    Case("yaml_wrong_kind", config("generate", "kind: evaluation\nsource_job: 1\n"), "needs kind: generation"),
    Case("yaml_python_object_tag", config("generate", "kind: generation\nname: !!python/object/apply:os.system [id]\n"),
         "invalid YAML"),
    Case("yaml_billion_laughs", config("generate", billion_laughs()), "expands to more than 1,000,000 values"),
    Case("yaml_key_in_api_key_env", config("generate", "kind: generation\nmodel:\n  api_key_env: sk-abc 123\n"),
         "NAME of an environment variable"),
    Case("yaml_invalid_utf8", lambda c: ["generate", "--config", c.write("job.yaml", b"kind: generation\nname: \xff\xfe\n")],
         "cannot read config file"),
    # -- templates -------------------------------------------------------------------------------------
    Case("template_syntax_error", use_case("broken", "{% for x in %}{{ topic }}"), "syntax error at line 1"),
    Case("template_undefined_variable", use_case("undefined", "{{ topic }} {{ nope }}"), "uses nope"),
    Case("template_escape_mro", use_case("escape1", "{{ topic.__class__.__mro__[1].__subclasses__() }}"),
         "refused by the template sandbox"),
    Case("template_escape_globals", use_case("escape2", "{{ lipsum.__globals__['os'].popen('id').read() }}{{ topic }}"),
         "refused by the template sandbox"),
    Case("template_escape_format", use_case("escape3", "{{ '{0.__class__.__init__.__globals__}'.format(topic) }}"),
         "refused by the template sandbox"),
    Case("template_memory_bomb", use_case("bomb", "{{ topic * 10**10 }}"), "over the limit of 4,000,000"),
    Case("template_endless_output", use_case("loop", "{% for i in range(100000) %}{% for j in range(100000) %}"
                                                     "{{ topic }}{% endfor %}{% endfor %}"), "renders more than"),
    Case("template_missing_file", use_case("nogen", None), "generate.jinja is missing"),
    Case("use_case_unknown_key", use_case("badyaml", "{{ topic }}", "descripton: typo\n"), "unknown key 'descripton'"),
    Case("use_case_judge_not_a_mapping", use_case("uc1", "{{ topic }}", GOOD_USE_CASE + "judge: 5\n"),
         "use_case.yaml: judge: expected a mapping"),
    Case("use_case_scale_infinite", use_case("uc2", "{{ topic }}", GOOD_USE_CASE + "judge: {scale: [1, .inf]}\n"),
         "use_case.yaml: judge.scale: expected two whole numbers, e.g. [1, 5]; the high end is not a whole number"),
    Case("use_case_scale_not_a_list", use_case("uc3", "{{ topic }}", GOOD_USE_CASE + "judge: {scale: ab}\n"),
         "use_case.yaml: judge.scale: expected a list of two whole numbers"),
    Case("use_case_scale_reversed", use_case("uc4", "{{ topic }}", GOOD_USE_CASE + "judge: {scale: [5, 1]}\n"),
         "use_case.yaml: judge.scale: scale 5-1 is empty"),
    Case("use_case_topics_a_number", use_case("uc5", "{{ topic }}", GOOD_USE_CASE + "topics: 5\n"),
         "use_case.yaml: topics: expected a list"),
    Case("use_case_schema_a_number", use_case("uc6", "{{ topic }}", "description: d\noutput_schema: 12\n"),
         "use_case.yaml: output_schema: expected a mapping"),
    Case("use_case_examples_text", use_case("uc7", "{{ topic }}", GOOD_USE_CASE + "examples: abc\n"),
         "use_case.yaml: examples: expected a list"),
    Case("use_case_unknown_validator", use_case("uc8", "{{ topic }}", GOOD_USE_CASE + "validators: [sqll]\n"),
         "use_case.yaml: validators.0: expected 'sql'"),
    Case("preset_options_not_a_mapping", preset("options: 5\n" + PRESET_STEPS),
         "mine.yaml: options: expected a mapping"),
    Case("preset_choices_not_a_list", preset("options: {column: {column: true, choices: 5}}\n" + PRESET_STEPS),
         "mine.yaml: options.column.choices: expected a list"),
    Case("preset_unknown_option_key", preset("options: {column: {column: true, colour: red}}\n" + PRESET_STEPS),
         "mine.yaml: unknown key 'colour' at options.column.colour"),
    Case("prices_entry_quoted_text", priced('fake-model: "12"\n'),
         "prices.yaml: fake-model: expected [input_usd_per_M, output_usd_per_M]"),
    Case("use_case_folder_path", use_case_folder(GOOD_USE_CASE + "judge: {scale: [1, .inf]}\n"),
         "use_case.yaml: judge.scale:"),
    Case("workflow_step_syntax_error", workflow("{{ question"), "syntax error"),
    Case("workflow_step_escape", workflow("{{ question.__class__.__base__.__subclasses__() }}"),
         "refused by the template sandbox"),
    # every way a template could build more than the render cap (see test_template_limits.py for each path)
    Case("template_printf_width", use_case("fmt1", "{{ '%5000000000s' % topic }}"), "a % width of 5000000000"),
    Case("template_format_filter_width", use_case("fmt2", "{{ '%1500000000s'|format(topic) }}"),
         "a % width of 1500000000"),
    Case("template_str_format_width", use_case("fmt3", "{{ '{:>1500000000}'.format(topic) }}"),
         "a format width of 1500000000"),
    Case("template_join_bomb", use_case("join", "{{ ([topic]*999999)|join('x'*500) }}"),
         "joining 999,999 items would build"),
    Case("template_lipsum_bomb", use_case("lipsum", "{{ lipsum(100000) }}{{ topic }}"), "over the limit of 100 paragraphs"),
    Case("template_block_bomb", use_case("block", BIG_TEXT + "{% set t %}{% for i in range(700) %}{{ big }}{% endfor %}"
                                                  "{% endset %}{{ t|length }}{{ topic }}"),
         "block is over the limit of 4,000,000 characters"),
    Case("template_nested_loops", use_case("loops", "{% for i in range(100000) %}{% for j in range(100000) %}"
                                                    "{% if 'y' in topic %}{% endif %}{% endfor %}{% endfor %}"),
         "more than 1,000,000 loop iterations"),
    Case("template_include", use_case("incl", "{% include 'other.jinja' %}{{ topic }}"), "{% include %} is not allowed"),
    Case("workflow_step_format_bomb", workflow("{{ '{:>1500000000}'.format(question) }}"), "a format width of 1500000000"),
    Case("workflow_step_import", workflow("{% import 'macros.jinja' as m %}{{ question }}"), "{% import %} is not allowed"),
    Case("judge_template_join_bomb", judge("{{ ([prompt]*999999)|join('x'*500) }}"), "joining 999,999 items would build"),
    Case("rows_duplicate_columns", lambda c: ["workflow", "--input", c.corpus("duplicate-columns.csv"), "--preset",
                                              "paraphrase", "--set", "column=question"],
         "names a column more than once: 'question' (columns 1, 3)"),
    Case("rows_duplicate_columns_parquet", lambda c: ["workflow", "--input", duplicate_parquet(c), "--preset",
                                                      "paraphrase", "--set", "column=question"],
         "names a column more than once: 'question' (columns 1, 3)"),
    Case("eval_duplicate_columns", lambda c: ["evaluate", "--input", c.corpus("duplicate-columns.csv"), "--prompt-col",
                                              "question", "--completion-col", "answer"],
         "names a column more than once: 'question' (columns 1, 3)"),
    Case("eval_limit_zero", lambda c: ["evaluate", "--input", c.write("pairs.csv", "q,a\nhi,there\n"), "--prompt-col",
                                       "q", "--completion-col", "a", "--limit", "0"], "limit"),
    Case("judge_template_escape", lambda c: ["evaluate", "--config", c.write("ev.yaml", (
        "kind: evaluation\ninput_file: " + c.write("pairs.csv", "q,a\nhi,there\n")
        + "\nprompt_column: q\ncompletion_column: a\ntemplate: \"{{ cycler.__init__.__globals__.os }}\"\n"))],
         "refused by the template sandbox"),
    Case("ground_template_unknown_variable", grounded("g_unknown", "{{ chunk }} {{ answer }} {{ verdict }}"),
         "ground.jinja uses verdict"),
    Case("ground_template_syntax_error", grounded("g_syntax", "{{ chunk }} {% if %}"), "ground.jinja: syntax error"),
    # refused before any generation is paid for (it used to surface at the first check, after the generation)
    Case("ground_template_escape", grounded("g_escape", "{{ chunk.__class__.__mro__ }} {{ answer }}"),
         "refused by the template sandbox"),
    Case("ground_judge_without_model", lambda c: ["documents", "--config", c.write("job.yaml", (
        f"kind: documents\nfiles: [{c.corpus('manual.md')}]\ngrounding: true\n"
        f"judge:\n  provider: openai_compatible\n  base_url: {c.server.url}\n"))],
         "the grounding judge (provider openai_compatible) needs a model id"),
    # -- counts and parameters -------------------------------------------------------------------------
    Case("count_negative", gen("--per-topic", "-1"), "num_per_topic"),
    Case("count_absurd", gen("--per-topic", "1000000000"), "num_per_topic"),
    Case("count_not_a_number", gen("--per-topic", "lots"), "invalid int value: 'lots'"),
    Case("batch_size_zero", gen("--batch-size", "0"), "batch_size"),
    Case("max_tokens_zero", gen("--max-tokens", "0"), "max_tokens"),
    Case("max_tokens_absurd", gen("--max-tokens", "1000000000000"), "max_tokens"),
    Case("concurrency_zero", gen("--concurrency", "0"), "concurrency"),
    Case("temperature_out_of_range", gen("--temperature", "5"), "temperature"),
    Case("rpm_negative", gen("--rpm", "-5"), "rpm"),
    Case("scale_reversed", lambda c: ["evaluate", "--job", "1", "--scale", "5-1"], "scale 5-1 is empty"),
    Case("scale_out_of_range", lambda c: ["evaluate", "--job", "1", "--scale", "1-100000000000000000000"],
         "scale 1-100000000000000000000 is out of range"),
    Case("scale_not_a_range", lambda c: ["evaluate", "--job", "1", "--scale", "good"], "is not a range"),
    Case("workflow_limit_zero", workflow("Rewrite {{ question }}", "--limit", "0"), "limit"),
    # -- providers, jobs, the Hub ----------------------------------------------------------------------
    Case("provider_unreachable", lambda c: ["generate", "--topics", "Heaps", "--per-topic", "1", "--provider",
                                            "openai_compatible", "--model", "m", "--base-url",
                                            f"http://127.0.0.1:{CLOSED_PORT}/v1"],
         "no request reached the provider", model=False),
    Case("provider_bad_url", lambda c: ["generate", "--topics", "Heaps", "--per-topic", "1", "--provider",
                                        "openai_compatible", "--model", "m", "--base-url", "localhost:8000"],
         "base_url 'localhost:8000' is not an http(s) URL", model=False),
    Case("provider_bad_api_key", gen(), "refused the credentials (401)", env={"CORPUS_KEY": "sk-wrong"}),
    Case("provider_bad_api_key_documents", docs(lambda c: c.corpus("manual.md")), "refused the credentials (401)",
         env={"CORPUS_KEY": "sk-wrong"}),
    Case("provider_bad_api_key_workflow", workflow("Rewrite {{ question }}"), "refused the credentials (401)",
         env={"CORPUS_KEY": "sk-wrong"}),
    Case("provider_bad_api_key_evaluate", lambda c: ["evaluate", "--input", c.write("pairs.csv", "q,a\nhi,there\n"),
                                                     "--prompt-col", "q", "--completion-col", "a"],
         "refused the credentials (401)", env={"CORPUS_KEY": "sk-wrong"}),
    Case("provider_bad_api_key_align", lambda c: ["align", "--topics", "Heaps", "--per-topic", "1", "-k", "2"],
         "refused the credentials (401)", env={"CORPUS_KEY": "sk-wrong"}),
    Case("provider_unknown_model", gen("--model", "no-such-model"), "does not know model 'no-such-model'"),
    Case("provider_key_env_unset", gen("--api-key-env", "NO_SUCH_KEY_VAR"), "NO_SUCH_KEY_VAR"),
    Case("provider_unknown", gen("--provider", "nope"), "unknown provider 'nope'"),
    Case("provider_openai_without_key", lambda c: ["generate", "--provider", "openai", "--topics", "Heaps"],
         "OPENAI_API_KEY is not set", env={"OPENAI_API_KEY": ""}, model=False),
    Case("provider_bedrock_without_credentials",
         lambda c: ["generate", "--provider", "bedrock", "--model", "anthropic.claude-3-haiku-20240307-v1:0",
                    "--region", "us-east-1", "--base-url", f"http://127.0.0.1:{CLOSED_PORT}", "--topics", "Heaps"],
         "no usable AWS credentials", model=False,
         env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_PROFILE": "", "AWS_SESSION_TOKEN": "",
              "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
              "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": ""}),
    Case("url_credentials_masked_not_in_memory", lambda c: [
        "generate", "--topics", "Heaps", "--provider", "openai_compatible", "--model", "m", "--base-url",
        f"http://***@127.0.0.1:{CLOSED_PORT}/v1?api_key=***"], "has its credentials masked", model=False),
    Case("url_user_password_beside_a_key", lambda c: [
        "generate", "--topics", "Heaps", "--provider", "openai", "--model", "m", "--base-url",
        f"http://alice:pw-corpus@127.0.0.1:{CLOSED_PORT}/v1"], "a request has only one", model=False,
         env={"OPENAI_API_KEY": "sk-corpus"}),
    Case("url_password_with_unencoded_slash", lambda c: [
        "generate", "--topics", "Heaps", "--provider", "openai_compatible", "--model", "m", "--base-url",
        f"http://alice:pw/corpus@127.0.0.1:{CLOSED_PORT}/v1"], "percent-encode", model=False),
    Case("url_bedrock_endpoint_with_credentials", lambda c: [
        "generate", "--topics", "Heaps", "--provider", "bedrock", "--model", "anthropic.claude-3-haiku-20240307-v1:0",
        "--region", "us-east-1", "--base-url", f"http://alice:pw-corpus@127.0.0.1:{CLOSED_PORT}"],
         "Bedrock signs every request", model=False),
    Case("url_hub_endpoint_with_credentials", lambda c: ["export", "--job", "1", "--hf-repo", "alice/data",
                                                         "--hf-endpoint", f"http://alice:pw@127.0.0.1:{CLOSED_PORT}"],
         "HF_TOKEN", env={"HF_TOKEN": "hf_x"}, model=False),
    Case("resume_unknown_job", gen("--resume", "99"), "no generation job with id 99"),
    Case("job_id_too_big", lambda c: ["evaluate", "--job", "100000000000000000000"],
         "no generation job with id 100000000000000000000"),
    Case("evaluate_unknown_job", lambda c: ["evaluate", "--job", "99"], "no generation job with id 99"),
    Case("export_unknown_job", lambda c: ["export", "--job", "99"], "99", model=False),
    Case("export_hub_without_token", lambda c: ["export", "--job", "1", "--hf-repo", "alice/data"],
         "needs a token", env={"HF_TOKEN": ""}, model=False),
    Case("export_bad_repo_id", lambda c: ["export", "--job", "1", "--hf-repo", "not a repo"], "not a dataset repo id",
         env={"HF_TOKEN": "hf_x"}, model=False),
    Case("export_repo_id_dot_git", lambda c: ["export", "--job", "1", "--hf-repo", "owner/name.git"],
         "cannot end in .git", env={"HF_TOKEN": "hf_x"}, model=False),
    Case("export_out_system_folder", lambda c: ["export", "--job", "1", "--out", "/etc"],
         "refusing to export into /etc", model=False),
    Case("export_out_filesystem_root", lambda c: ["export", "--job", "1", "--out", "/", "--overwrite"],
         "refusing to export into /: it is a system-wide folder", model=False),
    Case("export_out_is_the_home", lambda c: ["export", "--job", "1", "--out", str(c.dir / "home")],
         "it is SDSTUDIO_HOME", model=False),
    Case("export_out_not_empty", lambda c: ["export", "--job", "1", "--out",
                                            str(Path(c.write("repo/README.md", "# mine\n")).parent)],
         "is not empty (1 entry, e.g. README.md)", model=False),
    Case("export_overwrite_without_out", lambda c: ["export", "--job", "1", "--overwrite"],
         "overwrite applies to out only", model=False),
]


@dataclass
class Outcome:
    code: int | None
    stderr: str
    stdout: str
    peak_mb: float
    home: Path


# The child limits its own address space before anything is imported, so a bomb that gets through fails there
# instead of taking the machine (preexec_fn is unsafe with the pool's threads).
LAUNCH = ("import resource, runpy, sys; limit = int(sys.argv.pop(1)) * 2**20; "
          "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); sys.argv[0] = 'sdstudio'; "
          "runpy.run_module('sdstudio.cli', run_name='__main__', alter_sys=True)")
ADDRESS_SPACE_MB = 4096


def run_case(case: Case, root: Path, server: FakeOpenAIServer) -> Outcome:
    ctx = Ctx(root / case.name, server)
    ctx.dir.mkdir(parents=True)
    home = ctx.dir / "home"
    args = case.argv(ctx)
    if case.model and args[0] in ("generate", "documents", "workflow", "evaluate", "align"):
        # before the case's own flags, so a case that sets --model or --api-key-env wins
        args = [args[0], "--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url,
                "--api-key-env", "CORPUS_KEY", *args[1:]]
    if args[0] in ("generate", "documents", "workflow", "evaluate", "export", "align"):
        args.append("--json")  # as batch jobs run: no progress bar, so stderr holds the error line alone
    if "IGNORED" in args:  # rows_json_scalar: the input is a JSON scalar
        args[args.index("IGNORED")] = ctx.write("scalar.json", "42")
    env = {**os.environ, "CORPUS_KEY": GOOD_KEY, "SDSTUDIO_DEBUG": "", "PYTHONPATH": str(ROOT), **case.env}
    code, out, err, peak = sdstudio([*args, "--home", str(home)], ctx.dir, env, case.timeout or TIMEOUT_S)
    return Outcome(code, err, out, peak, home)


def sdstudio(args: list[str], folder: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str, str, float]:
    """(exit code or None when it hung, stdout, stderr, peak RSS in MB) of one memory-capped CLI run."""
    with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(ADDRESS_SPACE_MB), *args], cwd=folder, env=env,
                                stdout=out, stderr=err, start_new_session=True)
        deadline, hung = time.monotonic() + timeout, False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                hung = True
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return (None if hung else proc.returncode, (folder / "stdout").read_text(errors="replace"),
            (folder / "stderr").read_text(errors="replace"), usage.ru_maxrss / 1024)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    with FakeOpenAIServer(api_key=GOOD_KEY) as server:
        with ThreadPoolExecutor(3) as pool:
            futures = {case.name: pool.submit(run_case, case, root, server) for case in CASES}
            results = {name: future.result() for name, future in futures.items()}
        results["_requests"] = len(server.requests)  # type: ignore[assignment]
    return results


def test_the_corpus_has_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.slow
def test_corpus_figures(outcomes):
    runs = [o for name, o in outcomes.items() if isinstance(o, Outcome)]
    print(f"\nFIGURES corpus: {len(runs)} cases, exit codes {sorted({o.code for o in runs}, key=str)}, "
          f"peak RSS max {max(o.peak_mb for o in runs):.0f} MB (bombs included), "
          f"{outcomes['_requests']} requests reached the fake server")


@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)]
                                               if c.xfail else []) for c in CASES])
def test_a_bad_input_is_one_error_line_and_leaves_nothing_half_written(outcomes, case):
    outcome = outcomes[case.name]
    assert outcome.code is not None, f"hung: still running after {case.timeout or TIMEOUT_S}s"
    assert outcome.peak_mb < MEMORY_BUDGET_MB, f"peak memory {outcome.peak_mb:.0f} MB"
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.code == 2, outcome.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    assert lines[0].startswith("sdstudio") and ": error: " in lines[0]
    assert case.expect in lines[0], lines[0]
    assert outcome.stdout == ""
    assert_nothing_half_written(outcome.home)


def assert_nothing_half_written(home: Path) -> None:
    partial = [p for p in home.rglob("*") if p.is_file() and (p.suffix in (".part", ".tmp") or p.name.startswith("."))]
    assert partial == []
    exports = home / "exports"
    assert not exports.exists() or not any(exports.iterdir())
    db = home / "metadata.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM records").fetchone() == (0,)
            for table in ("generation_metadata", "evaluation_metadata"):
                left = conn.execute(f"SELECT id, status FROM {table} WHERE status NOT IN ('failed')").fetchall()
                assert left == [], f"{table}: {left}"
            assert conn.execute("SELECT COUNT(*) FROM export_metadata").fetchone() == (0,)


@pytest.mark.slow
def test_a_50_mb_single_line_text_file_is_chunked_not_refused(tmp_path):
    """A huge one-line file is valid input: chunked (cut inside the 'word' only where it must be), estimated, in
    bounded memory and time. Only a real run would send its ~24k requests."""
    line = tmp_path / "one-line.txt"
    with line.open("wb") as file:
        for _ in range(50):
            file.write(os.urandom(750_000).hex().encode()[:1_000_000])
    code, out, err, peak_mb = sdstudio(
        ["documents", "--files", str(line), "--dry-run", "--json", "--provider", "openai_compatible", "--model", "m",
         "--base-url", "http://127.0.0.1:9/v1", "--home", str(tmp_path / "home")], tmp_path,
        {**os.environ, "PYTHONPATH": str(ROOT)}, TIMEOUT_S)
    assert code == 0, err[-2000:]
    shown = json.loads(out)
    assert shown["documents"] == 1 and shown["chunks"] > 10_000
    assert peak_mb < MEMORY_BUDGET_MB
    assert not (tmp_path / "home" / "metadata.db").exists()  # a dry run writes nothing
