"""Tamper-evidence maths shared by the writer (streams) and the verifier (replay): the
per-session hash chain. Pure functions; imports only the standard library and `schemas`."""
