"""Measure the architecture of a checkout of this Kedro project; print a plain-text report.

Usage::

    .venv/bin/python bench/architecture_report.py [PROJECT_ROOT]

PROJECT_ROOT defaults to the repository that holds this script. Nothing is hard-coded
about the package layout: the package name comes from ``[tool.kedro] package_name`` in
the project's ``pyproject.toml`` and every module, subpackage, pipeline and node is
discovered. The report has five sections:

1. Top-level modules: the ``*.py`` files directly in ``src/<package>/`` and the
   subpackages (folders holding at least one ``.py`` file) next to them.
2. The ten longest functions under ``src/<package>/``, by ``ast``
   (``end_lineno - lineno + 1``, decorators not counted); nested functions and methods
   are entries of their own, named by their dotted qualified name.
3. Pipelines, from a real ``bootstrap_project`` in a subprocess (cwd = PROJECT_ROOT,
   ``PYTHONPATH=PROJECT_ROOT/src`` first, telemetry off): nodes per pipeline, and the
   connected components of the ``__default__`` pipeline as an undirected graph whose
   vertices are nodes and datasets and whose edges join a node to each of its inputs
   and outputs. ``parameters`` and ``params:*`` are left out (every node would be one
   component through them). "Free inputs" are datasets that some node reads and no
   node of any pipeline writes (parameters excluded).
4. Node functions that do I/O themselves, a text heuristic. Each node's function is
   unwrapped (``functools.partial``, ``__wrapped__``) and its source taken with
   ``inspect.getsource``; docstrings and comments are dropped (prose that mentions
   "git " or "Path(" is not I/O) and the remaining code is searched for the plain
   substrings in ``IO_PATTERNS``. "Direct" flags a node whose own function matches.
   "Transitive" also flags a node whose function calls, by a bare name (``f(...)``,
   not ``x.f(...)``), a top-level function of the module that defines the node
   function, when that callee's code matches: one level deep, nothing else followed.
   The count that the same search gives on the raw source (docstrings and comments
   included) is shown next to the direct count for comparison.
5. Linters: ``ruff check --statistics`` and ``ruff format --check`` on ``src``, and
   ``mypy src/<package> --ignore-missing-imports``, all run from this interpreter's
   environment; the project's ``[tool.ruff]``/``[tool.mypy]`` apply when present.

The report goes to stdout only: ruff runs with ``--no-cache``, mypy with
``--cache-dir=/dev/null``, subprocesses write no bytecode, and the caches that
Ultralytics and Matplotlib write on import go to a temporary folder that is removed.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import tokenize
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Substrings whose presence in a node function's code counts as doing I/O itself.
IO_PATTERNS: tuple[str, ...] = (
    "open(",
    ".read_text(",
    ".write_text(",
    ".read_bytes(",
    ".write_bytes(",
    "mkdir(",
    "import mlflow",
    "mlflow.",
    "MlflowClient",
    "subprocess",
    "git ",
    '"git"',
    "dvc",
    "shutil.",
    "Path(",
)
LONGEST_SHOWN = 10
PROBE_TIMEOUT_S = 600
RUFF_TIMEOUT_S = 300
MYPY_TIMEOUT_S = 900
_MARKER = "@@ARCHITECTURE_REPORT_JSON@@"

#: Runs in the project's own interpreter: bootstrap Kedro, print every pipeline's nodes.
_PROBE = """
import functools, inspect, json, sys
from pathlib import Path
from kedro.framework.startup import bootstrap_project
bootstrap_project(Path(sys.argv[1]))
from kedro.framework.project import pipelines

def unwrap(func):
    while True:
        if isinstance(func, functools.partial):
            func = func.func
        elif getattr(func, "__wrapped__", None) is not None:
            func = func.__wrapped__
        else:
            return func

def source_of(func):
    for target in (func, type(func)):
        try:
            return inspect.getsource(target), inspect.getsourcefile(target)
        except (OSError, TypeError):
            continue
    return "", None

def describe(node):
    func = unwrap(node.func)
    source, file = source_of(func)
    return {"name": node.name, "inputs": list(node.inputs), "outputs": list(node.outputs),
            "func": getattr(func, "__qualname__", repr(func)), "file": file, "source": source}

found = {name: [describe(node) for node in pipe.nodes] for name, pipe in pipelines.items()}
print(MARKER + json.dumps(found))
""".replace("MARKER", repr(_MARKER))


@dataclass(frozen=True)
class FunctionLength:
    """One function or method definition and its length in lines."""

    qualname: str
    path: str
    lineno: int
    lines: int


@dataclass(frozen=True)
class NodeInfo:
    """What the Kedro probe reports about one node of one pipeline."""

    pipeline: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    func: str
    file: str | None
    source: str


@dataclass(frozen=True)
class ToolRun:
    """The outcome of one linter command: its output, or why there is none."""

    returncode: int | None
    output: str
    problem: str | None = None


# --- 1. modules ---------------------------------------------------------------------


def package_name(root: Path) -> str:
    """The Kedro package name from ``pyproject.toml`` (``[tool.kedro] package_name``)."""
    pyproject = root / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text(encoding="utf-8")) if pyproject.is_file() else {}
    kedro = data.get("tool", {}).get("kedro", {})
    if "package_name" in kedro:
        return str(kedro["package_name"])
    packages = sorted(p.parent.name for p in (root / "src").glob("*/__init__.py"))
    if not packages:
        raise SystemExit(f"no package found under {root / 'src'}")
    return packages[0]


def report_modules(package_dir: Path) -> list[str]:
    """Section 1: the modules directly in the package folder, and its subpackages."""
    modules = sorted(p.name for p in package_dir.glob("*.py"))
    subpackages = sorted(
        p.name
        for p in package_dir.iterdir()
        if p.is_dir() and p.name != "__pycache__" and any(p.rglob("*.py"))
    )
    return [
        f"Top-level modules in {package_dir.name}/: {len(modules)}",
        *_wrapped(", ".join(modules)),
        f"Subpackages: {len(subpackages)}",
        *_wrapped(", ".join(subpackages)),
    ]


def _wrapped(text: str) -> list[str]:
    """``text`` broken into indented lines of at most 88 characters."""
    return textwrap.wrap(text, width=88, initial_indent="  ", subsequent_indent="  ") or ["  -"]


# --- 2. function lengths ------------------------------------------------------------


def function_lengths(tree: ast.AST, path: str) -> Iterator[FunctionLength]:
    """Every function and method in ``tree``, nested ones included, with its length."""

    def visit(node: ast.AST, prefix: str) -> Iterator[FunctionLength]:
        """The definitions below ``node``; ``prefix`` is the qualified name around them."""
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qualname = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    end = child.end_lineno or child.lineno
                    yield FunctionLength(qualname, path, child.lineno, end - child.lineno + 1)
                yield from visit(child, qualname + ".")
            else:
                yield from visit(child, prefix)

    yield from visit(tree, "")


def report_longest(root: Path, package_dir: Path) -> list[str]:
    """Section 2: the longest functions of the package."""
    found: list[FunctionLength] = []
    for path in sorted(package_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found.extend(function_lengths(tree, str(path.relative_to(root))))
    found.sort(key=lambda f: (-f.lines, f.path, f.lineno))
    over_40 = sum(1 for f in found if f.lines > 40)
    return [
        f"Functions: {len(found)} in total, {over_40} longer than 40 lines. Longest:",
        *(f"  {f.lines:5d}  {f.qualname}  ({f.path}:{f.lineno})" for f in found[:LONGEST_SHOWN]),
    ]


# --- 3. pipelines -------------------------------------------------------------------


def probe_env(root: Path, scratch: Path) -> dict[str, str]:
    """The environment of the Kedro probe: project first on the path, telemetry off."""
    env = dict(os.environ)
    src = str(root / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.update(
        KEDRO_DISABLE_TELEMETRY="1",
        DO_NOT_TRACK="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        YOLO_OFFLINE="1",
        CV_PIPELINES_PROJECT_ROOT=str(root),
        PYTHONDONTWRITEBYTECODE="1",
        YOLO_CONFIG_DIR=str(scratch / "ultralytics"),
        MPLCONFIGDIR=str(scratch / "matplotlib"),
    )
    return env


def load_nodes(root: Path) -> list[NodeInfo]:
    """Every node of every registered pipeline, from a Kedro bootstrap in a subprocess."""
    with tempfile.TemporaryDirectory(prefix="architecture_report_") as scratch:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(root)],
            cwd=root,
            env=probe_env(root, Path(scratch)),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    payload = [line for line in done.stdout.splitlines() if line.startswith(_MARKER)]
    if done.returncode != 0 or not payload:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"Kedro bootstrap failed (exit {done.returncode}):\n{tail}")
    found: dict[str, list[dict[str, Any]]] = json.loads(payload[-1][len(_MARKER) :])
    return [
        NodeInfo(
            pipeline=name,
            name=n["name"],
            inputs=tuple(n["inputs"]),
            outputs=tuple(n["outputs"]),
            func=n["func"],
            file=n["file"],
            source=n["source"],
        )
        for name, nodes in found.items()
        for n in nodes
    ]


def is_parameter(dataset: str) -> bool:
    """Whether ``dataset`` is a parameters input (``parameters`` or ``params:*``)."""
    return dataset == "parameters" or dataset.startswith("params:")


class UnionFind:
    """Disjoint sets over strings, with path halving."""

    def __init__(self) -> None:
        """An empty structure; items join it on their first ``find``."""
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        """The representative of ``item``'s set (``item`` is added when new)."""
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: str, b: str) -> None:
        """Merge the sets of ``a`` and ``b``."""
        self.parent[self.find(a)] = self.find(b)


def components(nodes: Iterable[NodeInfo]) -> list[tuple[list[str], int]]:
    """Connected components of the node/dataset graph: (node names, dataset count)."""
    sets = UnionFind()
    for node in nodes:
        vertex = "node:" + node.name
        sets.find(vertex)
        for dataset in node.inputs + node.outputs:
            if not is_parameter(dataset):
                sets.union(vertex, "data:" + dataset)
    members: dict[str, list[str]] = {}
    for vertex in list(sets.parent):
        members.setdefault(sets.find(vertex), []).append(vertex)
    result = []
    for group in members.values():
        names = sorted(v[5:] for v in group if v.startswith("node:"))
        result.append((names, sum(1 for v in group if v.startswith("data:"))))
    return sorted(result, key=lambda c: (-len(c[0]), c[0]))


def report_pipelines(nodes: list[NodeInfo]) -> list[str]:
    """Section 3: nodes per pipeline, components of ``__default__``, free inputs."""
    per_pipeline = Counter(n.pipeline for n in nodes)
    lines = [f"Pipelines: {len(per_pipeline)} (nodes per pipeline)"]
    lines += [f"  {count:5d}  {name}" for name, count in sorted(per_pipeline.items())]
    default = [n for n in nodes if n.pipeline == "__default__"]
    home = _home_pipelines(nodes)
    found = components(default)
    lines.append(f"Connected components of __default__ (params excluded): {len(found)}")
    for index, (names, datasets) in enumerate(found, start=1):
        owners = ", ".join(sorted({p for name in names for p in home.get(name, ())}))
        lines.append(f"  #{index}: {len(names)} nodes, {datasets} datasets  [{owners or '-'}]")
    lines += _free_inputs(nodes)
    return lines


def _home_pipelines(nodes: Iterable[NodeInfo]) -> dict[str, set[str]]:
    """For each node name, the pipelines other than ``__default__`` that hold it."""
    home: dict[str, set[str]] = {}
    for node in nodes:
        names = home.setdefault(node.name, set())
        if node.pipeline != "__default__":
            names.add(node.pipeline)
    return home


def _free_inputs(nodes: list[NodeInfo]) -> list[str]:
    """Datasets read by some node and written by none (parameters excluded)."""
    written = {d for n in nodes for d in n.outputs}
    readers: dict[str, set[str]] = {}
    for node in nodes:
        for dataset in node.inputs:
            if not is_parameter(dataset) and dataset not in written:
                readers.setdefault(dataset, set()).add(node.name)
    return [
        f"Free inputs (read, never written): {len(readers)}",
        *(f"  {name}  <- {', '.join(sorted(readers[name]))}" for name in sorted(readers)),
    ]


# --- 4. I/O in node functions -------------------------------------------------------


def code_only(source: str) -> str:
    """``source`` with its comments and docstrings blanked out (the code a heuristic reads)."""
    source = textwrap.dedent(source)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    docstrings = {
        body[0].value.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and (body := node.body)
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    }
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    chars = list(source)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT or (
            token.type == tokenize.STRING and token.start[0] in docstrings
        ):
            begin = starts[token.start[0] - 1] + token.start[1]
            end = starts[token.end[0] - 1] + token.end[1]
            chars[begin:end] = " " * (end - begin)
    return "".join(chars)


def io_hits(source: str) -> list[str]:
    """The I/O patterns that occur in ``source``."""
    return [pattern for pattern in IO_PATTERNS if pattern in source]


def bare_calls(source: str) -> set[str]:
    """Names called as ``name(...)`` anywhere in ``source``."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return set()
    return {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }


def module_function_hits(file: str, cache: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """Top-level functions of the module ``file`` mapped to the I/O patterns in their code."""
    if file not in cache:
        text = Path(file).read_text(encoding="utf-8")
        cache[file] = {
            node.name: io_hits(code_only(ast.get_source_segment(text, node) or ""))
            for node in ast.parse(text).body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
    return cache[file]


def transitive_hits(node: NodeInfo, cache: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """Callees (one level, same module) of the node's function whose code matches."""
    if not node.file or not Path(node.file).is_file():
        return {}
    own_name = node.func.rsplit(".", 1)[-1]
    in_module = module_function_hits(node.file, cache)
    return {
        name: in_module[name]
        for name in sorted(bare_calls(node.source))
        if name != own_name and in_module.get(name)
    }


def report_io(nodes: list[NodeInfo], root: Path) -> list[str]:
    """Section 4: nodes whose function does I/O itself, directly and one call deep."""
    home = _home_pipelines(nodes)
    named = sorted(
        {n.name: n for n in nodes}.values(), key=lambda n: (sorted(home[n.name]), n.name)
    )
    cache: dict[str, dict[str, list[str]]] = {}
    direct, via, raw = [], [], 0
    for node in named:
        hits = io_hits(code_only(node.source))
        raw += bool(io_hits(node.source))
        callees = transitive_hits(node, cache)
        where = "+".join(sorted(home[node.name])) or "__default__"
        label = f"{where}/{node.name} ({node.func}, {_short(node.file, root)})"
        if hits:
            direct.append(f"  {label} -> {', '.join(hits)}")
        elif callees:
            calls = "; ".join(f"{name}: {', '.join(p)}" for name, p in callees.items())
            via.append(f"  {label} -> via {calls}")
    return [
        f"Node functions checked: {len(named)} (distinct nodes of all pipelines)",
        f"Doing I/O directly: {len(direct)} (raw source incl. docstrings/comments: {raw})",
        *direct,
        f"Doing I/O directly or one same-module call deep: {len(direct) + len(via)} "
        + f"({len(via)} more)",
        *via,
    ]


def _short(file: str | None, root: Path) -> str:
    """``file`` relative to ``root`` when inside it."""
    if not file:
        return "?"
    try:
        return str(Path(file).resolve().relative_to(root))
    except ValueError:
        return file


# --- 5. linters ---------------------------------------------------------------------


def run_tool(module: str, args: list[str], root: Path, timeout: int) -> ToolRun:
    """``python -m module args`` in ``root``; ``problem`` says why it could not run."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return ToolRun(None, "", "not installed")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1")
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ToolRun(None, "", f"timed out after {timeout} s")
    return ToolRun(done.returncode, (done.stdout + done.stderr).strip())


def tool_sections(root: Path) -> set[str]:
    """Which of ``[tool.ruff]`` and ``[tool.mypy]`` the project's pyproject.toml has."""
    pyproject = root / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text(encoding="utf-8")) if pyproject.is_file() else {}
    return {name for name in ("ruff", "mypy") if name in data.get("tool", {})}


def report_ruff(root: Path) -> list[str]:
    """Section 5a: ruff check statistics and ruff format's would-reformat count."""
    check = run_tool("ruff", ["check", "--statistics", "--no-cache", "src"], root, RUFF_TIMEOUT_S)
    if check.problem:
        return [f"ruff: {check.problem}"]
    stats = [ln for ln in check.output.splitlines() if re.match(r"\s*\d+\s+[A-Z]+\d+\s", ln)]
    total = sum(int(ln.split()[0]) for ln in stats)
    if check.returncode not in (0, 1):
        return [f"ruff check failed (exit {check.returncode}): {check.output[-500:]}"]
    version = run_tool("ruff", ["--version"], root, RUFF_TIMEOUT_S).output
    lines = [f"{version}, ruff check: {total} findings, {len(stats)} rules"]
    lines += [f"  {ln.strip()}" for ln in stats]
    fmt = run_tool("ruff", ["format", "--check", "--no-cache", "src"], root, RUFF_TIMEOUT_S)
    if fmt.problem or fmt.returncode not in (0, 1):
        return [*lines, f"ruff format --check: {fmt.problem or fmt.output[-500:]}"]
    summary = fmt.output.splitlines()[-1] if fmt.output else ""
    would = re.search(r"(\d+) files? would be reformatted", summary)
    count = would.group(1) if would else "0"
    return [*lines, f"ruff format --check: {count} files would be reformatted ({summary})"]


def report_mypy(root: Path, package: str) -> list[str]:
    """Section 5b: mypy's error count on the package (its last summary line)."""
    cache = "/dev/null" if os.name == "posix" else tempfile.mkdtemp()
    args = [f"src/{package}", "--ignore-missing-imports", f"--cache-dir={cache}"]
    run = run_tool("mypy", args, root, MYPY_TIMEOUT_S)
    if run.problem:
        return [f"mypy: {run.problem}"]
    summary = run.output.splitlines()[-1] if run.output else "(no output)"
    version = run_tool("mypy", ["--version"], root, MYPY_TIMEOUT_S).output
    if summary.startswith("Success"):
        return [f"{version}: 0 errors ({summary})"]
    found = re.match(r"Found (\d+) errors?", summary)
    if found:
        return [f"{version}: {found.group(1)} errors ({summary})"]
    return [f"{version}: failed (exit {run.returncode}): {summary}"]


# --- report -------------------------------------------------------------------------


def section(title: str, lines: list[str]) -> str:
    """One titled block of the report."""
    return "\n".join([f"== {title} ==", *lines, ""])


def pipeline_sections(root: Path) -> list[str]:
    """Sections 3 and 4, or one note saying why Kedro could not be bootstrapped."""
    try:
        nodes = load_nodes(root)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        return [section("3. Pipelines", [str(error)])]
    return [
        section("3. Pipelines", report_pipelines(nodes)),
        section("4. Node functions doing I/O themselves", report_io(nodes, root)),
    ]


def main(argv: list[str]) -> int:
    """Print the report for the project at ``argv[1]`` (default: this repository)."""
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parents[1]).resolve()
    package = package_name(root)
    package_dir = root / "src" / package
    configured = tool_sections(root)
    config_note = ", ".join(f"[tool.{name}]" for name in sorted(configured)) or "none"
    blocks = [
        f"Architecture report for {root} (package {package})\n",
        section("1. Modules", report_modules(package_dir)),
        section("2. Longest functions", report_longest(root, package_dir)),
        *pipeline_sections(root),
        section(
            f"5. Linters (pyproject config: {config_note})",
            report_ruff(root) + report_mypy(root, package),
        ),
    ]
    print("\n".join(blocks).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
