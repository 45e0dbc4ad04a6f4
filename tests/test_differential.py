"""The differential test: random programs, every way adcli has of differentiating
them, and an independent oracle.

tests/progen.py generates each program as a syntax tree (random dims; scalar,
vector and matrix inputs; every op of adcli.ops.REGISTRY, movement ops included;
gathers with repeated elements such as [x, x], [v[0], v[0], v[2]], concat(a, a),
stack(...), x[i], A[i, :], slices; defs; repeats, some with a loop index read
as x[i], X[i], v[i * w:(i + 1) * w], Ws[i * w:(i + 1) * w, :] @ h or 0.25 * i,
nested ones with two; several outputs, some of them
the same node or an input), renders it to .ad source and evaluates the same tree
with its own NumPy interpreter. For each program this test checks:

* value: Program.evaluate() and the value of every derivative run equal the
  oracle's, and the inputs resolve to the values the oracle used;
* derivatives: the oracle's own Jacobian (forward-mode dual numbers in progen.py,
  with the conventions of docs/language.md at kinks: relu'(0) = 0, ties share, clip's
  derivative 1 at its ends, masks without a derivative),
  the forward-mode and reverse-mode Jacobians, the same with a chunk
  smaller than the number of passes, the matrix of JVPs with every unit direction
  (columns), the matrix of VJPs with every unit cotangent (rows), and the
  Jacobian with a subset of the inputs at a second point (``wrt=``, ``at=``,
  whole and chunked) all agree; a random direction's JVP equals J·v and a random
  cotangent on all outputs at once (and a sum of unit cotangents on two outputs
  at once) gives uᵀ·J; so do a JVP with a direction on some inputs only and a VJP
  with a cotangent on some outputs only and ``wrt=`` some inputs;
* float32: the Jacobian in single precision is float64's to round-off, with
  the same counts;
* central differences of the *oracle* (no adcli code involved) agree with the
  Jacobian, column by column, wherever the column is smooth at the point (the
  oracle's kink signature is the same at x and at the perturbed points; see
  progen.py) and well conditioned;
* prediction = count: predict(mode).counts() equals the counts of the run for
  both modes, with and without a chunk smaller than the number of passes, and
  for the single JVP and VJP.

Tolerances (every difference is a maximum over entries; scale = max(1, max |J|)
or max(1, max |value|)):

* values against the oracle: 1e-10 · scale (the same arithmetic in a different
  order: reductions, BLAS, stable softmax);
* one AD result against another, or against the oracle's dual numbers (modes,
  chunks, JVPs, VJPs, J·v, uᵀ·J): 1e-9 · scale;
* chunked against unchunked in the same mode: 1e-12 · scale (only the batching differs);
* central differences: steps h, h/2, h/4 with h = 1e-4 · max(1, |x_j|) and
  Richardson extrapolation (the h² error term cancels), so truncation (∝ h⁴)
  and rounding (∝ ε/h) are about 1e-11 on these programs; tolerance 1e-6 ·
  scale. A column is used only where it is smooth at the point and the two
  extrapolations (from h, h/2 and from h/2, h/4) agree to 1e-7 · scale: that
  is what "well conditioned" means here (a repeat of sin(h * 4) is not);
* float32 against float64: 1e-3 · scale (observed at most 1e-5 on 1,000 programs),
  checked only where every column is smooth (see above);
* counts: exact.

A disagreement fails the example, with a report of every pair that disagrees,
the matrices, and the program's source (save it as p.ad and run
``adcli grad p.ad --mode forward`` / ``--mode reverse`` to reproduce).

The two silent wrong derivatives of the issue ([x, x] @ c in forward mode; a VJP
with cotangents on two outputs that are the same node) are explicit examples.

Runs: the default suite checks DEFAULT_EXAMPLES programs (deterministic:
derandomize=True; about 20 s on two cores). Before a release (about 7 min):

    ADCLI_DIFF_EXAMPLES=10000 .venv/bin/pytest tests/test_differential.py -x -q

(ADCLI_DIFF_SEED=S draws a different deterministic sequence). Hypothesis stops
at the first failure and shrinks it; to count failures over many programs
without stopping, run ``.venv/bin/python tests/test_differential.py 10000`` (see main()).
"""
from __future__ import annotations

import os
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, seed, settings

import adcli
from adcli.ops import REGISTRY

sys.path.insert(0, str(Path(__file__).resolve().parent))
import progen  # noqa: E402
from progen import Decl, E, GenProgram, bin_, var  # noqa: E402

DEFAULT_EXAMPLES = 400
EXAMPLES = int(os.environ.get("ADCLI_DIFF_EXAMPLES") or DEFAULT_EXAMPLES)
SEED = os.environ.get("ADCLI_DIFF_SEED")

VALUE_RTOL = 1e-10
AD_RTOL = 1e-9
CHUNK_RTOL = 1e-12
FD_RTOL = 1e-6
FD_STEP = 1e-4
F32_RTOL = 1e-3
MODES = ("forward", "reverse")


# -- the oracle's Jacobian by central differences ---------------------------------------------------

def flat(values: dict, names) -> np.ndarray:
    return np.concatenate([np.asarray(values[n], dtype=np.float64).reshape(-1) for n in names])


def central_differences(gp: GenProgram):
    """Central differences of the oracle, Richardson-extrapolated, columns in input declaration
    order. D(h) = (f(x + h e_j) - f(x - h e_j)) / 2h at h, h/2 and h/4; R(h) = (4 D(h/2) - D(h)) / 3
    cancels the h² term of the error. Returns (columns, errors): column j is R(h/2), and its
    error is estimated by |R(h) - R(h/2)|. A column is None where it is not smooth at the
    point: the kink signature (see progen.py) differs at one of the perturbed points."""
    _, trace = gp.evaluate()
    names = gp.output_names
    columns, errors = [], []
    for d in gp.inputs:
        x = d.value.reshape(-1)
        for j in range(x.size):
            h = FD_STEP * max(1.0, abs(x[j]))
            diffs, smooth = [], True
            for step in (h, h / 2, h / 4):
                f = []
                for sign in (1, -1):
                    moved = x.copy()
                    moved[j] += sign * step
                    values, t = gp.evaluate({d.name: moved.reshape(d.shape)})
                    smooth = smooth and not t.problems and trace.signature_equal(t)
                    f.append(flat(values, names))
                diffs.append((f[0] - f[1]) / (2 * step))
            coarse, fine = (4 * diffs[1] - diffs[0]) / 3, (4 * diffs[2] - diffs[1]) / 3
            columns.append(fine if smooth else None)
            errors.append(float(np.max(np.abs(coarse - fine), initial=0.0)) if smooth else None)
    return columns, errors


# -- the checks --------------------------------------------------------------------------------------

class Report:
    """Collects disagreements; fails once, with everything a reader needs."""

    def __init__(self, gp, loops="never"):
        self.gp = gp
        self.loops = loops     # how the program was built (repeats kept as loops or unrolled)
        self.problems = []
        self.kinds = []        # what disagreed, without the numbers (main() groups failures by these)
        self.matrices = {}

    def compare(self, what, got, want, rtol, scale=None):
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            self.problems.append(f"{what}: shape {got.shape}, expected {want.shape}")
            self.kinds.append(what)
            return
        if got.size == 0:
            return
        if scale is None:
            scale = np.max(np.abs(want))
        tol = rtol * max(1.0, float(scale))
        diff = np.abs(got - want)
        worst = float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf")
        if not worst <= tol:
            self.problems.append(f"{what}: max |diff| {worst:.3g} > {tol:.3g}")
            self.kinds.append(what)

    def equal(self, what, got, want):
        if got != want:
            self.problems.append(f"{what}: {got} != {want}")
            self.kinds.append(what)

    def keep(self, name, matrix):
        self.matrices[name] = np.asarray(matrix)

    def finish(self):
        if not self.problems:
            return
        with np.printoptions(precision=6, suppress=True, linewidth=120):
            shown = "\n".join(f"  {name}:\n" + textwrap.indent(np.array2string(m), "    ")
                              for name, m in self.matrices.items())
        error = AssertionError(
            "adcli disagrees with itself or with the oracle on a generated program:\n  "
            + "\n  ".join(self.problems) + f"\nmatrices:\n{shown}\n"
            f"--- program (built with loops={self.loops!r}: adcli.loads(text, loops={self.loops!r}); "
            "save as p.ad; adcli grad p.ad --mode forward / --mode reverse) ---\n"
            + self.gp.source)
        error.kinds = self.kinds
        raise error


def check_program(gp: GenProgram, rng_seed: int = 0):
    """Every check of the module docstring on one program; raises AssertionError."""
    # half the programs keep their repeats as loops (those that can be: no index, shapes
    # kept), half unroll them all; which half is fixed by the text, so a failure reproduces
    loops = "always" if zlib.crc32(gp.source.encode()) % 2 else "never"
    report = Report(gp, loops)
    rng = np.random.default_rng(rng_seed)
    try:
        program = adcli.loads(gp.source, "generated.ad", loops=loops)
        program.check_plans = True   # every compiled run also checked against the interpreter
    except Exception as exc:   # the generator only writes valid programs
        raise AssertionError(f"adcli refused a generated program: {exc}\n--- program ---\n{gp.source}") from exc

    # -- declarations, inputs, values
    in_names, out_names = [d.name for d in gp.inputs], gp.output_names
    report.equal("input names", program.input_names, in_names)
    report.equal("output names", program.output_names, out_names)
    oracle_values, trace = gp.evaluate()
    assert not trace.problems, f"progen left the safe region: {trace.problems}\n{gp.source}"
    for d in gp.inputs:
        report.equal(f"shape of input {d.name}", tuple(program.input_shape(d.name)), d.shape)
    for name in out_names:
        report.equal(f"shape of output {name}", tuple(program.output_shape(name)),
                     np.shape(oracle_values[name]))
    report.finish()
    resolved = program.resolve_inputs()
    for d in gp.inputs:
        report.compare(f"value of input {d.name}", resolved[d.name], d.value, 1e-15)
    f_oracle = flat(oracle_values, out_names)
    value_scale = np.max(np.abs(f_oracle))
    report.compare("Program.evaluate() vs the oracle", flat(program.evaluate(), out_names), f_oracle,
                   VALUE_RTOL, value_scale)

    # -- the two modes, whole and chunked, with prediction = count
    results = {mode: program.jacobian(mode=mode, measure_memory=False) for mode in MODES}
    for mode, r in results.items():
        report.compare(f"{mode} value vs the oracle", flat(r.value, out_names), f_oracle, VALUE_RTOL, value_scale)
        report.equal(f"{mode}: predict().counts() vs the run", program.predict(mode).counts(), r.cost.counts())
    j = results["reverse"].jacobian
    m, n = j.shape
    scale = np.max(np.abs(j)) if j.size else 1.0
    oracle_j = gp.jacobian()
    report.keep("oracle (dual numbers)", oracle_j)
    report.keep("reverse", j)
    report.keep("forward", results["forward"].jacobian)
    report.compare("forward vs reverse Jacobian", results["forward"].jacobian, j, AD_RTOL, scale)
    report.compare("reverse Jacobian vs the oracle's", j, oracle_j, AD_RTOL, scale)
    report.compare("forward Jacobian vs the oracle's", results["forward"].jacobian, oracle_j, AD_RTOL, scale)
    for mode, r in results.items():
        passes = n if mode == "forward" else m
        if passes > 1:
            chunk = int(rng.integers(1, passes))
            chunked = program.jacobian(mode=mode, chunk=chunk, measure_memory=False)
            report.compare(f"{mode} chunk={chunk} vs {mode}", chunked.jacobian, r.jacobian, CHUNK_RTOL, scale)
            report.equal(f"{mode} chunk={chunk}: predict().counts() vs the run",
                         program.predict(mode, chunk=chunk).counts(), chunked.cost.counts())

    # -- a JVP per unit direction (columns) and a VJP per unit cotangent (rows)
    columns = []
    for d in gp.inputs:
        for k in range(d.value.size):
            e = np.zeros(d.value.size)
            e[k] = 1.0
            direction = {d.name: e.reshape(d.shape)}
            if k % 2:   # the other inputs named with a zero direction, or left out: the same
                direction.update({o.name: np.zeros(o.shape) for o in gp.inputs if o.name != d.name})
            columns.append(flat(program.jvp(direction, measure_memory=False).tangent, out_names))
    jvps = np.stack(columns, axis=1)
    report.keep("unit JVPs (columns)", jvps)
    report.compare("unit JVPs vs the reverse Jacobian", jvps, j, AD_RTOL, scale)
    rows = []
    for name in out_names:
        size = int(np.size(oracle_values[name]))
        for k in range(size):
            e = np.zeros(size)
            e[k] = 1.0
            rows.append(flat(program.vjp({name: e.reshape(np.shape(oracle_values[name]))},
                                         measure_memory=False).cotangent, in_names))
    vjps = np.stack(rows, axis=0)
    report.keep("unit VJPs (rows)", vjps)
    report.compare("unit VJPs vs the forward Jacobian", vjps, results["forward"].jacobian, AD_RTOL, scale)
    report.compare("unit VJPs vs the reverse Jacobian", vjps, j, AD_RTOL, scale)

    # -- a random direction and random cotangents, on all outputs at once; prediction = count
    v = {d.name: rng.standard_normal(d.shape) for d in gp.inputs}
    jv = program.jvp(v, measure_memory=False)
    report.compare("JVP of a random direction vs J·v", flat(jv.tangent, out_names), j @ flat(v, in_names),
                   AD_RTOL, scale * np.abs(flat(v, in_names)).sum())
    report.equal("JVP: predict(single=True).counts() vs the run",
                 program.predict("forward", wrt=in_names, single=True).counts(), jv.cost.counts())
    u = {name: rng.standard_normal(np.shape(oracle_values[name])) for name in out_names}
    uj = program.vjp(u, measure_memory=False)
    report.compare("VJP of a random cotangent on every output vs uᵀ·J", flat(uj.cotangent, in_names),
                   flat(u, out_names) @ j, AD_RTOL, scale * np.abs(flat(u, out_names)).sum())
    report.equal("VJP: predict(single=True).counts() vs the run",
                 program.predict("reverse", outputs=out_names, single=True).counts(), uj.cost.counts())
    offsets = np.cumsum([0] + [int(np.size(oracle_values[name])) for name in out_names])
    pairs = [(a, a + 1) for a in range(len(out_names) - 1)]
    if len(out_names) > 2:
        pairs.append((len(out_names) - 1, 0))
    for a, b in pairs:   # unit cotangents on two outputs at once: the sum of two rows
        cot = {}
        for name in (out_names[a], out_names[b]):
            e = np.zeros(np.shape(oracle_values[name]))
            e.reshape(-1)[0] = 1.0
            cot[name] = e
        got = flat(program.vjp(cot, measure_memory=False).cotangent, in_names)
        report.compare(f"VJP with unit cotangents on {out_names[a]} and {out_names[b]} at once",
                       got, j[offsets[a]] + j[offsets[b]], AD_RTOL, scale)

    # -- central differences of the oracle
    fd_columns, fd_errors = central_differences(gp)
    # the columns that are smooth at the point and resolved by the steps (a column whose
    # two extrapolations differ by more than a tenth of the tolerance is ill-conditioned there)
    smooth = [i for i, col in enumerate(fd_columns)
              if col is not None and fd_errors[i] <= 0.1 * FD_RTOL * max(1.0, scale)]
    if smooth:
        fd = np.stack([fd_columns[i] for i in smooth], axis=1)
        report.keep(f"central differences (columns {smooth} of {n})", fd)
        report.compare("reverse Jacobian vs central differences", j[:, smooth], fd, FD_RTOL, scale)
        report.compare("forward Jacobian vs central differences", results["forward"].jacobian[:, smooth], fd,
                       FD_RTOL, scale)
        report.compare("unit JVPs vs central differences", jvps[:, smooth], fd, FD_RTOL, scale)
        report.compare("unit VJPs vs central differences", vjps[:, smooth], fd, FD_RTOL, scale)

    # -- a subset of the inputs at a second point (wrt=, at=)
    at = {d.name: d.value + 0.01 * rng.standard_normal(d.shape) for d in gp.inputs}
    values2, trace2 = gp.evaluate(at)
    if not trace2.problems:
        report.compare("evaluate(at=) vs the oracle", flat(program.evaluate(at=at), out_names),
                       flat(values2, out_names), VALUE_RTOL, np.max(np.abs(flat(values2, out_names))))
        wrt = [name for name in in_names if rng.random() < 0.6] or in_names[-1:]
        both = {mode: program.jacobian(mode=mode, wrt=wrt, at=at, measure_memory=False) for mode in MODES}
        whole = program.jacobian(mode="reverse", at=at, measure_memory=False).jacobian
        sizes = {d.name: d.value.size for d in gp.inputs}
        starts = dict(zip(in_names, np.cumsum([0] + [sizes[nm] for nm in in_names])))
        picked = np.concatenate([np.arange(starts[nm], starts[nm] + sizes[nm]) for nm in wrt])
        scale2 = np.max(np.abs(whole)) if whole.size else 1.0
        report.compare("reverse Jacobian at a second point vs the oracle's", whole, gp.jacobian(at), AD_RTOL,
                       scale2)
        for mode, r in both.items():
            report.compare(f"{mode} wrt={wrt} at a second point vs reverse columns", r.jacobian,
                           whole[:, picked], AD_RTOL, scale2)
            report.equal(f"{mode} wrt={wrt}: predict().counts() vs the run",
                         program.predict(mode, wrt=wrt).counts(), r.cost.counts())
            passes = len(picked) if mode == "forward" else m
            if passes > 1:
                chunk = int(rng.integers(1, passes))
                chunked = program.jacobian(mode=mode, wrt=wrt, at=at, chunk=chunk, measure_memory=False)
                report.compare(f"{mode} wrt={wrt} chunk={chunk} at a second point vs reverse columns",
                               chunked.jacobian, whole[:, picked], AD_RTOL, scale2)
                report.equal(f"{mode} wrt={wrt} chunk={chunk}: predict().counts() vs the run",
                             program.predict(mode, wrt=wrt, chunk=chunk).counts(), chunked.cost.counts())
        # one JVP on the wrt inputs only (the others get no tangent), one VJP restricted to them
        v2 = {name: rng.standard_normal(program.input_shape(name)) for name in wrt}
        jv2 = program.jvp(v2, at=at, measure_memory=False)
        report.compare(f"JVP of a direction on {wrt} only at a second point vs J·v", flat(jv2.tangent, out_names),
                       whole[:, picked] @ flat(v2, wrt), AD_RTOL, scale2 * np.abs(flat(v2, wrt)).sum())
        report.equal(f"JVP on {wrt}: predict(single=True).counts() vs the run",
                     program.predict("forward", wrt=wrt, single=True).counts(), jv2.cost.counts())
        given = [name for name in out_names if rng.random() < 0.6] or out_names[:1]
        u2 = {name: rng.standard_normal(program.output_shape(name)) for name in given}
        uj2 = program.vjp(u2, at=at, wrt=wrt, measure_memory=False)
        rows2 = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i, name in enumerate(out_names)
                                if name in given])
        report.compare(f"VJP of a cotangent on {given} wrt={wrt} at a second point vs uᵀ·J",
                       flat(uj2.cotangent, wrt), flat(u2, given) @ whole[np.ix_(rows2, picked)], AD_RTOL,
                       scale2 * np.abs(flat(u2, given)).sum())
        report.equal(f"VJP on {given} wrt={wrt}: predict(single=True).counts() vs the run",
                     program.predict("reverse", wrt=wrt, outputs=given, single=True).counts(), uj2.cost.counts())

    # -- single precision: the same Jacobian to float32 round-off, the same counts. Only where
    # every column is smooth (a kink closer than float32's round-off could flip a branch).
    if smooth and len(smooth) == n:
        for mode, r in results.items():
            single = program.jacobian(mode=mode, dtype="float32", measure_memory=False)
            report.compare(f"{mode} float32 vs float64", single.jacobian, r.jacobian, F32_RTOL, scale)
            report.equal(f"{mode} float32: counts vs float64", single.cost.counts(), r.cost.counts())
    report.finish()


# -- the known bugs of the issue, as explicit examples ----------------------------------------------

def _gather_matmul_example():
    """input x = 2; const c: vec[2] = [1, 10]; output y = [x, x] @ c: dy/dx = 11."""
    return GenProgram(consts=[Decl("c", (2,), [1, 10], "vec[2]")], inputs=[Decl("x", (), 2.0)],
                      stmts=[("output", "y", bin_("@", E("list", [var("x"), var("x")]), var("c")))])


def _aliased_outputs_example():
    """y = x*x; output a = y; output b = y: a cotangent on both gives 2·2x = 12 at x = 3."""
    return GenProgram(inputs=[Decl("x", (), 3.0)],
                      stmts=[("assign", "y", bin_("*", var("x"), var("x"))),
                             ("output", "a", var("y")), ("output", "b", var("y"))])


def _settings(examples):
    return settings(max_examples=examples, deadline=None, derandomize=SEED is None, database=None,
                    print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


def _seeded(test):
    return seed(int(SEED))(test) if SEED is not None else test


@_seeded
@_settings(EXAMPLES)
@example(gp=_gather_matmul_example())
@example(gp=_aliased_outputs_example())
@given(gp=progen.programs())
def test_random_programs(gp):
    check_program(gp)


# -- the generator itself -----------------------------------------------------------------------------

REQUIRED_FEATURES = {
    "input:0d", "input:1d", "input:2d", "gather-repeated", "concat-repeated", "concat", "concat-mat",
    "stack-vectors", "slice", "slice-mat", "index:1d-element", "index:2d-element", "index:row",
    "index:column", "index:row-only", "reshape:vec->mat", "reshape:mat->vec", "transpose", "transpose-vec",
    "outer", "dot", "matmul:11", "matmul:12", "matmul:21", "matmul:22", "broadcast-row", "broadcast-both",
    "same-operand",
    "def-expr", "def-block", "defcall-again", "defcall-same-args", "repeat", "repeat-nested",
    "repeat-in-def", "repeat-dim-count", "repeat-index", "repeat-index-slice", "repeat-index-value",
    "slice-step", "tuple-return",
    # integer data: gathers (repeated indices add), take_along_axis, scatter_add, empty slices
    "gather-index", "gather-index-repeated", "gather-index-mat", "gather-paired", "gather-rows-cols",
    "take_along_axis", "take_along_axis:0", "take_along_axis:1", "scatter_add", "scatter_add-repeated",
    "scatter_add:rows", "empty-slice", "empty-slice-mat",
    "repeat-index-nested", "rebind", "rebind-input", "dim-as-value", "several-outputs", "output-alias",
    "output-input", "output-bare", "pow:int", "pow:signed", "pow:real", "pow:var", "pow:base",
    "softmax", "norm", "maximum", "minimum", "neg",
    # norm with ord and axis: vector norms (2, 1, max/min |x|, a p-norm), matrix norms (Frobenius,
    # max/min of column or row sums), axes written as a tuple
    "norm:vector:2", "norm:vector:1", "norm:vector:extreme", "norm:vector:p", "norm:matrix:2",
    "norm:matrix:extreme", "axis-tuple",
    "fn:sign", "fn:heaviside", "logic:and", "logic:or", "not", "where", "clip",
    "arctan2", "hypot", "constant:pi", "constant:e", "constant-data", "log_softmax", "multigammaln",
    "multigammaln:dim", "keepdims:all", "keepdims:axis",
    # linear algebra (the ops themselves are in the registry check)
    "eye", "diag:vec", "diag:mat", "solve:mat", "triangular_solve:upper", "tril:k", "triu:k",
    # einsum: a chain (its own contraction order), a trace, a diagonal, an implicit output, a
    # lone letter summed first, a scalar operand, one operand twice
    "einsum:chain", "einsum:chain4", "einsum:trace", "einsum:diag", "einsum:diag-product", "einsum:implicit",
    "einsum:lone", "einsum:scalar", "einsum:outer", "einsum-same-operand",
    # tensors of rank 3: inputs, @ on stacks (batch axes broadcast), transpose with axes and .T,
    # expand_dims and squeeze, stacks of matrices, indexing (by the loop index too), reductions
    # over several axes
    "input:3d", "matmul:33", "matmul:32", "matmul:23", "matmul:31", "matmul:13", "transpose-3d",
    "transpose-axes", "expand_dims", "squeeze", "stack-matrices", "index:tensor-1", "index:tensor-2",
    "index:tensor-3", "repeat-index-tensor", "tensor-reduce:sum:axes", "tensor-reduce:max:axes",
    "tensor-reduce:prod:axes", "tensor-reduce:softmax:axes", "tensor-reduce:log_softmax:axes",
} | {f"fn:{name}" for name in progen.SPECIAL} | {f"cmp:{sym}" for sym in progen.COMPARE} | {f"fn:{name}" for name in progen.UNARY} | {f"reduce:{name}" for name in progen.REDUCTIONS[:-1]} | {
    f"reduce:{name}:axis" for name in progen.REDUCTIONS[:-1]}


def test_generator_covers_every_op_and_feature():
    """Over a few hundred programs the generator uses every op of the registry (as adcli
    builds them) and every feature the differential test is meant to exercise; and the
    oracle agrees with adcli's values on all of them (a cheap check of the oracle). Built
    with loops="always" (as check_program builds half of them), some repeats that read
    their index stay loops: moving positions (X[i], Ws[i * w:(i + 1) * w, :]) and the
    index as a number."""
    ops, features = set(), set()
    indexed_loops = set()
    for s in range(300):
        gp = progen.generate(progen.RandomChooser(s))
        program = adcli.loads(gp.source)
        ops.update(node.op for node in program.graph.nodes)
        features |= gp.features
        if " as i" in gp.source:
            for loop in adcli.loads(gp.source, loops="always").graph.nodes:
                body = loop.attrs["body"].nodes if loop.op == "loop" else []
                indexed_loops |= {"positions" for node in body if node.key_steps} | {
                    "number" for node in body if node.op == "input" and "index" in node.attrs}
        values, trace = gp.evaluate()
        assert not trace.problems, gp.source
        got = flat(program.evaluate(), gp.output_names)
        want = flat(values, gp.output_names)
        np.testing.assert_allclose(got, want, rtol=VALUE_RTOL, atol=VALUE_RTOL * max(1.0, np.max(np.abs(want))),
                                   err_msg=gp.source)
    assert set(REGISTRY) - ops == set(), f"ops never generated: {sorted(set(REGISTRY) - ops)}"
    assert REQUIRED_FEATURES - features == set(), f"features never generated: {sorted(REQUIRED_FEATURES - features)}"
    assert indexed_loops == {"positions", "number"}, indexed_loops


# -- many programs without stopping at the first failure ---------------------------------------------

def main(argv):
    """python tests/test_differential.py [N [FIRST_SEED [OUT_DIR]]]: check N programs from
    random.Random(FIRST_SEED + i), keep going after failures, print a summary of which checks
    failed how often, and write each failing program to OUT_DIR (default diff-failures/)."""
    import collections
    import re
    import time
    import traceback

    count = int(argv[1]) if len(argv) > 1 else 1000
    first = int(argv[2]) if len(argv) > 2 else 0
    out = Path(argv[3] if len(argv) > 3 else "diff-failures")
    failures = collections.Counter()
    failed = 0
    start = time.perf_counter()
    for i in range(first, first + count):
        try:
            gp = progen.generate(progen.RandomChooser(i))
            check_program(gp, rng_seed=i)
        except Exception as exc:   # noqa: BLE001 -- count everything, stop at nothing
            failed += 1
            text = str(exc) if isinstance(exc, AssertionError) else traceback.format_exc()
            kinds = {re.sub(r"\[.*?\]", "S", re.sub(r"chunk=\d+", "chunk=c",
                            re.sub(r" on \w+ and \w+ at once", " on two outputs at once", k)))
                     for k in getattr(exc, "kinds", [])}
            key = " | ".join(sorted(kinds)) or f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            failures[key] += 1
            out.mkdir(exist_ok=True)
            (out / f"seed{i}.txt").write_text(text)
        if (i - first + 1) % 500 == 0:
            print(f"{i - first + 1} programs, {failed} failed, {time.perf_counter() - start:.0f} s", flush=True)
    print(f"checked {count} programs (seeds {first}..{first + count - 1}), {failed} failed, "
          f"{time.perf_counter() - start:.0f} s")
    for key, n in failures.most_common():
        print(f"{n:6d}  {key}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
