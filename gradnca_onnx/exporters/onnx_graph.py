"""Walking an ONNX graph backwards: what a set of tensors is computed from.

One implementation for the split of the gradient graph (:mod:`.onnx_split`), the importer's
features-only cut and its interpreter (:mod:`gradnca_onnx.importers`). Imports onnx only.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterable, Iterator, Sequence

import onnx


def subgraph_inputs(node: onnx.NodeProto) -> Iterator[str]:
    """Outer-scope tensors that a node's subgraphs (If/Loop/Scan bodies) read."""
    for a in node.attribute:
        graphs = ([a.g] if a.HasField("g") else []) + list(a.graphs)
        for g in graphs:
            local = {t.name for t in g.initializer} | {i.name for i in g.input}
            for sub in g.node:
                local.update(sub.output)
            for sub in g.node:
                for i in list(sub.input) + list(subgraph_inputs(sub)):
                    if i and i not in local:
                        yield i


def node_reads(node: onnx.NodeProto) -> list[str]:
    """Every tensor ``node`` reads: its inputs and its subgraphs' outer-scope reads."""
    return list(node.input) + list(subgraph_inputs(node))


def ancestors(nodes: Sequence[Any], tensors: Iterable[str], stop: Collection[str] = (), *,
              reads: Callable[[Any], Iterable[str]] = node_reads,
              writes: Callable[[Any], Iterable[str]] = lambda n: n.output
              ) -> tuple[set[int], set[str]]:
    """What ``tensors`` are computed from, not looking past the ``stop`` tensors.

    Parameters
    ----------
    nodes : sequence
        ONNX nodes (or any steps, with ``reads`` and ``writes`` saying their tensors).
    tensors : iterable of str
        The tensors whose ancestry is wanted.
    stop : collection of str
        Tensors neither followed nor included (a graph input that cuts the walk).

    Returns
    -------
    (set of int, set of str)
        The indices in ``nodes`` of the nodes needed, and the names of the tensors needed
        (``tensors`` themselves included).
    """
    producer = {o: k for k, n in enumerate(nodes) for o in writes(n) if o}
    need = {t for t in tensors if t not in stop}
    stack = list(need)
    keep: set[int] = set()
    while stack:
        k = producer.get(stack.pop())
        if k is None or k in keep:
            continue
        keep.add(k)
        for i in reads(nodes[k]):
            if i and i not in stop and i not in need:
                need.add(i)
                stack.append(i)
    return keep, need
