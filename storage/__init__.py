"""Adapters to the stores the pipeline writes and the read side reads: the WORM object store,
the archive's file format, and the ClickHouse index. Imports only `schemas`."""
