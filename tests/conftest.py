"""Shared fixtures. Each real component's session fixture lives in tests/fixtures/ and is
loaded here as a plugin, so a test names what it starts by requesting the fixture."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.s3",
    "tests.fixtures.clickhouse",
]
