"""Which SQL a user may run: exactly one SELECT over the tracewatch tables.

Pure: the verdict is made over ClickHouse's own parse of the query, the text of
``EXPLAIN AST`` (one node a line, one space of indent a level), which
``ClickHouseReader`` asks the engine for; nothing here talks to ClickHouse.
What each check is for (issue 12: each was a working attack on ``/query``):

- **One statement.** chDB runs every statement of a multi-statement text, and a
  per-call ``readonly=1`` lands on the last one only: ``SELECT 1; DROP TABLE …;
  SELECT 1`` dropped the table. The reader has the text parsed as *one* statement
  first (``formatQuerySingleLine``, which refuses several) and runs that canonical
  single statement, the one checked here.
- **A SELECT at the root** (``SelectWithUnionQuery``: SELECT, WITH … SELECT,
  UNION, INTERSECT, EXCEPT). ``SET``, ``USE``, DDL and ``INSERT INTO FUNCTION
  url(…)`` are something else; a stray ``SET`` once left the worker's shared
  session read-only and stopped ingestion.
- **No clause after the query** (``INTO OUTFILE``, ``FORMAT``, ``SETTINGS``): ``INTO
  OUTFILE`` wrote any file, even under ``readonly=1`` (a ``.pth`` file is code
  execution at the next Python start); ``SETTINGS`` anywhere (also in a subquery)
  would try to change the limits. Results come back as rows, so ``FORMAT`` has no use.
- **Table functions from an allow-list** (``numbers``, ``values``,
  ``generate_series``): ``file``, ``url``, ``s3``, ``remote``, ``executable``,
  ``mysql``, ``python`` … reach outside the store; a list of the harmless ones
  stays safe when a ClickHouse release adds a new way out.
- **No I/O scalar functions** (a deny-list: ``file`` read ``/etc/shadow`` and the
  worker's ``/proc/self/environ`` with its Kafka password even under ``readonly=1``;
  also the ``dict*`` family, ``joinGet``, server settings and macros). Names are
  compared without regard to case, as ClickHouse resolves some of them.
- **Tables of the tracewatch database only** (and ``system.one``), wherever they
  appear: ``FROM``, ``JOIN``, subqueries and the right side of ``IN``. Unqualified
  names resolve in the reader's own database (tracewatch) or to a ``WITH`` name.
- **Fail closed.** A line that does not read as a node, a node whose children do
  not add up to what it declares, a function or table name that is not a plain
  identifier: refused, since the tree can no longer be trusted.

Parameters are substituted before ``EXPLAIN AST`` prints the tree, so a table
named through ``{db:Identifier}`` is checked with its bound value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from tracewatch.errors import QueryRefused

__all__ = [
    "ALLOWED_TABLE_FUNCTIONS",
    "DENIED_FUNCTIONS",
    "MAX_SQL_CHARS",
    "AstNode",
    "check_select",
    "check_text",
    "parse_explain_ast",
]

#: longer texts are refused before they reach the parser
MAX_SQL_CHARS = 100_000

#: table functions that make rows out of nothing (lower case); ``zeros`` is one too, but
#: ClickHouse refuses it under readonly=1
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "values", "generate_series", "generateseries"}
)

#: scalar functions that read files, other servers, dictionaries or server configuration
#: (lower case); the I/O table functions are listed too, should one ever gain a scalar form
DENIED_FUNCTIONS = frozenset(
    {
        "file", "filesystemavailable", "filesystemcapacity", "filesystemunreserved",
        "getserversetting", "getmergetreesetting", "getmacro", "getclienthttpheader",
        "joinget", "joingetornull", "hascolumnintable", "currentrequesturl",
        "url", "urlcluster", "s3", "s3cluster", "gcs", "oss", "cosn", "hdfs", "hdfscluster",
        "azureblobstorage", "remote", "remotesecure", "cluster", "clusterallreplicas",
        "executable", "input", "mysql", "postgresql", "sqlite", "mongodb", "redis", "odbc",
        "jdbc", "python", "eval", "filecluster", "filesystem", "dictionary", "merge",
    }
)  # fmt: skip

#: dictGet*, dictHas, dictIsIn …: a dictionary can load from files, URLs and other servers
_DENIED_PREFIXES = ("dict", "__")

_IN_FUNCTIONS = frozenset(
    {"in", "notin", "globalin", "globalnotin", "nullin", "notnullin", "globalnullin",
     "globalnotnullin"}
)  # fmt: skip

_NODE = re.compile(r"^(?P<indent> *)(?P<kind>[A-Za-z][A-Za-z0-9_]*)(?P<rest>.*?)\s*$")
_CHILDREN = re.compile(r"^(?P<head>.*?)\s*\(children (?P<n>\d+)\)$")
_ALIAS = re.compile(r"^(?P<name>.*?) \(alias .*\)$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?$")

_CLAUSES = {
    "Literal": "INTO OUTFILE is not allowed: results come back as rows, never into a file",
    "Identifier": "a FORMAT clause is not allowed: results come back as rows (use --json)",
    "Set": "a SETTINGS clause is not allowed: the limits of every query are fixed "
    "(TRACEWATCH_QUERY_* settings of the worker)",
}
_ONE_SELECT = (
    "only one SELECT statement is allowed (SELECT …, WITH … SELECT …, or SELECT … UNION …); "
    "{what} is not"
)
_HINT = "tracewatch queries read the {db} tables: {db}.events, {db}.stats_1m, {db}.stats_1h"


@dataclass
class AstNode:
    """One node of ``EXPLAIN AST``: its kind (``Function``, ``TableIdentifier`` …), the
    name printed after it (function or table name, literal), and its children."""

    kind: str
    name: str = ""
    children: list[AstNode] = field(default_factory=list)
    declared: int = 0  # the "(children N)" the engine printed

    def walk(self, parent: AstNode | None = None) -> Iterator[tuple[AstNode, AstNode | None]]:
        """Every node under and including this one, with its parent."""
        yield self, parent
        for child in self.children:
            yield from child.walk(self)


def check_text(sql: str) -> str:
    """The query text, refused if empty or too long to be a question."""
    text = sql.strip()
    if not text:
        raise QueryRefused("the query is empty: send one SELECT statement")
    if len(text) > MAX_SQL_CHARS:
        raise QueryRefused(f"the query is longer than {MAX_SQL_CHARS} characters")
    return text


def parse_explain_ast(lines: Sequence[str]) -> AstNode:
    """The tree printed by ``EXPLAIN AST``, one line a node; refused when it does not read
    as one (an alias with a line break can print lines that are not nodes)."""
    stack: list[tuple[int, AstNode]] = []
    root: AstNode | None = None
    for line in lines:
        match = _NODE.match(line)
        if match is None:
            raise _unreadable(line)
        depth = len(match["indent"])
        node = _node(match["kind"], match["rest"].strip())
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if not stack:
            if root is not None or depth != 0:
                raise _unreadable(line)
            root = node
        elif depth != stack[-1][0] + 1:
            raise _unreadable(line)
        else:
            stack[-1][1].children.append(node)
        stack.append((depth, node))
    if root is None:
        raise QueryRefused("the query could not be parsed into a statement")
    for each, _ in root.walk():
        if len(each.children) != each.declared:
            raise _unreadable(f"{each.kind} {each.name}")
    return root


def check_select(root: AstNode, database: str) -> None:
    """Refuse anything but one SELECT over ``database``'s tables (module docstring)."""
    if root.kind != "SelectWithUnionQuery":
        raise QueryRefused(_ONE_SELECT.format(what=_statement_name(root.kind)))
    for clause in root.children[1:]:
        raise QueryRefused(_CLAUSES.get(clause.kind, f"a {clause.kind} clause is not allowed"))
    for node, parent in root.walk():
        if node.kind == "Set":
            raise QueryRefused(_CLAUSES["Set"])
        if node.kind == "Function":
            _check_function(node, parent, database)
        elif node.kind == "TableIdentifier":
            _check_table(node.name, database)


def _node(kind: str, rest: str) -> AstNode:
    declared = 0
    if (children := _CHILDREN.match(rest)) is not None:
        rest, declared = children["head"], int(children["n"])
    if (alias := _ALIAS.match(rest)) is not None:
        rest = alias["name"]
    return AstNode(kind, rest, [], declared)


def _check_function(node: AstNode, parent: AstNode | None, database: str) -> None:
    if _IDENTIFIER.match(node.name) is None:
        raise QueryRefused(f"function name {node.name!r} is not allowed: use a plain name")
    name = node.name.lower()
    if parent is not None and parent.kind == "TableExpression":
        if name not in ALLOWED_TABLE_FUNCTIONS:
            allowed = ", ".join(sorted(ALLOWED_TABLE_FUNCTIONS - {"generateseries"}))
            raise QueryRefused(
                f"table function {node.name}() is not allowed: {_HINT.format(db=database)}; "
                f"the only table functions are {allowed}"
            )
        return
    if name in DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES):
        raise QueryRefused(
            f"function {node.name}() is not allowed: it reads files, other servers or the "
            f"server's configuration, not the {database} tables"
        )
    if name in _IN_FUNCTIONS and node.children and len(node.children[0].children) == 2:
        right = node.children[0].children[1]
        if right.kind == "Identifier":  # `x IN db.table` reads a table
            _check_table(right.name, database)


def _check_table(name: str, database: str) -> None:
    if _TABLE_NAME.match(name) is None:
        raise QueryRefused(f"table name {name!r} is not allowed: {_HINT.format(db=database)}")
    db, _, table = name.rpartition(".")
    if db in ("", database) or (db, table) == ("system", "one"):
        return
    raise QueryRefused(f"table {name} is not allowed: {_HINT.format(db=database)}")


def _statement_name(kind: str) -> str:
    names = {
        "Set": "SET", "UseQuery": "USE", "InsertQuery": "INSERT", "CreateQuery": "CREATE",
        "DropQuery": "DROP", "AlterQuery": "ALTER", "Explain": "EXPLAIN",
        "DescribeQuery": "DESCRIBE", "ShowTables": "SHOW", "SystemQuery": "SYSTEM",
    }  # fmt: skip
    return names.get(kind, f"a {kind} statement")


def _unreadable(line: str) -> QueryRefused:
    return QueryRefused(
        f"cannot check this query (its parse tree has an unexpected line {line[:80]!r}); "
        "aliases and names with line breaks or unusual characters are not allowed"
    )
