# The two quickstart commands: `make demo` and `make test`. Each does all of its own set-up.
.PHONY: demo test lint typecheck unit integration

demo:
	@./scripts/bootstrap
	.venv/bin/concordose demo

test:
	@./scripts/bootstrap --test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/python scripts/audit_dependencies.py
	.venv/bin/pytest

unit:
	@./scripts/bootstrap
	.venv/bin/pytest -m "not integration"

integration:
	@./scripts/bootstrap --test
	.venv/bin/pytest -m integration
