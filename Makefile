# The two quickstart commands: `make demo` and `make test`. Each does all of its own set-up.
.PHONY: demo test lint typecheck unit integration

# One pytest-xdist worker per core, at most 4; each test module is one unit of work and the
# modules sharing a session-wide platform run are one (tests/conftest.py's scheduler).
PYTEST_PARALLEL ?= -n auto --maxprocesses 4 --dist loadscope

demo:
	@./scripts/bootstrap
	.venv/bin/concordose demo

test:
	@./scripts/bootstrap --test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/python scripts/audit_dependencies.py
	.venv/bin/pytest $(PYTEST_PARALLEL)

unit:
	@./scripts/bootstrap
	.venv/bin/pytest $(PYTEST_PARALLEL) -m "not integration"

integration:
	@./scripts/bootstrap --test
	.venv/bin/pytest $(PYTEST_PARALLEL) -m integration
