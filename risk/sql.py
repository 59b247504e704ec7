"""SQL rules: statements are parsed with sqlglot, never grepped, so look-alikes in string
literals and comments (``SELECT 'DROP TABLE x'``) do not fire.

`analyze` turns a statement into policy-free `SqlFacts` and is cached, because gateways see the
same statements over and over; `sql_hits` applies the policy (which tables are sensitive).
Statements sqlglot only knows as a generic command (``GRANT ... ON ALL TABLES``, ``ALTER ROLE``)
and statements it cannot parse at all are classified from their token stream, which still
tells keywords from literals and comments; a statement that cannot be tokenised either gets
the low-weight ``sql.unparsed`` reason.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import sqlglot
from sqlglot import Token, TokenType, exp

from risk.model import Hit

logger = logging.getLogger(__name__)

# Above this a statement is scanned token by token instead of parsed: sqlglot's parser is
# pure Python and a multi-megabyte INSERT would stall the worker.
MAX_PARSE_CHARS = 100_000
# Above this not even tokenised; the reason says so.
MAX_SCAN_CHARS = 2_000_000
# Only statements up to this size are cached, so the cache cannot hold gigabytes.
MAX_CACHED_CHARS = 8_192
CACHE_SIZE = 8_192

DIALECTS = {"POSTGRES": "postgres", "MYSQL": "mysql"}

_DESTRUCTIVE_DROPS = {"TABLE", "SCHEMA", "DATABASE"}
_PRINCIPAL_OBJECTS = {"ROLE", "USER", "GROUP"}
# pg catalogs are matched with or without the pg_catalog schema; the others need their schema.
_PG_CREDENTIAL_CATALOGS = {"pg_authid", "pg_shadow", "pg_user_mapping", "pg_user_mappings"}
_QUALIFIED_CREDENTIAL_CATALOGS = {
    ("mysql", "user"),
    ("mysql", "global_priv"),
    ("information_schema", "user_privileges"),
    ("sys", "sql_logins"),
    ("sys", "syslogins"),
    ("sys", "user$"),
}
_BARE_CREDENTIAL_CATALOGS = {"dba_users", "sql_logins", "syslogins"}
_SERVER_FILE_FUNCTIONS = {
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "lo_import",
    "lo_export",
    "load_file",
}
# Commands sqlglot does not model but that neither change nor leak anything.
_HARMLESS_COMMANDS = {
    "SHOW",
    "SET",
    "RESET",
    "VACUUM",
    "ANALYZE",
    "ANALYSE",
    "EXPLAIN",
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "LISTEN",
    "UNLISTEN",
    "NOTIFY",
    "DISCARD",
    "DEALLOCATE",
    "PREPARE",
    "EXECUTE",
    "FETCH",
    "CLOSE",
    "DECLARE",
    "MOVE",
    "CHECKPOINT",
    "REINDEX",
    "CLUSTER",
    "REFRESH",
    "LOCK",
    "USE",
    "DESCRIBE",
    "DESC",
    "OPTIMIZE",
    "KILL",
}
# EXPLAIN's options: a bare ANALYZE / VERBOSE ... or a parenthesised list, before the statement.
_EXPLAIN_OPTIONS = re.compile(r"\s*(?:\([^)]*\)|(?:(?:ANALY[SZ]E|VERBOSE)\s+)*)", re.IGNORECASE)
_STRINGISH = frozenset(t for t in TokenType if t.name.endswith("STRING")) | {TokenType.IDENTIFIER}


class _SilenceCommandFallback(logging.Filter):
    """sqlglot warns, quoting the whole statement, each time it falls back to a generic command.

    Statements may carry values masking did not recognise, and the warning repeats for every
    GRANT; the fallback is expected and handled here, so the warning is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Falling back to parsing as a 'Command'" not in record.getMessage()


logging.getLogger("sqlglot").addFilter(_SilenceCommandFallback())


@dataclass(frozen=True, slots=True)
class SqlFacts:
    """What a statement (or several, separated by ``;``) does, independent of any policy."""

    ddl: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()
    unbounded_writes: tuple[str, ...] = ()
    star_tables: tuple[str, ...] = ()
    copy_program: tuple[str, ...] = ()
    privilege_changes: tuple[str, ...] = ()
    credential_catalogs: tuple[str, ...] = ()
    server_files: tuple[str, ...] = ()
    unparsed: str | None = None


@dataclass
class _Collector:
    ddl: list[str] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    unbounded_writes: list[str] = field(default_factory=list)
    star_tables: list[str] = field(default_factory=list)
    copy_program: list[str] = field(default_factory=list)
    privilege_changes: list[str] = field(default_factory=list)
    credential_catalogs: list[str] = field(default_factory=list)
    server_files: list[str] = field(default_factory=list)
    unparsed: str | None = None

    def freeze(self) -> SqlFacts:
        def unique(items: list[str]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(items))

        return SqlFacts(
            ddl=unique(self.ddl),
            drops=unique(self.drops),
            unbounded_writes=unique(self.unbounded_writes),
            star_tables=unique(self.star_tables),
            copy_program=unique(self.copy_program),
            privilege_changes=unique(self.privilege_changes),
            credential_catalogs=unique(self.credential_catalogs),
            server_files=unique(self.server_files),
            unparsed=self.unparsed,
        )


def dialect_for(target_kind: str | None) -> str | None:
    """sqlglot dialect for a target kind; None is sqlglot's generic dialect."""
    return DIALECTS.get(target_kind or "")


def analyze(statement: str, dialect: str | None = None, database: str | None = None) -> SqlFacts:
    """Facts about ``statement`` as the ``dialect`` reads it. Never raises.

    ``database`` is the session's current database, so that MySQL's ``SELECT * FROM user``
    while in ``mysql`` counts as a read of ``mysql.user``.
    """
    if len(statement) <= MAX_CACHED_CHARS:
        return _analyze_cached(statement, dialect, (database or "").lower())
    return _analyze(statement, dialect, (database or "").lower())


def cache_info() -> str:
    """Hit rate of the parse cache, for benchmarks and debugging."""
    return str(_analyze_cached.cache_info())


def clear_cache() -> None:
    """Empty the parse cache (benchmarks measure a cold start with it)."""
    _analyze_cached.cache_clear()


@lru_cache(maxsize=CACHE_SIZE)
def _analyze_cached(statement: str, dialect: str | None, database: str) -> SqlFacts:
    return _analyze(statement, dialect, database)


def _analyze(statement: str, dialect: str | None, database: str) -> SqlFacts:
    out = _Collector()
    if len(statement) > MAX_SCAN_CHARS:
        out.unparsed = f"a statement of {len(statement):,} characters is too long to analyse"
        return out.freeze()
    if len(statement) > MAX_PARSE_CHARS:
        out.unparsed = f"a statement of {len(statement):,} characters was only scanned, not parsed"
        _scan(statement, dialect, out)
        return out.freeze()
    try:
        for tree in sqlglot.parse(statement, read=dialect):
            if tree is not None:
                _visit(tree, dialect, database, out)
    # sqlglot raises ParseError and TokenError by design, but on adversarial input also
    # IndexError, RecursionError and friends; none of them may stop the seal step.
    except Exception as exc:
        out = _Collector(unparsed=f"the statement could not be parsed ({type(exc).__name__})")
        _scan(statement, dialect, out)
    return out.freeze()


def _visit(tree: exp.Expr, dialect: str | None, database: str, out: _Collector) -> None:
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for node in tree.walk():
        if isinstance(node, exp.Create):
            kind = str(node.args.get("kind") or "").upper()
            target = f"{kind} {_first_table(node)}".strip()
            (out.privilege_changes if kind in _PRINCIPAL_OBJECTS else out.ddl).append(f"CREATE {target}")
        elif isinstance(node, exp.Alter):
            kind = str(node.args.get("kind") or "").upper()
            out.ddl.append(f"ALTER {kind} {_first_table(node)}".strip())
        elif isinstance(node, exp.Drop):
            kind = str(node.args.get("kind") or "").upper()
            text = f"DROP {kind} {_first_table(node)}".strip()
            if kind in _PRINCIPAL_OBJECTS:
                out.privilege_changes.append(text)
            else:
                (out.drops if kind in _DESTRUCTIVE_DROPS else out.ddl).append(text)
        elif isinstance(node, exp.TruncateTable):
            names = ", ".join(_table_name(t) for t in node.expressions if isinstance(t, exp.Table))
            out.drops.append(f"TRUNCATE {names}".strip())
        elif isinstance(node, exp.Comment):
            out.ddl.append(f"COMMENT ON {str(node.args.get('kind') or '').upper()}".strip())
        elif isinstance(node, exp.Delete | exp.Update):
            if _unbounded(node.args.get("where")):
                verb = "DELETE FROM" if isinstance(node, exp.Delete) else "UPDATE"
                out.unbounded_writes.append(f"{verb} {_first_table(node)}".strip())
        elif isinstance(node, exp.Select):
            out.star_tables.extend(_star_tables(node, ctes))
            into = node.args.get("into")
            if isinstance(into, exp.Into):
                out.ddl.append(f"SELECT INTO {_first_table(into)}".strip())
        elif isinstance(node, exp.Copy):
            _visit_copy(node, out)
        elif isinstance(node, exp.Grant):
            out.privilege_changes.append("GRANT")
        elif isinstance(node, exp.Revoke):
            out.privilege_changes.append("REVOKE")
        elif isinstance(node, exp.Command):
            _visit_command(node, dialect, database, out)
        elif isinstance(node, exp.Table):
            _check_catalog(node, ctes, database, out)
        elif isinstance(node, exp.Anonymous) and node.name.lower() in _SERVER_FILE_FUNCTIONS:
            out.server_files.append(node.name.lower())


def _visit_copy(node: exp.Copy, out: _Collector) -> None:
    direction = "FROM" if node.args.get("kind") else "TO"
    for target in node.args.get("files") or []:
        if isinstance(target, exp.Identifier | exp.Var) and target.name.upper() == "PROGRAM":
            out.copy_program.append(f"COPY ... {direction} PROGRAM")
        elif isinstance(target, exp.Literal) and target.is_string:
            # COPY to or from a path reads or writes the database server's own filesystem.
            out.server_files.append(f"COPY ... {direction} a server file")


def _visit_command(node: exp.Command, dialect: str | None, database: str, out: _Collector) -> None:
    keyword = str(node.this).upper()
    rest = node.args.get("expression")
    text = str(rest.this if isinstance(rest, exp.Literal) else rest or "")
    if keyword == "EXPLAIN":
        _visit_explain(text, dialect, database, out)
        return
    try:
        # Only the text after the keyword: sqlglot's tokenizer reads everything after a
        # command keyword as one opaque string.
        tokens = sqlglot.tokenize(text, read=dialect)
    except Exception:  # same reasoning as in _analyze: never raise on odd input
        out.unparsed = f"a {keyword} statement could not be analysed"
        return
    statements = list(_statements(tokens)) or [[]]
    recognised = _classify_words([keyword, *statements[0]], out)
    for words in statements[1:]:
        recognised |= _classify_words(words, out)
    if not recognised:
        if keyword == "DO":
            out.unparsed = "an anonymous code block (DO) is not analysed"
        elif keyword not in _HARMLESS_COMMANDS:
            out.unparsed = f"a {keyword} statement is not analysed"


def _visit_explain(text: str, dialect: str | None, database: str, out: _Collector) -> None:
    """EXPLAIN ANALYZE runs the statement it explains, so that statement is analysed too.

    Plain EXPLAIN only plans it and is harmless.
    """
    options = _EXPLAIN_OPTIONS.match(text)
    if options is None or "ANALY" not in options.group(0).upper():
        return
    inner = _analyze(text[options.end() :], dialect, database)
    for name in _Collector.__dataclass_fields__:
        value = getattr(inner, name)
        if name == "unparsed":
            out.unparsed = out.unparsed or value
        else:
            getattr(out, name).extend(value)


def _scan(statement: str, dialect: str | None, out: _Collector) -> None:
    try:
        tokens = sqlglot.tokenize(statement, read=dialect)
    except Exception:  # an unterminated literal, say: nothing more can be told apart safely
        return
    _classify(tokens, out)


def _classify(tokens: list[Token], out: _Collector) -> bool:
    """Classify each ``;``-separated statement by its keywords (never by literal or comment text).

    Returns whether any statement was recognised.
    """
    recognised = False
    for words in _statements(tokens):
        recognised |= _classify_words(words, out)
    return recognised


def _statements(tokens: list[Token]) -> Iterator[list[str]]:
    words: list[str] = []
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            if words:
                yield words
            words = []
        elif token.token_type in _STRINGISH:
            words.append("'")  # a literal or quoted name: present, but never a keyword
        else:
            words.append(token.text.upper())
    if words:
        yield words


def _classify_words(words: list[str], out: _Collector) -> bool:
    if not words:
        return False
    first, second = words[0], words[1] if len(words) > 1 else ""
    if first == "EXPLAIN":
        # EXPLAIN ANALYZE runs the statement it explains; plain EXPLAIN does not.
        if second in ("ANALYZE", "ANALYSE"):
            return _classify_words(words[2:], out)
        return False
    if first in ("GRANT", "REVOKE"):
        out.privilege_changes.append(first)
    elif first in ("CREATE", "ALTER", "DROP") and second in _PRINCIPAL_OBJECTS:
        out.privilege_changes.append(f"{first} {second}")
    elif first == "ALTER" and second == "DEFAULT":
        out.privilege_changes.append("ALTER DEFAULT PRIVILEGES")
    elif first == "DROP":
        (out.drops if second in _DESTRUCTIVE_DROPS else out.ddl).append(f"DROP {second}".strip())
    elif first == "TRUNCATE":
        out.drops.append("TRUNCATE")
    elif first in ("CREATE", "ALTER", "COMMENT", "RENAME"):
        out.ddl.append(f"{first} {second}".strip())
    elif first == "COPY" and "PROGRAM" in words:
        out.copy_program.append("COPY ... PROGRAM")
    elif first == "LOAD" and "INFILE" in words and "LOCAL" not in words:
        out.server_files.append("LOAD DATA INFILE")
    elif _follows(words, "INTO", ("OUTFILE", "DUMPFILE")):
        out.server_files.append("SELECT ... INTO OUTFILE")
    elif first in ("DELETE", "UPDATE") and "WHERE" not in words:
        out.unbounded_writes.append("DELETE" if first == "DELETE" else "UPDATE")
    else:
        return False
    return True


def _follows(words: list[str], first: str, seconds: tuple[str, ...]) -> bool:
    return any(a == first and b in seconds for a, b in itertools.pairwise(words))


def _unbounded(where: exp.Expr | None) -> bool:
    """No WHERE, or one that is trivially true (``WHERE 1=1``, ``WHERE true``)."""
    if where is None:
        return True
    condition = where.this if isinstance(where, exp.Where) else where
    if isinstance(condition, exp.Boolean):
        return bool(condition.this)
    if isinstance(condition, exp.EQ):
        left, right = condition.this, condition.expression
        return isinstance(left, exp.Literal) and isinstance(right, exp.Literal) and left == right
    return False


def _star_tables(select: exp.Select, ctes: set[str]) -> list[str]:
    """Real tables whose every column this SELECT returns (``*`` or ``alias.*``)."""
    qualifiers: list[str | None] = []
    for projection in select.expressions:
        if isinstance(projection, exp.Star):
            qualifiers.append(None)
        elif isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
            qualifiers.append(projection.table.lower())
    if not qualifiers:
        return []
    sources: dict[str, str] = {}  # alias or name -> qualified name, for direct table sources only
    for table in _direct_tables(select):
        if not table.db and table.name.lower() in ctes:
            continue
        sources[table.alias_or_name.lower()] = _table_name(table)
    if None in qualifiers:
        return list(sources.values())
    return [sources[q] for q in qualifiers if q is not None and q in sources]


def _direct_tables(select: exp.Select) -> Iterable[exp.Table]:
    from_ = select.args.get("from_") or select.args.get("from")
    if isinstance(from_, exp.From) and isinstance(from_.this, exp.Table):
        yield from_.this
    for join in select.args.get("joins") or []:
        if isinstance(join, exp.Join) and isinstance(join.this, exp.Table):
            yield join.this


def _check_catalog(table: exp.Table, ctes: set[str], database: str, out: _Collector) -> None:
    name, schema = table.name.lower(), table.db.lower()
    if not schema and name in ctes:
        return
    if name in _PG_CREDENTIAL_CATALOGS and schema in ("", "pg_catalog"):
        out.credential_catalogs.append(name)
    elif (schema or database, name) in _QUALIFIED_CREDENTIAL_CATALOGS:
        out.credential_catalogs.append(f"{schema or database}.{name}")
    elif name in _BARE_CREDENTIAL_CATALOGS:
        out.credential_catalogs.append(_table_name(table))


def _first_table(node: exp.Expr) -> str:
    table = node if isinstance(node, exp.Table) else node.find(exp.Table)
    return _table_name(table) if isinstance(table, exp.Table) else ""


def _table_name(table: exp.Table) -> str:
    return ".".join(part for part in (table.catalog, table.db, table.name) if part).lower()


# --- policy -------------------------------------------------------------------------------------


def _listed(items: tuple[str, ...], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def sql_hits(facts: SqlFacts, is_sensitive: Callable[[str], bool]) -> list[Hit]:
    """Rule hits for analysed SQL; ``is_sensitive`` says whether a table is tagged sensitive."""
    hits: list[Hit] = []
    if facts.drops:
        hits.append(Hit("sql.drop", f"destroys data: {_listed(facts.drops)}"))
    if facts.ddl:
        hits.append(Hit("sql.ddl", f"changes the schema: {_listed(facts.ddl)}"))
    if facts.unbounded_writes:
        hits.append(
            Hit(
                "sql.unbounded_write",
                f"{_listed(facts.unbounded_writes)} without a WHERE clause changes every row",
            )
        )
    sensitive = tuple(table for table in facts.star_tables if is_sensitive(table))
    if sensitive:
        hits.append(Hit("sql.select_star_sensitive", f"SELECT * on sensitive table {_listed(sensitive)}"))
    if facts.copy_program:
        hits.append(
            Hit(
                "sql.copy_program",
                f"{_listed(facts.copy_program)} runs a shell command on the database server",
            )
        )
    if facts.privilege_changes:
        hits.append(Hit("sql.privilege_change", f"changes privileges: {_listed(facts.privilege_changes)}"))
    if facts.credential_catalogs:
        hits.append(
            Hit("sql.credential_catalog", f"reads credential catalog {_listed(facts.credential_catalogs)}")
        )
    if facts.server_files:
        hits.append(
            Hit("sql.server_file", f"accesses the database server's files: {_listed(facts.server_files)}")
        )
    if facts.unparsed:
        hits.append(Hit("sql.unparsed", f"{facts.unparsed}; SQL rules may have missed something"))
    return hits
