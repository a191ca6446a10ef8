"""What `sdstudio generate` loads before its first request: only what it uses (issue 24). Each check runs in a
fresh interpreter, so the modules it finds loaded are the ones the import under test pulled in."""
from __future__ import annotations

import json
import subprocess
import sys

import sdstudio.config as config


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_the_config_module_loads_a_workflow_familys_configs_when_one_is_used():
    loaded = loaded_after("import sdstudio.config")
    assert not {m for m in loaded if m.startswith("sdstudio.configs.")}
    loaded = loaded_after("from sdstudio.config import GenerationJob")
    assert "sdstudio.configs.generation" in loaded and "sdstudio.configs.alignment" not in loaded


def test_every_reexported_config_name_is_the_configs_modules_own():
    import importlib

    for name, family in config._REEXPORTS.items():
        assert getattr(config, name) is getattr(importlib.import_module(f"sdstudio.configs.{family}"), name)
    assert set(config._REEXPORTS) <= set(config.__all__) and set(config._REEXPORTS) <= set(dir(config))
    namespace: dict = {}
    exec("from sdstudio.config import *", namespace)
    assert set(config.__all__) <= set(namespace)


def test_checking_a_use_cases_schema_and_its_items_needs_no_jsonschema():
    loaded = loaded_after("from sdstudio.usecases import load_use_case\n"
                          "from sdstudio.parsing import parse_items\n"
                          "case = load_use_case('code_generation', None)\n"
                          "item = {'question': 'q' * 20, 'solution': 's' * 20, 'explanation': 'e'}\n"
                          "assert parse_items(json.dumps(item), case.output_schema).valid == [item]\n"
                          .replace("json.dumps", "__import__('json').dumps"))
    assert "jsonschema" not in loaded
