# The two quickstart commands: `make demo` and `make test`. Each does all of its own set-up.
.PHONY: demo test lint typecheck unit integration

# One pytest-xdist worker per core, at most 4; each test module stays on one worker and the
# modules sharing a session-wide platform run share its worker (tests/conftest.py).
PYTEST_PARALLEL ?= -n auto --maxprocesses 4 --dist loadgroup

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
