"""Interpreters over the graph: evaluate, forward mode (JVPs), reverse mode (VJPs).

Each walks ``graph.nodes`` in order (reverse mode then walks back) with an
environment dict, asks the op registry for the rule, and counts:
- primal work from each op's declared cost;
- derivative work through the counted ``Linear`` algebra (adcli.tangents)
  and each partial's declared per-element cost;
- live scalars (values, dense tangents/cotangents, partials, residuals;
  not inputs, consts, Seeds or zeros), freed after their last use.

With ``xp=None`` the same code runs on ``Abstract`` shapes and produces the
static prediction: the counts without the arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from .ops import REGISTRY, Residuals
from .tangents import Abstract, Counter, Linear, Seed, live_size

FOREVER = float("inf")


@dataclass
class Cost:
    passes: int = 0
    sweeps: int = 0
    primal_sweeps: int = 0
    chunk: int = 0
    mults_primal: int = 0
    mults_derivative: int = 0
    flops_primal: int = 0
    flops_derivative: int = 0
    cached_values: int = 0
    cached_inputs: int = 0
    peak_live_values: int = 0
    ops: int = 0                    # array operations executed (primal and derivative)
    values_moved: int = 0           # scalars those operations read and wrote
    gemm_flops: int = 0             # the flops of matmul-like work among them
    peak_values_with_temporaries: int = 0   # the memory prediction's inputs (not documented counts):
    indexed: bool = False                   # whether a rule gathers or scatters by index arrays
    peak_arrays: int = 0                    # the most arrays alive at once (their headers)
    peak_bytes: int | None = None
    time_s: dict = field(default_factory=dict)
    predicted: dict = field(default_factory=dict)   # {"time_s", "peak_bytes"}, from the graph

    def copy(self) -> "Cost":
        """A copy whose measurements (times, bytes, predictions) can be filled in anew."""
        twin = object.__new__(Cost)   # (dataclasses.replace re-runs __init__: 7x slower)
        twin.__dict__.update(self.__dict__)
        twin.time_s, twin.predicted = dict(self.time_s), dict(self.predicted)
        return twin

    def counts(self) -> dict:
        """The exact, device-independent figures (what prediction must match)."""
        return {"passes": self.passes, "sweeps": self.sweeps, "primal_sweeps": self.primal_sweeps,
                "chunk": self.chunk,
                "mults": {"primal": self.mults_primal, "derivative": self.mults_derivative},
                "flops": {"primal": self.flops_primal, "derivative": self.flops_derivative},
                "cached_values": self.cached_values, "cached_inputs": self.cached_inputs,
                "peak_live_values": self.peak_live_values, "ops": self.ops,
                "values_moved": self.values_moved, "gemm_flops": self.gemm_flops}

    def to_json(self) -> dict:
        data = self.counts()
        data["peak_bytes"] = self.peak_bytes
        data["time_s"] = dict(self.time_s)
        data["predicted"] = dict(self.predicted)
        return data


class _Live:
    """Live-scalar bookkeeping with a running peak.

    Derivative arrays are counted by identity: an add that passes one side's
    tangent through, or an add's VJP handing the same cotangent to both inputs,
    shares one array, which is alive once, however many env slots refer to it."""

    __slots__ = ("now", "peak", "peak_with_temporaries", "_refs", "arrays", "peak_arrays", "wide",
                 "indexes")

    def __init__(self):
        self.now = 0
        self.peak = 0
        # the peak also counting what a rule holds only while it runs (a Seed made
        # dense, a partial's intermediate) and Seeds' index arrays: not a documented
        # count, an input to the memory prediction (adcli.api.Program.predicted_peak_bytes)
        self.peak_with_temporaries = 0
        # arrays alive (each add of a non-empty value is one): programs of many small values
        # spend more on NumPy's array headers than on their numbers
        self.arrays = 0
        self.peak_arrays = 0
        # values one 8-byte temporary element (an int64 index) counts as: 8 / itemsize,
        # set by the memory prediction for the dtype it predicts (1 otherwise)
        self.wide = 1
        # Seeds alive hold an int64 direction per element of their node (not values, not
        # in peak_live_values): in values, as `wide` says
        self.indexes = 0
        self._refs = {}   # id -> [array, references]; the array is kept so its id stays unique

    def hold(self, t):
        if t is None:
            return
        entry = self._refs.get(id(t))
        if entry is None:
            self._refs[id(t)] = [t, 1]
            if isinstance(t, Seed):
                self.indexes += prod(t.node_shape) * self.wide
                self.temporary(0)
            else:
                self.add(live_size(t))
        else:
            entry[1] += 1

    def release(self, t):
        if t is None:
            return
        entry = self._refs[id(t)]
        entry[1] -= 1
        if entry[1] == 0:
            del self._refs[id(t)]
            if isinstance(t, Seed):
                self.indexes -= prod(t.node_shape) * self.wide
            else:
                self.drop(live_size(t))

    def reset(self):
        """A new forward sweep: nothing of the last one is alive."""
        self.now = 0
        self.arrays = 0
        self.indexes = 0
        self._refs.clear()

    def add(self, n: int):
        if n:
            self.arrays += 1
            if self.arrays > self.peak_arrays:
                self.peak_arrays = self.arrays
        self.now += n
        if self.now > self.peak:
            self.peak = self.now
        if self.now + self.indexes > self.peak_with_temporaries:
            self.peak_with_temporaries = self.now + self.indexes

    def temporary(self, n: int, wide: int = 0):
        n += wide * self.wide + self.indexes
        if self.now + n > self.peak_with_temporaries:
            self.peak_with_temporaries = self.now + n

    def drop(self, n: int):
        if n:
            self.arrays -= 1
        self.now -= n


def partial_key(prim, node_id: int, i: int) -> tuple:
    """The residual key of input i's partial: one key for all inputs of a shared partial."""
    return ("p", node_id, 0 if prim.shared_partial else i)


def is_leaf(node) -> bool:
    return node.op in ("input", "const")


class Analysis:
    """Static facts about a graph for one choice of wrt inputs and outputs."""

    def __init__(self, graph, wrt, outputs):
        self.graph = graph
        nodes = graph.nodes
        wrt_ids = {graph.inputs[name] for name in wrt}
        self.depends = [False] * len(nodes)
        for node in nodes:
            prim = REGISTRY.get(node.op)   # a mask (x > 0) carries no derivative: nothing past it does
            self.depends[node.id] = node.id in wrt_ids or (
                (prim is None or prim.differentiable) and any(self.depends[i] for i in node.inputs))
        out_ids = {graph.outputs[name] for name in outputs}
        self.reaches = [False] * len(nodes)
        for node in reversed(nodes):
            if node.id in out_ids:
                self.reaches[node.id] = True
            prim = REGISTRY.get(node.op)
            # an adjoint reaches a node's inputs only through a differentiable op: what feeds
            # a mask alone needs no cotangent, and its partials need not be kept
            if self.reaches[node.id] and (prim is None or prim.differentiable):
                for i in node.inputs:
                    self.reaches[i] = True
        self.last_use = [-1] * len(nodes)
        for node in nodes:
            for i in node.inputs:
                self.last_use[i] = node.id
        for i in graph.outputs.values():
            self.last_use[i] = FOREVER   # results are kept
        self.active = [self.depends[n.id] and self.reaches[n.id] for n in nodes]
        self.plans = {}    # Runner.residual_plan per choice of recomputing, made on first use


def block_layouts(sizes: list, chunk: int):
    """Yield the sweeps: each a tuple of (block, offset in block, count). No directions
    at all (every output empty, in reverse mode) make no sweep."""
    if not any(sizes):
        return
    block, offset = 0, 0
    while block < len(sizes):
        sweep, room = [], chunk
        while room and block < len(sizes):
            take = min(room, sizes[block] - offset)
            if take:
                sweep.append((block, offset, take))
            room -= take
            offset += take
            if offset >= sizes[block]:
                block, offset = block + 1, 0
        if sweep:   # (trailing empty outputs leave nothing for a sweep)
            yield tuple(sweep)


def layout_groups(sizes: list, chunk: int) -> list:
    """The distinct sweep compositions [(block, count), ...] with their multiplicities,
    computed arithmetically (no loop over millions of identical sweeps)."""
    groups: dict = {}
    order = []
    if not any(sizes):   # no directions: no sweep
        return []

    def note(key, times=1):
        if key not in groups:
            groups[key] = 0
            order.append(key)
        groups[key] += times

    block, offset = 0, 0
    while block < len(sizes):
        if offset + chunk <= sizes[block]:
            full = (sizes[block] - offset) // chunk
            note(((block, chunk),), full)
            offset += full * chunk
            if offset >= sizes[block]:
                block, offset = block + 1, 0
            continue
        sweep, room = [], chunk
        while room and block < len(sizes):
            take = min(room, sizes[block] - offset)
            if take:
                sweep.append((block, take))
            room -= take
            offset += take
            if offset >= sizes[block]:
                block, offset = block + 1, 0
        if sweep:   # (trailing empty outputs leave nothing for a sweep)
            note(tuple(sweep))
    return [(key, groups[key]) for key in order]


class Runner:
    """One run of one mode on one array module (``xp=None``: predict only)."""

    def __init__(self, graph, xp, dtype, input_values=None, const_values=None):
        self.graph = graph
        self.xp = xp
        self.dtype = dtype
        self.input_values = input_values or {}
        self.const_values = const_values or {}
        self.live = _Live()
        self.primal = Counter()
        self.derivative = Counter(self.live.temporary)
        self._moves = {}
        self.observer = None   # adcli.trace: called per node as the sweeps run

    # -- shared pieces ---------------------------------------------------------------
    def leaf_value(self, node):
        if self.xp is None:
            return Abstract(node.shape)
        if node.op == "input":
            return self.input_values[node.attrs["name"]]
        return self.const_values[node.id]

    def evaluate(self, node, args):
        prim = REGISTRY[node.op]
        shapes = self.in_shapes(node)
        m, f = prim.cost(shapes, node.shape, node.attrs)
        self.primal.add(m, f)
        self.primal.traffic(1, (2 * node.size if prim.movement else sum(map(prod, shapes)) + node.size),
                            f if prim.contraction else 0)
        if self.xp is None:
            return Abstract(node.shape)
        return prim.evaluate(self.xp, *args, **node.attrs)

    def partial(self, node, i, args, out):
        """Compute (and count) the local partial of node w.r.t. input i."""
        spec = REGISTRY[node.op].partial_for(i)
        if spec is None:
            return None
        shape = node.shape if spec.like == "out" else self.graph.nodes[node.inputs[0]].shape
        n = prod(shape)
        if spec.total is not None:   # one factorisation-like call (an inverse): LAPACK's rate
            mults, flops = spec.total(self.in_shapes(node))
            self.derivative.add(mults, flops)
            self.derivative.traffic(1, prod(self.in_shapes(node)[0]) + n, flops)
            self.live.temporary(2 * n)   # the result, and the factors beside it
        else:
            mults, flops = spec.per_element(node.attrs)
            self.derivative.add(mults * n, flops * n)
            kernels = max(1, flops)   # about one array operation per flop per element
            self.derivative.traffic(kernels, 2 * n * kernels)
            self.live.temporary(n * min(kernels, 2))   # the result, and an intermediate beside it
        if self.xp is None:
            return Abstract(shape)
        r = Residuals(args, out, None, node.attrs, self.in_shapes(node), node.shape)
        return spec.compute(self.xp, r)

    def in_shapes(self, node):
        return [self.graph.nodes[i].shape for i in node.inputs]

    def moves(self, node):
        """Index maps moved onto the array module once per run."""
        if self.xp is None:
            return node.moves
        cached = self._moves.get(node.id)
        if cached is None:
            cached = [(self.xp.asarray(o), self.xp.asarray(i)) for o, i in node.moves]
            self._moves[node.id] = cached
        return cached

    def seed(self, shape, offset, k):
        """The identity columns offset..offset+k-1 of an input block, as a Seed."""
        size = prod(shape)
        if self.xp is None:
            return Seed(None, k, shape, identity=offset == 0 and k == size)
        if offset == 0 and k == size:   # the whole identity (a gradient): one kernel, not six
            return Seed(self.xp.arange(size).reshape(shape), k, shape, identity=True)
        src = self.xp.arange(size).reshape(shape) - offset
        src = self.xp.where((src >= 0) & (src < k), src, -1)
        return Seed(src, k, shape)

    # -- evaluation -----------------------------------------------------------------------
    def run_primal(self, analysis, keep=None):
        """One primal sweep; returns the values env. `keep` maps node -> refcount of
        later (backward) uses; those values survive their last primal use."""
        values = {}
        live = self.live
        for node in self.graph.nodes:
            if is_leaf(node):
                values[node.id] = self.leaf_value(node)
                continue
            values[node.id] = self.evaluate(node, [values[i] for i in node.inputs])
            live.add(node.size)
            self._free_inputs(node, analysis, values, None, keep)
        return values

    def _free_inputs(self, node, analysis, values, tangents, keep):
        for i in set(node.inputs):
            if analysis.last_use[i] == node.id:
                leaf = is_leaf(self.graph.nodes[i])
                if not leaf and not (keep and keep.get(i)):
                    self.live.drop(self.graph.nodes[i].size)
                    del values[i]
                if tangents is not None and i in tangents:
                    for t in tangents.pop(i).values():
                        self.live.release(t)

    # -- forward mode ------------------------------------------------------------------------
    def forward_sweep(self, analysis, seeds: dict):
        """One forward sweep. seeds: input name -> {block: Seed or dense (k,)+shape}.
        Returns ({output node: {block: tangent}}, values)."""
        graph, live = self.graph, self.live
        values, tangents = {}, {}
        for node in graph.nodes:
            if is_leaf(node):
                values[node.id] = self.leaf_value(node)
                if node.op == "input" and node.attrs["name"] in seeds:
                    tangents[node.id] = dict(seeds[node.attrs["name"]])
                    for t in tangents[node.id].values():
                        live.hold(t)
                if self.observer:
                    self.observer(self, "forward", node, values[node.id], tangents.get(node.id))
                continue
            args = [values[i] for i in node.inputs]
            out = self.evaluate(node, args)
            values[node.id] = out
            live.add(node.size)
            in_tangents = [tangents.get(i) for i in node.inputs]
            if any(in_tangents) and analysis.reaches[node.id]:   # a tangent no output needs
                #                                                 (a mask's input) is not made
                result = self.jvp(node, args, out, in_tangents)
                if result:
                    tangents[node.id] = result
            if self.observer:
                self.observer(self, "forward", node, out, tangents.get(node.id))
            self._free_inputs(node, analysis, values, tangents, None)
            args = in_tangents = result = None   # what was freed is gone now, not a node later
        return tangents, values

    def jvp(self, node, args, out, in_tangents):
        prim = REGISTRY[node.op]
        blocks = []
        for ts in in_tangents:
            if ts:
                blocks.extend(b for b in ts if b not in blocks)
        result = {}
        if prim.movement:
            moves = self.moves(node)
            for b in blocks:
                ts = [t.get(b) if t else None for t in in_tangents]
                k = next(t for t in ts if t is not None).shape[0]
                result[b] = Linear(self.xp, k, self.derivative, self.dtype).move(ts, moves, node.shape)
        else:
            partials = []
            for i in range(len(node.inputs)):
                if prim.shared_partial and any(p is not None for p in partials):
                    partials.append(None)   # made once, below
                else:
                    partials.append(self.partial(node, i, args, out) if in_tangents[i] else None)
            partial_size = sum(live_size(p) for p in partials)
            if prim.shared_partial:   # one array serves every input's rule
                partials = [next((p for p in partials if p is not None), None)] * len(partials)
            self.live.add(partial_size)
            shapes = self.in_shapes(node)
            rs = [Residuals(args, out, p, node.attrs, shapes, node.shape) for p in partials]
            for b in blocks:
                ts = [t.get(b) if t else None for t in in_tangents]
                k = next(t for t in ts if t is not None).shape[0]
                T = Linear(self.xp, k, self.derivative, self.dtype)
                if prim.jvp_all is not None:
                    t_out = prim.jvp_all(T, rs[0], ts)
                else:
                    t_out = None
                    for i, t in enumerate(ts):
                        if t is not None:
                            t_out = T.add(t_out, prim.jvp[i](T, rs[i], t))
                if t_out is not None:
                    result[b] = t_out
            self.live.drop(partial_size)
        for t in result.values():
            self.live.hold(t)
        return result

    # -- reverse mode -------------------------------------------------------------------------
    def residual_plan(self, analysis, recompute: bool = True):
        """Which values each VJP reads: {node: [(input index, [residual keys])]},
        where a key is a node id (a value) or ('p', node, i) (a partial). With
        `recompute` (one backward sweep), a partial that is a function of the output
        alone is remade from the output in the backward sweep instead of being kept;
        with several backward sweeps it is kept, so it is still computed once.
        Static, so kept on the analysis."""
        if recompute in analysis.plans:
            return analysis.plans[recompute]
        plan = analysis.plans[recompute] = {}
        for node in self.graph.nodes:
            if is_leaf(node) or not analysis.active[node.id]:
                continue
            prim = REGISTRY[node.op]
            entries = []
            for i, src in enumerate(node.inputs):
                if not analysis.depends[src]:
                    continue
                keys = []
                if not prim.movement:
                    for name in prim.uses[i]:
                        spec = prim.partial_for(i)
                        if name == "out" or (name == "p" and spec.from_out and recompute):
                            keys.append(node.id)   # from_out: the partial is remade from it
                        elif name == "p":   # (a shared partial is kept once: input 0's key)
                            keys.append(partial_key(prim, node.id, i))
                        else:
                            keys.append(node.inputs[int(name[1:])])
                entries.append((i, keys))
            plan[node.id] = entries
        return plan

    def reverse_forward_sweep(self, analysis, plan):
        """The forward sweep of reverse mode: values, and the residuals kept."""
        graph, live = self.graph, self.live
        refs = {}
        for entries in plan.values():
            for _, keys in entries:
                for key in keys:
                    refs[key] = refs.get(key, 0) + 1
        values, residuals = {}, {}
        cached_values = cached_inputs = 0
        for key in refs:
            if isinstance(key, int):
                node = graph.nodes[key]
                if is_leaf(node):
                    cached_inputs += node.size
                else:
                    cached_values += node.size
        for node in graph.nodes:
            if is_leaf(node):
                values[node.id] = self.leaf_value(node)
            else:
                args = [values[i] for i in node.inputs]
                out = self.evaluate(node, args)
                values[node.id] = out
                live.add(node.size)
                for i, keys in plan.get(node.id, ()):
                    for key in keys:
                        if isinstance(key, tuple) and key not in residuals:   # (shared: made once)
                            p = self.partial(node, i, args, out)
                            residuals[key] = p
                            cached_values += live_size(p)
                            live.add(live_size(p))
                self._free_inputs(node, analysis, values, None, refs)
            if self.observer:
                self.observer(self, "reverse-forward", node, values.get(node.id), None)
            if refs.get(node.id):
                residuals[node.id] = values[node.id]
        return values, residuals, refs, cached_values, cached_inputs

    def backward_sweep(self, analysis, plan, residuals, refs, seeds: dict, wrt_ids: set,
                       final: bool):
        """One backward sweep. seeds: output node -> {block: cotangent}. Returns
        {wrt input node: {block: cotangent}}. On the final sweep, residuals are
        freed after their last backward use."""
        graph, live = self.graph, self.live
        cts = {}
        for node_id, blocks in seeds.items():
            cts[node_id] = dict(blocks)
            for t in blocks.values():
                live.hold(t)
        results = {}
        for node in reversed(graph.nodes):
            node_cts = cts.pop(node.id, None)
            if self.observer:
                self.observer(self, "backward", node, None, node_cts)
            if node.id in wrt_ids:
                if node_cts:
                    results[node.id] = node_cts
                continue
            if not node_cts or node.id not in plan:
                for t in (node_cts or {}).values():
                    live.release(t)
                continue
            prim = REGISTRY[node.op]
            shapes = self.in_shapes(node)
            for i, keys in plan[node.id]:
                src = node.inputs[i]
                target = cts.setdefault(src, {})
                if prim.movement:
                    move = self.moves(node)[i]
                    for b, ct in node_cts.items():
                        k = ct.shape[0]
                        T = Linear(self.xp, k, self.derivative, self.dtype)
                        self._accumulate(T, target, b, T.move_back(ct, move, shapes[i],
                                                                   node.attrs.get("adds", 0)))
                    continue
                x = [residuals.get(j) for j in node.inputs]
                out = residuals.get(node.id)
                p = residuals.get(partial_key(prim, node.id, i))
                spec = prim.partial_for(i)
                remade = p is None and spec is not None and spec.from_out
                if remade:   # from the kept output (residual_plan), counted as it is made
                    p = self.partial(node, i, x, out)
                    live.add(live_size(p))
                r = Residuals(x, out, p, node.attrs, shapes, node.shape)
                for b, ct in node_cts.items():
                    T = Linear(self.xp, ct.shape[0], self.derivative, self.dtype)
                    self._accumulate(T, target, b, prim.vjp[i](T, r, ct))
                if remade:
                    live.drop(live_size(p))
            for t in node_cts.values():
                live.release(t)
            if final:
                for _, keys in plan[node.id]:
                    for key in keys:
                        refs[key] -= 1
                        if refs[key] == 0:
                            value = residuals.pop(key)
                            if isinstance(key, tuple) or not is_leaf(graph.nodes[key]):
                                if isinstance(key, int) and key in graph.outputs.values():
                                    continue   # results stay alive
                                live.drop(live_size(value) if isinstance(key, tuple)
                                          else graph.nodes[key].size)
            # Drop this node's references now, so the arrays counted as freed are freed
            # (a loop variable would keep the last cotangent alive into the next node).
            node_cts = ct = t = value = x = r = p = out = None
        if self.observer:
            self.observer(self, "backward-end", None, None, None)
        for blocks in results.values():   # handed to the caller: no longer the sweep's
            for t in blocks.values():
                live.release(t)
        return results

    def _accumulate(self, T, target: dict, block, value):
        if value is None:
            return
        old = target.get(block)
        new = T.add(old, value)
        if old is not None:   # the rule's result and the sum are alive beside the old sum
            self.live.temporary(live_size(value) + live_size(new))
        self.live.release(old)
        self.live.hold(new)
        target[block] = new
