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

from bisect import bisect_right
from itertools import dropwhile, takewhile
from dataclasses import dataclass, field
from math import prod

from . import checkpoint
from .checkpoint import Action
from .ops import REGISTRY, Residuals
from .tangents import Abstract, Counter, Linear, ScaledDense, Seed, live_size, root, structured

FOREVER = float("inf")


@dataclass(eq=False)   # compared by identity (no field-by-field __eq__ to generate at start-up)
class Cost:
    """The counts of one run (docs/counting.md defines each), its measured peak and times,
    and what was predicted for it."""

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
    recomputed_steps: int = 0       # checkpointing: loop body steps run beyond keeping everything
    checkpoints: int | None = None  # the states kept per loop (None: every iteration's residuals)
    interpreted: bool = False       # run (or to be run) by the interpreter: too large to compile
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
                "values_moved": self.values_moved, "gemm_flops": self.gemm_flops,
                "checkpoints": self.checkpoints, "recomputed_steps": self.recomputed_steps}

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
                 "indexes", "records")

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
        # what keeping a loop iteration's residuals costs beyond their values and headers:
        # the interpreter's records (LOOP_RECORD_WIDE) or the compiled plans' entries
        # (PLAN_RECORD_WIDE); the memory prediction sets which
        self.records = LOOP_RECORD_WIDE
        self._refs = {}   # id -> [array, references]; the array is kept so its id stays unique

    def hold(self, t):
        if t is None:
            return
        entry = self._refs.get(id(t))
        if entry is None:
            self._refs[id(t)] = [t, 1]
            if structured(t):   # its selection's index array; a Scaled's scale is values
                self.indexes += prod(t.node_shape) * self.wide
                self.temporary(0)
            if isinstance(t, ScaledDense):   # its base is an array of its own, perhaps shared
                self.hold(t.base)
            if not isinstance(t, Seed):
                self.add(live_size(t))
        else:
            entry[1] += 1

    def refs(self, t) -> int:
        """How many hold `t` now (0: not held)."""
        entry = self._refs.get(id(t))
        return 0 if entry is None else entry[1]

    def release(self, t):
        if t is None:
            return
        entry = self._refs[id(t)]
        entry[1] -= 1
        if entry[1] == 0:
            del self._refs[id(t)]
            if structured(t):
                self.indexes -= prod(t.node_shape) * self.wide
            if not isinstance(t, Seed):
                self.drop(live_size(t))
            if isinstance(t, ScaledDense):
                self.release(t.base)

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

    def temporary(self, n: int, wide: int = 0, widened: int = 0):
        # `widened`: elements copied to float64 only when the run's dtype is narrower
        n += wide * self.wide + (widened * self.wide if self.wide > 1 else 0) + self.indexes
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

    def __init__(self, graph, wrt, outputs, computed=None, kept=None):
        self.graph = graph
        nodes = graph.nodes
        # the nodes a sweep evaluates: all of them, but in an iteration of a loop's body only
        # those its live results need (what unrolling would not have dropped as dead)
        self.computed = [True] * len(nodes) if computed is None else computed
        wrt_ids = {graph.inputs[name] for name in wrt}
        self.depends = [False] * len(nodes)
        self.loop_depends = {}   # loop node -> per iteration, the body params that depend
        for node in nodes:
            prim = REGISTRY.get(node.op)   # a mask (x > 0) carries no derivative: nothing past it does
            if node.op == "loop":
                self.loop_depends[node.id] = loop_depends(node, [self.depends[i] for i in node.inputs])
            if node.op == "loop_out":   # a result of the last iteration, as it depends there
                loop = nodes[node.inputs[0]]
                last = self.loop_depends[loop.id][-1]
                body = loop.attrs["body"]
                self.depends[node.id] = body_analysis(body, last).depends[
                    body.outputs[list(body.outputs)[node.attrs["position"]]]]
                continue
            self.depends[node.id] = node.id in wrt_ids or (self.computed[node.id] and (
                (prim is None or prim.differentiable) and any(self.depends[i] for i in node.inputs)))
        out_ids = {graph.outputs[name] for name in outputs}
        self.reaches = [False] * len(nodes)
        for node in reversed(nodes):
            if not self.computed[node.id]:
                continue
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
            if self.computed[node.id]:
                for i in node.inputs:
                    self.last_use[i] = node.id
        for i in graph.outputs.values():   # results are kept (in a loop's iteration: those
            if self.computed[i] and (kept is None or i in kept):   # a later one or the caller reads)
                self.last_use[i] = FOREVER
        self.active = [self.depends[n.id] and self.reaches[n.id] for n in nodes]
        self.plans = {}    # Runner.residual_plan per choice of recomputing, made on first use
        self.loop_outs = {}   # loop node -> {position: its loop_out node}
        for node in nodes:
            if node.op == "loop_out":
                self.loop_outs.setdefault(node.inputs[0], {})[node.attrs["position"]] = node.id
        self.loops = {}    # loop node -> LoopSchedule, made on first use


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
        self._children = {}    # loop node -> the Runner of its body
        self._loop_records = {}   # (loop node, records_of) -> per iteration, what its backward sweep reads
        # a loop body's Runner: the iteration of the enclosing loop whose records its own
        # loops' records are (the iteration it runs, or in a prediction the one standing for it)
        self.records_of = None
        # inputs (a loop body's params) whose values and tangents this sweep owns and frees
        # at their last use, as it frees what it makes (Runner._loop)
        self.adopt_values, self.adopt_tangents = set(), set()
        self.observer = None   # adcli.trace: called per node as the sweeps run
        # a loop body's Runner: its loop node, the Runner running the loop, and the
        # iteration (0-based) its sweep runs now; an observer with `into_loops` set is
        # called from inside bodies too (adcli.trace), others only for the outer graph
        self.loop = self.parent = self.iteration = None
        # reverse mode: reverse each loop keeping at most this many states (binomial
        # checkpointing, adcli.checkpoint); None keeps every iteration's residuals
        self.checkpoints = None
        self.recomputed_steps = 0   # forward body steps run beyond what keeping everything runs
        self.cached_extra = 0       # checkpointing: the most kept at once beyond the forward sweep's
        self.index = None      # a loop body's Runner: the iteration it runs (its loop sets it)

    # -- shared pieces ---------------------------------------------------------------
    def leaf_value(self, node):
        if self.xp is None:   # (a loop body's params: the values going in, for their identity)
            given = self.input_values.get(node.attrs["name"]) if node.op == "input" else None
            return Abstract(node.shape) if given is None else given
        if node.op == "input":
            if "index" in node.attrs:   # a loop body's index, read as a number: a constant
                return self.xp.asarray(self.index, dtype=self.dtype)
            return self.input_values[node.attrs["name"]]
        return self.const_values[node.id]

    def evaluate(self, node, args):
        prim = REGISTRY[node.op]
        shapes = self.in_shapes(node)
        m, f = prim.cost(shapes, node.shape, node.attrs)
        self.primal.add(m, f)
        self.primal.traffic(1, (2 * node.size if prim.movement else sum(map(prod, shapes)) + node.size),
                            f if prim.contraction else 0)
        if prim.scratch is not None:
            self.live.temporary(*prim.scratch(shapes, node.shape, node.attrs))
        if self.xp is None:
            return Abstract(node.shape)
        if node.key_steps is not None:   # X[t] in a loop's body: this iteration's key
            return prim.evaluate(self.xp, *args, **dict(node.attrs, key=moved_key(node, self.index)))
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
            if spec.cost_in is not None:   # figures for the whole partial, from shapes and attrs
                mults, flops = spec.cost_in(self.in_shapes(node), node.shape, node.attrs)
                self.derivative.add(mults, flops)
                flops = flops // max(n, 1)
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
        cached = self._moves.get(id(node))
        if cached is None:
            cached = [(self.xp.asarray(o), self.xp.asarray(i)) for o, i in node.moves]
            self._moves[id(node)] = cached
        if node.key_steps is not None:   # X[t] in a loop's body: iteration 0's maps, shifted
            shift = self.index * flat_step(node.key_steps, self.graph.nodes[node.inputs[0]].shape)
            return [(o, i + shift) for o, i in cached]
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

    # -- loops ------------------------------------------------------------------------------
    def _child(self, loop):
        """The Runner of a loop's body: the same array module (staged values too), counters
        and live-value bookkeeping as this one; its params are its inputs ($0, $1, ...)."""
        child = self._children.get(loop.id)
        if child is None:
            child = self._children[loop.id] = Runner(loop.attrs["body"], self.xp, self.dtype)
            child.live, child.primal, child.derivative = self.live, self.primal, self.derivative
            child.loop, child.parent = loop, self
        child.xp = self.xp   # a Stager stages each sweep on a module of its own
        child.observer = self.observer if getattr(self.observer, "into_loops", False) else None
        return child

    def _schedule(self, loop, analysis) -> LoopSchedule:
        if loop.id not in analysis.loops:
            analysis.loops[loop.id] = LoopSchedule(loop, analysis)
        return analysis.loops[loop.id]

    def _loop(self, loop, analysis, values, tangents):
        """Run a loop node: its body once per iteration, each iteration's carried results
        the next one's params; the results' values (and with `tangents`, their tangents)
        go to the loop's loop_out nodes. Counted exactly as the unrolled iterations: each
        iteration is the body run by the same rules on the same live-value books.

        Ownership: the loop's inputs are the caller's (freed by it after the loop); a
        value or tangent an iteration makes is the loop's until the next iteration has
        read it, then freed; the last iteration's go to the loop_out nodes."""
        sched, child, live = self._schedule(loop, analysis), self._child(loop), self.live
        nc, body = sched.carried, loop.attrs["body"]
        params = [values[i] for i in loop.inputs]
        params_t = [tangents.get(i) if tangents is not None else None for i in loop.inputs]
        owned = [False] * nc   # made by the loop (so freed by it), not the caller's
        held = [False] * nc    # a tangent the loop holds a reference on
        steady = _Steady(self) if self.xp is None else None
        it = 0
        while it < sched.count:
            if steady is not None:   # predicting: count the steady iterations without walking them
                state = (id(sched.analysis(it)), _kinds(params_t), tuple(owned), tuple(held))
                times = sched.steady_until(it) - 1 - it
                if steady.skip(state, times) is not None:
                    it += times
                steady.begin((id(sched.analysis(it)), _kinds(params_t), tuple(owned), tuple(held)))
            an = sched.analysis(it)
            wanted = sched.live[it]   # results needed after this iteration
            passed = {sched.out_ids[q] for q in wanted if sched.out_ids[q] < sched.n_params}   # params kept
            child.input_values = {f"${p}": v for p, v in enumerate(params)}
            child.index = child.iteration = child.records_of = it
            # the last iteration's results are the body's to free at their last use in it
            child.adopt_values = {p for p in range(nc) if owned[p]}
            child.adopt_tangents = {p for p in range(nc) if held[p]}
            if tangents is None:
                vals, tang = child.run_primal(an), {}
            else:
                seeds = {f"${p}": dict(ts) for p, ts in enumerate(params_t) if ts}
                tang, vals = child.forward_sweep(an, seeds)
                for pid in range(sched.n_params):   # tangents of params the body never read
                    if pid in tang and pid not in passed:
                        for t in tang.pop(pid).values():
                            live.release(t)
            for p in child.adopt_values:   # values the body never read
                if an.last_use[p] == -1 and p not in passed:
                    live.drop(prod(body.nodes[p].shape))
            new = [vals[o] if q in wanted else None for q, o in enumerate(sched.out_ids)]
            new_t = [tang.get(o) if q in wanted else None for q, o in enumerate(sched.out_ids)]
            new_owned = [v is not None and (o >= sched.n_params or (o < nc and owned[o]))
                         for v, o in zip(new, sched.out_ids)]
            if it < sched.count - 1:   # results that are not carried: made again next time
                kept = {id(v) for q, v in enumerate(new[:nc]) if new_owned[q]}
                for q in range(nc, len(new)):
                    if new_owned[q] and id(new[q]) not in kept:
                        live.drop(prod(body.nodes[sched.out_ids[q]].shape))
                        kept.add(id(new[q]))
                    if new_t[q] and not any(new_t[q] is x for x in new_t[:nc]):
                        for t in new_t[q].values():
                            live.release(t)
                params = new[:nc] + params[nc:]
                params_t = new_t[:nc] + params_t[nc:]
                owned = new_owned[:nc]
                held = [bool(t) for t in new_t[:nc]]
            if steady is not None:
                steady.end()
            it += 1
        values[loop.id] = None   # the loop's own value: none (its results are the loop_outs')
        outs = analysis.loop_outs.get(loop.id, {})
        seen = set()
        for q, out_id in outs.items():
            v = new[q]
            if not new_owned[q] or id(v) in seen:   # the caller's array, or one given twice
                live.add(prod(self.graph.nodes[out_id].shape))
            seen.add(id(v))
            values[out_id] = v
            if tangents is not None and new_t[q]:
                tangents[out_id] = dict(new_t[q])
                if id(new_t[q]) in seen:
                    for t in new_t[q].values():
                        live.hold(t)
                seen.add(id(new_t[q]))
        for q in range(len(new)):   # results no loop_out reads (dropped from the graph)
            if q not in outs:
                if new_owned[q] and id(new[q]) not in seen:
                    live.drop(prod(loop.attrs["body"].nodes[sched.out_ids[q]].shape))
                    seen.add(id(new[q]))
                for t in (new_t[q] or {}).values():
                    live.release(t)

    def _checkpointed(self, loop) -> bool:
        """Whether reverse mode reverses `loop` from saved states (Runner.checkpoints)."""
        return self.checkpoints is not None and loop.attrs["count"] >= 2

    @staticmethod
    def _recompute_of(analysis, plan) -> bool:
        """Which residual plan (Runner.residual_plan) `plan` is: its bodies' plans match."""
        return next(key[0] for key, made in analysis.plans.items() if made is plan)

    def _loop_entries(self, loop, analysis, recompute) -> list:
        """A loop's residual-plan entries: a cotangent for each input that depends on the
        wrt inputs, and as residual keys the inputs a body iteration keeps (a closed-over
        value in any iteration, a carried one in the first): the caller keeps them alive
        until the backward sweep has used them."""
        sched, child = self._schedule(loop, analysis), self._child(loop)
        kept = set()   # param slots kept: carried ones by the first iteration, closed-over by any
        for first, an in [(True, sched.analysis(0))] + [(False, a) for a in sched.analyses()]:
            for entries in child.residual_plan(an, recompute).values():
                for _, keys in entries:
                    kept.update(k for k in keys if isinstance(k, int) and k < sched.n_params
                                and (first or k >= sched.carried))
        if self._checkpointed(loop):   # steps are run again from the state going in
            kept = set(range(sched.n_params))
        return [(p, [loop.inputs[p]] if p in kept else []) for p, i in enumerate(loop.inputs)
                if analysis.depends[i] or p in kept]

    def _loop_reverse_forward(self, loop, analysis, plan, values, residuals, refs) -> int:
        """The forward sweep of reverse mode through a loop: each iteration's residuals
        kept (as ("L", loop, iteration, key) in `residuals`), its results carried on.
        Returns the cached values it adds: the body's, and a carried value an iteration
        keeps that the one before did not already keep, less a result the last iteration
        keeps that the caller (`refs`) keeps too: one value, counted once."""
        if self._checkpointed(loop):
            return _Checkpointed(self, loop, analysis, plan).forward(values, residuals, refs)
        sched, child, live = self._schedule(loop, analysis), self._child(loop), self.live
        recompute = self._recompute_of(analysis, plan)
        nc, body = sched.carried, loop.attrs["body"]
        params = [values[i] for i in loop.inputs]
        owned = [False] * nc   # made by the loop and kept by no iteration's residuals yet
        records = _Records()   # per iteration: residual keys, refs, params the loop frees after
        cached = 0
        child.adopt_values = child.adopt_tangents = set()
        steady = _Steady(self) if self.xp is None else None
        it = 0
        while it < sched.count:
            if steady is not None:   # predicting: count the steady iterations without walking them
                state = (id(sched.analysis(it)), tuple(owned))
                times = sched.steady_until(it) - 1 - it
                more = steady.skip(state, times)
                if more is not None:
                    cached += more
                    records.alike(it, it + times, it - 1)   # what the backward sweep reads: the same
                    it += times
                steady.begin((id(sched.analysis(it)), tuple(owned)))
            an = sched.analysis(it)
            child.input_values = {f"${p}": v for p, v in enumerate(params)}
            child.index = child.iteration = child.records_of = it
            wanted = sched.live[it]
            vals, res, refs_i, cached_i, _ = child.reverse_forward_sweep(an, child.residual_plan(an, recompute))
            before = cached
            cached += cached_i
            mine = []
            for p in range(nc):
                if not owned[p]:
                    continue
                if refs_i.get(p):   # kept now: counted, and freed by the loop after its backward
                    cached += prod(body.nodes[p].shape)
                    mine.append(p)
                elif not any(sched.out_ids[q] == p for q in wanted):
                    live.drop(prod(body.nodes[p].shape))   # read, and no longer needed
            for key, value in res.items():
                residuals[("L", loop.id, it, key)] = value
            records.add(it, (list(res), refs_i, mine))
            live.indexes += _record_wide(live, sched, res)   # what keeping an iteration costs the books
            live.temporary(0)
            new = [vals[o] if q in wanted else None for q, o in enumerate(sched.out_ids)]
            # a result this iteration keeps is freed by its backward; others are the loop's
            new_owned = [v is not None and not refs_i.get(o) and
                         (o >= sched.n_params or (o < nc and owned[o] and o not in mine))
                         for v, o in zip(new, sched.out_ids)]
            if it < sched.count - 1:
                carried_ids = {id(v) for q, v in enumerate(new[:nc]) if new_owned[q]}
                for q in range(nc, len(new)):
                    if new_owned[q] and id(new[q]) not in carried_ids:
                        live.drop(prod(body.nodes[sched.out_ids[q]].shape))
                        carried_ids.add(id(new[q]))
                params = new[:nc] + params[nc:]
                owned = new_owned[:nc]
            if steady is not None:
                steady.end(cached - before)
            it += 1
        self._loop_records[(loop.id, self.records_of)] = records
        values[loop.id] = None
        seen = set()
        outs = analysis.loop_outs.get(loop.id, {})
        for q, out_id in outs.items():
            if not new_owned[q] or id(new[q]) in seen:   # kept by the body, the caller's, or twice
                live.add(prod(self.graph.nodes[out_id].shape))
            if refs.get(out_id) and refs_i.get(sched.out_ids[q]) and id(new[q]) not in seen:
                cached -= prod(self.graph.nodes[out_id].shape)
            seen.add(id(new[q]))
            values[out_id] = new[q]
        for q in range(len(new)):
            if q not in outs and new_owned[q] and id(new[q]) not in seen:
                live.drop(prod(body.nodes[sched.out_ids[q]].shape))
                seen.add(id(new[q]))
        return cached

    def _index_kept(self, loop, analysis, plan) -> int:
        """The iterations of a loop whose backward reads its index as a number: each a
        const scalar of the unrolled iteration (cached_inputs), a param of the body here."""
        sched, child = self._schedule(loop, analysis), self._child(loop)
        index = sched.index
        if index is None:
            return 0
        recompute = self._recompute_of(analysis, plan)
        kept = it = 0
        while it < sched.count:   # by runs of iterations with one analysis
            end = sched.steady_until(it)
            entries = child.residual_plan(sched.analysis(it), recompute).values()
            if any(index in keys for entry in entries for _, keys in entry):
                kept += end - it
            it = end
        return kept

    def _loop_backward(self, loop, analysis, plan, residuals, pending, cts, final):
        """The backward sweep through a loop: the body's, iteration by iteration from the
        last; carried cotangents go to the iteration before, closed-over ones add up."""
        if self._checkpointed(loop):
            return _Checkpointed(self, loop, analysis, plan).backward(residuals, pending, cts, final)
        sched = self._schedule(loop, analysis)
        records = self._loop_records[(loop.id, self.records_of)]
        body_plan = self._body_plans(analysis, plan)
        seeds = pending   # position -> {block: cotangent}, held
        steady = _Steady(self) if self.xp is None else None
        it = sched.count - 1
        while it >= 0:
            if steady is not None:   # predicting: count the steady iterations without walking them
                state = self._backward_state(sched, it, loop, seeds, cts)
                first = sched.steady_from(it)
                if steady.skip(state, it - first) is not None:
                    it = first
                steady.begin(self._backward_state(sched, it, loop, seeds, cts))
            seeds = self._loop_backward_step(loop, sched, it, body_plan, records[it], residuals, seeds,
                                             cts, final, final, records.source(it))
            if steady is not None:
                steady.end()
            it -= 1
        if final and self.xp is not None:   # (a prediction's records may stand for other iterations')
            del self._loop_records[(loop.id, self.records_of)]

    def _body_plans(self, analysis, plan):
        """The body's residual plan for an iteration's analysis, as the graph's `plan` was made."""
        recompute = self._recompute_of(analysis, plan)
        return lambda child, an: child.residual_plan(an, recompute)

    def _loop_backward_step(self, loop, sched, it, body_plan, record, residuals, seeds, cts, final,
                            free_record, source=None):
        """The body's backward sweep for iteration `it`: given the cotangents of its results
        (`seeds`, position -> blocks, held), adds to the loop inputs' sums (`cts`) and returns
        the cotangents of the iteration before's results. `free_record`: the iteration's
        residuals are freed as they are used (the last sweep, or a checkpointed step).
        `source`: the iteration whose residuals stand for this one's (a prediction counts
        steady iterations with one iteration's records, _Records)."""
        child, live = self._child(loop), self.live
        nc, body = sched.carried, loop.attrs["body"]
        an = sched.analysis(it)
        keys, refs_i, mine = record
        source = it if source is None else source
        res = {k: residuals[("L", loop.id, source, k)] for k in keys if ("L", loop.id, source, k) in residuals}
        given = {}
        # the sums so far of the loop inputs' cotangents go in as the params' own, so the
        # body adds to them as the unrolled iterations add to one sum (not a sum of sums)
        taken = {}
        for pid, outer_id in enumerate(loop.inputs):
            if (pid >= nc or it == 0) and outer_id in cts and loop.inputs.count(outer_id) == 1:
                taken[pid] = cts.pop(outer_id)
                given[pid] = dict(taken[pid])
                for t in given[pid].values():
                    live.hold(t)
        for q, blocks in seeds.items():
            target = given.setdefault(sched.out_ids[q], {})
            for b, ct in blocks.items():
                if b in target:   # two results that are one value: their cotangents add
                    self._accumulate(self._linear(ct.shape[0]), target, b, ct)
                else:
                    target[b] = ct
                    live.hold(ct)
        child.index = child.iteration = it
        child.records_of = source
        got = child.backward_sweep(an, body_plan(child, an), res, refs_i, given, set(range(sched.n_params)),
                                   free_record)
        for blocks in given.values():
            for t in blocks.values():
                live.release(t)
        for blocks in list(seeds.values()) + list(taken.values()):
            for t in blocks.values():
                live.release(t)
        if free_record:
            live.indexes -= _record_wide(live, sched, keys)
            if source == it:   # (another iteration's stand-in: left for them)
                for k in keys:
                    if k not in res:
                        residuals.pop(("L", loop.id, it, k), None)
                for p in mine:
                    residuals.pop(("L", loop.id, it, p), None)
            for p in mine:
                live.drop(prod(body.nodes[p].shape))
        seeds = {}
        for pid, blocks in got.items():
            if pid < nc and it > 0:   # to the iteration before
                seeds[pid] = blocks
                for t in blocks.values():
                    live.hold(t)
            else:                     # to the loop's input
                target = cts.setdefault(loop.inputs[pid], {})
                for b, ct in blocks.items():
                    self._accumulate(self._linear(ct.shape[0]), target, b, ct)
        return seeds

    @staticmethod
    def _backward_state(sched, it, loop, seeds, cts) -> tuple:
        """What a loop's backward iteration starts from (for _Steady): its analysis, the
        kinds of the cotangents it is given and of the sums it adds to."""
        # (the last iteration's cotangents come from the caller, held by it: never a model
        # for the others, whose come from the iteration after and are the loop's)
        return (id(sched.analysis(it)),) + Runner._cotangent_kinds(loop, seeds, cts) + \
            (it == 0, it == sched.count - 1)

    @staticmethod
    def _cotangent_kinds(loop, seeds, cts) -> tuple:
        """The kinds of the cotangents a loop's backward iteration is given (`seeds`) and of
        the sums of its inputs' cotangents (`cts`)."""
        return tuple(sorted(seeds)), _kinds(seeds.values()), _kinds(cts.get(i) for i in loop.inputs)

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
            if node.op == "loop_out" or not analysis.computed[node.id]:   # made by its loop; dead
                continue
            if node.op == "loop":
                self._loop(node, analysis, values, None)
            else:
                values[node.id] = self.evaluate(node, [values[i] for i in node.inputs])
                live.add(node.size)
            self._free_inputs(node, analysis, values, None, keep)
        return values

    def _free_inputs(self, node, analysis, values, tangents, keep):
        for i in set(node.inputs):
            if analysis.last_use[i] == node.id:
                # a loop node holds no value of its own (its loop_outs do)
                leaf = (is_leaf(self.graph.nodes[i]) and i not in self.adopt_values) or \
                    self.graph.nodes[i].op == "loop"
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
        # a sweep's results leave it dense (the caller stores them); a loop body's pass to its
        # next iteration as they are, as the unrolled iterations would
        results = set(graph.outputs.values()) if self.loop is None else set()
        for node in graph.nodes:
            if is_leaf(node):
                values[node.id] = self.leaf_value(node)
                if node.op == "input" and node.attrs["name"] in seeds:
                    tangents[node.id] = dict(seeds[node.attrs["name"]])
                    if node.id not in self.adopt_tangents:
                        for t in tangents[node.id].values():
                            live.hold(t)
                if self.observer:
                    self.observer(self, "forward", node, values[node.id], tangents.get(node.id))
                continue
            if not analysis.computed[node.id]:   # dead in this iteration of a loop's body
                continue
            if node.op == "loop_out":   # made by its loop
                if node.id in results:
                    self._made_dense([tangents.get(node.id)])
                if self.observer:
                    self.observer(self, "forward", node, values[node.id], tangents.get(node.id))
                continue
            if node.op == "loop":
                self._loop(node, analysis, values, tangents)
                self._free_inputs(node, analysis, values, tangents, None)
                continue
            args = [values[i] for i in node.inputs]
            out = self.evaluate(node, args)
            values[node.id] = out
            live.add(node.size)
            in_tangents = [tangents.get(i) for i in node.inputs]
            if any(in_tangents) and analysis.reaches[node.id]:   # a tangent no output needs
                #                                                 (a mask's input) is not made
                result = self.jvp(node, args, out, in_tangents)
                if result and node.id in results:
                    self._made_dense([result])
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
                T = self._linear(k)
                result[b] = T.move(ts, moves, node.shape)
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
                T = self._linear(k)
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

    def _linear(self, k: int) -> Linear:
        """The counted linear algebra for k directions."""
        return Linear(self.xp, k, self.derivative, self.dtype)

    def _made_dense(self, holders):
        """Every ScaledDense in these dicts of derivative values made dense (counted) in its
        place: where values leave a sweep (an output's tangent, a wrt input's cotangent)."""
        for blocks in holders:
            for b, t in list((blocks or {}).items()):
                if isinstance(t, ScaledDense):
                    dense = self._linear(t.k)._plain(t)
                    blocks[b] = dense
                    self.live.hold(dense)
                    self.live.release(t)

    # -- reverse mode -------------------------------------------------------------------------
    def residual_plan(self, analysis, recompute: bool = True):
        """Which values each VJP reads: {node: [(input index, [residual keys])]},
        where a key is a node id (a value) or ('p', node, i) (a partial). With
        `recompute` (one backward sweep), a partial that is a function of the output
        alone is remade from the output in the backward sweep instead of being kept;
        with several backward sweeps it is kept, so it is still computed once.
        Static, so kept on the analysis."""
        key = (recompute, self.checkpoints)
        if key in analysis.plans:
            return analysis.plans[key]
        plan = analysis.plans[key] = {}
        for node in self.graph.nodes:
            if is_leaf(node) or not analysis.active[node.id]:
                continue
            if node.op == "loop_out":   # its cotangent goes to its loop
                plan[node.id] = [(0, [])]
                continue
            if node.op == "loop":
                plan[node.id] = self._loop_entries(node, analysis, recompute)
                continue
            prim = REGISTRY[node.op]
            entries = []
            for i, src in enumerate(node.inputs):
                if not analysis.depends[src]:
                    continue
                keys = []
                if not prim.movement:
                    for name in prim.uses_of(i, len(node.inputs)):
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
            elif node.op == "loop_out" or not analysis.computed[node.id]:   # made by its loop; dead
                pass
            elif node.op == "loop":
                cached_values += self._loop_reverse_forward(node, analysis, plan, values, residuals, refs)
                cached_inputs += self._index_kept(node, analysis, plan)
                self._free_inputs(node, analysis, values, None, refs)
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
            if node.id in wrt_ids and node_cts and self.loop is None:   # a sweep's results leave
                self._made_dense([node_cts])                                # it dense (not a body's)
            if node.op == "loop_out":   # to its loop, which runs the body's backward
                if self.observer and getattr(self.observer, "into_loops", False):
                    self.observer(self, "backward", node, None, node_cts)
                if node_cts:
                    pending = cts.setdefault(("loop", node.inputs[0]), {})
                    pending[node.attrs["position"]] = node_cts
                continue
            if node.op == "loop":
                pending = cts.pop(("loop", node.id), {})
                if node.id in plan:
                    self._loop_backward(node, analysis, plan, residuals, pending, cts, final)
                else:
                    for blocks in pending.values():
                        for t in blocks.values():
                            live.release(t)
                node_cts = None
            if self.observer:
                self.observer(self, "backward", node, None, node_cts)
            if node.id in wrt_ids:
                if node_cts:
                    results[node.id] = node_cts
                continue
            if (not node_cts and node.op != "loop") or node.id not in plan:
                for t in (node_cts or {}).values():
                    live.release(t)
                if final and node.id in plan:   # no cotangent this sweep: its residuals go all the same
                    self._free_residuals(node, plan, refs, residuals)
                continue
            prim = REGISTRY.get(node.op)
            shapes = self.in_shapes(node)
            # one Linear a block for every input's rule: a ScaledDense cotangent two rules
            # need dense is made dense once
            linear = {b: self._linear(ct.shape[0])
                      for b, ct in (node_cts or {}).items()}
            for i, keys in (() if prim is None else plan[node.id]):   # a loop: done above
                src = node.inputs[i]
                target = cts.setdefault(src, {})
                if prim.movement:
                    move = self.moves(node)[i]
                    for b, ct in node_cts.items():
                        T = linear[b]
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
                    T = linear[b]
                    self._accumulate(T, target, b, prim.vjp[i](T, r, ct))
                if remade:
                    live.drop(live_size(p))
            for t in (node_cts or {}).values():
                live.release(t)
            if final:
                self._free_residuals(node, plan, refs, residuals)
            # Drop this node's references now, so the arrays counted as freed are freed
            # (a loop variable would keep the last cotangent alive into the next node).
            node_cts = ct = t = x = r = p = out = linear = T = None
        if self.observer:
            self.observer(self, "backward-end", None, None, None)
        for blocks in results.values():   # handed to the caller: no longer the sweep's
            for t in blocks.values():
                live.release(t)
        return results

    def _free_residuals(self, node, plan, refs, residuals):
        """The final sweep is done with `node`: its residuals whose last use it was go."""
        graph = self.graph
        for _, keys in plan[node.id]:
            for key in keys:
                refs[key] -= 1
                if refs[key] == 0:
                    value = residuals.pop(key)
                    if isinstance(key, tuple) or not is_leaf(graph.nodes[key]):
                        if isinstance(key, int) and key in graph.outputs.values():
                            continue   # results stay alive
                        self.live.drop(live_size(value) if isinstance(key, tuple) else graph.nodes[key].size)

    def _accumulate(self, T, target: dict, block, value):
        if value is None:
            return
        old = target.get(block)
        new = T.add(old, value)
        if old is not None:   # the rule's result and the sum are alive beside the old sum,
            # unless the old sum dies here as a plain array as large as the new one: then the
            # plan adds in place (a += b), or, where it is a view it must not write, makes a
            # sum of the size already counted for it
            dies = self.live.refs(old) == 1 and not structured(old) and not isinstance(old, ScaledDense) \
                and not structured(new) and not isinstance(new, ScaledDense) and live_size(new) == live_size(old)
            self.live.temporary(live_size(value) + (0 if dies else live_size(new)))
        self.live.release(old)
        self.live.hold(new)
        target[block] = new


class _Checkpointed:
    """Reverse mode through one loop keeping at most S states (Runner.checkpoints):
    binomial checkpointing, the schedule of adcli.checkpoint.

    The forward sweep runs the schedule up to its first reversed step: body steps that
    keep nothing (the primal alone), the state before some of them saved, then the last
    step run recording its residuals, as without checkpoints. The backward sweep runs the
    rest: before each step's backward, that step is run again from the nearest saved
    state, recording its residuals, which its backward frees. The states the forward
    sweep saves are residuals of the graph (a compiled backward sweep is a plan of its
    own, reading them as inputs); those the backward sweep saves are its own.

    Memory: a value the body makes is counted live once (by identity) and freed when
    nothing holds it any more: the state in hand, a saved state, a step's residuals,
    the graph's residuals (the forward sweep's saved states, until the last sweep)."""

    def __init__(self, runner, loop, analysis, plan):
        self.runner, self.loop, self.live = runner, loop, runner.live
        self.outs = analysis.loop_outs.get(loop.id, {})
        self.sched = sched = runner._schedule(loop, analysis)
        self.child = runner._child(loop)
        self.body_plan = runner._body_plans(analysis, plan)
        self.nc, self.body = sched.carried, loop.attrs["body"]
        self.slot_count = runner.checkpoints
        self.holders = {}   # id(value) -> [value, holders, size]: values the body made, alive
        self.hand = []      # the state in hand (the carried values going into the next step)
        self.slots = {}     # slot -> (step, state): the saved states
        # the values saved in slots other than 0 that the body made: id -> [slots holding it,
        # size], and their total (cached() in constant time: 10^5 slots are walked otherwise)
        self.slot_values, self.slot_total = {}, 0
        self.recorded = (0, [])   # the step recorded now: its residuals' size, the params it keeps
        self.most = 0
        # predicting: the effect of a step walked from each state, replayed for every later
        # step from the same state instead of walking it again (a 10^5-step loop reverses
        # 10^5 steps, and runs as many again between its checkpoints)
        self.effects = {} if runner.xp is None else None

    # -- what holds the body's values ------------------------------------------------------------
    def _hold(self, values, made: dict | None = None):
        """One more holder for each of `values` the body made; `made` ({id: size}): values
        just made (counted live by the body's run already), registered here."""
        for v in values:
            entry = None if v is None else self.holders.get(id(v))
            if entry is not None:
                entry[1] += 1
            elif made is not None and v is not None and id(v) in made:
                self.holders[id(v)] = [v, 1, made[id(v)]]

    def _release(self, values):
        for v in values:
            entry = None if v is None else self.holders.get(id(v))
            if entry is None:
                continue
            entry[1] -= 1
            if entry[1] == 0:
                del self.holders[id(v)]
                self.live.drop(entry[2])

    def _set_hand(self, state, made: dict | None = None):
        old, self.hand = self.hand, list(state)
        self._hold(self.hand, made)
        self._release(old)

    def _signature(self) -> tuple:
        """The state in hand as a step sees it: per value, the caller's (0), made by the
        body and held by the hand alone (1: freed when the hand lets go), or held elsewhere
        too (2)."""
        return tuple(None if v is None else 0 if id(v) not in self.holders else
                     1 if self.holders[id(v)][1] == 1 else 2 for v in self.hand)

    def _drop_hand_quietly(self):
        """Let go of the hand as _set_hand([]) does, its live values counted already (a
        replayed effect holds the drops)."""
        for v in self.hand:
            entry = None if v is None else self.holders.get(id(v))
            if entry is not None:
                entry[1] -= 1
                if entry[1] == 0:
                    del self.holders[id(v)]
        self.hand = []

    # -- predicting: effects measured once, replayed ----------------------------------------------
    def _measure(self):
        r, live = self.runner, self.live
        start = (r.primal.snapshot(), r.derivative.snapshot(), r.recomputed_steps,
                 live.now, live.arrays, live.indexes)
        peaks = (live.peak, live.peak_with_temporaries, live.peak_arrays)
        live.peak, live.peak_with_temporaries, live.peak_arrays = live.now, live.now + live.indexes, live.arrays
        return start, peaks

    def _measured(self, start, peaks) -> tuple:
        """The counts a walk added, how far the live values rose above where it started,
        and where they ended."""
        r, live = self.runner, self.live
        heights = (live.peak - start[3], live.peak_with_temporaries - start[3] - start[5],
                   live.peak_arrays - start[4])
        live.peak = max(peaks[0], live.peak)
        live.peak_with_temporaries = max(peaks[1], live.peak_with_temporaries)
        live.peak_arrays = max(peaks[2], live.peak_arrays)
        return (tuple(b - a for a, b in zip(start[0], r.primal.snapshot())),
                tuple(b - a for a, b in zip(start[1], r.derivative.snapshot())),
                r.recomputed_steps - start[2], live.now - start[3], live.arrays - start[4],
                live.indexes - start[5], heights)

    def _replay(self, effect):
        r, live = self.runner, self.live
        primal, derivative, recomputed, now, arrays, indexes, heights = effect
        for counter, delta in ((r.primal, primal), (r.derivative, derivative)):
            for name, d in zip(counter.COUNTS, delta):
                setattr(counter, name, getattr(counter, name) + d)
        r.recomputed_steps += recomputed
        live.peak = max(live.peak, live.now + heights[0])
        live.peak_with_temporaries = max(live.peak_with_temporaries, live.now + live.indexes + heights[1])
        live.peak_arrays = max(live.peak_arrays, live.arrays + heights[2])
        live.now += now
        live.arrays += arrays
        live.indexes += indexes

    def cached(self) -> int:
        """Values kept now for the backward sweep: the saved states' (the state going in is
        the caller's) and the recorded step's residuals, each value once."""
        params = {id(v): self.holders[id(v)][2] for v in self.recorded[1]
                  if id(v) in self.holders and id(v) not in self.slot_values}
        total = self.slot_total + sum(params.values()) + self.recorded[0]
        self.most = max(self.most, total)
        return total

    def _keep_slot(self, slot: int, step: int, state: list):
        """Save `state` (the state before `step`, held already) in `slot`."""
        self.slots[slot] = (step, state)
        if slot:
            for v in state:
                if v is not None and id(v) in self.holders:
                    entry = self.slot_values.get(id(v))
                    if entry is None:
                        self.slot_values[id(v)] = [1, self.holders[id(v)][2]]
                        self.slot_total += self.holders[id(v)][2]
                    else:
                        entry[0] += 1

    def _forget_slot(self, slot: int) -> tuple:
        """Take `slot` out of the saved states; returns its (step, state)."""
        step, state = self.slots.pop(slot)
        if slot:
            for v in state:
                entry = None if v is None else self.slot_values.get(id(v))
                if entry is not None:
                    entry[0] -= 1
                    if entry[0] == 0:
                        del self.slot_values[id(v)]
                        self.slot_total -= entry[1]
        return step, state

    # -- steps ----------------------------------------------------------------------------------
    def _run_body(self, it: int):
        child = self.child
        child.index = child.records_of = it
        child.input_values = {f"${p}": v for p, v in enumerate(self.hand + self.closures)}
        child.iteration = it
        child.adopt_values = child.adopt_tangents = set()
        return self.sched.analysis(it)

    def _results(self, it: int, vals: dict) -> tuple[list, dict]:
        """The results of step `it` (None where nothing after it reads them) and those the
        body made: {id: size}."""
        sched = self.sched
        results = [vals.get(o) if q in sched.live[it] else None for q, o in enumerate(sched.out_ids)]
        made = {id(v): prod(self.body.nodes[o].shape) for v, o in zip(results, sched.out_ids)
                if v is not None and o >= sched.n_params}
        return results, made

    def advance(self, start: int, stop: int):
        """Run steps start … stop − 1 forward from the state in hand, keeping nothing."""
        runner, sched = self.runner, self.sched
        it = start
        while it < stop:
            key = None
            if self.effects is not None:   # predicting
                key = ("advance", id(sched.analysis(it)), self._signature())
                effect = self.effects.get(key)
                if effect is not None:
                    self._replay(effect[0])
                    self._drop_hand_quietly()
                    self._set_hand([None if shape is None else Abstract(shape) for shape in effect[1]],
                                   {})
                    for v, shape in zip(self.hand, effect[1]):   # made: counted live by the effect
                        if v is not None:
                            self.holders[id(v)] = [v, 1, prod(shape)]
                    it += 1
                    # the steps after it, from the state it left, alike: counted at once when
                    # that state is the one it started from and no value stayed alive
                    times = min(stop, sched.steady_until(it - 1)) - it
                    if times > 0 and self._signature() == key[2] and effect[0][3:6] == (0, 0, 0):
                        primal, derivative, recomputed = effect[0][:3]
                        for counter, delta in ((runner.primal, primal), (runner.derivative, derivative)):
                            for name, d in zip(counter.COUNTS, delta):
                                setattr(counter, name, getattr(counter, name) + d * times)
                        runner.recomputed_steps += recomputed * times
                        it += times
                    continue
                measuring = self._measure()
            results, made = self._results(it, self.child.run_primal(self._run_body(it)))
            for v in results[self.nc:]:   # results that are not carried: read only after the last step
                if v is not None and id(v) in made:
                    self.live.drop(made.pop(id(v)))
            self._set_hand(results[:self.nc], made)
            runner.recomputed_steps += 1
            if key is not None:
                effect = self._measured(*measuring)
                if all(v is None or id(v) in made for v in self.hand):   # (a value passed through: walked)
                    self.effects[key] = (effect, [None if v is None else v.shape for v in self.hand])
            it += 1

    def record(self, it: int, residuals) -> tuple:
        """Run step `it` from the state in hand keeping its residuals (in `residuals`, as
        ("L", loop, it, key)). Returns its results, those the body made ({id: size}) and
        its record (as Runner._loop_backward_step reads it)."""
        child, live = self.child, self.live
        an = self._run_body(it)
        vals, res, refs_i, cached_i, _ = child.reverse_forward_sweep(an, self.body_plan(child, an))
        results, made = self._results(it, vals)
        for key, value in res.items():
            residuals[("L", self.loop.id, it, key)] = value
        params = [res[k] for k in res if isinstance(k, int) and k < self.sched.n_params]
        self._hold(params)   # the state it reads back: alive until its backward
        self.recorded = (cached_i, params)
        live.indexes += _record_wide(live, self.sched, res)
        live.temporary(0)
        return results, made, (list(res), refs_i, [])

    def _saved_keys(self, step: int) -> list:
        return [("L", self.loop.id, step, ("s", p)) for p in range(self.nc)]

    # -- the sweeps -----------------------------------------------------------------------------
    def forward(self, values, residuals, refs) -> int:
        """The forward sweep of reverse mode through the loop; returns the values it keeps
        for the backward sweep (as Runner._loop_reverse_forward)."""
        runner, loop, sched, live = self.runner, self.loop, self.sched, self.live
        params = [values[i] for i in loop.inputs]
        self.closures = params[self.nc:]
        self.hand = params[:self.nc]   # the caller's
        # slot -> (step, a token per value the body made, else None): the graph's residuals.
        # Tokens name values across sweeps: a compiled backward sweep reads each residual
        # key as an input of its own, one value saved twice (a state, and a step's record)
        # as two objects, which must be held and counted as one.
        saved, tokens = {}, {}
        token = lambda v: tokens.setdefault(id(v), len(tokens)) if id(v) in self.holders else None  # noqa: E731
        for a in self._forward_actions():
            if a.kind == "advance":
                self.advance(a.start, a.stop)
            elif a.kind == "save" and a.slot > 0:   # slot 0: the state going in, the caller's
                self._hold(self.hand)
                self._keep_slot(a.slot, a.start, list(self.hand))
                saved[a.slot] = (a.start, [None if v is None else token(v) for v in self.hand])
                for key, v in zip(self._saved_keys(a.start), self.hand):
                    if v is not None:
                        residuals[key] = v
        results, made, record = self.record(sched.count - 1, residuals)
        self._set_hand([])
        cached = self.cached()
        values[loop.id] = None
        seen = set()
        for q, out_id in self.outs.items():
            v = results[q]
            size = prod(runner.graph.nodes[out_id].shape)
            if id(v) not in made or id(v) in seen:   # the caller's array, or one given twice
                live.add(size)
            elif refs.get(out_id) and record[1].get(sched.out_ids[q]):   # kept by both: once
                cached -= size
            seen.add(id(v))
            values[out_id] = v
        for q, v in enumerate(results):   # results no loop_out reads (dropped from the graph)
            if q not in self.outs and v is not None and id(v) in made and id(v) not in seen:
                live.drop(made[id(v)])
                seen.add(id(v))
        # what the backward sweep reads: the states saved, the last step's record, and which
        # params that step keeps the body made (their keys: a staged sweep has other objects)
        last_params = []
        for k in record[0]:
            v = residuals[("L", loop.id, sched.count - 1, k)]
            if isinstance(k, int) and k < sched.n_params and id(v) in self.holders:
                last_params.append((k, self.holders[id(v)][2], token(v)))
        runner._loop_records[(loop.id, runner.records_of)] = (saved, record, self.recorded[0], last_params,
                                                               cached)
        return cached

    def backward(self, residuals, pending, cts, final):
        """The backward sweep through the loop: the rest of the schedule."""
        runner, loop, sched = self.runner, self.loop, self.sched
        saved, last_record, last_size, last_params, forward_cached = \
            runner._loop_records[(loop.id, runner.records_of)]
        nc, last = self.nc, sched.count - 1
        self.closures = [residuals[i] for i in loop.inputs[nc:]]
        self.slots = {0: (0, [residuals[i] for i in loop.inputs[:nc]])}
        canonical = {}   # token -> the one object standing for it
        for slot, (step, tokens) in saved.items():   # the forward sweep's, counted live there
            state = [residuals.get(key) if t is None else canonical.setdefault(t, residuals[key])
                     for key, t in zip(self._saved_keys(step), tokens)]
            for p, (v, t) in enumerate(zip(state, tokens)):
                if t is not None:
                    self.holders.setdefault(id(v), [v, 0, prod(self.body.nodes[p].shape)])[1] += 1
            self._keep_slot(slot, step, state)
        kept = []
        for p, size, t in last_params:   # the state the last step read, kept by its record
            v = canonical.setdefault(t, residuals[("L", loop.id, last, p)])
            self.holders.setdefault(id(v), [v, 0, size])
            kept.append(v)
        for v in self.holders.values():   # the graph's residuals hold them until the last sweep
            v[1] += 0 if final else 1
        self.recorded = (last_size, kept)
        self._hold(kept)
        self.seeds, self.cts, self.residuals, self.final = pending, cts, residuals, final
        self.saved, self.last_record = saved, last_record
        if self.effects is None:   # the actions from the first reversed step on
            for a in dropwhile(_not_reverse, checkpoint.actions(sched.count, self.slot_count)):
                self._act(a)
        else:
            self._predict_rest()
        for slot, (step, state) in self.slots.items():   # what is left: the state going in, and
            self._release(state)                           # (before the last sweep) the graph's
        runner.cached_extra = max(runner.cached_extra, self.most - forward_cached)


    def _forward_actions(self):
        """The schedule's actions up to its first reversed step (what the forward sweep runs):
        the saves and advances of the work items it goes down through, then the advance to
        the last step where one slot is left. O(S) actions, whatever the count."""
        return takewhile(_not_reverse, checkpoint.actions(self.sched.count, self.slot_count))

    # -- the backward sweep's actions -------------------------------------------------------------
    def _act(self, a):
        """Carry out one action of the schedule in the backward sweep."""
        if a.kind == "restore":
            self._set_hand(self.slots[a.slot][1])
        elif a.kind == "advance":
            self.advance(a.start, a.stop)
        elif a.kind == "save":
            self._hold(self.hand)
            self._keep_slot(a.slot, a.start, list(self.hand))
            self.cached()
        elif a.kind == "free":
            step, state = self._forget_slot(a.slot)
            if a.slot in self.saved and self.final:
                for key in self._saved_keys(step):
                    self.residuals.pop(key, None)
            self._release(state)
        elif a.kind == "reverse":
            self._reverse(a.start)

    def _reverse(self, it: int):
        """Run step `it` again from the state in hand, recording it, then its backward step
        (the last step's record is the forward sweep's)."""
        runner, loop, sched, live, residuals = self.runner, self.loop, self.sched, self.live, self.residuals
        last, final = sched.count - 1, self.final
        key = None
        if self.effects is not None and it != last:   # predicting
            key = ("reverse", runner._backward_state(sched, it, loop, self.seeds, self.cts), self._signature(),
                   final)
            effect = self.effects.get(key)
            if effect is not None:   # seeds and sums: of the kinds the walk left
                self._replay(effect[0])
                params = self.hand + self.closures
                self.recorded = (effect[1], [params[k] for k in effect[2]])
                self.cached()
                self.recorded = (0, [])
                self._drop_hand_quietly()
                return
            measuring, kinds = self._measure(), self._seed_kinds()
        if it == last:
            record, results, made = self.last_record, [], {}
        else:
            results, made, record = self.record(it, residuals)
            # results the body's backward keeps alive: the live ones, and those it reads back
            # (as results, never freed by it); freed below
            for k in record[0]:
                if isinstance(k, int) and k >= sched.n_params and k in sched.out_ids:
                    v = residuals[("L", loop.id, it, k)]
                    made.setdefault(id(v), prod(self.body.nodes[k].shape))
                    results.append(v)
        self.cached()
        self.seeds = runner._loop_backward_step(loop, sched, it, self.body_plan, record, residuals, self.seeds,
                                                self.cts, final, final or it != last)
        if final or it != last:   # what its backward did not free (results it read back)
            for k in record[0]:
                residuals.pop(("L", loop.id, it, k), None)
        for v in {id(v): v for v in results if v is not None and id(v) in made}.values():
            live.drop(made[id(v)])   # a step run again: nothing after it reads its results
        if key is not None:
            kept = [k for k in record[0] if isinstance(k, int) and k < sched.n_params]
            size = self.recorded[0]
        self._release(self.recorded[1])
        self.recorded = (0, [])
        self._set_hand([])
        if key is not None:
            effect = self._measured(*measuring)
            # a replay leaves the cotangents as it found them: only a step that did too is a
            # model (a loop that swaps its state hands on other kinds every other step)
            if self._seed_kinds() == kinds:
                self.effects[key] = (effect, size, kept)

    # -- predicting the backward sweep: work items measured once, replayed ------------------------
    # The schedule of l steps at S slots has O(l·log) actions (6·10^6 for 10^6 steps at 1,000
    # slots), but few distinct work items (3,285 there): an item of iterations alike, entered
    # in the same state, does the same walk. A prediction walks each such item once and replays
    # it after, and counts a one-slot item's steps in closed form once they are seen to be
    # alike: time independent of the count for a loop of alike iterations.
    def _predict_rest(self):
        """The backward sweep's actions, predicted: the rest of the item whose step is reversed
        first, then the left part of each item above it, last first."""
        items = checkpoint.spine(self.sched.count, self.slot_count)
        start, stop, slot, free = items[-1]
        self._reverse(stop - 1)
        if stop - start > 1:   # one slot left: the steps before it, each advanced to
            self._act(Action("restore", start, slot=slot))
            self._one_slot(start, stop - 2, slot)
        for upper, item in zip(reversed(items[:-1]), reversed(items)):
            if item[2] != 0:
                self._act(Action("free", item[0], slot=item[2]))
            self._walk((upper[0], item[0], upper[2], upper[3]))
        if items[0][2] != 0:
            self._act(Action("free", 0, slot=items[0][2]))

    def _item_key(self, item) -> tuple | None:
        """What an item's walk depends on, when its iterations are alike (else None)."""
        start, stop, slot, free = item
        sched = self.sched
        if sched.steady_from(stop - 1) > start:
            return None
        return ("item", stop - start, free, slot == 0, start == 0, self._signature(),
                self.runner._backward_state(sched, stop - 1, self.loop, self.seeds, self.cts), self.final)

    def _seed_kinds(self) -> tuple:
        return Runner._cotangent_kinds(self.loop, self.seeds, self.cts)

    def _walk(self, item):
        """Carry out a work item's actions (checkpoint.expand), predicting, but not the free
        of its own slot: its caller's (an item's left part shares its slot). By a stack of
        what is left to do, not by recursion: with two slots an item's left parts nest
        ~√(2l) deep (1,414 for 10^6 steps)."""
        todo = [("item", item)]
        while todo:
            what, *args = todo.pop()
            if what == "free":
                self._act(Action("free", args[0], slot=args[1]))
                continue
            if what == "close":   # an item measured: a model for the items like it
                key, measuring, most, kinds, base = args
                effect, rise = self._measured(*measuring), self.most - base
                self.most = max(most, self.most)
                if self._seed_kinds() == kinds:   # leaves what it found
                    self.effects[key] = (effect, rise)
                continue
            start, stop, slot, free = item = args[0]
            if stop == start:
                continue
            self._act(Action("restore", start, slot=slot))
            key = self._item_key(item)
            if key is not None and key in self.effects:
                effect, rise = self.effects[key]
                self._replay(effect)
                self.most = max(self.most, self.cached() + rise)
                self._set_hand([])
                continue
            if key is not None:
                measuring, most, kinds = self._measure(), self.most, self._seed_kinds()
                self.most = base = self.cached()
                todo.append(("close", key, measuring, most, kinds, base))
            if stop - start == 1:
                self._act(Action("reverse", start))
            elif free == 1:
                self._one_slot(start, stop - 1, slot)
            else:   # (the actions of checkpoint.expand, its parts last first on the stack)
                _, advance, save, right, left = checkpoint.expand(*item)
                self._act(advance)
                self._act(save)
                todo += [("item", left), ("free", right[0], right[2]), ("item", right)]

    def _one_slot(self, start: int, top: int, slot: int):
        """Steps top … start reversed from the state in `slot`, with no slot to spare: each
        advanced to from it, reversed, and the state restored (checkpoint.one_slot).
        Predicting, steps alike are counted at once: once three in a row of one run of
        iterations did the same walk but for one more advanced step each (same heights,
        no value left alive), every step down to that run's start does too."""
        seen = []   # the last steps walked: (state, their effect)
        step = top
        while step >= start:
            sched = self.sched
            state = (self.runner._backward_state(sched, step, self.loop, self.seeds, self.cts),
                     self._signature(), self._seed_kinds())
            measuring = self._measure()
            for a in checkpoint.one_slot_step(start, step, slot):
                self._act(a)
            seen = (seen + [(state, self._measured(*measuring))])[-3:]
            step -= 1
            low = max(start + 1, sched.steady_from(step + 1) + 1)
            if len(seen) == 3 and step >= low and _alike_steps(seen):
                self._repeat_steps(seen[1][1], seen[2][1], step - low + 1)
                step = low - 1
                seen = []

    def _repeat_steps(self, before, last, times: int):
        """Count `times` steps more, each like `last` but for one advanced step fewer than
        the one before it (`before` − `last`: one step's counts)."""
        runner = self.runner
        per_step = [tuple(b - a for a, b in zip(x, y)) for x, y in zip(last[:2], before[:2])]
        series = times * (times + 1) // 2   # the advanced steps fewer, summed
        for counter, now, less in ((runner.primal, last[0], per_step[0]),
                                   (runner.derivative, last[1], per_step[1])):
            for name, d, e in zip(counter.COUNTS, now, less):
                setattr(counter, name, getattr(counter, name) + d * times - e * series)
        runner.recomputed_steps += last[2] * times - (before[2] - last[2]) * series
        self._replay(((0,) * len(last[0]), (0,) * len(last[1]), 0, 0, 0, 0, last[6]))   # its heights


def _not_reverse(action) -> bool:
    return action.kind != "reverse"


def _alike_steps(seen) -> bool:
    """Three one-slot steps (state, effect), last walked last, that did the same walk but
    for one more advanced step each: same state, same heights, nothing left alive, and
    counts falling by one step's each time."""
    (s0, e0), (s1, e1), (s2, e2) = seen
    if not s0 == s1 == s2 or not e0[6] == e1[6] == e2[6] or any(e[3:6] != (0, 0, 0) for e in (e0, e1, e2)):
        return False
    first = [tuple(b - a for a, b in zip(x, y)) for x, y in zip(e1[:2], e0[:2])] + [e0[2] - e1[2]]
    second = [tuple(b - a for a, b in zip(x, y)) for x, y in zip(e2[:2], e1[:2])] + [e1[2] - e2[2]]
    return first == second


class _Records:
    """A loop's per-iteration records for its backward sweep (residual keys, references,
    params it frees). A prediction counts runs of steady iterations without walking them:
    their records stand for them, looked up (a run's iterations are alike), not copied."""

    def __init__(self):
        self.walked = {}
        self.runs = []   # (first, end, the walked iteration standing for them), in order

    def add(self, it: int, record: tuple):
        self.walked[it] = record

    def alike(self, first: int, end: int, model: int):
        self.runs.append((first, end, model))

    def source(self, it: int) -> int:
        if it in self.walked:
            return it
        k = bisect_right(self.runs, (it, float("inf"))) - 1
        first, end, model = self.runs[k]
        assert first <= it < end, "an iteration without a record"
        return model

    def __getitem__(self, it: int) -> tuple:
        if it in self.walked:
            return self.walked[it]
        keys, refs, mine = self.walked[self.source(it)]
        return keys, dict(refs), mine   # (a sweep counts references down: its own copy)


# Reverse mode keeps a record per iteration of a loop (its residuals' keys and references,
# dict entries): what that costs beyond the values and their array headers, counted as
# 8-byte elements (interpret._Live.indexes; the prediction multiplies the books by
# memory.TEMPORARY_FACTOR) per record, per residual key it holds, and for the loop index
# kept beside it when its backward reads the index as a number. Measured with tracemalloc
# (2,000 and 30,000 iterations of bodies of 3 and 12 residual keys): the interpreter's
# records hold ~600 B + ~100 B per key (736 and 926 B with 3 keys, 1,667 B with 12; a fixed
# 500 B was counted before, under the 12-key body's need); the index, a 0-d array and its
# entry, about 190 B (100,000 iterations).
LOOP_RECORD_WIDE = (48, 10, 15)
# Compiled plans unroll the loop and keep no record: what remains per residual key is its
# entry in the dict of residuals the forward sweep's plan returns (~30 B with the dict's
# slack; a closed-over param is one entry per iteration, one array) and its slot in the
# list the backward sweep's plan reads them from (8 B); the index is a constant of the plan.
# Measured over 200-400 iterations (tests/test_memory_prediction.py, loop programs).
PLAN_RECORD_WIDE = (0, 3, 0)


def _record_wide(live, sched, keys) -> int:
    """The books' cost of an iteration's record whose residual keys are `keys`, in values
    of `live`'s dtype, as `live.records` prices it."""
    per_record, per_key, index = live.records
    return (per_record + per_key * len(keys)
            + (index if sched.index is not None and sched.index in keys else 0)) * live.wide


class _Steady:
    """Predicting through a loop (shapes only): an iteration that starts in
    the same state as the one before (`state`: the body analysis and the kinds of what
    is carried) does the same walk from there, so it changes the counts and the live
    values by the same amounts and reaches the same height above where it started. Such
    iterations are counted from the last walked one instead of walked, the live values
    unchanged (forward mode), growing (residuals kept) or falling (residuals freed)
    linearly, peaks included."""

    def __init__(self, runner):
        self.runner = runner
        self.last = None   # (state, counts at its start, growth, excursion, extra)

    def begin(self, state):
        r, live = self.runner, self.runner.live
        self.state = state
        self.counts = (r.primal.snapshot(), r.derivative.snapshot())
        self.start = (live.now, live.now + live.indexes, live.arrays, live.indexes)
        self.peaks = (live.peak, live.peak_with_temporaries, live.peak_arrays)
        live.peak, live.peak_with_temporaries, live.peak_arrays = self.start[:3]   # this one's own

    def end(self, extra: int = 0):
        live = self.runner.live
        heights = (live.peak, live.peak_with_temporaries, live.peak_arrays)
        live.peak, live.peak_with_temporaries, live.peak_arrays = (max(a, b) for a, b in zip(self.peaks, heights))
        now = (live.now, live.now + live.indexes, live.arrays, live.indexes)
        growth = tuple(b - a for a, b in zip(self.start, now))
        excursion = tuple(h - a for h, a in zip(heights, self.start[:3]))
        self.last = (self.state, self.counts, growth, excursion, extra)

    def skip(self, state, times: int) -> int | None:
        """Count `times` iterations like the last walked one if `state` is its state;
        their `extra` summed, or None (nothing counted)."""
        if times <= 0 or self.last is None or self.last[0] != state:
            return None
        r, live = self.runner, self.runner.live
        _, counts, growth, excursion, extra = self.last
        r.primal.repeat(counts[0], times)
        r.derivative.repeat(counts[1], times)
        start = (live.now, live.now + live.indexes, live.arrays)
        tops = tuple(a + e + max(0, (times - 1) * g) for a, e, g in zip(start, excursion, growth))
        live.peak = max(live.peak, tops[0])
        live.peak_with_temporaries = max(live.peak_with_temporaries, tops[1])
        live.peak_arrays = max(live.peak_arrays, tops[2])
        live.now += times * growth[0]
        live.indexes += times * growth[3]
        live.arrays += times * growth[2]
        self.last = None
        return extra * times


def moved_key(node, t: int) -> tuple:
    """The key of an index node whose key follows a loop's index (Node.key_steps), in
    iteration t."""
    return tuple(part if not step else slice(part.start + step * t, part.stop + step * t)
                 if isinstance(part, slice) else part + step * t
                 for part, step in zip(node.attrs["key"], node.key_steps))


def flat_step(steps, shape) -> int:
    """How far, in flat positions of a value of `shape`, a key moving by `steps` per part
    moves each element it picks."""
    return sum(step * prod(shape[axis + 1:]) for axis, step in enumerate(steps))


def _kinds(carried) -> tuple:
    """The kinds and shapes of carried derivative values (dicts of blocks), for _Steady;
    for Seeds and Scaleds also which of them share one Seed object (numbered in order of
    appearance), since Scaleds of one Seed add entry by entry and others do not; for
    ScaledDenses their base's and scale's shapes and which share a base (they add by scales)."""
    seeds: dict = {}

    def kind(t):
        if isinstance(t, ScaledDense):   # the shapes it is counted by, and which share a base
            number = seeds.setdefault(id(t.base), len(seeds))
            return (t.k, tuple(t.base.shape), tuple(t.scale.shape), number)
        if not structured(t):
            return tuple(t.shape)
        number = seeds.setdefault(id(root(t)), len(seeds))
        return (t.k, t.node_shape, t.identity, root(t).full, number)

    return tuple(None if not ts else tuple(sorted(
        (str(b), type(t).__name__, kind(t)) for b, t in ts.items())) for ts in carried)


def body_analysis(body, depends: frozenset) -> "Analysis":
    """A loop body's Analysis with params `depends` carrying derivatives and every result
    wanted (for what depends on what), kept on the body graph."""
    cache = body.__dict__.setdefault("_depends_analyses", {})
    if depends not in cache:
        cache[depends] = Analysis(body, [f"${p}" for p in sorted(depends)], list(body.outputs))
    return cache[depends]


class Settling:
    """A value per iteration of a loop that settles: each follows from its neighbour by
    one rule, so once two neighbours are equal every value further on is too. Kept as
    the values before it settles (`head`, from the first iteration on) or after (`tail`,
    up to the last), and the settled value: memory and time independent of the count."""

    __slots__ = ("count", "head", "steady", "tail")

    def __init__(self, count: int, head: list, steady, tail: list):
        self.count, self.head, self.steady, self.tail = count, head, steady, tail

    @classmethod
    def forward(cls, count: int, first, step) -> "Settling":
        """Values from the first on: value(i + 1) = step(value(i))."""
        head = [first]
        while len(head) < count:
            nxt = step(head[-1])
            if nxt == head[-1]:
                return cls(count, head, head[-1], [])
            head.append(nxt)
        return cls(count, head, head[-1], [])

    @classmethod
    def backward(cls, count: int, last, step) -> "Settling":
        """Values from the last back: value(i − 1) = step(value(i), i)."""
        tail = [last]
        while len(tail) < count:
            nxt = step(tail[-1], count - len(tail))
            if nxt == tail[-1]:
                break
            tail.append(nxt)
        tail.reverse()
        return cls(count, [], tail[0], tail)

    def __len__(self):
        return self.count

    def __getitem__(self, i: int):
        if i < 0:
            i += self.count
        if i < len(self.head):
            return self.head[i]
        if i >= self.count - len(self.tail):
            return self.tail[i - (self.count - len(self.tail))]
        return self.steady

    def edges(self) -> set:
        """Iterations where the value may differ from the one before."""
        return set(range(1, len(self.head) + 1)) | set(range(self.count - len(self.tail), self.count))


def loop_depends(loop, inputs_depend: list) -> Settling:
    """Per iteration of a loop, the body params that depend on the wrt inputs: those of its
    inputs that do, then each carried param as its result did in the iteration before."""
    body, carried = loop.attrs["body"], loop.attrs["carried"]
    out_ids = list(body.outputs.values())

    def step(current):
        a = body_analysis(body, current)
        return frozenset(p for p in range(carried) if a.depends[out_ids[p]]) | \
            frozenset(p for p in current if p >= carried)

    return Settling.forward(loop.attrs["count"], frozenset(p for p, d in enumerate(inputs_depend) if d), step)


class LoopSchedule:
    """What each iteration of a loop node computes, for one analysis of the graph around
    it: which of the body's params carry derivatives (`depends`: from the loop's inputs
    forward) and which of its results are needed (`needed`: from the loop_out nodes the
    outputs reach, backward), and the body's Analysis for that pair. Static."""

    def __init__(self, loop, analysis):
        body = loop.attrs["body"]
        self.body = body
        self.count = loop.attrs["count"]
        self.carried = loop.attrs["carried"]
        self.names = list(body.outputs)                 # results, by position
        self.out_ids = [body.outputs[n] for n in self.names]
        self.n_params = len(loop.inputs)
        # the body's index read as a number (a param after the loop's inputs), or None
        self.index = next((node.id for node in body.nodes if node.op == "input" and "index" in node.attrs), None)
        self._analyses = {}
        self._computed = {}   # live results -> the body nodes they need
        depends = analysis.loop_depends[loop.id]
        outs = analysis.loop_outs.get(loop.id, {})
        # results whose values are needed after each iteration: the last one's that a loop_out
        # reads, before that the carried ones the next iteration reads (as unrolling keeps)
        def live_before(current, i):
            used = self.computed(current)
            return frozenset(p for p in range(self.carried) if used[p])

        live = Settling.backward(self.count, frozenset(outs), live_before)
        last = tuple(self.names[q] for q in sorted(outs) if analysis.reaches[outs[q]])
        everything = frozenset(range(self.n_params))

        def needed_before(pair, i):   # a result is needed if its param reaches a needed one
            a = self.analysis_for(everything, pair[0], live[i])
            return tuple(self.names[p] for p in range(self.carried) if a.reaches[p]), live[i - 1]

        # (needed, live) settle together: needed(i − 1) follows from needed(i) and live(i)
        pairs = Settling.backward(self.count, (last, live[self.count - 1]), needed_before)
        needed = Settling(self.count, [], pairs.steady[0], [pair[0] for pair in pairs.tail])
        self.depends, self.needed, self.live = depends, needed, live

    def computed(self, live: frozenset) -> list:
        """The body's nodes the results at positions `live` need (params included)."""
        if live not in self._computed:
            needed = {self.out_ids[q] for q in live}
            for node in reversed(self.body.nodes):
                if node.id in needed:
                    needed.update(node.inputs)
            self._computed[live] = [node.id in needed for node in self.body.nodes]
        return self._computed[live]

    def analysis_for(self, depends: frozenset, needed: tuple, live: frozenset | None = None) -> Analysis:
        key = (depends, needed, live)
        if key not in self._analyses:
            computed = kept = None
            if live is not None:
                computed, kept = self.computed(live), {self.out_ids[q] for q in live}
            self._analyses[key] = Analysis(self.body, [f"${p}" for p in sorted(depends)], list(needed),
                                           computed, kept)
        return self._analyses[key]

    def analysis(self, iteration: int) -> Analysis:
        return self.analysis_for(self.depends[iteration], self.needed[iteration], self.live[iteration])

    def _key(self, i: int) -> tuple:
        return self.depends[i], self.needed[i], self.live[i]

    def _runs(self) -> list:
        """The starts of the runs of iterations with one analysis, then the count."""
        if not hasattr(self, "_run_starts"):
            edges = sorted(e for e in self.depends.edges() | self.needed.edges() | self.live.edges()
                           if 0 < e < self.count)
            self._run_starts = [0] + [i for i in edges if self._key(i) != self._key(i - 1)] + [self.count]
        return self._run_starts

    def steady_from(self, iteration: int) -> int:
        """The first iteration of the run of iterations with `iteration`'s analysis."""
        starts = self._runs()
        return starts[bisect_right(starts, iteration) - 1]

    def steady_until(self, iteration: int) -> int:
        """The first iteration after `iteration` whose analysis differs (or the count)."""
        starts = self._runs()
        return starts[bisect_right(starts, iteration)]

    def analyses(self) -> list:
        """The distinct analyses of the iterations (one per run of them)."""
        return list({id(a): a for a in (self.analysis(i) for i in self._runs()[:-1])}.values())
