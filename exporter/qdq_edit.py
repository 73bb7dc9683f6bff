"""Small, explicit edits of an ONNX graph for the Q/DQ writer and shift-and-sum: fresh
names, constant initializers, nodes appended, then one topological sort at the end (so
inserted nodes never need an anchor)."""

from __future__ import annotations

import heapq

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphEdit:
    """Collects new nodes and initializers for ``model.graph`` (edited in place)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        g = self.graph
        self._used = {t.name for t in g.initializer} | {i.name for i in g.input}
        self._used |= {o for n in g.node for o in n.output} | {n.name for n in g.node}
        self.inits = {t.name: t for t in g.initializer}

    def fresh(self, base: str) -> str:
        """An unused tensor/node name starting with ``base``."""
        name, i = base, 0
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def const(self, base: str, value: np.ndarray) -> str:
        """A new initializer holding ``value`` (dtype kept); returns its name."""
        name = self.fresh(base)
        t = numpy_helper.from_array(np.asarray(value), name)
        self.graph.initializer.append(t)
        self.inits[name] = t
        return name

    def node(self, op: str, inputs: list[str], base: str, n_out: int = 1, **attrs) -> list[str]:
        """Append ``op`` (named ``base``...) with fresh outputs; returns the output names."""
        outs = [self.fresh(f"{base}_out{i}" if n_out > 1 else f"{base}_out") for i in range(n_out)]
        self.graph.node.append(helper.make_node(op, inputs, outs, name=self.fresh(base), **attrs))
        return outs

    def node_to(self, op: str, inputs: list[str], outputs: list[str], base: str, **attrs) -> None:
        """Append ``op`` writing the given (existing) output names."""
        self.graph.node.append(
            helper.make_node(op, inputs, outputs, name=self.fresh(base), **attrs)
        )

    def remove_initializer(self, name: str) -> None:
        """Drop an initializer nothing reads any more."""
        if any(name in n.input for n in self.graph.node):
            return
        # Delete in place: rebuilding the field with extend() copies every initializer, which
        # on a VAR-d16 step (1.2 GB of weights, ~65 replaced) exhausted 24 GB.
        for i, t in enumerate(self.graph.initializer):
            if t.name == name:
                del self.graph.initializer[i]
                break
        self.inits.pop(name, None)

    def finish(self) -> onnx.ModelProto:
        """Sort the nodes topologically (stable: original order where free)."""
        toposort(self.graph)
        return self.model


def toposort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so that every input is produced before it is read."""
    nodes = list(graph.node)
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    producers = {o: k for k, n in enumerate(nodes) for o in n.output}
    waiting: dict[int, int] = {}
    users: dict[str, list[int]] = {}
    for k, n in enumerate(nodes):
        missing = {x for x in n.input if x not in ready and x in producers}
        waiting[k] = len(missing)
        for x in missing:
            users.setdefault(x, []).append(k)
    heap = [k for k, c in waiting.items() if c == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        k = heapq.heappop(heap)
        order.append(k)
        for o in nodes[k].output:
            for u in users.get(o, []):
                waiting[u] -= 1
                if waiting[u] == 0:
                    heapq.heappush(heap, u)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle or an input that nothing produces")
    del graph.node[:]
    graph.node.extend(nodes[k] for k in order)
