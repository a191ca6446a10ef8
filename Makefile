# Two commands a newcomer needs: `make studio` and `make test`. Everything else is plumbing for them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# The lock: the versions `make test` passed with. Every install here (and environment.yml, and the Cloudera AI
# AMP's install task cml/install.py) takes them, so a fresh install months later gets what was tested.
LOCK   := constraints.txt
HOST   ?= 127.0.0.1
PORT   ?= 8866
# llama-cpp-python builds from source; skip the parts of llama.cpp we never run so the build stays short.
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: studio lab test install install-dev browser java bench bench-generate clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel

# Stamps make a second install free: pip only runs again when pyproject.toml or the lock changes.
$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

studio: install
	$(BIN)/sdstudio serve --host $(HOST) --port $(PORT)

# The same notebooks as a workbench: each app's `app.results` is a DataFrame for the next cell.
LAB_PORT ?= 8888
lab: install
	$(BIN)/jupyter lab --ServerApp.ip=$(HOST) --ServerApp.port=$(LAB_PORT) --ServerApp.root_dir=notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root)

# The browser test drives Debian's Chromium (Playwright's own browser download does not work here).
browser:
	@command -v chromium >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" -ne 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The Spark executor's tests run Spark in local[2], which needs a Java runtime: Debian's headless JRE.
java:
	@command -v java >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" -ne 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq default-jre-headless >/dev/null; }

test: install-dev browser java
	$(BIN)/python -m pytest tests --nbval-lax notebooks

# Refresh the lock after changing pyproject.toml's dependencies or to take newer releases: install the newest
# versions pyproject allows, run the tests, and pin what passed. Commit constraints.txt with the change.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade -e ".[dev]"
	touch $(VENV)/.installed-dev $(VENV)/.installed  # so `make test` tests these versions, not the old lock's
	$(MAKE) test
	$(BIN)/python tools/lock.py dev > $(LOCK).new && mv $(LOCK).new $(LOCK)
	touch $(VENV)/.installed-dev $(VENV)/.installed

bench: install-dev
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The job users run (sdstudio generate end to end): the figures of the README's Performance section.
bench-generate: install-dev
	$(BIN)/python benchmarks/generate.py

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts
