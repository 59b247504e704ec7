"""Process wiring for Blackbox: settings, the CLI, the embedded dev stack, benchmarks.

The only package that names concrete sinks and clients; it may import every other package.
"""

from blackbox.compiled import use_current_sources

# Before anything imports a compiled module: a build older than its sources must not run.
use_current_sources()
