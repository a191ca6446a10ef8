"""A use case drafted from example data (``sdstudio suggest-prompt``): the statistics the model sees, the folder
saved in the home's templates/ (never over an existing one), and a generation job run from it."""
from __future__ import annotations

import json

import pytest
import yaml

from sdstudio.config import GenerationJob
from sdstudio.errors import ConfigError
from sdstudio.suggest_prompt import column_statistics, read_examples, suggest_use_case
from sdstudio.usecases import load_use_case
from sdstudio.workflows.sft import GenerationRun
from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import cli
from tests.helpers import fake_spec as spec

DRAFT = {"description": "Customer support tickets labelled with intent and priority.",
         "instruction": "Write a customer support ticket about the topic below and label it:",
         "requirements": ["ticket is 20 to 30 characters", "intent is billing, shipping, account or defect"],
         "output_keys": ["ticket", "intent", "priority", "words", "bad key!"],
         "prompt_field": "ticket", "completion_field": "intent", "topics": ["Refunds", "Late parcels"]}


@pytest.fixture
def tickets(tmp_path):
    path = tmp_path / "tickets.csv"
    path.write_text("ticket,intent,priority,words\nMy parcel never arrived,shipping,high,4\n"
                    "Refund my double charge,billing,high,4\nHow do I reset my password,account,low,6\n"
                    "Where is my invoice for March,billing,medium,6\nThe app crashes on login,defect,high,5\n")
    return path


@pytest.fixture
def server():
    with FakeOpenAIServer(reply=lambda body: json.dumps(DRAFT), flavor="lenient") as fake:
        yield fake


def test_the_statistics_give_types_lengths_ranges_and_categories(tickets, home):
    stats = {s["column"]: s for s in column_statistics(read_examples(tickets, home))}
    assert stats["ticket"]["type"] == "text" and stats["ticket"]["length"] == {"min": 23, "mean": 25, "max": 29}
    assert stats["intent"]["categories"] == {"billing": 2, "account": 1, "defect": 1, "shipping": 1}
    assert (stats["words"]["type"], stats["words"]["min"], stats["words"]["max"]) == ("integer", 4, 6)


def test_the_draft_is_saved_as_a_use_case_with_the_columns_types(tickets, server, home):
    draft = suggest_use_case(tickets, spec(server), home=home)
    assert draft.folder == home / "templates" / "tickets"
    prompt = server.requests[0]["messages"][-1]["content"]
    assert '"categories": {"high": 3, "low": 1, "medium": 1}' in prompt and "My parcel never arrived" in prompt
    case = load_use_case("tickets", home)
    assert case.instruction == DRAFT["instruction"] and case.requirements == DRAFT["requirements"]
    assert (case.prompt_field, case.completion_field) == ("ticket", "intent")
    props = case.output_schema["properties"]
    assert list(props) == ["ticket", "intent", "priority", "words"]  # "bad key!" is no field name
    assert props["priority"] == {"enum": ["high", "low", "medium"]} and props["words"] == {"type": "integer"}
    assert case.examples[0] == {"ticket": "My parcel never arrived", "intent": "shipping", "priority": "high",
                                "words": 4}


def test_an_existing_folder_is_never_overwritten(tickets, server, home):
    first = suggest_use_case(tickets, spec(server), home=home)
    (first.folder / "use_case.yaml").write_text((first.folder / "use_case.yaml").read_text() + "# my edit\n")
    second = suggest_use_case(tickets, spec(server), home=home)
    assert second.folder.name == "tickets-2" and "# my edit" in (first.folder / "use_case.yaml").read_text()
    with pytest.raises(ConfigError, match="exists already .*nothing was overwritten"):
        suggest_use_case(tickets, spec(server), home=home, name="tickets")
    with pytest.raises(ConfigError, match="exists already"):
        suggest_use_case(tickets, spec(server), home=home, name="text2sql")  # a shipped one


def test_the_cli_saves_the_use_case_and_generate_runs_it(tickets, server, home, capsys):
    code = cli("suggest-prompt", "--input", str(tickets), "--name", "support", "--provider", "openai_compatible",
               "--model", "fake-model", "--base-url", server.url, "--json", "--home", str(home))
    assert code == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["name"] == "support" and yaml.safe_load((home / "templates/support/use_case.yaml").read_text())
    with FakeOpenAIServer(flavor="lenient") as answers:  # answers follow the schema the use case asks for
        config = GenerationJob(use_case="support", num_per_topic=1, batch_size=1,
                               model=spec(answers).model_copy())
        result = GenerationRun(config, home=home).run()
    assert (result.status, result.ok) == ("done", 2)


def test_the_dry_run_prints_the_prompt_and_sends_nothing(tickets, server, home, capsys):
    code = cli("suggest-prompt", "--input", str(tickets), "--dry-run", "--provider", "openai_compatible",
               "--model", "fake-model", "--base-url", server.url, "--home", str(home))
    assert code == 0 and '"column": "words", "type": "integer"' in capsys.readouterr().out
    assert server.requests == [] and not (home / "templates" / "tickets").exists()
