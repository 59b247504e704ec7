"""Process wiring for Blackbox: settings, the CLI, the embedded dev stack, benchmarks.

The only package that names concrete sinks and clients; it may import every other package.
"""
