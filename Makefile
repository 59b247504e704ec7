# The two commands of the README. Both install what they need first (scripts/setup.sh).
.PHONY: setup dev test lint

setup:
	BLACKBOX_SETUP_BROWSER=$(if $(filter dev,$(MAKECMDGOALS)),0,1) scripts/setup.sh

# The whole embedded stack with demo data: broker, seal worker, API. Ctrl-C stops it.
dev: setup
	.venv/bin/blackbox dev

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check schemas ingest streams replay api storage ledger blackbox
	.venv/bin/mypy

# Lint, type-check, then every test against the real broker, S3 server, ClickHouse engine and browser.
test: lint
	.venv/bin/pytest -q -p no:cacheprovider
