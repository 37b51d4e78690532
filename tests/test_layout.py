"""The package layout's dependency rule, checked on every import statement of every module.

One directory per process that runs the code (see the README's map):

* ``native`` (kernels) and ``wire`` (frames, handshake, table spec) are
  shared by both ends and import nothing above them;
* ``server`` runs in the sidecar: never pyspark, ``client``, ``spark`` or ``ml``;
* ``client`` runs in tasks and the driver: no pyspark, no ``server``;
* ``spark`` runs on the driver; ``ml`` never imports ``server``;
* ``jobs`` (the batch jobs' library) runs on the driver, above ``ml``.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "spark_ps"

#: What each subpackage may import, of spark_ps and of the outside world's Spark.
ALLOWED = {
    "errors": {"errors"},
    "native": {"errors", "native"},
    "wire": {"errors", "native", "wire"},
    "server": {"errors", "native", "wire", "server"},
    "client": {"errors", "native", "wire", "client"},
    "spark": {"errors", "native", "wire", "client", "spark"},
    "ml": {"errors", "native", "wire", "client", "spark", "ml"},
    "streaming": {"errors", "native", "wire", "client", "spark", "ml", "streaming"},
    "jobs": {"errors", "native", "wire", "client", "spark", "ml", "jobs"},
}
#: Subpackages that must run without pyspark or py4j.
NO_SPARK = {"errors", "native", "wire", "server", "client"}


def _room(module: str) -> str:
    """The subpackage of a dotted module name under spark_ps (``errors`` for spark_ps.errors)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "spark_ps":
                found += [(node.lineno, f"spark_ps.{alias.name}") for alias in node.names]
    return found


def _modules() -> list[pathlib.Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def violations(path: pathlib.Path) -> list[str]:
    """Import statements of ``path`` that break the rule, as ``file:line imports X``."""
    rel = path.relative_to(PACKAGE.parent)
    room = _room(".".join(rel.with_suffix("").parts))
    allowed = ALLOWED.get(room)
    if allowed is None:
        return [f"{rel}: module outside every known subpackage ({sorted(ALLOWED)})"]
    bad = []
    for line, name in _imports(path):
        top = name.split(".")[0]
        if top == "spark_ps" and "." in name and _room(name) not in allowed:
            bad.append(f"{rel}:{line} imports {name} ({room} may import {sorted(allowed)})")
        elif top in ("pyspark", "py4j") and room in NO_SPARK:
            bad.append(f"{rel}:{line} imports {name} ({room} runs without Spark)")
    return bad


def test_every_module_follows_the_dependency_rule():
    modules = _modules()
    assert len(modules) > 30, "the package's modules were not found"
    broken = [v for path in modules for v in violations(path)]
    assert not broken, "\n".join(broken)


def test_the_rule_catches_a_forbidden_import(tmp_path, monkeypatch):
    fake = tmp_path / "spark_ps" / "server"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from spark_ps.client.client import PSClient\n    import pyspark\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "spark_ps")
    found = violations(fake / "bad.py")
    assert len(found) == 2 and "spark_ps.client.client" in found[0] and "pyspark" in found[1]


@pytest.mark.parametrize("module", ["spark_ps.server.sidecar", "spark_ps.client"])
def test_sidecar_and_client_import_without_pyspark(module):
    code = f"import sys, {module}; bad = [m for m in ('pyspark', 'py4j') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_wire_names_exactly_the_servers_update_rules():
    from spark_ps.server.optim import OPTIMIZERS as RULES
    from spark_ps.wire.spec import OPTIMIZERS

    assert set(RULES) == set(OPTIMIZERS)


def test_modules_stay_small():
    roots = [PACKAGE, PACKAGE.parent / "tests", PACKAGE.parent / "integration", PACKAGE.parent / "bench",
             PACKAGE.parent / "jobs"]
    big = [f"{p.relative_to(PACKAGE.parent)}: {n} lines" for root in roots if root.exists()
           for p in sorted(root.rglob("*.py")) if (n := len(p.read_text().splitlines())) > 520]
    assert not big, "modules over ~500 lines: " + ", ".join(big)
