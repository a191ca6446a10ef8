"""The generate page's "Draft a use case from example data" (``sdstudio suggest-prompt`` from a notebook): an
upload kept in the home's uploads, the draft shown, its folder saved and selected in the Use case dropdown so the
form shows it, a second draft under the same name refused without touching the first, errors in one line."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import yaml

from sdstudio.ui import GenerateApp
from tests.fakes.openai_server import FakeOpenAIServer
from tests.test_suggest_prompt import DRAFT

TICKETS = (b"ticket,intent,priority,words\nMy parcel never arrived,shipping,high,4\n"
           b"Refund my double charge,billing,high,4\nHow do I reset my password,account,low,6\n"
           b"Where is my invoice for March,billing,medium,6\nThe app crashes on login,defect,high,5\n")


def upload(name: str, content: bytes):
    return ({"name": name, "type": "text/csv", "size": len(content), "last_modified": datetime.now(timezone.utc),
             "content": memoryview(content)},)


@pytest.fixture
def drafting():
    with FakeOpenAIServer(reply=lambda body: json.dumps(DRAFT), flavor="lenient") as fake:
        yield fake


def page(server, home) -> GenerateApp:
    return GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url=server.url)


def test_the_section_is_folded_until_opened(drafting, home):
    box = page(drafting, home).draft_use_case
    assert box.selected_index is None and box.titles == ("Draft a use case from example data",)


def test_a_draft_is_shown_saved_and_selected_for_editing(drafting, home):
    app = page(drafting, home)
    box = app.draft_use_case
    box.upload.value = upload("tickets.csv", TICKETS)
    assert (home / "uploads" / "tickets.csv").read_bytes() == TICKETS  # kept as other uploads are
    box.name.value = "support"
    box.button.click()
    assert "sds-ok" in box.status.value, box.status.value
    assert DRAFT["instruction"] in box.draft.value and "ticket is 20 to 30 characters" in box.draft.value
    assert "ticket (prompt), intent (completion), priority, words" in box.draft.value  # "bad key!" is dropped
    saved = yaml.safe_load((home / "templates" / "support" / "use_case.yaml").read_text())
    assert saved["instruction"] == DRAFT["instruction"] and saved["requirements"] == DRAFT["requirements"]
    assert "support" in app.use_case.options and app.use_case.value == "support"
    assert app.instruction.value == DRAFT["instruction"]  # the form shows the draft, to edit and run
    assert app.requirements.value.splitlines() == DRAFT["requirements"]
    assert app.topics.value.splitlines() == DRAFT["topics"]
    prompt = drafting.requests[0]["messages"][-1]["content"]
    assert '"categories": {"high": 3, "low": 1, "medium": 1}' in prompt  # the CLI's statistics went out
    assert app.config().use_case == "support" and "Refunds" in app.preview.value


def test_a_second_draft_under_the_same_name_does_not_overwrite(drafting, home):
    app = page(drafting, home)
    box = app.draft_use_case
    box.upload.value = upload("tickets.csv", TICKETS)
    box.name.value = "support"
    box.button.click()
    yaml_path = home / "templates" / "support" / "use_case.yaml"
    yaml_path.write_text(yaml_path.read_text() + "# my edit\n")
    app.use_case.value = "code_generation"
    box.button.click()
    assert "sds-error" in box.status.value and "exists already" in box.status.value
    assert "nothing was overwritten" in box.status.value and box.status.value.count("\n") == 0
    assert "# my edit" in yaml_path.read_text() and app.use_case.value == "code_generation"
    assert box.draft.value == ""
    box.name.value = ""  # without a name the next free one is taken
    box.button.click()
    assert app.use_case.value == "tickets" and (home / "templates" / "tickets" / "use_case.yaml").is_file()
    box.button.click()
    assert app.use_case.value == "tickets-2" and "# my edit" in yaml_path.read_text()


def test_errors_show_in_one_line(home):
    with FakeOpenAIServer(reply=lambda body: '{"instruction": 3}', flavor="lenient") as server:
        app = page(server, home)
        box = app.draft_use_case
        box.button.click()
        assert "sds-error" in box.status.value and "upload a CSV" in box.status.value
        assert server.requests == []
        box.upload.value = upload("empty.csv", b"")
        box.button.click()
        assert "sds-error" in box.status.value and "\n" not in box.status.value
        box.upload.value = upload("tickets.csv", TICKETS)
        box.button.click()
        assert "sds-error" in box.status.value and "not the JSON asked for" in box.status.value
        assert "\n" not in box.status.value
    assert not (home / "templates" / "tickets").exists() and app.use_case.value == "code_generation"
