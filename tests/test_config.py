"""Job configs: YAML round-trip, and errors that name the offending key."""
from __future__ import annotations

import pytest

from sdstudio.config import EvaluationJob, ExportJob, GenerationJob, ModelSpec, load_config
from sdstudio.errors import ConfigError


def test_generation_config_round_trips_through_yaml(tmp_path):
    job = GenerationJob(topics=["DFS", "QuickSort"], num_per_topic=3,
                        model=ModelSpec(provider="openai_compatible", model="m", base_url="http://x/v1"))
    path = tmp_path / "job.yaml"
    path.write_text(job.to_yaml())
    assert load_config(path) == job
    assert GenerationJob.from_yaml(path) == job


def test_every_job_kind_loads_by_its_kind_key():
    assert isinstance(load_config({"kind": "evaluation", "source_job": 1}), EvaluationJob)
    assert isinstance(load_config({"kind": "export", "jobs": [1], "style": "dpo"}), ExportJob)


def test_unknown_key_is_rejected_and_named(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("kind: generation\nmodel:\n  parameters:\n    temprature: 0.2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'temprature' at model\.parameters\.temprature"):
        load_config(path)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"num_per_topic"):
        load_config({"kind": "generation", "num_per_topic": -3})


def test_missing_file_and_bad_yaml_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: generation\ntopics: [a, b\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(bad)


def test_empty_topic_list_is_refused():
    with pytest.raises(ConfigError, match="topic list is empty"):
        load_config({"kind": "generation", "topics": ["  "]})


def test_bad_scale_is_refused():
    with pytest.raises(ConfigError, match="scale 5-1 is empty"):
        load_config({"kind": "evaluation", "source_job": 1, "scale": [5, 1]})


def test_a_key_pasted_as_api_key_env_is_refused():
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        load_config({"kind": "generation", "model": {"api_key_env": "sk-abc123/xyz"}})


def test_a_billion_laughs_config_is_one_error_not_gigabytes(tmp_path):
    lines = ["kind: generation", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config(path)
