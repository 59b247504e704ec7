"""Contract of the ClickHouse index (storage.index), run against every implementation: chdb
always, a ClickHouse server when BLACKBOX_TEST_CLICKHOUSE_URL is set. The chdb-only section at
the end covers what only the embedded engine has: one process per directory, one directory per
process, and the lock around every call."""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from storage.index import (
    ChdbIndex,
    Index,
    IndexLocked,
    IndexStoreError,
    IndexUnavailable,
    format_parameter,
    open_index,
    quote_literal,
)
from storage.index_schema import (
    ARCHIVE_OBJECTS_ARROW,
    EVENTS_ARROW,
    MIGRATIONS,
    SEGMENTS_ARROW,
    SESSIONS_ARROW,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


# The contract writes sessions without the columns that take defaults.
SESSIONS_SCHEMA = pa.schema(
    [
        field
        for field in SESSIONS_ARROW
        if field.name not in ("gateway_version", "missing_first", "missing_last")
    ]
)

# Values that break naive quoting: quotes, backslashes, escape sequences, control characters,
# a placeholder, a statement terminator, non-ASCII.
HOSTILE = [
    "o'brien",
    'say "hi"',
    "back\\slash",
    "trailing\\",
    "\\'",
    "x' OR '1'='1",
    "'; DROP TABLE events; --",
    "tab\there\nnewline\rcr",
    "nul\0byte",
    "{sid:String}",
    "\\N",
    "ünïcødé ☃ 🦆",
]


def event_rows(
    session_ids: list[str], per_session: int, rng: random.Random, *, principal: str = "svc-ci"
) -> pa.Table:
    n = len(session_ids) * per_session
    sids = [sid for sid in session_ids for _ in range(per_session)]
    idx = [i for _ in session_ids for i in range(per_session)]
    return pa.table(
        {
            "session_id": sids,
            "record_index": idx,
            "kind": ["event"] * n,
            "source_seq": [None if i % 7 == 0 else i for i in idx],
            "event_id": [f"{s}/{i}" for s, i in zip(sids, idx, strict=True)],
            "event_time": [T0 + dt.timedelta(microseconds=17 * k) for k in range(n)],
            "body_type": ["query"] * n,
            "principal": [principal] * n,
            "identity_kind": ["service_account"] * n,
            "target_name": ["orders-db"] * n,
            "target_kind": ["postgres"] * n,
            "summary": [f"SELECT {k}" for k in range(n)],
            "record_hash": [rng.randbytes(32) for _ in range(n)],
            "prev_hash": [rng.randbytes(32) for _ in range(n)],
            "event_digest": [rng.randbytes(32) for _ in range(n)],
            "risk_score": [k % 101 for k in range(n)],
            "finding_count": [k % 3 for k in range(n)],
            "object_key": ["archive/p0/00000000.bbx"] * n,
            "kafka_partition": [0] * n,
            "kafka_offset": list(range(n)),
        },
        schema=EVENTS_ARROW,
    )


def session_row(session_id: str, version: int, **overrides: Any) -> pa.Table:
    row: dict[str, Any] = {
        "session_id": session_id,
        "kafka_partition": 3,
        "principal": "svc-ci",
        "identity_kind": "service_account",
        "issuer": "https://issuer.example",
        "groups": ["ci", "deploy"],
        "target_name": "orders-db",
        "target_kind": "postgres",
        "target_host": "db.internal",
        "target_database": "orders",
        "gateway_id": "gw-1",
        "gateway_product": "hoop",
        "started_at": T0,
        "last_event_at": T0 + dt.timedelta(seconds=version),
        "record_count": version * 10,
        "last_seq": version * 10 - 1,
        "head_hash": bytes([version]) * 32,
        "sealed": 0,
        "seal_reason": "",
        "gap_count": 0,
        "fork_count": 0,
        "max_risk": 10,
        "total_risk": 10 * version,
        "version": version,
    }
    row.update(overrides)
    return pa.Table.from_pylist([row], schema=SESSIONS_SCHEMA)


def count(index: Index, table: str) -> int:
    return int(index.query(f"SELECT count() AS n FROM {table}").column("n")[0].as_py())


# --- contract: every implementation -----------------------------------------------------------


# What each ClickHouse column type is written as, across the Arrow client.
ARROW_OF_CLICKHOUSE = {
    "String": {pa.string(), pa.binary()},  # hashes are raw bytes in String columns
    "LowCardinality(String)": {pa.string()},
    "Nullable(Int64)": {pa.int64()},
    "Int64": {pa.int64()},
    "UInt8": {pa.uint8()},
    "UInt32": {pa.uint32()},
    "UInt64": {pa.uint64()},
    "DateTime64(6, 'UTC')": {pa.timestamp("us", tz="UTC")},
    "Array(String)": {pa.list_(pa.string())},
    "Array(Int64)": {pa.list_(pa.int64())},
}


@pytest.mark.parametrize(
    ("table", "arrow"),
    [
        ("events", EVENTS_ARROW),
        ("sessions", SESSIONS_ARROW),
        ("segments", SEGMENTS_ARROW),
        ("archive_objects", ARCHIVE_OBJECTS_ARROW),
    ],
)
def test_each_arrow_schema_matches_its_table(index: Index, table: str, arrow: pa.Schema) -> None:
    # The writers build Arrow tables from these schemas; the tables come from the migrations.
    columns = index.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}"
        " ORDER BY position",
        {"t": table},
    ).to_pylist()
    assert [column["name"] for column in columns] == arrow.names
    for column in columns:
        assert arrow.field(column["name"]).type in ARROW_OF_CLICKHOUSE[column["type"]], column


def test_migrate_applies_all_then_nothing_and_records_each_version_once(unmigrated_index: Index) -> None:
    index = unmigrated_index
    versions = [m.version for m in MIGRATIONS]

    assert index.migrate() == versions
    assert index.migrate() == []
    assert index.migrate() == []

    recorded = index.query(
        "SELECT version, count() AS n FROM schema_migrations GROUP BY version ORDER BY version"
    )
    assert recorded.column("version").to_pylist() == versions
    assert set(recorded.column("n").to_pylist()) == {1}
    tables = index.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    assert set(tables.column("name").to_pylist()) >= {
        "events",
        "sessions",
        "segments",
        "archive_objects",
        "schema_migrations",
    }


def test_insert_20k_events_reads_back_byte_exact(index: Index) -> None:
    rng = random.Random(20_000)
    rows = event_rows([f"sess-{i:03d}" for i in range(40)], 500, rng)
    # Make sure the hashes include bytes that are not valid UTF-8 (they would be mangled if
    # anything on the way decoded them as text).
    assert any(not _is_utf8(h) for h in rows.column("record_hash").to_pylist())

    index.insert("events", rows)

    back = index.query("SELECT * FROM events ORDER BY session_id, record_index")
    assert back.num_rows == 20_000
    for name in ("record_hash", "prev_hash", "event_digest"):
        assert back.schema.field(name).type == pa.binary()
        assert back.column(name).to_pylist() == rows.column(name).to_pylist(), name
    for name in ("session_id", "record_index", "source_seq", "event_time", "summary", "kafka_offset"):
        assert back.column(name).to_pylist() == rows.column(name).to_pylist(), name


def test_binary_columns_chooses_which_string_columns_come_back_as_bytes(index: Index) -> None:
    rows = event_rows(["s1"], 3, random.Random(1))
    index.insert("events", rows)

    default = index.query("SELECT record_hash, summary FROM events ORDER BY record_index")
    assert default.schema.field("record_hash").type == pa.binary()
    assert default.schema.field("summary").type == pa.string()

    renamed = index.query(
        "SELECT record_hash AS h, groupArray(record_hash) AS hs FROM events GROUP BY h ORDER BY h",
        binary_columns={"h", "hs"},
    )
    assert renamed.schema.field("h").type == pa.binary()
    assert renamed.schema.field("hs").type == pa.list_(pa.binary())
    assert sorted(renamed.column("h").to_pylist()) == sorted(rows.column("record_hash").to_pylist())

    text = index.query("SELECT summary FROM events ORDER BY record_index", binary_columns=())
    assert text.column("summary").to_pylist() == ["SELECT 0", "SELECT 1", "SELECT 2"]


@pytest.mark.parametrize("value", HOSTILE)
def test_string_parameter_round_trips_exactly(index: Index, value: str) -> None:
    got = index.query("SELECT {v:String} AS v, length({w:String}) AS n", {"v": value, "w": value})
    assert got.column("v").to_pylist() == [value]
    assert got.column("n").to_pylist() == [len(value.encode())]


def test_hostile_parameters_match_only_their_own_rows_and_inject_nothing(index: Index) -> None:
    rng = random.Random(7)
    for i, principal in enumerate(HOSTILE):
        index.insert("events", event_rows([f"h-{i}"], 2, rng, principal=principal))
    total = count(index, "events")

    for i, principal in enumerate(HOSTILE):
        got = index.query(
            "SELECT session_id FROM events WHERE principal = {p:String} ORDER BY record_index",
            {"p": principal},
        )
        assert got.column("session_id").to_pylist() == [f"h-{i}", f"h-{i}"], principal

    for attack in ("' OR 1=1 --", "x' OR '1'='1' --", "\\' OR 1=1 --", "1; DROP TABLE events"):
        got = index.query("SELECT count() AS n FROM events WHERE principal = {p:String}", {"p": attack})
        assert got.column("n").to_pylist() == [0]
    assert count(index, "events") == total


def test_parameters_of_other_types(index: Index) -> None:
    rows = event_rows(["typed"], 5, random.Random(3))
    index.insert("events", rows)
    wanted = rows.column("record_hash")[2].as_py()

    by_hash = index.query("SELECT record_index FROM events WHERE record_hash = {h:String}", {"h": wanted})
    assert by_hash.column("record_index").to_pylist() == [2]

    in_list = index.query(
        "SELECT record_index FROM events WHERE record_index IN {ix:Array(UInt64)} ORDER BY record_index",
        {"ix": [1, 3]},
    )
    assert in_list.column("record_index").to_pylist() == [1, 3]

    since = index.query(
        "SELECT count() AS n FROM events WHERE event_time >= {t:DateTime64(6, 'UTC')}",
        {"t": rows.column("event_time")[3].as_py()},
    )
    assert since.column("n").to_pylist() == [2]

    flags = index.query(
        "SELECT {b:Bool} AS b, {u:UInt8} AS u, {n:Nullable(String)} AS n, {xs:Array(String)} AS xs",
        {"b": True, "u": False, "n": None, "xs": ["a'b", "c\\d"]},
    )
    assert flags.to_pylist() == [{"b": True, "u": 0, "n": None, "xs": ["a'b", "c\\d"]}]


def test_a_parameter_without_placeholder_is_refused(index: Index) -> None:
    with pytest.raises(ValueError, match="placeholder"):
        index.query("SELECT count() FROM events WHERE principal = '%(p)s'", {"p": "x"})
    with pytest.raises(ValueError, match="parameter name"):
        index.query("SELECT {`x`:String}", {"`x`": "x"})


def test_dedup_token_same_token_one_copy_other_token_two(index: Index) -> None:
    rows = event_rows(["dedup-a", "dedup-b"], 250, random.Random(11))

    index.insert("events", rows, dedup_token="archive/p0/00000000-00000499")
    index.insert("events", rows, dedup_token="archive/p0/00000000-00000499")
    assert count(index, "events") == 500

    index.insert("events", rows, dedup_token="archive/p0/00000500-00000999")
    assert count(index, "events") == 1000

    # The token alone decides: a replay under a used token is dropped even if its rows differ.
    other_rows = event_rows(["dedup-c"], 10, random.Random(12))
    index.insert("events", other_rows, dedup_token="archive/p0/00000000-00000499")
    assert count(index, "events") == 1000

    # The token is a literal in the INSERT's SETTINGS; quotes in it must stay inside it.
    odd = "it's \\ a 'token'; DROP TABLE events"
    index.insert("events", rows.slice(0, 10), dedup_token=odd)
    index.insert("events", rows.slice(0, 10), dedup_token=odd)
    assert count(index, "events") == 1010


def test_replacing_merge_tree_final_returns_newest_version(index: Index) -> None:
    index.insert("sessions", session_row("sess-r", 2, sealed=1, seal_reason="end"), dedup_token="s-r-2")
    # An older version arriving later must not win.
    index.insert("sessions", session_row("sess-r", 1), dedup_token="s-r-1")
    index.insert("sessions", session_row("sess-other", 5), dedup_token="s-o-5")

    got = index.query("SELECT * FROM sessions FINAL WHERE session_id = {sid:String}", {"sid": "sess-r"})
    assert got.num_rows == 1
    row = got.to_pylist()[0]
    assert row["version"] == 2
    assert row["sealed"] == 1
    assert row["seal_reason"] == "end"
    assert row["head_hash"] == bytes([2]) * 32
    assert row["groups"] == ["ci", "deploy"]

    index.insert("sessions", session_row("sess-r", 3), dedup_token="s-r-3")
    newest = index.query(
        "SELECT version, record_count FROM sessions FINAL WHERE session_id = {sid:String}", {"sid": "sess-r"}
    )
    assert newest.to_pylist() == [{"version": 3, "record_count": 30}]


def test_events_by_session_prefix_come_in_record_order(index: Index) -> None:
    rng = random.Random(5)
    rows = event_rows(["ab-2", "ab-1", "zz-1"], 30, rng)
    # Insert in two shuffled halves so that storage order differs from the wanted order.
    order = list(range(rows.num_rows))
    rng.shuffle(order)
    half = len(order) // 2
    index.insert("events", rows.take(order[:half]))
    index.insert("events", rows.take(order[half:]))

    got = index.query(
        "SELECT session_id, record_index FROM events WHERE startsWith(session_id, {prefix:String}) "
        "ORDER BY session_id, record_index",
        {"prefix": "ab-"},
    )
    expected = [("ab-1", i) for i in range(30)] + [("ab-2", i) for i in range(30)]
    assert (
        list(zip(got.column("session_id").to_pylist(), got.column("record_index").to_pylist(), strict=True))
        == expected
    )


def test_empty_insert_is_a_no_op_and_empty_result_keeps_columns(index: Index) -> None:
    index.insert("events", EVENTS_ARROW.empty_table())
    got = index.query(
        "SELECT session_id, record_hash FROM events WHERE session_id = {s:String}", {"s": "none"}
    )
    assert got.num_rows == 0
    assert got.column_names == ["session_id", "record_hash"]


def test_bad_sql_and_bad_names_raise(index: Index) -> None:
    with pytest.raises(IndexStoreError) as bad_sql:
        index.query("SELECT * FROM no_such_table")
    assert not isinstance(bad_sql.value, IndexUnavailable)
    with pytest.raises(ValueError, match="identifier"):
        index.insert("events; DROP TABLE events", event_rows(["x"], 1, random.Random(0)))
    with pytest.raises(ValueError, match="identifier"):
        index.insert("events", pa.table({"session_id`": ["x"]}))


# --- literal encoding (pure functions) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, "\\N"),
        (True, "1"),
        (42, "42"),
        ("o'brien\\x", "o\\'brien\\\\x"),
        ("a\tb\nc", "a\\tb\\nc"),
        (b"\x00\xff", "\\x00\\xff"),
        (["a'", None, b"\x01"], "['a\\'', NULL, '\\x01']"),
        (("x", 1), "('x', 1)"),
        (
            dt.datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "2025-01-02 02:04:05.000006",
        ),
        (dt.datetime(2025, 1, 2, 3, 4, 5), "2025-01-02 03:04:05"),
        (dt.date(2025, 1, 2), "2025-01-02"),
    ],
)
def test_format_parameter(value: Any, encoded: str) -> None:
    assert format_parameter(value) == encoded


def test_format_parameter_refuses_unknown_types() -> None:
    with pytest.raises(TypeError):
        format_parameter(object())
    with pytest.raises(TypeError):
        format_parameter({"a": 1})


def test_quote_literal_keeps_quotes_inside() -> None:
    assert quote_literal("it's \\") == "'it\\'s \\\\'"


# --- chdb only ---------------------------------------------------------------------------------


@pytest.mark.clickhouse
def test_chdb_calls_from_many_threads_are_serialised_safely(chdb_index: ChdbIndex) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            rows = event_rows([f"t-{n}"], 200, random.Random(n))
            chdb_index.insert("events", rows, dedup_token=f"t-{n}")
            got = chdb_index.query(
                "SELECT record_hash FROM events WHERE session_id = {s:String} ORDER BY record_index",
                {"s": f"t-{n}"},
            )
            assert got.column("record_hash").to_pylist() == rows.column("record_hash").to_pylist()
        except BaseException as exc:  # handed to the main thread, which fails the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(chdb_index, "events") == 1600


@pytest.mark.clickhouse
def test_chdb_data_survives_reopen(tmp_path: Path) -> None:
    rows = event_rows(["keep"], 10, random.Random(2))
    with ChdbIndex(tmp_path / "d") as first:
        first.migrate()
        first.insert("events", rows)
    with ChdbIndex(tmp_path / "d") as second:
        assert second.migrate() == []
        got = second.query("SELECT record_hash FROM events ORDER BY record_index")
        assert got.column("record_hash").to_pylist() == rows.column("record_hash").to_pylist()


@pytest.mark.clickhouse
def test_chdb_one_directory_per_process_at_a_time(tmp_path: Path) -> None:
    first = ChdbIndex(tmp_path / "a")
    try:
        with pytest.raises(IndexStoreError, match="one directory per process"):
            ChdbIndex(tmp_path / "b")
        # A second index on the same directory shares the engine.
        with ChdbIndex(tmp_path / "a", database="other") as same_dir:
            assert same_dir.query("SELECT currentDatabase() AS db").column("db").to_pylist() == ["other"]
    finally:
        first.close()
    with ChdbIndex(tmp_path / "b") as after:
        assert after.query("SELECT 1 AS one").column("one").to_pylist() == [1]


@pytest.mark.clickhouse
def test_chdb_directory_held_by_another_process_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from storage.index import ChdbIndex\n"
            "ix = ChdbIndex(Path(sys.argv[1])); print('ready', flush=True); sys.stdin.read()",
            str(data_dir),
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(IndexLocked, match=f"another process \\(PID: {holder.pid}\\)"):
            ChdbIndex(data_dir)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    # Once the holder is gone the directory opens, and the failed attempt left nothing behind.
    with ChdbIndex(data_dir) as index:
        assert index.query("SELECT 1 AS one").column("one").to_pylist() == [1]


@pytest.mark.clickhouse
def test_closed_chdb_index_refuses_calls(tmp_path: Path) -> None:
    index = ChdbIndex(tmp_path / "c")
    index.close()
    index.close()
    with pytest.raises(IndexStoreError, match="closed"):
        index.query("SELECT 1")


# --- open_index --------------------------------------------------------------------------------


@pytest.mark.clickhouse
@pytest.mark.parametrize("form", ["plain", "chdb-abs", "chdb-db"])
def test_open_index_chdb_urls(tmp_path: Path, form: str) -> None:
    data_dir = tmp_path / "via-url"
    url = {
        "plain": str(data_dir),
        "chdb-abs": f"chdb://{data_dir}",
        "chdb-db": f"chdb://{data_dir}?database=audit",
    }[form]
    index = open_index(url)
    try:
        assert isinstance(index, ChdbIndex)
        assert index.describe() == f"chdb {data_dir} database={'audit' if form == 'chdb-db' else 'blackbox'}"
    finally:
        index.close()


def test_open_index_server_down_is_unavailable_and_describe_hides_password() -> None:
    # Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
    with pytest.raises(IndexUnavailable, match=re.escape("http://auditor@127.0.0.1:9 database=audit")) as err:
        open_index("clickhouse://auditor:s3cret@127.0.0.1:9/audit")
    assert "s3cret" not in str(err.value)


def test_open_index_rejects_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="scheme"):
        open_index("ftp://host/db")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
