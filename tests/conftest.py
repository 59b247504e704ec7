"""Shared fixtures. Each real component's session fixture lives in tests/fixtures/ and is
loaded here as a plugin, so a test names what it starts by requesting the fixture."""

from blackbox.compiled import use_current_sources

# The seal path's compiled modules run only if built from the current sources (and not under
# BLACKBOX_INTERPRETED=1); decided before any test module imports them.
HOW_COMPILED_MODULES_RUN = use_current_sources()


def pytest_report_header() -> str:
    return f"blackbox: seal path modules {HOW_COMPILED_MODULES_RUN}"


pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.s3",
    "tests.fixtures.clickhouse",
]
