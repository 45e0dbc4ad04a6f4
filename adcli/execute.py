"""Compiling a run of forward or reverse mode into plans, and running the plans.

The drivers in adcli.api (``Program._forward``, ``Program._reverse``) call three sweep
methods on an engine: ``forward_sweep``, ``reverse_forward_sweep`` and
``backward_sweep``. Three engines answer them:

- ``Runner`` (adcli.interpret) itself: with ``xp=None`` it predicts (shapes and
  counts only); with a real array module and an observer it is the reference
  interpreter that traces and diagnostics watch node by node;
- ``Stager``: the same Runner on staged values (adcli.staging). Every sweep becomes a
  ``Plan`` (adcli.plan) and all the counts are taken, once: they are the compiled
  run's, static from then on;
- ``Replay``: runs the plans of a ``CompiledRun`` in the order they were staged. No
  graph walk, no counting, no liveness bookkeeping: those were done while staging.
"""
from __future__ import annotations

from .interpret import Runner, _Live
from .plan import KnownValues, Plan
from .staging import StagingXP, Tape, real
from .tangents import Counter, Scaled, ScaledDense

# A compiled run larger than either is not kept (the reference interpreter runs it on every
# call instead): its plans and their constants would stay in memory after the run, which
# the memory check, made for the run alone, does not foresee.
MAX_CACHED_EQUATIONS = 200_000
MAX_CACHED_CONSTANT_BYTES = 32 * 2**20   # Seeds made dense, index arrays
MAX_CACHED_RUNS = 32             # compiled runs kept per program (the oldest goes first)


class RunTooLarge(Exception):
    """Raised by a Stager made with give_up=True as soon as its plans pass a limit above:
    staging the rest would only be thrown away, and it holds memory while it runs."""


def _outputs_only(env: dict, out_ids) -> dict:
    return {i: env[i] for i in out_ids if i in env}


class CompiledRun:
    """The plans of one run (one mode, wrt, outputs, chunk, backend, dtype) and its counts;
    folded_bytes: what they keep that they folded from the file's consts (KnownValues)."""

    def __init__(self, cost, plans: list, folded_bytes: int = 0):
        self.cost = cost
        self.plans = plans
        self.folded_bytes = folded_bytes

    def counted(self):
        """A copy of the counts made while staging (the caller fills in times)."""
        return self.cost.copy()


class Stager(Runner):
    """A Runner whose sweeps record plans while they run on real values."""

    def __init__(self, graph, xp, dtype, input_values, const_values, give_up: bool = False,
                 constant_budget: int = MAX_CACHED_CONSTANT_BYTES, fold_consts: bool = False):
        super().__init__(graph, xp, dtype, input_values, const_values)
        # the consts' values are fixed while the plans are kept (the run's key says so):
        # what is computed from them alone is computed once, while compiling, and kept in
        # `shared` (None: nothing is folded from the consts)
        self.known = {}   # the tape being recorded: its input var -> a const's fixed value
        self.shared = KnownValues(const_values.values()) if fold_consts else None
        self.give_up = give_up   # raise RunTooLarge at the limits rather than stage on
        # the plans' constants stay in memory beside the run: no more than the memory
        # limit leaves above the run's predicted need (and MAX_CACHED_CONSTANT_BYTES)
        self.constant_budget = min(constant_budget, MAX_CACHED_CONSTANT_BYTES)
        self.real_xp = xp
        self.plans: list[Plan] = []
        self.out_ids = list(dict.fromkeys(graph.outputs.values()))
        self.equations = 0
        self.constant_bytes = 0   # the plans' own (what they fold from consts: shared)
        self.keep = True   # whether the plans are kept (a CompiledRun) or the run is too large
        self.tape = None

    @property
    def folded_bytes(self) -> int:
        return self.shared.new_bytes if self.shared is not None else 0

    def _begin(self):
        tape = Tape(self.real_xp)
        self.known = {}
        self.xp = StagingXP(tape)
        self.tape = tape
        self.observer = self._name_values
        return tape

    def label(self, node_id: int) -> str:
        """What a node's value is called in a derivative program: an input's or a named
        const's name, else its IR variable (v7)."""
        node = self.graph.nodes[node_id]
        return node.attrs.get("name") or node.var if node.op in ("input", "const") else node.var

    def _name_values(self, runner, event, node, value, derivative):
        """Observer: name values v7, tangents v7_dot, adjoints v7_bar (the course's traces)."""
        if node is None:
            return
        label = self.label(node.id)
        self.tape.name(value, label)
        suffix = "_dot" if event == "forward" else "_bar"
        for block, t in (derivative or {}).items():
            extra = f"_{block}" if len(derivative) > 1 and block != "given" else ""
            if isinstance(t, (Scaled, ScaledDense)):   # its scale is the value the program makes
                self.tape.name(t.scale, label + suffix + extra + "_scale")
            else:
                self.tape.name(t, label + suffix + extra)

    def partial(self, node, i, args, out):
        p = super().partial(node, i, args, out)
        if self.tape is not None:
            self.tape.name(p, f"d{self.label(node.id)}_d{self.label(node.inputs[i])}")
        return p

    def _leaves(self, tape):
        """The program's inputs and consts as staged values, in a fixed order."""
        real_inputs, real_consts = self.input_values, self.const_values
        self.input_values = {k: tape.input(v, k) for k, v in real_inputs.items()}
        self.const_values = {k: tape.input(v, self.label(k)) for k, v in real_consts.items()}
        if self.shared is not None:
            self.known = {self.const_values[k].var: v for k, v in real_consts.items()}
        return real_inputs, real_consts

    @staticmethod
    def _given(tape, seeds: dict, suffix: str, label=str) -> dict:
        """A given direction or cotangent is data (an input of the plan), not a constant."""
        staged = {}
        for name, blocks in seeds.items():
            staged[name] = {b: tape.input(t, label(name) + suffix) if b == "given" else t
                            for b, t in blocks.items()}
        return staged

    def _residual_label(self, key) -> str:
        if isinstance(key, tuple) and key[0] == "L":   # ('L', loop, iteration, key): a loop body's
            inner = key[3]
            if isinstance(inner, tuple) and inner[0] == "s":   # a saved state (checkpointing)
                what = f"state{inner[1]}"
            else:
                what = f"d{inner[1] + 1}_{inner[2]}" if isinstance(inner, tuple) else f"v{inner + 1}"
            return f"{self.label(key[1])}_it{key[2]}_{what}"
        if isinstance(key, tuple):   # ('p', node, input index): a partial
            node = self.graph.nodes[key[1]]
            return f"d{self.label(node.id)}_d{self.label(node.inputs[key[2]])}"
        return self.label(key)

    def _end(self, tape, outputs, label, clear_inputs=False, internal=()):
        if self.keep:
            if self.shared is not None:
                self.shared.budget = self.constant_budget - self.constant_bytes - self.shared.new_bytes
            plan = Plan(tape, outputs, label, clear_inputs, internal, self.known, self.shared)
            self.equations += plan.n_eqns
            self.constant_bytes += plan.constant_bytes
            if self.equations > MAX_CACHED_EQUATIONS or self.constant_bytes + self.folded_bytes > self.constant_budget:
                self.keep = False   # too large to keep: this run's results are the staged ones
                self.plans.clear()
                if self.give_up:
                    raise RunTooLarge()
            else:
                plan.compile()   # now, while compiling: not inside a timed or measured run
                self.plans.append(plan)
        self.xp, self.tape, self.observer = self.real_xp, None, None
        return real(outputs)

    def run_primal(self, analysis, keep=None):
        """The primal sweep alone (Program.evaluate, central differences): values of outputs."""
        tape = self._begin()
        saved = self._leaves(tape)
        values = super().run_primal(analysis, keep)
        self.input_values, self.const_values = saved
        return self._end(tape, _outputs_only(values, self.out_ids), "evaluate")

    def forward_sweep(self, analysis, seeds):
        tape = self._begin()
        saved = self._leaves(tape)
        seeds = self._given(tape, seeds, "_dot")
        tangents, values = super().forward_sweep(analysis, seeds)
        self.input_values, self.const_values = saved
        outputs = (_outputs_only(tangents, self.out_ids), _outputs_only(values, self.out_ids))
        return self._end(tape, outputs, "forward_sweep")

    def reverse_forward_sweep(self, analysis, plan):
        tape = self._begin()
        saved = self._leaves(tape)
        values, residuals, refs, cached_values, cached_inputs = super().reverse_forward_sweep(analysis, plan)
        self.input_values, self.const_values = saved
        values, residuals = self._end(tape, (_outputs_only(values, self.out_ids), residuals),
                                      "reverse_forward_sweep", internal=residuals)
        return values, residuals, refs, cached_values, cached_inputs

    def backward_sweep(self, analysis, plan, residuals, refs, seeds, wrt_ids, final):
        tape = self._begin()
        staged = {key: tape.input(value, self._residual_label(key)) for key, value in residuals.items()}
        keys = list(residuals)
        seeds = self._given(tape, seeds, "_bar", self.label)
        results = super().backward_sweep(analysis, plan, staged, refs, seeds, wrt_ids, final)
        if final:   # what the sweep freed is gone from the caller's residuals too
            for key in keys:
                if key not in staged:
                    del residuals[key]
        return self._end(tape, results, "backward_sweep", clear_inputs=final)


class _Unwatched(_Live):
    """Liveness not kept: the plans free what they no longer need by themselves."""

    def hold(self, t):
        pass

    def release(self, t):
        pass


class Replay:
    """Runs a compiled run's plans in order, with the drivers' calls answered from them.

    The drivers still make seeds and count into ``primal``/``derivative``/``live``;
    here those are throwaway (the plans hold the seeds, the compiled run the counts)."""

    def __init__(self, compiled: CompiledRun, xp, dtype, input_values, const_values):
        self.plans = iter(compiled.plans)
        self.xp, self.dtype = xp, dtype
        self.leaves = list(input_values.values()) + list(const_values.values())
        self.primal = Counter()
        self.derivative = Counter()
        self.live = _Unwatched()
        self.observer = None
        self.recomputed_steps = self.cached_extra = 0   # (the compiled run's counts hold them)

    def seed(self, shape, offset, k):
        return None   # made while staging: a constant of the plan

    def residual_plan(self, analysis, recompute=True):
        return None

    @staticmethod
    def _given(seeds: dict) -> list:
        return [t for blocks in seeds.values() for b, t in blocks.items() if b == "given"]

    def forward_sweep(self, analysis, seeds):
        return next(self.plans)(self.leaves + self._given(seeds))

    def reverse_forward_sweep(self, analysis, plan):
        values, residuals = next(self.plans)(list(self.leaves))
        return values, residuals, {}, 0, 0

    def backward_sweep(self, analysis, plan, residuals, refs, seeds, wrt_ids, final):
        step = next(self.plans)
        inputs = list(residuals.values()) + self._given(seeds)
        if final:   # the plan empties `inputs` once read: residuals die at their last use
            residuals.clear()
        return step(inputs)


def replay_plans(compiled: CompiledRun, mode: str, leaves: list, given: list, hand_over):
    """A compiled run's plans run in the order they were staged, without the drivers (what a
    repeat call of adcli.api takes, its decisions already made): as Replay answers them, on
    `leaves` (the inputs, then the consts, as staged) and the `given` direction or cotangent;
    hand_over(sweep, derivatives) after each sweep, numbered from 0. Returns the primal values
    {output node: value} (forward mode: those of the last sweep, as the driver keeps them)."""
    plans = compiled.plans
    if mode == "forward":
        values = None
        for sweep, plan in enumerate(plans):
            tangents, values = plan(leaves + given)
            hand_over(sweep, tangents)
        return values
    values, residuals = plans[0](list(leaves))
    last = len(plans) - 1
    for index in range(1, len(plans)):
        inputs = list(residuals.values()) + given
        if index == last:   # the plan empties `inputs` once read: residuals die at their last use
            residuals.clear()
        hand_over(index - 1, plans[index](inputs))
    return values
