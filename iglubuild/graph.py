"""Where the build order is decided: the dependency graph of the recipe tree.

Nodes are recipe names; an edge A -> B means "A must be built before B"
(B lists A, or one of A's sub-packages, in deps or makedeps). networkx does the
graph work: cycles, topological order (ties broken by name, so the order is
the same on every machine), closures and the longest path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import networkx as nx

from iglubuild.errors import GraphError, Problem, UsageError
from iglubuild.recipe import RecipeTree


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
        # is_directed_acyclic_graph is a cheap topological pass; find_cycle's
        # edge DFS is slow on large trees, so it only runs on a cyclic component.
        if nx.is_directed_acyclic_graph(self.g):
            return
        component = next(c for c in sorted(nx.strongly_connected_components(self.g),
                                           key=min) if len(c) > 1)
        cycle = nx.find_cycle(self.g.subgraph(component))
        names = [edge[0] for edge in cycle]
        # Start the report at the smallest name so it reads the same each run.
        start = names.index(min(names))
        names = names[start:] + names[:start]
        text = " -> ".join(names + [names[0]])
        problems = []
        for a, b in zip(names, names[1:] + names[:1], strict=True):
            lr = self.tree[b]
            loc = self._dep_loc(b, a)
            line, col = lr.locate(loc) if loc else (1, 1)
            problems.append(Problem(str(lr.path), line, col,
                                    f"dependency cycle: {text}",
                                    f"{b} needs {a}; break the cycle by removing one of these"))
        raise GraphError(problems)

    def _dep_loc(self, name: str, dep_parent: str) -> tuple[str, int] | None:
        recipe = self.tree[name].recipe
        for kind in ("deps", "makedeps"):
            for i, dep in enumerate(getattr(recipe, kind)):
                if self.providers[dep][0] == dep_parent:
                    return (kind, i)
        return None

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
