"""The layer contract of pyproject.toml ``[tool.lobsweep] layers``, read from the source.

Every ``import`` and ``from ... import`` of every module counts, those inside
functions included (the lazy imports that used to hide cycles). The package
folders come from ``[tool.setuptools] package-dir``, so a new folder is checked
as soon as it is packaged.

``python tests/test_layers.py`` prints the contract: each layer, its modules,
and the layers it imports.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from collections import defaultdict


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)


def layers(config: dict | None = None) -> list[list[str]]:
    """The declared layers, lowest first; each a list of names that share a rank."""
    config = config or project()
    return [[n.strip() for n in entry.split("|")] for entry in config["tool"]["lobsweep"]["layers"]]


def source_modules(config: dict | None = None) -> dict[str, tuple[str, bool]]:
    """{module name: (path, is a package __init__)} for every packaged .py file."""
    config = config or project()
    out = {}
    for pkg, folder in config["tool"]["setuptools"]["package-dir"].items():
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")
                           and os.path.exists(os.path.join(dirpath, d, "__init__.py"))]
            rel = os.path.relpath(dirpath, base)
            prefix = pkg if rel == "." else f"{pkg}.{rel.replace(os.sep, '.')}"
            for f in filenames:
                if f.endswith(".py"):
                    name = prefix if f == "__init__.py" else f"{prefix}.{f[:-3]}"
                    out.setdefault(name, (os.path.join(dirpath, f), f == "__init__.py"))
    return out


def import_edges(modules: dict[str, tuple[str, bool]]) -> dict[str, dict[str, int]]:
    """{module: {imported project module: line}}, module-level and lazy imports alike."""
    edges: dict[str, dict[str, int]] = defaultdict(dict)
    for name, (path, is_pkg) in modules.items():
        package = name if is_pkg else name.rpartition(".")[0]
        with open(path) as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1])
                    mod = f"{base}.{node.module}" if node.module else base
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            for t in targets:
                while t and t not in modules:            # `pkg.mod.attr` -> `pkg.mod`
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges[name].setdefault(t, node.lineno)
    return edges


def layer_of(module: str, declared: list[list[str]]) -> tuple[int, str] | None:
    """(rank, name) of the longest declared name that is ``module`` or a prefix of it."""
    best = None
    for rank, names in enumerate(declared):
        for n in names:
            if (module == n or module.startswith(n + ".")) and (best is None or len(n) > len(best[1])):
                best = (rank, n)
    return best


def violations(edges: dict[str, dict[str, int]], declared: list[list[str]],
               modules: dict[str, tuple[str, bool]]) -> list[str]:
    """One line per import that goes up a layer or across to a sibling of the same rank."""
    bad = []
    for src, targets in sorted(edges.items()):
        s = layer_of(src, declared)
        for dst, line in sorted(targets.items()):
            d = layer_of(dst, declared)
            if s is None or d is None:
                continue                                  # reported by test_every_module_has_a_layer
            if d[0] > s[0] or (d[0] == s[0] and d[1] != s[1]):
                where = os.path.relpath(modules[src][0], ROOT)
                kind = "upward" if d[0] > s[0] else "sideways"
                bad.append(f"{where}:{line}: {src} ({s[1]}) imports {dst} ({d[1]}): {kind}")
    return bad


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    nodes = set(edges) | {t for ts in edges.values() for t in ts}
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, {}))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, {})))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return out


def report() -> tuple[str, bool]:
    """The contract as text (each layer, top first, its module count and what it imports), and
    whether it holds."""
    declared, modules = layers(), source_modules()
    edges = import_edges(modules)
    uses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    count: dict[str, int] = defaultdict(int)
    for m in modules:
        count[layer_of(m, declared)[1]] += 1
    for src, targets in edges.items():
        s = layer_of(src, declared)[1]
        for dst in targets:
            d = layer_of(dst, declared)[1]
            if d != s:
                uses[s][d] += 1
    lines = []
    for rank in range(len(declared) - 1, -1, -1):
        for n in declared[rank]:
            used = ", ".join(f"{d} {k}" for d, k in sorted(uses[n].items(), key=lambda kv: -kv[1]))
            lines.append(f"{rank:2d} {n:<24} {count[n]:3d} modules  imports: {used or '-'}")
    bad, loops = violations(edges, declared, modules), cycles(edges)
    lines.append(f"{len(modules)} modules, {sum(len(t) for t in edges.values())} imports between them: "
                 f"{len(bad)} against the layers, {len(loops)} cycles")
    return "\n".join(lines + bad + ["a cycle among: " + ", ".join(c) for c in loops]), not bad and not loops


def test_every_module_has_a_layer():
    declared, modules = layers(), source_modules()
    assert len(modules) > 100
    orphans = [m for m in modules if layer_of(m, declared) is None]
    assert orphans == []
    bare = [m for m in modules if layer_of(m, declared)[1] == "lobsweep"]
    assert bare == ["lobsweep"], f"put these in a layer of pyproject.toml: {bare}"


def test_no_module_imports_upward_or_sideways():
    modules = source_modules()
    bad = violations(import_edges(modules), layers(), modules)
    assert bad == [], "\n".join(bad)


def test_no_import_cycles_lazy_imports_included():
    assert cycles(import_edges(source_modules())) == []


def test_the_checks_can_fail():
    """A lazy upward import, a sibling import and a two-module cycle are each caught."""
    declared = [["low"], ["mid.a", "mid.b"], ["top"]]
    modules = {m: (m, False) for m in ("low.x", "mid.a.y", "mid.b.z", "top.w")}
    edges = {"low.x": {"top.w": 3}, "mid.a.y": {"mid.b.z": 4, "low.x": 5}, "mid.b.z": {"mid.a.y": 9}}
    bad = violations(edges, declared, modules)
    assert [b.split(": ", 1)[1] for b in bad] == [
        "low.x (low) imports top.w (top): upward",
        "mid.a.y (mid.a) imports mid.b.z (mid.b): sideways",
        "mid.b.z (mid.b) imports mid.a.y (mid.a): sideways"]
    assert cycles(edges) == [["mid.a.y", "mid.b.z"]]


def test_lazy_imports_are_read(tmp_path):
    """An import inside a function body is an edge like a module-level one."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from ..features import FeaturePipeline\n    return FeaturePipeline\n")
    (tmp_path / "empty.py").write_text("")
    empty = str(tmp_path / "empty.py")
    edges = import_edges({"lobsweep.data.m": (str(path), False), "lobsweep.features": (empty, True)})
    assert edges["lobsweep.data.m"] == {"lobsweep.features": 2}


# ------------------------------------------------------------------ the CLI registers its stages explicitly
CLI_COMMANDS = {
    "data": ["validate", "synth"],
    "train": ["models", "train", "predict"],
    "tune": ["sweep", "recipes", "leaderboard", "feature-search", "retrain"],
    "ensemble": ["ensemble", "import-checkpoints"],
    "package": ["package", "score", "baseline"],
    "flows": ["full-search"],
}


def test_cli_has_one_module_per_stage_each_registering_its_commands():
    import lobsweep.cli as cli
    from lobsweep.cli.core import COMMANDS
    folder = os.path.dirname(cli.__file__)
    not_stages = ("__init__.py", "__main__.py", "core.py")
    stage_files = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f not in not_stages)
    assert stage_files == sorted(CLI_COMMANDS)
    owner = {name: fn.__module__.rpartition(".")[2] for name, (_, fn, _) in COMMANDS.items()}
    assert {stage: [c for c in owner if owner[c] == stage] for stage in CLI_COMMANDS} == CLI_COMMANDS
    assert list(COMMANDS) == [c for cmds in CLI_COMMANDS.values() for c in cmds]       # the --help order


def test_a_missing_cli_module_is_an_error_not_missing_commands():
    code = ("import sys; sys.modules['lobsweep.cli.flows'] = None\n"
            "try:\n    import lobsweep.cli\nexcept ImportError as e:\n    print('refused:', e)\n"
            "else:\n    print('loaded without it')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.startswith("refused:") and "lobsweep.cli.flows" in out.stdout, out.stdout + out.stderr


if __name__ == "__main__":
    text, holds = report()
    print(text)
    sys.exit(0 if holds else 1)
