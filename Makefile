# Two entry points a fresh machine needs: `make test` and (with the server) `make run`.
# Everything lives in .venv, installed from hash-pinned locks: `make run` takes only what the
# broker needs (requirements-runtime.lock); `make test` adds the test tooling on top
# (requirements.lock, the same versions plus the dev extra).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck bench-storage fuzz lock clean

$(STAMP): pyproject.toml requirements-runtime.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-runtime.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements.lock
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	touch $(DEV_STAMP)

# The broker on its embedded default: ./data, the native protocol on 127.0.0.1:7420.
run: $(STAMP)
	$(BIN)/roost serve

test: $(DEV_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

bench-storage: $(DEV_STAMP)
	$(BIN)/roost bench storage

# Coverage-guided fuzzing (atheris) of every codec and storage reader (docs/fuzzing.md):
# FUZZ_SECONDS split over all targets, or all of it on one (FUZZ_TARGET=native_server).
# The corpus grows in .fuzz/corpus; an input that breaks a contract lands in .fuzz/crashes.
FUZZ_SECONDS ?= 600
FUZZ_TARGET ?= all
fuzz: $(DEV_STAMP)
	PYTHONPATH=. $(BIN)/python -m tests.fuzz.run $(FUZZ_TARGET) --seconds $(FUZZ_SECONDS)

# Regenerate both locks after changing pyproject.toml's pins; the runtime lock is constrained
# to the dev lock's versions, so `make run` and `make test` run the broker on the same ones.
lock: $(DEV_STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--generate-hashes -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes \
		-c requirements.lock -o requirements-runtime.lock

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .fuzz
