"""environment.yml must describe the same environment as pyproject.toml (conda users get what pip gets)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = env["dependencies"]
    pythons = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert pythons == ["python=3.11"]
    assert project["requires-python"] == ">=3.11"
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    # the package list lives in pyproject only: conda installs the project and its dev extra from it
    assert pip_section == ["-c constraints.txt", "-e .[dev]"]  # at the lock's versions (`make lock`)
    assert "dev" in project["optional-dependencies"]
    conda_packages = {d.split("=")[0] for d in deps if isinstance(d, str)}
    assert conda_packages == {"python", "pip"}


def test_readme_shows_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make studio" in first_block and "make test" in first_block
