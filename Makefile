# One command for people and CI: `make check` = format check, lint, types, tests.
PY ?= python3

.PHONY: check lint test fmt bench

check: lint test

lint:
	$(PY) -m ruff format --check pipelines tests benchmarks
	$(PY) -m ruff check pipelines tests benchmarks
	$(PY) -m mypy

test:
	$(PY) -m pytest -q

fmt:
	$(PY) -m ruff format pipelines tests benchmarks
	$(PY) -m ruff check --fix pipelines tests benchmarks
