"""The same job typed in a notebook and on the CLI is one job: the same config bytes, the same hash, so
either one resumes what the other started (DESIGN.md, Contracts: Jobs)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from sdstudio.cli import build_parser, main
from sdstudio.workflows.jobs import config_hash


def cli_config(*argv: str, home: Path):
    """The config a subcommand builds from these flags: its own parsing, nothing run."""
    import importlib

    args = build_parser().parse_args([*argv, "--home", str(home)])
    return importlib.import_module(f"sdstudio.commands.{args.command}").job_config(args)


def same_job(form, flags) -> None:
    """Equal hashes, and equal bytes (a failure shows which fields differ)."""
    assert form.model_dump(mode="json", exclude={"run"}) == flags.model_dump(mode="json", exclude={"run"})
    assert config_hash(form) == config_hash(flags)


@pytest.fixture
def endpoint(openai_server):
    model = {"provider": "openai_compatible", "model": "fake-model", "base_url": openai_server.url}
    flags = ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", openai_server.url]
    return model, flags


# -- generation ------------------------------------------------------------------------------------

def test_the_generate_form_with_its_defaults_is_the_job_generate_flags_make(endpoint, home):
    from sdstudio.ui import GenerateApp

    model, flags = endpoint
    form = GenerateApp(home=home, **model).config()
    assert form.instruction is None and form.topics is None and form.examples is None  # the use case's own
    same_job(form, cli_config("generate", *flags, home=home))


def test_the_generate_form_with_typed_topics_is_the_job_of_the_topics_flag(endpoint, home):
    from sdstudio.ui import GenerateApp

    model, flags = endpoint
    app = GenerateApp(home=home, **model)
    app.use_case.value = "text2sql"
    app.topics.value = "Joins\n\nWindow functions\nJoins\n"
    app.per_topic.value, app.batch_size.value = 2, 1
    same_job(app.config(), cli_config("generate", *flags, "--use-case", "text2sql", "--topics", "Joins",
                                      "Window functions", "--per-topic", "2", "--batch-size", "1", home=home))


def test_a_config_restating_the_use_case_defaults_is_the_job_that_leaves_them_unset(endpoint, home, tmp_path):
    from sdstudio.usecases import load_use_case

    _, flags = endpoint
    case = load_use_case("code_generation", home)
    restated = tmp_path / "restated.yaml"
    restated.write_text(yaml.safe_dump({
        "kind": "generation", "use_case": "code_generation", "technique": case.technique,
        "instruction": case.instruction, "requirements": case.requirements, "examples": case.examples,
        "topics": case.topics + case.topics[:1]}))
    same_job(cli_config("generate", *flags, "--config", str(restated), home=home),
             cli_config("generate", *flags, home=home))


def test_the_generate_forms_saved_yaml_is_the_same_job_on_the_cli(endpoint, home):
    from sdstudio.ui import GenerateApp

    model, flags = endpoint
    app = GenerateApp(home=home, **model)
    app.requirements.value += "\nName every variable in English"
    path = app.save_config()
    same_job(app.config(), cli_config("generate", "--config", str(path), home=home))
    assert "Name every variable in English" in path.read_text() and "instruction" not in path.read_text()


def test_blank_names_and_endpoints_are_unset(home):
    from sdstudio.config import GenerationJob

    config = GenerationJob(name=" ", model={"provider": "openai_compatible", "model": "", "base_url": "",
                                            "api_key_env": " "})
    assert (config.name, config.model.model, config.model.base_url, config.model.api_key_env) == (None,) * 4


# -- evaluation ------------------------------------------------------------------------------------

def test_the_evaluate_form_with_its_defaults_is_the_job_evaluate_flags_make(endpoint, home):
    from sdstudio.config import GenerationJob, ModelSpec
    from sdstudio.ui import EvaluateApp
    from sdstudio.workflows.sft import GenerationRun

    model, flags = endpoint
    job = GenerationRun(GenerationJob(topics=["Stacks"], num_per_topic=1, batch_size=1, model=ModelSpec(**model)),
                        home=home).run().job_id
    form = EvaluateApp(home=home, **model).config()
    assert form.source_job == job and form.criteria is None and form.scale is None  # the use case's own
    # the judge form starts at max_tokens 256 (a score and a sentence), the CLI at the model default
    same_job(form, cli_config("evaluate", *flags, "--job", str(job), "--max-tokens", "256", home=home))


# -- alignment -------------------------------------------------------------------------------------

def test_the_alignment_form_with_its_defaults_is_the_job_align_flags_make(endpoint, home):
    from sdstudio.ui import AlignmentApp

    model, flags = endpoint
    app = AlignmentApp(home=home, **model)
    form = app.config()
    assert form.judge is None  # the judge box shows the candidates' model: the default judge, at temperature 0
    same_job(form, cli_config("align", *flags, "--topics", *app.topics.value.splitlines(), "--per-topic", "2",
                              "--max-tokens", "512", home=home))


def test_align_flags_restating_the_default_judge_and_use_case_are_the_job_without_them(endpoint, home):
    _, flags = endpoint
    same_job(cli_config("align", *flags, "--judge-model", "fake-model", "--use-case", "alignment", home=home),
             cli_config("align", *flags, home=home))


def test_another_judge_model_is_the_same_job_in_the_alignment_form_and_on_the_cli(endpoint, home):
    from sdstudio.ui import AlignmentApp

    model, flags = endpoint
    app = AlignmentApp(home=home, **model)
    app.judge_model.value = "fake-judge"
    app.method.value = "kto"
    form = app.config()
    assert form.judge.model == "fake-judge" and form.judge.parameters.temperature == 0.0
    same_job(form, cli_config("align", *flags, "--topics", *app.topics.value.splitlines(), "--per-topic", "2",
                              "--max-tokens", "512", "--method", "kto", "--judge-model", "fake-judge", home=home))


def test_align_topics_equal_to_the_use_cases_are_the_job_without_topics(endpoint, home):
    from sdstudio.usecases import load_use_case

    _, flags = endpoint
    shipped = load_use_case("alignment", home).topics
    same_job(cli_config("align", *flags, "--topics", *shipped, home=home), cli_config("align", *flags, home=home))


# -- documents -------------------------------------------------------------------------------------

@pytest.fixture
def manual(tmp_path) -> Path:
    doc = tmp_path / "manual.md"
    doc.write_text("# Pumps\n\n" + "\n\n".join(f"Pump P{i} needs oil every {i + 2} months." for i in range(30)))
    return doc


def test_the_documents_form_with_its_defaults_is_the_job_documents_flags_make(endpoint, home, manual):
    from sdstudio.ui import DocumentsApp

    model, flags = endpoint
    app = DocumentsApp(home=home, files=[str(manual)], **model)
    same_job(app.config(), cli_config("documents", *flags, "--files", str(manual), "--per-chunk",
                                      str(app.per_chunk.value), home=home))


def test_the_default_per_chunk_typed_in_the_form_is_the_job_without_per_chunk(endpoint, home, manual):
    from sdstudio.ui import DocumentsApp

    model, flags = endpoint
    app = DocumentsApp(home=home, files=[str(manual)], **model)
    app.per_chunk.value = 3
    same_job(app.config(), cli_config("documents", *flags, "--files", str(manual), home=home))


# -- custom workflow -------------------------------------------------------------------------------

def test_the_workflow_form_with_its_defaults_is_the_job_workflow_flags_make(endpoint, home, tmp_path):
    from sdstudio.ui import WorkflowApp

    model, flags = endpoint
    data = tmp_path / "q.csv"
    data.write_text("id,question\n1,What is a list?\n2,What is a dict?\n")
    app = WorkflowApp(home=home, input_file=str(data), **model)
    form = app.config()
    assert form.columns is None  # every column ticked: all of them, as without --columns
    steps = tmp_path / "steps.yaml"
    steps.write_text(yaml.safe_dump({"kind": "workflow", "steps": yaml.safe_load(app.steps.value)}))
    same_job(form, cli_config("workflow", *flags, "--config", str(steps), "--input", str(data), "--max-tokens",
                              "512", home=home))


# -- end to end: a CLI job resumed by the notebook -------------------------------------------------

def test_a_generation_job_run_on_the_cli_is_resumed_by_the_generate_app_without_a_request(
        endpoint, openai_server, home, capsys):
    from sdstudio.ui import GenerateApp

    model, flags = endpoint
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = main(["generate", *flags, "--topics", "Heaps", "Tries", "--per-topic", "1", "--batch-size", "1",
                     "--json", "--home", str(home)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "done" and first["ok"] == 2
    sent = len(openai_server.requests)

    app = GenerateApp(home=home, **model)
    app.topics.value = "Heaps\nTries"
    app.per_topic.value, app.batch_size.value = 1, 1
    app.controls.run_button.click()
    result = app.controls.wait(60)
    assert (result.job_id, result.resumed, result.status, result.ok) == (first["job_id"], True, "done", 2)
    assert result.requests_sent == 0 and len(openai_server.requests) == sent
