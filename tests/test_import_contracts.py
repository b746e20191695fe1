"""The import graph: no module of tui_app takes part in an import cycle (import-linter checks the layers)."""

from __future__ import annotations

import grimp


def _cycle_through(graph: grimp.ImportGraph, module: str) -> list[str] | None:
    """One import chain from a module that imports ``module`` back to ``module``, or None."""
    for importer in graph.find_modules_that_directly_import(module):
        chain = graph.find_shortest_chain(importer=module, imported=importer)
        if chain:
            return [*chain, module]
    return None


def test_no_module_is_part_of_an_import_cycle():
    graph = grimp.build_graph("tui_app")
    cycles = {m: c for m in sorted(graph.modules) if (c := _cycle_through(graph, m))}
    assert not cycles, "\n".join(" -> ".join(chain) for chain in cycles.values())


def test_the_check_finds_a_cycle_when_there_is_one():
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    assert _cycle_through(graph, "pkg.a") == ["pkg.a", "pkg.b", "pkg.a"]
    assert _cycle_through(graph, "pkg") is None
