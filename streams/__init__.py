"""The stream processors: the seal step and the Faust agents that feed it and route its output.

Imports schemas, storage and ledger; never replay or api.
"""
