"""Where the build order is decided: the dependency graph of the recipe tree.

Nodes are recipe names; an edge A -> B means "A must be built before B"
(B lists A, or one of A's sub-packages, in deps or makedeps). networkx does the
graph work: cycles, topological order (ties broken by name, so the order is
the same on every machine), closures and the longest path.

Importing networkx and sorting 2,000 recipes costs more than everything else
`iglubuild graph` does on a cached tree, so what networkx decided for a tree
(its edges, with the implicit ones, and the full order) is kept in a small
JSON memo beside the recipe cache, keyed by a digest of everything the graph
is made from. On a hit, networkx is imported only when a question needs it
(closures, paths); the memo is data, checked, never trusted blindly.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iglubuild.atomic import write_atomic
from iglubuild.errors import GraphError, Problem, UsageError
from iglubuild.recipe import RecipeTree

if TYPE_CHECKING:
    import networkx as nx

MEMO_VERSION = 1
# A memo bigger than this is not ours to read (100,000 recipes' worth of names).
MAX_MEMO_BYTES = 64 << 20

# Cycles reported per strongly connected component; a tangle of more simple
# cycles than this is reported by its first ones (the rest follow the same edges).
MAX_CYCLES_PER_COMPONENT = 20


def cycle_problems(tree: RecipeTree) -> list[Problem]:
    """Every dependency cycle of `tree`, ignoring deps no recipe provides.

    For lint, which reports cycles together with schema and reference
    problems instead of after them.
    """
    import networkx as nx

    providers = tree.providers()
    g: nx.DiGraph = nx.DiGraph()
    for lr in tree:
        g.add_node(lr.name)
        for kind in ("deps", "makedeps"):
            for dep in getattr(lr.recipe, kind):
                if dep in providers and providers[dep][0] != lr.name:
                    g.add_edge(providers[dep][0], lr.name)
    return _cycle_problems(tree, g, providers)


def _cycle_problems(tree: RecipeTree, g: nx.DiGraph,
                    providers: dict[str, tuple[str, str | None]]) -> list[Problem]:
    import networkx as nx

    # is_directed_acyclic_graph is a cheap topological pass; the cycle search
    # only runs on the cyclic components.
    if nx.is_directed_acyclic_graph(g):
        return []
    problems: list[Problem] = []
    for component in sorted(nx.strongly_connected_components(g), key=min):
        if len(component) < 2:
            continue
        sub = g.subgraph(component)
        for cycle in itertools.islice(nx.simple_cycles(sub), MAX_CYCLES_PER_COMPONENT):
            # Edges run dep -> dependent; read the report the same way, from
            # the smallest name, so it is the same on every run.
            names = list(cycle)
            start = names.index(min(names))
            names = names[start:] + names[:start]
            text = " -> ".join(names + [names[0]])
            for a, b in zip(names, names[1:] + names[:1], strict=True):
                lr = tree[b]
                loc = _dep_loc(tree, providers, b, a)
                line, col = lr.locate(loc) if loc else (1, 1)
                problems.append(Problem(str(lr.path), line, col, f"dependency cycle: {text}",
                                        f"{b} needs {a}; break the cycle by removing one of "
                                        "these"))
    return problems


def _dep_loc(tree: RecipeTree, providers: dict[str, tuple[str, str | None]], name: str,
             dep_parent: str) -> tuple[str, int] | None:
    recipe = tree[name].recipe
    for kind in ("deps", "makedeps"):
        for i, dep in enumerate(getattr(recipe, kind)):
            if dep in providers and providers[dep][0] == dep_parent:
                return (kind, i)
    return None


class DepGraph:
    """The build graph of a recipe tree (deps and makedeps; sub-packages -> parent)."""

    def __init__(self, tree: RecipeTree, implicit: Sequence[str] = (),
                 memo_file: Path | None = None) -> None:
        """`implicit` names packages every recipe needs without declaring them
        (the C library, from toolchain/target.toml); the libc and what it
        needs itself are exempt, or the graph would have a cycle.

        `memo_file` (e.g. <build-dir>/cache/graph.json) keeps networkx's
        results for this tree between runs; see the module docstring."""
        self.tree = tree
        self.providers = tree.providers()
        self._g: nx.DiGraph | None = None
        key = _memo_key(tree, implicit)
        memo = _read_memo(memo_file, key) if memo_file is not None else None
        if memo is not None:
            self._order, self._edges = memo
        else:
            g = self._build(implicit)
            self._order = self._sorted_order(g)
            self._edges = sorted(g.edges)
            if memo_file is not None:
                _write_memo(memo_file, key, self._order, self._edges)
        self._preds: dict[str, list[str]] = {n: [] for n in self._order}
        for a, b in self._edges:
            self._preds[b].append(a)

    @property
    def g(self) -> nx.DiGraph:
        """The networkx graph (made from the memo on first use after a hit)."""
        if self._g is None:
            import networkx as nx

            g: nx.DiGraph = nx.DiGraph()
            g.add_nodes_from(self._order)
            g.add_edges_from(self._edges)
            self._g = g
        return self._g

    def _build(self, implicit: Sequence[str]) -> nx.DiGraph:
        import networkx as nx

        g: nx.DiGraph = nx.DiGraph()
        for lr in self.tree:
            g.add_node(lr.name)
        for lr in self.tree:
            for kind in ("deps", "makedeps"):
                for dep in getattr(lr.recipe, kind):
                    parent = self.providers[dep][0]
                    if parent != lr.name:
                        g.add_edge(parent, lr.name)
        problems = _cycle_problems(self.tree, g, self.providers)
        if problems:
            raise GraphError(problems)
        self._add_implicit(g, implicit)
        self._g = g
        return g

    @staticmethod
    def _sorted_order(g: nx.DiGraph) -> list[str]:
        import networkx as nx

        return list(nx.lexicographical_topological_sort(g))

    def _add_implicit(self, g: nx.DiGraph, implicit: Sequence[str]) -> None:
        import networkx as nx

        parents = sorted({self.providers[d][0] for d in implicit if d in self.providers})
        if not parents:
            return
        exempt = set(parents)
        for parent in parents:
            exempt |= nx.ancestors(g, parent)
        for node in list(g.nodes):
            if node not in exempt:
                for parent in parents:
                    g.add_edge(parent, node)

    def edges(self) -> list[tuple[str, str]]:
        """Every edge (needed, needer), sorted."""
        return list(self._edges)

    def _known(self, names: Iterable[str]) -> list[str]:
        out = []
        for name in names:
            if name in self.providers:
                out.append(self.providers[name][0])
                continue
            import difflib

            close = difflib.get_close_matches(name, list(self.providers), n=3, cutoff=0.6)
            hint = ("did you mean " + " or ".join(close) + "?") if close else \
                "see `iglubuild graph` for the known packages"
            raise UsageError(f"unknown package {name!r}", hint=hint)
        return out

    def closure(self, names: Iterable[str]) -> set[str]:
        """The named packages and everything they need to be built."""
        import networkx as nx

        out: set[str] = set()
        for name in self._known(names):
            out.add(name)
            out |= nx.ancestors(self.g, name)
        return out

    def dependents(self, names: Iterable[str]) -> set[str]:
        """Everything that (transitively) needs one of the named packages."""
        import networkx as nx

        out: set[str] = set()
        for name in self._known(names):
            out |= nx.descendants(self.g, name)
        return out

    def order(self, names: Iterable[str] | None = None) -> list[str]:
        """Deterministic build order of `names`' closure (or of the whole tree)."""
        if names is None:
            return list(self._order)
        import networkx as nx

        sub = self.g.subgraph(self.closure(names))
        return list(nx.lexicographical_topological_sort(sub))

    def build_deps(self, name: str) -> list[str]:
        """Parent recipes whose artifacts `name` needs at build time, sorted."""
        return sorted(self._preds[name])

    def runtime_deps(self, name: str) -> list[str]:
        """Package names (sub-packages kept) that `name` needs at run time."""
        return list(self.tree[name].recipe.deps)

    def waves(self, names: Iterable[str] | None = None) -> list[list[str]]:
        """Packages grouped by depth: each wave only needs earlier waves."""
        order = self.order(names)
        members = set(order)
        depth: dict[str, int] = {}
        for node in order:
            preds = [p for p in self._preds[node] if p in members]
            depth[node] = 1 + max((depth[p] for p in preds), default=-1)
        waves: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for node in order:
            waves[depth[node]].append(node)
        return [sorted(w) for w in waves]

    def critical_path(self, names: Iterable[str] | None = None) -> list[str]:
        """The longest chain of packages that must be built one after another."""
        import networkx as nx

        nodes = self.g.nodes if names is None else self.closure(names)
        sub = self.g.subgraph(nodes)
        if sub.number_of_nodes() == 0:
            return []
        return list(nx.dag_longest_path(sub, topo_order=nx.lexicographical_topological_sort(sub)))

    def path(self, source: str, target: str) -> list[str] | None:
        """A dependency path: `source` needs ... needs `target` (None if it does not)."""
        import networkx as nx

        a, b = self._known([source, target])
        try:
            return list(reversed(nx.shortest_path(self.g, b, a)))
        except nx.NetworkXNoPath:
            return None


def _memo_key(tree: RecipeTree, implicit: Sequence[str]) -> str:
    """A digest of everything the graph is made from: names, deps, makedeps,
    sub-packages, the implicit deps."""
    h = hashlib.sha256(f"graph memo {MEMO_VERSION}\n{sorted(implicit)}\n".encode())
    for lr in sorted(tree, key=lambda lr: lr.name):
        r = lr.recipe
        h.update(json.dumps([r.name, r.deps, r.makedeps, sorted(r.subpackages)]).encode())
        h.update(b"\n")
    return h.hexdigest()


def _read_memo(path: Path, key: str) -> tuple[list[str], list[tuple[str, str]]] | None:
    """The memo's order and edges if it is for this key and well-formed, else None
    (a miss: the graph is made again and the memo replaced)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_MEMO_BYTES + 1)
        data: Any = json.loads(raw) if len(raw) <= MAX_MEMO_BYTES else None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    order, edges = data.get("order"), data.get("edges")
    if not (isinstance(order, list) and all(isinstance(n, str) for n in order)
            and isinstance(edges, list)
            and all(isinstance(e, list) and len(e) == 2 for e in edges)):
        return None
    names = set(order)
    pairs = [(str(a), str(b)) for a, b in edges]
    if len(names) != len(order) or any(a not in names or b not in names for a, b in pairs):
        return None
    return order, pairs


def _write_memo(path: Path, key: str, order: list[str], edges: list[tuple[str, str]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"key": key, "order": order, "edges": edges},
                                      separators=(",", ":")))
    except OSError:
        pass  # a memo is an optimisation; a read-only build dir only makes it slower
