"""Where the build order is decided: the dependency graph of the recipe tree.

Nodes are recipe names; an edge A -> B means "A must be built before B"
(B lists A, or one of A's sub-packages, in deps or makedeps). networkx does the
graph work: cycles, topological order (ties broken by name, so the order is
the same on every machine), closures and the longest path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import networkx as nx

from iglubuild.errors import GraphError, Problem, UsageError
from iglubuild.recipe import RecipeTree

# Cycles reported per strongly connected component; a tangle of more simple
# cycles than this is reported by its first ones (the rest follow the same edges).
MAX_CYCLES_PER_COMPONENT = 20


def cycle_problems(tree: RecipeTree) -> list[Problem]:
    """Every dependency cycle of `tree`, ignoring deps no recipe provides.

    For lint, which reports cycles together with schema and reference
    problems instead of after them.
    """
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

    def __init__(self, tree: RecipeTree, implicit: Sequence[str] = ()) -> None:
        """`implicit` names packages every recipe needs without declaring them
        (the C library, from toolchain/target.toml); the libc and what it
        needs itself are exempt, or the graph would have a cycle."""
        self.tree = tree
        self.providers = tree.providers()
        g: nx.DiGraph = nx.DiGraph()
        for lr in tree:
            g.add_node(lr.name)
        for lr in tree:
            for kind in ("deps", "makedeps"):
                for dep in getattr(lr.recipe, kind):
                    parent = self.providers[dep][0]
                    if parent != lr.name:
                        g.add_edge(parent, lr.name)
        self.g = g
        self._check_cycles()
        self._add_implicit(implicit)

    def _add_implicit(self, implicit: Sequence[str]) -> None:
        parents = sorted({self.providers[d][0] for d in implicit if d in self.providers})
        if not parents:
            return
        exempt = set(parents)
        for parent in parents:
            exempt |= nx.ancestors(self.g, parent)
        for node in list(self.g.nodes):
            if node not in exempt:
                for parent in parents:
                    self.g.add_edge(parent, node)

    def _check_cycles(self) -> None:
        problems = _cycle_problems(self.tree, self.g, self.providers)
        if problems:
            raise GraphError(problems)

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
        out: set[str] = set()
        for name in self._known(names):
            out.add(name)
            out |= nx.ancestors(self.g, name)
        return out

    def dependents(self, names: Iterable[str]) -> set[str]:
        """Everything that (transitively) needs one of the named packages."""
        out: set[str] = set()
        for name in self._known(names):
            out |= nx.descendants(self.g, name)
        return out

    def order(self, names: Iterable[str] | None = None) -> list[str]:
        """Deterministic build order of `names`' closure (or of the whole tree)."""
        nodes = self.g.nodes if names is None else self.closure(names)
        sub = self.g.subgraph(nodes)
        return list(nx.lexicographical_topological_sort(sub))

    def build_deps(self, name: str) -> list[str]:
        """Parent recipes whose artifacts `name` needs at build time, sorted."""
        return sorted(self.g.predecessors(name))

    def runtime_deps(self, name: str) -> list[str]:
        """Package names (sub-packages kept) that `name` needs at run time."""
        return list(self.tree[name].recipe.deps)

    def waves(self, names: Iterable[str] | None = None) -> list[list[str]]:
        """Packages grouped by depth: each wave only needs earlier waves."""
        order = self.order(names)
        members = set(order)
        depth: dict[str, int] = {}
        for node in order:
            preds = [p for p in self.g.predecessors(node) if p in members]
            depth[node] = 1 + max((depth[p] for p in preds), default=-1)
        waves: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for node in order:
            waves[depth[node]].append(node)
        return [sorted(w) for w in waves]

    def critical_path(self, names: Iterable[str] | None = None) -> list[str]:
        """The longest chain of packages that must be built one after another."""
        nodes = self.g.nodes if names is None else self.closure(names)
        sub = self.g.subgraph(nodes)
        if sub.number_of_nodes() == 0:
            return []
        return list(nx.dag_longest_path(sub, topo_order=nx.lexicographical_topological_sort(sub)))

    def path(self, source: str, target: str) -> list[str] | None:
        """A dependency path: `source` needs ... needs `target` (None if it does not)."""
        a, b = self._known([source, target])
        try:
            return list(reversed(nx.shortest_path(self.g, b, a)))
        except nx.NetworkXNoPath:
            return None
