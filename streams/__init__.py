"""The stream processors: the seal step and the Faust agents that feed it and route its output.

Imports schemas, storage and ledger; never replay or api.
"""

# First: importing it refuses a build older than these sources (blackbox/compiled.py, which
# imports only the standard library).
import blackbox.compiled  # noqa: F401
