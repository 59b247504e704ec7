# The two commands of the README. Both install what they need first (scripts/setup.sh).
.PHONY: setup dev test lint

setup:
	BLACKBOX_SETUP_BROWSER=$(if $(filter dev,$(MAKECMDGOALS)),0,1) scripts/setup.sh

# The whole embedded stack with demo data: broker, seal worker, API. Ctrl-C stops it.
dev: setup
	.venv/bin/blackbox dev

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check schemas ingest streams replay api storage ledger blackbox setup.py
	.venv/bin/mypy
	.venv/bin/mypy setup.py

# Lint, type-check, then every test against the real broker, S3 server, ClickHouse engine and
# browser; then the unit tests of the compiled seal path again, interpreted, as a machine without
# a C compiler runs it (blackbox/compiled.py).
test: lint
	.venv/bin/pytest -q -p no:cacheprovider
	BLACKBOX_INTERPRETED=1 .venv/bin/pytest -q -p no:cacheprovider $(INTERPRETED_TESTS)

INTERPRETED_TESTS = tests/masking tests/risk tests/test_event_reader.py tests/test_seal.py \
	tests/test_sealed_encoding.py tests/test_masking_pipeline.py tests/test_codec.py tests/test_compiled.py
