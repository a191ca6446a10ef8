"""Workflows register themselves: the CLI, config loading and the notebook apps are built from one list,
and a new workflow is one module plus one registry line (tests/plugins/toy_workflow.py is such a module)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from sdstudio.cli import build_parser, main
from sdstudio.config import load_config
from sdstudio.store import Store
from sdstudio.workflows import registry
from tests.plugins import toy_workflow

PACKAGE = Path(__file__).resolve().parents[1] / "sdstudio"


@pytest.fixture
def toy():
    registry.register(toy_workflow.ENTRY)
    yield toy_workflow.ENTRY
    registry.unregister(toy_workflow.KIND)


def test_every_registered_workflow_has_its_config_subcommand_app_and_notebook():
    subcommands = build_parser()._subparsers._group_actions[0].choices
    for entry in registry.WORKFLOWS:
        assert registry.config_class(entry.kind).model_fields["kind"].default == entry.kind
        assert entry.command.rpartition(".")[2] in subcommands
        import sdstudio.ui as ui

        assert entry.app.partition(":")[2] in ui.__all__
        assert (PACKAGE.parent / "notebooks" / entry.notebook).is_file()


def test_a_workflow_added_by_one_registry_line_runs_from_the_cli_as_a_job(toy, openai_server, home):
    code = main(["toy", "--words", "lantern", "harbour", "--provider", "openai_compatible", "--model", "fake-model",
                 "--base-url", openai_server.url, "--json"])
    assert code == 0
    store = Store.open(home)
    assert [tuple(r) for r in store.connection().execute("SELECT kind, status, ok FROM jobs")] == [("toy", "done", 2)]
    assert {r["topic"] for r in store.records("generation", 1)} == {"lantern", "harbour"}
    assert load_config({"kind": "toy", "words": ["x"]}).words == ["x"]
    assert "toy" in registry.kinds()


def test_an_unknown_kind_names_the_registered_ones(tmp_path):
    from sdstudio.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown kind 'nope'.*generation, documents, workflow, alignment"):
        load_config({"kind": "nope"})


def test_no_list_of_workflow_kinds_is_written_outside_the_registry():
    """A tuple or list literal naming three or more workflow kinds is a second list to keep in step."""
    kinds = [w.kind for w in registry.WORKFLOWS]
    quoted = "|".join(re.escape(k) for k in kinds)
    pattern = re.compile(rf"[\(\[{{]\s*(?:[\"'](?:{quoted})[\"']\s*[,:][^\n\]\)}}]*?){{3,}}")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "registry.py" or "store" in path.parts:  # the store's families are not workflow kinds
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
