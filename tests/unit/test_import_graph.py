"""The shape of the code as ARCHITECTURE.md draws it: no import cycle, the packages' dependency rules, the sandbox
outside the product, and SQL only where its tables' owners live.

The graph is read from the source with `ast`: every `import` and `from` statement, including those inside
functions (which hide a cycle from Python but not from a reader). Imports under `if TYPE_CHECKING:` never run,
so they make no cycle; they still count as dependencies for the packages' rules.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGES = ("ledger", "ledger_sandbox")

# ARCHITECTURE.md, "Which package may import what": package -> the ledger packages it never imports.
NEVER: dict[str, frozenset[str]] = {
    "application": frozenset({"api", "projections", "integrations"}),
    "eventstore": frozenset({"application", "api", "integrations"}),
    "projections": frozenset({"application", "api", "integrations"}),
}
AGGREGATES_THIRD_PARTY = ("eventsourcing.domain",)  # besides the standard library
# The hash chain's canonical JSON, a pure function of the event: msgspec writes the same bytes several times faster.
AGGREGATES_ENCODER = {"ledger.aggregates.chain": ("msgspec",)}
# The list of every projection the workers run names the outbound queue's too, which lives with its table's owner
# (integrations/outbound.py beside outbox.py): that one import is wiring, not a projection using integrations.
WIRING = frozenset({("ledger.projections.registry", "ledger.integrations.outbound")})

# The one place the product loads the sandbox marketplaces: `ledger sandbox`, inside build_parser.
SANDBOX_LOADER = "ledger.cli.main"

# Where SQL may be written: ARCHITECTURE.md's persistence packages and the tables' owners.
SQL_OWNERS = (
    "ledger.eventstore",
    "ledger.projections",
    "ledger.integrations.outbox",
    "ledger.audit",
    "ledger.finance",
    "ledger.feed",
)
SQL = re.compile(r"\bSELECT\s|\bINSERT\s+INTO\b|\bUPDATE\s+\S+\s+SET\b|\bDELETE\s+FROM\b|\bCREATE\s+TABLE\b")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (or, for `from package import name`, the package)
    line: int
    lazy: bool  # inside a function
    type_only: bool  # under `if TYPE_CHECKING:`


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the packages under src/."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (SRC / package).rglob("*.py"):
            parts = path.relative_to(SRC).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours that `name` (a module, or a name inside one) is, if any."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import statement with (inside a function, under TYPE_CHECKING)."""

    def visit(
        node: ast.AST, lazy: bool, type_only: bool
    ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, lazy, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                yield from visit(stmt, lazy, True)
            for stmt in node.orelse:
                yield from visit(stmt, lazy, type_only)
        else:
            inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            for child in ast.iter_child_nodes(node):
                yield from visit(child, inner, type_only)

    yield from visit(tree, False, False)


def imports() -> list[Import]:
    known = modules()
    found: list[Import] = []
    for source, path in known.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for stmt, lazy, type_only in _statements(ast.parse(path.read_text(), str(path))):
            if isinstance(stmt, ast.Import):
                names = [alias.name for alias in stmt.names]
            else:
                base = stmt.module or ""
                if stmt.level:  # relative: from the package, `level - 1` packages up
                    anchor = package.rsplit(".", stmt.level - 1)[0] if stmt.level > 1 else package
                    base = f"{anchor}.{base}".rstrip(".")
                # `from package import module` imports that module; `from module import name`, the module.
                names = [f"{base}.{alias.name}" for alias in stmt.names]
            for name in names:
                target = _resolve(name, known)
                if target is not None and target != source:
                    found.append(Import(source, target, stmt.lineno, lazy, type_only))
    return found


def _package(module: str) -> str:
    """`ledger.application.ledger` -> `application`; `ledger.config` -> `config`; the sandbox is its own."""
    parts = module.split(".")
    return parts[1] if parts[0] == "ledger" and len(parts) > 1 else parts[0]


def _where(i: Import) -> str:
    return f"{i.source} (line {i.line}) imports {i.target}"


def test_the_graph_sees_imports_inside_functions() -> None:
    """The scan reads function bodies: the CLI's lazy import of the sandbox is in the graph."""
    lazy = {(i.source, i.target) for i in imports() if i.lazy}
    assert (SANDBOX_LOADER, "ledger_sandbox.cli") in lazy


def test_there_is_no_import_cycle() -> None:
    """No module imports itself back through others, counting imports inside functions."""
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for i in imports():
        if not i.type_only:
            graph[i.source].add(i.target)
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as e:
        # graphlib lists each module before the one that imports it: reversed, each imports the next.
        raise AssertionError(f"import cycle: {' imports '.join(reversed(e.args[1]))}") from None


def test_packages_import_only_what_architecture_allows() -> None:
    """aggregates imports no other ledger package; application, eventstore and projections keep to their rules."""
    broken = [
        _where(i)
        for i in imports()
        if i.target.startswith("ledger.")
        and (i.source, i.target) not in WIRING
        and _package(i.source) != _package(i.target)
        and (
            _package(i.source) == "aggregates"
            or _package(i.target) in NEVER.get(_package(i.source), frozenset())
        )
    ]
    assert broken == []


def test_aggregates_import_only_the_standard_library_and_the_domain_base() -> None:
    """The domain has no I/O: its modules import the standard library, eventsourcing.domain and each other (and
    the hash chain msgspec's JSON encoder)."""
    outside: list[str] = []
    for name, path in modules().items():
        if not name.startswith("ledger.aggregates"):
            continue
        for stmt, _, _ in _statements(ast.parse(path.read_text(), str(path))):
            targets = (
                [alias.name for alias in stmt.names] if isinstance(stmt, ast.Import) else [stmt.module or ""]
            )
            for target in targets:
                top = target.split(".")[0]
                if (
                    getattr(stmt, "level", 0)
                    or top in sys.stdlib_module_names
                    or target.startswith("ledger.aggregates")
                ):
                    continue
                allowed = AGGREGATES_THIRD_PARTY + AGGREGATES_ENCODER.get(name, ())
                if not any(target == t or target.startswith(t + ".") for t in allowed):
                    outside.append(f"{name} (line {stmt.lineno}) imports {target}")
    assert outside == []


def test_the_product_loads_the_sandbox_only_lazily_in_the_cli() -> None:
    """ledger never imports ledger_sandbox, but for `ledger sandbox`'s import inside the CLI's parser."""
    found = [
        _where(i)
        for i in imports()
        if _package(i.source) != "ledger_sandbox"
        and _package(i.target) == "ledger_sandbox"
        and not (i.source == SANDBOX_LOADER and i.lazy)
    ]
    assert found == []


def _sql_lines(path: Path) -> Iterator[int]:
    """Lines of string literals that hold SQL (docstrings and comments are prose, not read)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and SQL.search(node.value)
        ):
            yield node.lineno


def test_sql_lives_only_with_the_tables_owners() -> None:
    """SQL statements are written only in eventstore/, projections/ and the table owners ARCHITECTURE.md names."""
    misplaced = [
        f"{name} (line {line})"
        for name, path in modules().items()
        if name.startswith("ledger.") and not any(name == o or name.startswith(o + ".") for o in SQL_OWNERS)
        for line in _sql_lines(path)
    ]
    assert misplaced == []


def test_the_sql_scan_finds_sql() -> None:
    """The scan recognises the statements it looks for (so an empty finding above means something)."""
    projections = modules()["ledger.projections.base"]
    assert list(_sql_lines(projections))
    for statement in ("SELECT 1", "INSERT INTO t", "UPDATE t SET a = 1", "DELETE FROM t", "CREATE TABLE t"):
        assert SQL.search(statement), statement
    assert not SQL.search("select the rows, then update the view")


def test_package_root_holds_only_settings() -> None:
    """Every module has a room: at src/ledger/ only __init__.py, __main__.py and config.py remain as modules."""
    root = SRC / "ledger"
    modules = {path.name for path in root.glob("*.py")}
    assert modules <= {"__init__.py", "__main__.py", "config.py"}, sorted(modules)
