"""Topic suggestions (``sdstudio topics``): a taxonomy asked of the fake server, near-duplicates removed, the
shortfall asked again, rows of the user's file in the prompt, and a topics file ``generate`` reads."""
from __future__ import annotations

import json

import pytest

from sdstudio.commands.generate import read_topics
from sdstudio.errors import SdstudioError
from sdstudio.topics import suggest_topics
from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import cli
from tests.helpers import fake_spec as spec

FIRST = {"categories": [
    {"category": "Querying", "topics": ["Window functions for ranking rows", "Window functions for ranking row",
                                        "Recursive CTEs for hierarchies"]},
    {"category": "Modelling", "topics": ["Star schema design for sales", "Implementation of QuickSort algorithm"]},
]}
SECOND = {"categories": [{"category": "Performance", "topics": ["Choosing composite indexes", "Reading query plans",
                                                                "Partitioning large tables"]}]}


def prompts(server) -> list[str]:
    return [body["messages"][-1]["content"] for body in server.requests]


@pytest.fixture
def scripted():
    replies = [FIRST, SECOND]

    def reply(body):
        return json.dumps(replies.pop(0) if replies else SECOND)

    with FakeOpenAIServer(reply=reply, flavor="lenient") as server:
        yield server


def test_near_duplicates_and_shipped_topics_are_removed_and_the_shortfall_is_asked_again(scripted, home):
    taxonomy = suggest_topics("code_generation", 6, spec(scripted), home=home)
    assert taxonomy.requests == 2 and len(taxonomy.topics) == 6
    assert ("Window functions for ranking row", "Window functions for ranking rows") in taxonomy.removed
    assert any(t == "Implementation of QuickSort algorithm" for t, _ in taxonomy.removed)  # a shipped topic
    assert list(taxonomy.categories) == ["Querying", "Modelling", "Performance"]
    first, second = prompts(scripted)
    assert "Propose 8 new, distinct topics" in first  # 6 and a margin for repeats and "categories" in first
    assert "Already chosen" in second and "- Recursive CTEs for hierarchies" in second


def test_topics_are_kept_in_turn_from_each_category_when_more_came_than_asked(scripted, home):
    taxonomy = suggest_topics("code_generation", 2, spec(scripted), home=home)
    assert taxonomy.categories == {"Querying": ["Window functions for ranking rows"],
                                   "Modelling": ["Star schema design for sales"]}
    assert taxonomy.requests == 1


def test_rows_of_the_users_file_are_the_examples_the_model_sees(scripted, home, tmp_path):
    data = tmp_path / "tickets.csv"
    data.write_text("ticket,intent\nMy parcel never arrived,shipping_status\nRefund my double charge,billing\n")
    suggest_topics("support_tickets", 3, spec(scripted), home=home, examples_file=data)
    first = prompts(scripted)[0]
    assert '{"ticket": "My parcel never arrived", "intent": "shipping_status"}' in first
    assert "I was charged twice" not in first  # the use case's own example is not shown


def test_the_cli_writes_a_topics_file_that_generate_reads(scripted, home, tmp_path, capsys):
    out = tmp_path / "topics.txt"
    code = cli("topics", "--use-case", "code_generation", "--count", "6", "--provider", "openai_compatible",
               "--model", "fake-model", "--base-url", scripted.url, "--output", str(out), "--home", str(home))
    assert code == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("# Querying\nWindow functions for ranking rows")
    assert "6 topics in 3 categories, 2 near-duplicates removed" in printed.err
    assert len(read_topics(str(out))) == 6 and "Choosing composite indexes" in read_topics(str(out))


def test_the_dry_run_prints_the_prompt_and_sends_nothing(scripted, home, capsys):
    code = cli("topics", "--count", "4", "--provider", "openai_compatible", "--model", "fake-model", "--base-url",
               scripted.url, "--dry-run", "--home", str(home))
    assert code == 0 and "Propose 4 new, distinct topics" in capsys.readouterr().out
    assert scripted.requests == []


def test_a_reply_that_is_not_a_taxonomy_is_asked_again_then_refused_in_one_line(home, capsys):
    with FakeOpenAIServer(reply=lambda body: '{"topics": "none"}', flavor="lenient") as server:
        with pytest.raises(SdstudioError, match="not the JSON asked for after 3 tries"):
            suggest_topics("code_generation", 3, spec(server), home=home)
        assert len(server.requests) == 3
        code = cli("topics", "--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url,
                   "--home", str(home))
    assert code == 2 and capsys.readouterr().err.count("\n") == 1


def test_suggest_topics_on_the_generate_page_fills_the_topics_box_to_edit(scripted, home):
    from sdstudio.ui import GenerateApp

    app = GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url=scripted.url)
    app.suggest_count.value = 3
    app.suggest_button.click()
    assert app.topics.value.splitlines() == ["Window functions for ranking rows", "Recursive CTEs for hierarchies",
                                             "Star schema design for sales"]
    assert "3 topics in Querying (2); Modelling (1)" in app.suggest_status.value
    assert app.config().topics == app.topics.value.splitlines()  # what the box holds is the job's, as typed
