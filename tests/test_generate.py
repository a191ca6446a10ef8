"""SFT / freeform generation: the seed's prompt, template errors, and runs against the real fake server."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdstudio.config import GenerationJob, ModelParameters, ModelSpec, RunSettings
from sdstudio.errors import ConfigError
from sdstudio.templates import TemplateError
from sdstudio.workflows.plan import GenerationPlan
from sdstudio.workflows.sft import GenerationRun, preview
from tests.fakes.openai_server import requested_schema

DATA = Path(__file__).parent / "data"
SEED_EXAMPLE = json.loads((DATA / "seed_complete_prompt.txt").read_text().split("<examples>\n")[1]
                          .split("\n</examples>")[0])
SEED_REQUIREMENTS = ["Each solution must include working code examples", "Include explanations with the code",
                     "Follow the same format as the examples",
                     "Ensure code is properly formatted with appropriate indentation"]
FAST = RunSettings(backoff_base_s=0.01, backoff_max_s=0.05, concurrency=8)


def job_for(server, **fields) -> GenerationJob:
    spec = ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url,
                     parameters=ModelParameters(max_tokens=800))
    return GenerationJob(model=spec, run=FAST, **fields)


def run(server, store, **fields):
    return GenerationRun(job_for(server, **fields), store=store).run()


def items_reply(make_items):
    """A fake-server reply that answers each call with ``make_items(count, body)`` as {"items": [...]}."""
    def reply(body):
        schema = requested_schema(body)
        count = schema["properties"]["items"]["minItems"] if "items" in schema.get("properties", {}) else 1
        items = make_items(count, body)
        return json.dumps({"items": items} if count > 1 else items[0])
    return reply


# -- the seed's prompt ----------------------------------------------------------------------------

def test_the_seed_complete_prompt_example_comes_out_of_the_code_generation_template():
    job = GenerationJob(use_case="code_generation", topics=["Depth-First Search traversal in graphs"],
                        examples=[SEED_EXAMPLE], requirements=SEED_REQUIREMENTS, num_per_topic=1, batch_size=1)
    prompt = GenerationPlan.build(job).prompt("Depth-First Search traversal in graphs", 1)
    assert prompt == (DATA / "seed_complete_prompt.txt").read_text().rstrip("\n")
    # the seed's structure, line for line outside the examples block
    tail = prompt.split("</examples>\n", 1)[1].splitlines()
    assert tail == ["", "Write a programming question-pair for the following topic:", "",
                    '"""Requirements:', *[f"- {r}" for r in SEED_REQUIREMENTS[:-1]],
                    f'- {SEED_REQUIREMENTS[-1]}"""', "<topic>Depth-First Search traversal in graphs</topic>"]


def test_a_batch_prompt_asks_for_k_items_and_lists_what_to_avoid():
    plan = GenerationPlan.build(GenerationJob(topics=["Tries"], num_per_topic=5, batch_size=5))
    prompt = plan.prompt("Tries", 5, ["How do you insert into a trie?"])
    assert "Write 5 different items" in prompt and "- How do you insert into a trie?" in prompt
    assert plan.reply_schema(5)["properties"]["items"]["minItems"] == 5


# -- bad input, before any call -------------------------------------------------------------------

def user_use_case(home: Path, name: str, template: str) -> None:
    folder = home / "templates" / name
    folder.mkdir(parents=True)
    (folder / "use_case.yaml").write_text(f"name: {name}\ntopics: [a]\noutput_schema: {{type: object}}\n")
    (folder / "generate.jinja").write_text(template)
    (folder / "evaluate.jinja").write_text("{{ prompt }}")


def test_an_undefined_template_variable_is_named(home):
    user_use_case(home, "mine", "<topic>{{ topic }}</topic> {{ tone_of_voice }}")
    with pytest.raises(ConfigError, match="tone_of_voice"):
        GenerationPlan.build(GenerationJob(use_case="mine"))


def test_a_template_syntax_error_names_the_line(home):
    user_use_case(home, "broken", "line one\n{{ topic }\n")
    with pytest.raises(TemplateError, match="line 2"):
        GenerationPlan.build(GenerationJob(use_case="broken"))


@pytest.mark.parametrize("escape", ["{{ topic.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
                                    "{{ ''.__class__.__base__.__subclasses__() }}"])
def test_a_sandbox_escape_in_a_user_template_is_refused(home, escape):
    user_use_case(home, "evil", "<topic>{{ topic }}</topic>" + escape)
    with pytest.raises(TemplateError, match="sandbox|unsafe|undefined"):
        GenerationPlan.build(GenerationJob(use_case="evil"))


def test_bad_job_settings_fail_with_one_line_before_any_call(openai_server, store):
    with pytest.raises(ConfigError, match="unknown use case 'nope'"):
        run(openai_server, store, use_case="nope")
    for bad in ({"topics": ["  "]}, {"num_per_topic": 0}, {"batch_size": -1}):
        with pytest.raises(Exception) as info:
            job_for(openai_server, **bad)
        assert "\n" not in str(info.value).strip() or "validation error" in str(info.value)
    assert openai_server.requests == []


# -- runs on the fake OpenAI-compatible server ----------------------------------------------------

def test_a_run_stores_every_item_with_its_topic_and_the_job_metadata(openai_server, store):
    result = run(openai_server, store, topics=["QuickSort", "Tries"], num_per_topic=3, batch_size=3)
    assert (result.status, result.ok, result.failed) == ("done", 6, 0)
    rows = list(store.records("generation", result.job_id, "ok"))
    assert sorted(r["topic"] for r in rows) == ["QuickSort"] * 3 + ["Tries"] * 3
    assert all(set(r["output"]) == {"question", "solution", "explanation"} for r in rows)
    job = store.get_job("generation", result.job_id)
    assert job["model_id"] == "fake-model" and job["inference_type"] == "openai_compatible"
    assert job["topics"] == ["QuickSort", "Tries"] and job["examples"][0]["question"].startswith("How do you read")
    assert "<topic>{{ topic }}</topic>" in job["prompt_template"]
    assert job["config"]["num_per_topic"] == 3 and job["requested"] == 6 and job["tokens_in"] > 0


def test_only_the_shortfall_is_asked_again_with_the_earlier_items_to_avoid(openai_server, store):
    calls = []

    def make(count, body):  # the first call returns one good item and one without a solution
        calls.append(count)
        n = len(calls)
        good = [{"question": f"Question number {n}-{i}?", "solution": f"solution {n}-{i} code",
                 "explanation": "because"} for i in range(count)]
        if n == 1:
            good[1] = {"question": "A question with no solution?", "explanation": "x"}
        return good

    openai_server.reply = items_reply(make)
    result = run(openai_server, store, topics=["Heaps"], num_per_topic=2, batch_size=2)
    assert calls == [2, 1]  # round 1 asked for the one missing item only
    assert "- Question number 1-0?" in openai_server.requests[1]["messages"][-1]["content"]
    assert (result.ok, result.failed, result.filtered) == (2, 0, 1)  # the bad item was asked again: superseded
    (bad,) = store.records("generation", result.job_id, "filtered")
    assert bad["error"].startswith("asked again in round 1: ") and "solution" in bad["error"] and bad["raw_text"]


def test_planted_duplicates_are_filtered_and_replaced(openai_server, store):
    calls = []

    def make(count, body):
        calls.append(count)
        if len(calls) == 1:  # an exact and a near duplicate of the first item
            base = "How do you reverse a singly linked list in place without extra memory in Python?"
            return [{"question": base, "solution": "code one two", "explanation": "e"},
                    {"question": base.upper(), "solution": "code two three", "explanation": "e"},
                    {"question": base.replace("Python", "Python 3"), "solution": "code three four", "explanation": "e"}]
        return [{"question": f"A fresh question {len(calls)}-{i} about lists?", "solution": "solution text", "explanation": "e"}
                for i in range(count)]

    openai_server.reply = items_reply(make)
    result = run(openai_server, store, topics=["Lists"], num_per_topic=3, batch_size=3)
    assert (result.ok, result.filtered) == (3, 2) and calls == [3, 2]
    errors = sorted(r["error"] for r in store.records("generation", result.job_id, "filtered"))
    assert errors[0].startswith("duplicate of record #") and "exact" in errors[0] and "near" in errors[1]


def test_text2sql_rejects_sql_that_names_a_missing_table(openai_server, store):
    def make(count, body):
        assert "CREATE TABLE customers" in body["messages"][-1]["content"]  # the schema is in the prompt
        return [{"question": "How many customers are there?", "sql": "SELECT COUNT(*) FROM customers;",
                 "explanation": "count rows"},
                {"question": "What is the total of all invoices?", "sql": "SELECT SUM(total) FROM invoices",
                 "explanation": "sum"}][:count]

    openai_server.reply = items_reply(make)
    result = run(openai_server, store, use_case="text2sql", topics=["Counting"], num_per_topic=2, batch_size=2,
                 max_rounds=0)
    (bad,) = store.records("generation", result.job_id, "failed")
    assert "invoices" in bad["error"] and result.ok == 1


def test_freeform_rows_keep_the_example_keys_and_types(openai_server, store):
    examples = [{"product": "Kettle", "price_usd": 34.99, "in_stock": True}]
    result = run(openai_server, store, use_case="freeform", examples=examples, topics=["Garden"],
                 num_per_topic=4, batch_size=4, dedup_threshold=None)
    schema = requested_schema(openai_server.requests[0])["properties"]["items"]["items"]
    assert schema["properties"] == {"product": {"type": "string"}, "price_usd": {"type": "number"},
                                    "in_stock": {"type": "boolean"}}
    rows = [r["output"] for r in store.records("generation", result.job_id, "ok")]
    assert len(rows) == 4 and all(isinstance(r["in_stock"], bool) and set(r) == set(examples[0]) for r in rows)


def test_rerunning_a_finished_job_sends_nothing_and_finds_the_same_job(openai_server, store):
    first = run(openai_server, store, topics=["Graphs", "Sorting"], num_per_topic=4, batch_size=2)
    sent = len(openai_server.requests)
    again = run(openai_server, store, topics=["Graphs", "Sorting"], num_per_topic=4, batch_size=2)
    assert len(openai_server.requests) == sent and again.job_id == first.job_id and again.resumed
    assert (again.ok, again.requests_sent) == (first.ok, 0)


def test_preview_shows_the_first_prompt_and_estimates_without_a_call(openai_server):
    shown = preview(job_for(openai_server, topics=["Tries", "Heaps"], num_per_topic=10, batch_size=5))
    assert "<topic>Tries</topic>" in shown.prompt and shown.requests == 4 and shown.items == 20
    assert shown.prompt_tokens > 50 and shown.est_tokens_in >= 4 * shown.prompt_tokens * 0.9
    assert openai_server.requests == []


@pytest.mark.slow
def test_a_small_run_on_the_embedded_model(store):
    job = GenerationJob(topics=["Reversing a string in Python"], num_per_topic=1, batch_size=1, max_rounds=1,
                        model=ModelSpec(parameters=ModelParameters(max_tokens=200, temperature=0.2, seed=7)))
    result = GenerationRun(job, store=store).run()
    rows = list(store.records("generation", result.job_id))
    assert result.status == "done" and rows
    assert all(r["status"] == "ok" and set(r["output"]) >= {"question", "solution"} or r["error"] for r in rows)
    assert store.get_job("generation", result.job_id)["model_id"] == "SmolLM2-135M-Instruct.Q4_1"


def test_the_custom_use_case_takes_the_users_instruction_and_output_keys(openai_server, store):
    result = run(openai_server, store, use_case="custom", topics=["Refunds"], num_per_topic=2, batch_size=2,
                 instruction="Write a customer email and the agent's reply about:", output_keys=["email", "reply"],
                 requirements=["Be polite"], examples=[{"email": "Where is my parcel?", "reply": "On its way."}])
    body = openai_server.requests[0]
    assert "Write a customer email and the agent's reply about:" in body["messages"][-1]["content"]
    assert requested_schema(body)["properties"]["items"]["items"]["required"] == \
        ["email", "reply"]
    rows = [r["output"] for r in store.records("generation", result.job_id, "ok")]
    assert len(rows) == 2 and all(set(r) == {"email", "reply"} for r in rows)
