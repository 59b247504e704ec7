"""Contract suites: one per external system, parametrized over every implementation."""
