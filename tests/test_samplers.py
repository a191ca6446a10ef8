"""Attribute samplers: the forms a dimension is written in, reproducible draws whose frequencies follow the
weights (chi-square over 10,000 draws), conditional dimensions, @files, and a generation job on the fake
server whose prompts show the draws and whose records keep them."""
from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from scipy.stats import chisquare

from sdstudio.config import GenerationJob, ModelParameters, ModelSpec, RunSettings
from sdstudio.errors import ConfigError
from sdstudio.samplers import AttributeSampler, parse_flag
from sdstudio.workflows.jobs import config_hash
from sdstudio.workflows.plan import GenerationPlan
from sdstudio.workflows.sft import GenerationRun, preview
from tests.test_config_identity import cli_config

FAST = RunSettings(backoff_base_s=0.01, backoff_max_s=0.05, concurrency=4)
DRAWS = 10_000
P_FLOOR = 1e-4  # a sampler that follows its weights fails this about once in 10,000 runs; a wrong one always


def job_for(server, **fields) -> GenerationJob:
    spec = ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url,
                     parameters=ModelParameters(max_tokens=800))
    return GenerationJob(model=spec, run=FAST, **fields)


def counts_fit(observed: Counter, expected: dict[str, float]) -> float:
    """The chi-square test's p-value of ``observed`` counts against the ``expected`` probabilities."""
    values = list(expected)
    assert set(observed) <= set(values), f"drew values outside {values}: {set(observed) - set(values)}"
    total = sum(observed.values())
    return chisquare([observed[v] for v in values], [expected[v] * total for v in values]).pvalue


# -- the forms of a dimension ------------------------------------------------------------------------

def test_a_list_a_weight_mapping_and_the_full_form_are_one_config():
    short = GenerationJob(attributes={"level": {"easy": 2, "hard": 1}, "tone": ["dry", "warm"]})
    full = GenerationJob(attributes={"level": {"values": ["easy", "hard"], "weights": [2, 1]},
                                     "tone": {"values": ["dry", "warm"], "weights": [5, 5]}})
    assert short.model_dump(mode="json") == full.model_dump(mode="json")
    assert full.model_dump(mode="json")["attributes"]["tone"] == {"values": ["dry", "warm"]}  # equal: uniform


def test_a_job_without_attributes_has_the_config_and_hash_it_had_before_they_existed():
    job = GenerationJob(topics=["Heaps"])
    dumped = job.model_dump(mode="json", exclude={"run"})
    assert "attributes" not in dumped and "seed" not in dumped
    assert config_hash(job) == config_hash(GenerationJob.model_validate(dumped))
    assert config_hash(GenerationJob(topics=["Heaps"], seed=1)) != config_hash(job)


@pytest.mark.parametrize("attributes, words", [
    ({"level": []}, "no values"),
    ({"level": ["easy", "easy"]}, "listed twice"),
    ({"level": {"values": ["a", "b"], "weights": [1]}}, "1 weights for 2 values"),
    ({"level": {"a": 0, "b": 0}}, "not all 0"),
    ({"two words": ["a"]}, "not a template variable name"),
    ({"depth": {"given": "level", "cases": {"a": ["x"]}}}, "given 'level', which is not an attribute"),
    ({"a": {"given": "b", "cases": {"x": ["1"]}}, "b": {"given": "a", "cases": {"1": ["x"]}}}, "circle"),
    ({"depth": {"given": "level"}, "level": ["a"]}, "go together"),
])
def test_a_mistaken_dimension_is_refused_with_its_name_and_the_problem(attributes, words):
    with pytest.raises(ValueError, match=words):
        GenerationJob(attributes=attributes)


def test_the_attribute_flag_reads_values_weights_and_files():
    assert parse_flag("level=easy,medium,hard") == ("level", {"values": ["easy", "medium", "hard"]})
    assert parse_flag("level=easy:3,hard:1") == ("level", {"values": ["easy", "hard"], "weights": [3.0, 1.0]})
    assert parse_flag("time=10:30,noon") == ("time", {"values": ["10:30", "noon"]})  # a colon in a value stays
    assert parse_flag("persona=@personas.txt") == ("persona", {"values": "@personas.txt"})
    with pytest.raises(ConfigError, match="expected NAME=v1,v2,v3"):
        parse_flag("level")


# -- draws ----------------------------------------------------------------------------------------------

def test_the_same_seed_and_request_draw_the_same_combination_and_another_seed_others():
    spec = {"level": ["easy", "medium", "hard"], "tone": {"dry": 1, "warm": 3}}
    first = [AttributeSampler.build(spec, seed=7).draw(f"t|0|{i}") for i in range(200)]
    again = [AttributeSampler.build(spec, seed=7).draw(f"t|0|{i}") for i in range(200)]
    other = [AttributeSampler.build(spec, seed=8).draw(f"t|0|{i}") for i in range(200)]
    assert first == again and first != other
    assert all(list(d) == ["level", "tone"] for d in first)


def test_10000_draws_follow_the_weights_by_chi_square():
    sampler = AttributeSampler.build({"level": {"easy": 5, "medium": 3, "hard": 2},
                                      "persona": ["a", "b", "c", "d"]}, seed=1)
    draws = [sampler.draw(f"topic|0|{i}") for i in range(DRAWS)]
    for name in ("level", "persona"):
        assert counts_fit(Counter(d[name] for d in draws), sampler.expected(name)) > P_FLOOR
    skewed = {"easy": 1 / 3, "medium": 1 / 3, "hard": 1 / 3}  # the test has the power to see wrong weights
    assert counts_fit(Counter(d["level"] for d in draws), skewed) < 1e-9


def test_a_conditional_dimension_follows_its_case_for_each_value_it_is_given():
    sampler = AttributeSampler.build({
        "level": {"easy": 1, "hard": 1},
        "steps": {"given": "level", "cases": {"easy": ["one"], "hard": {"three": 1, "five": 3}}},
    }, seed=3)
    draws = [sampler.draw(str(i)) for i in range(DRAWS)]
    assert {d["steps"] for d in draws if d["level"] == "easy"} == {"one"}
    hard = Counter(d["steps"] for d in draws if d["level"] == "hard")
    assert counts_fit(hard, sampler.expected("steps", "hard")) > P_FLOOR
    assert sampler.expected("steps", "hard") == {"three": 0.25, "five": 0.75}


def test_a_value_without_a_case_takes_the_fallback_values_or_is_refused():
    spec = {"level": ["easy", "hard"], "steps": {"given": "level", "cases": {"hard": ["five"]}}}
    with pytest.raises(ConfigError, match="no case for level = 'easy'"):
        AttributeSampler.build(spec)
    spec["steps"]["values"] = ["two"]
    sampler = AttributeSampler.build(spec)
    assert {d["steps"] for d in map(sampler.draw, map(str, range(200))) if d["level"] == "easy"} == {"two"}
    with pytest.raises(ConfigError, match="case 'medium' is not a value of level"):
        AttributeSampler.build({"level": ["easy"], "steps": {"given": "level", "cases": {"medium": ["x"]}}})


def test_a_file_of_values_is_read_one_a_line_and_the_shipped_personas_are_found(tmp_path, home):
    (tmp_path / "moods.txt").write_text("# moods\ncalm\n\nangry\ncalm\n")
    sampler = AttributeSampler.build({"mood": f"@{tmp_path / 'moods.txt'}"})
    assert sampler.expected("mood") == {"calm": 0.5, "angry": 0.5}
    plan = GenerationPlan.build(GenerationJob(use_case="persona_qa"), home)
    assert len(plan.sampler.expected("persona")) >= 20
    with pytest.raises(ConfigError, match="@nowhere.txt not found"):
        GenerationPlan.build(GenerationJob(attributes={"persona": "@nowhere.txt"}), home)


# -- prompts and records ---------------------------------------------------------------------------------

def test_a_template_that_names_no_attribute_gets_them_after_its_prompt_and_one_that_does_shows_them(home):
    plan = GenerationPlan.build(GenerationJob(attributes={"level": ["hard"]}, topics=["Heaps"]), home)
    assert plan.prompt("Heaps", 1, attributes=plan.draw("Heaps", 0, 0)).endswith(
        "Write for these attributes:\n- level: hard")
    shipped = GenerationPlan.build(GenerationJob(use_case="graded_exercises", seed=5), home)
    drawn = shipped.draw("Recursion", 0, 0)
    prompt = shipped.prompt("Recursion", 1, attributes=drawn)
    assert f"<level>{drawn['level']}</level>" in prompt and "Write for these attributes" not in prompt


def test_an_attribute_may_not_take_the_name_of_a_template_variable(home):
    with pytest.raises(ConfigError, match="attribute 'topic' has the name of a template variable"):
        GenerationPlan.build(GenerationJob(attributes={"topic": ["x"]}), home)


def test_the_cli_flags_and_the_config_file_are_one_job(openai_server, home, tmp_path):
    flags = ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", openai_server.url]
    typed = cli_config("generate", *flags, "--attribute", "level=easy:2,hard:1", "--attribute", "tone=dry,warm",
                       "--seed", "4", home=home)
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps({"kind": "generation", "seed": 4, "attributes": {
        "level": {"easy": 2, "hard": 1}, "tone": ["dry", "warm"]}}))
    assert config_hash(typed) == config_hash(cli_config("generate", *flags, "--config", str(config), home=home))
    assert typed.attributes["level"].weights == [2.0, 1.0] and typed.seed == 4


def test_records_keep_the_draw_their_prompt_showed_and_a_rerun_asks_nothing_again(openai_server, store, home):
    config = job_for(openai_server, topics=["Heaps", "Tries"], num_per_topic=4, batch_size=1, seed=11,
                     dedup_threshold=None,  # every reply kept: the draws shown and the draws kept are one list
                     attributes={"level": {"easy": 1, "hard": 1}, "tone": ["dry", "warm", "kind"]})
    result = GenerationRun(config, store=store, home=home).run()
    assert (result.status, result.ok) == ("done", 8)
    shown = {}
    for body in openai_server.requests:
        prompt = body["messages"][-1]["content"]
        topic = re.search(r"<topic>(.*)</topic>", prompt).group(1)
        drawn = dict(re.findall(r"^- (level|tone): (.*)$", prompt, re.M))
        shown.setdefault(topic, []).append(drawn)
    rows = list(store.records("generation", result.job_id, "ok"))
    for topic in ("Heaps", "Tries"):
        kept = [r["provenance"]["attributes"] for r in rows if r["topic"] == topic]
        assert sorted(map(str, kept)) == sorted(map(str, shown[topic]))
    sent = len(openai_server.requests)
    again = GenerationRun(config, store=store, home=home).run()
    assert (again.job_id, again.requests_sent, len(openai_server.requests)) == (result.job_id, 0, sent)


def test_the_preview_lists_the_dimensions_and_their_chances(openai_server, home):
    shown = preview(job_for(openai_server, use_case="graded_exercises"), home=home)
    assert "level: beginner 50%, intermediate 33%, advanced 17%" in shown.attributes
    assert "<exercise_type>" in shown.prompt


# -- the Generate page ------------------------------------------------------------------------------------

def test_attributes_typed_on_the_generate_page_are_the_job_of_the_attribute_flags(openai_server, home):
    from sdstudio.ui import GenerateApp

    model = {"provider": "openai_compatible", "model": "fake-model", "base_url": openai_server.url}
    flags = ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", openai_server.url]
    app = GenerateApp(home=home, **model)
    app.attributes.value = "level: {easy: 2, hard: 1}\ntone: [dry, warm]"
    app.seed.value = "4"
    typed = cli_config("generate", *flags, "--attribute", "level=easy:2,hard:1", "--attribute", "tone=dry,warm",
                       "--seed", "4", home=home)
    assert config_hash(app.config()) == config_hash(typed)
    assert "Write for these attributes:" in app.preview.value


def test_a_use_cases_attributes_fill_the_box_and_left_alone_are_the_job_without_attribute_flags(openai_server, home):
    from sdstudio.ui import GenerateApp

    app = GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url=openai_server.url,
                      use_case="graded_exercises")
    assert app.attributes.value.startswith("level: {beginner: 3, intermediate: 2, advanced: 1}")
    assert app.config().attributes is None and "&lt;level&gt;" in app.preview.value
    app.attributes.value = "level: [beginner"
    assert "attributes are not valid YAML" in app.estimate.value
