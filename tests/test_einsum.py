"""einsum: its values against NumPy's, the contraction order it chooses (the matrix-chain
reference numbers of ../shared/docs/background.md), its counts worked by hand in both modes,
its errors (one sentence, a caret inside the subscripts), and what show, compare and codegen
print about it. Derivatives against finite differences are the einsum cases of test_ops."""
import json
import re
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli import einsum as contraction
from adcli.cli import cli

from conftest import jacobians

ROOT = Path(__file__).resolve().parent.parent
CHAIN = ROOT / "samples" / "matrix_chain.ad"
CLRS_DIMS = (30, 35, 15, 5, 10, 20, 25)


def chain_plan(dims, **options):
    letters = "abcdefghijklmnop"
    terms = tuple(letters[i] + letters[i + 1] for i in range(len(dims) - 1))
    sizes = {letters[i]: d for i, d in enumerate(dims)}
    return contraction.plan(terms, letters[0] + letters[len(dims) - 1], sizes, **options)


def matrix_chain_order(dims) -> int:
    """The textbook recurrence (CLRS 15.2), written out independently of adcli.einsum."""
    n = len(dims) - 1
    cost = [[0] * n for _ in range(n)]
    for length in range(2, n + 1):
        for i in range(n - length + 1):
            j = i + length - 1
            cost[i][j] = min(cost[i][k] + cost[k + 1][j] + dims[i] * dims[k + 1] * dims[j + 1]
                             for k in range(i, j))
    return cost[0][n - 1]


# -- the contraction order ------------------------------------------------------------------------------

def test_matrix_chain_reference_numbers():
    best = chain_plan(CLRS_DIMS)
    assert best.mults == 15_125
    assert contraction.tree_text(best, ["A1", "A2", "A3", "A4", "A5", "A6"]) == "((A1 (A2 A3)) ((A4 A5) A6))"
    naive = chain_plan(CLRS_DIMS, left_to_right=True)
    # 30·35·15 + 30·15·5 + 30·5·10 + 30·10·20 + 30·20·25
    assert naive.mults == 15_750 + 2_250 + 1_500 + 6_000 + 15_000 == 40_500


@pytest.mark.parametrize("dims", [(10, 100, 5, 50), (5, 10, 3, 12, 5, 50, 6), (2, 3, 4, 5, 6), (7, 1, 7, 1, 7),
                                  (40, 20, 30, 10, 30), (1, 2, 3)])
def test_chain_order_is_the_textbook_optimum(dims):
    assert chain_plan(dims).mults == matrix_chain_order(dims)


def test_dynamic_programming_beats_or_ties_every_left_deep_order():
    """Over every order that adds one operand at a time (any permutation), the plan is never worse."""
    terms, output = ("ij", "jk", "kl", "l"), "i"
    sizes = {"i": 9, "j": 2, "k": 7, "l": 3}
    best = contraction.plan(terms, output, sizes).mults
    for order in permutations(range(4)):
        letters = [terms[i] for i in order]
        mults, held = 0, letters[0]
        for nxt in letters[1:]:
            rest = set(output).union(*(t for t in terms if t not in letters[:letters.index(nxt) + 1]))
            kept = "".join(ch for ch in dict.fromkeys(held + nxt) if ch in rest)
            mults += contraction.step_cost(held, nxt, kept, sizes)[0]
            held = kept
        assert best <= mults


def test_the_sample_counts_the_chosen_order():
    program = adcli.load(CHAIN)
    fwd, rev = jacobians(program)
    # the einsum's 15,125 and nothing else: sum(P) adds, it does not multiply
    assert fwd.cost.mults_primal == rev.cost.mults_primal == 15_125
    entry, = contraction.report(program.graph)
    assert (entry["mults"], entry["left_to_right_mults"]) == (15_125, 40_500)
    assert entry["order"] == "((A1 (A2 A3)) ((A4 A5) A6))"
    assert entry["left_to_right_order"] == "(((((A1 A2) A3) A4) A5) A6)"
    assert sum(step["mults"] for step in entry["steps"]) == 15_125


# -- values ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("subscripts, shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("ij,jk", [(2, 3), (3, 4)]), ("ii->", [(3, 3)]), ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]), ("ij->", [(2, 3)]), ("ij->ji", [(2, 3)]), ("ba", [(2, 3)]), ("i,j->ij", [(2,), (3,)]),
    ("ij,ij->ij", [(2, 3), (2, 3)]), ("ij,ij", [(2, 3), (2, 3)]), ("i,i", [(4,), (4,)]),
    (",ij->j", [(), (2, 3)]), ("ij,k->ik", [(2, 3), (4,)]), ("ii,ij,jk,k->i", [(3, 3), (3, 2), (2, 4), (4,)]),
    ("Ab,bC->CA", [(2, 3), (3, 4)]), ("i j , j k -> k i", [(2, 3), (3, 4)]), ("ij,jk,kl,lm,m", [(2, 3), (3, 4), (4, 2), (2, 5), (5,)]),
])
def test_values_equal_numpy(subscripts, shapes):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s) for s in shapes]
    names = [f"x{i}" for i in range(len(shapes))]
    decls = "\n".join(f"input {n}: {_type(s)} = 0" if s else f"input {n} = 0" for n, s in zip(names, shapes))
    program = adcli.loads(f'{decls}\noutput y = einsum("{subscripts}", {", ".join(names)})')
    got = program.evaluate(dict(zip(names, arrays)))["y"]
    np.testing.assert_allclose(got, np.einsum(subscripts.replace(" ", ""), *arrays), rtol=1e-12, atol=1e-12)


def _type(shape):
    return f"vec[{shape[0]}]" if len(shape) == 1 else f"mat[{shape[0]}, {shape[1]}]"


# -- counts, by hand ---------------------------------------------------------------------------------------

def test_a_product_counts_as_matmul_in_both_modes():
    head = "input A: mat[3, 4] = randn(seed=1)\ninput B: mat[4, 5] = randn(seed=2)\ninput x: vec[5] = randn(seed=3)\n"
    for matmul, einsum in (("A @ B", 'einsum("ij,jk->ik", A, B)'), ("B @ x", 'einsum("jk,k", B, x)'),
                           ("x @ x", 'einsum("k,k->", x, x)')):
        for mode in ("forward", "reverse"):
            for chunk in (None, 1):
                a = adcli.loads(head + f"output y = {matmul}").jacobian(mode=mode, chunk=chunk, measure_memory=False)
                b = adcli.loads(head + f"output y = {einsum}").jacobian(mode=mode, chunk=chunk, measure_memory=False)
                for figure in ("mults", "flops", "cached_values", "cached_inputs"):
                    assert a.cost.counts()[figure] == b.cost.counts()[figure], (matmul, mode, chunk, figure)
                np.testing.assert_allclose(a.jacobian, b.jacobian, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("i, j, k, l", [(2, 3, 4, 5), (3, 1, 6, 2), (4, 4, 4, 4)])
def test_derivative_order_is_planned_for_the_directions(i, j, k, l):
    """P = A·B·C with B the input. With all j·k directions at once (an identity Seed), the
    cheapest JVP contracts A and C first (their outer product, i·j·k·l mults: one per entry
    of the Jacobian A ⊗ Cᵀ), then applies the Seed for nothing; reverse mode likewise with
    the i·l output directions. With one direction per sweep, the Seed is applied to A or to
    C first (free), then the other: min(i·k·l, i·j·l) per sweep, j·k sweeps."""
    program = adcli.loads(f"""
const A: mat[{i}, {j}] = randn(seed=1)
input B: mat[{j}, {k}] = randn(seed=2)
const C: mat[{k}, {l}] = randn(seed=3)
output P = einsum("ij,jk,kl->il", A, B, C)
""")
    fwd, rev = jacobians(program)
    assert fwd.cost.mults_derivative == rev.cost.mults_derivative == i * j * k * l
    one = program.jacobian(mode="forward", chunk=1, measure_memory=False)
    assert one.cost.mults_derivative == j * k * min(i * k * l, i * j * l)
    for mode in ("forward", "reverse"):
        for chunk in (None, 1, 2):
            predicted = program.predict(mode, chunk=chunk).counts()
            assert predicted == program.jacobian(mode=mode, chunk=chunk, measure_memory=False).cost.counts()
    A = np.random.default_rng(1).standard_normal((i, j))
    C = np.random.default_rng(3).standard_normal((k, l))
    # dP[a, d] / dB[b, c] = A[a, b] · C[c, d]: rows P's elements, columns B's, row-major
    expected = np.einsum("ab,cd->adbc", A, C).reshape(i * l, j * k)
    np.testing.assert_allclose(fwd.jacobian, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rev.jacobian, expected, rtol=1e-12, atol=1e-12)


def test_trace_and_sum_count_as_sums():
    """"ii->" sums the diagonal, d flops (as trace); "ij->" all r·c elements; a diagonal moves."""
    for text, flops in (('einsum("ii->", S)', 3), ('einsum("ij->", A)', 6), ('einsum("ii->i", S)', 0),
                        ('einsum("ij->ji", A)', 0)):
        program = adcli.loads(f"input S: mat[3, 3] = randn(seed=1)\ninput A: mat[2, 3] = randn(seed=2)\n"
                              f"output y = {text}")
        fwd, rev = jacobians(program)
        assert (fwd.cost.mults_primal, fwd.cost.flops_primal) == (0, flops)
        assert fwd.cost.mults_derivative == rev.cost.mults_derivative == 0


# -- errors --------------------------------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("call, pattern, caret", [
    # the caret under the place in the subscripts, or under the call or operand at fault
    ('einsum("ij,jk->ik", A)', r"name 2 operands, but einsum is given 1", "einsum"),
    ('einsum("ij.,jk", A, B)', r"ellipsis \('\.\.\.'\) is not supported", "."),
    ('einsum("ij,jk->iz", A, B)', r"output letter 'z' names no axis of any operand", "z"),
    ('einsum("ij,jk->ii", A, B)', r"output letter 'i' is repeated", "i\""),
    ('einsum("i,jk->ik", A, B)', r"operand 1 is mat\[2, 3\], of 2 axes, but its subscripts 'i' name 1", "i,"),
    ('einsum("ij,jk#", A, B)', r"'#' cannot appear in einsum subscripts", "#"),
    ('einsum("ij,ik->jk", A, B)', r"letter 'i' names axes of different sizes, 2 and 3, in operand 1 \(mat\[2, 3\]\) "
                                  r"and operand 2 \(mat\[3, 4\]\).*does not broadcast", "B)"),
    ('einsum(A, B)', r"subscripts first, in quotes", "A,"),
    ('einsum("ij")', r"at least one operand", "einsum"),
    ('einsum("ij", A, axis=1)', r"no argument 'axis'", "einsum"),
])
def test_errors_point_into_the_subscripts(tmp_path, call, pattern, caret):
    path = tmp_path / "e.ad"
    source = f"output y = {call}"
    column = source.index(caret) + 1
    path.write_text(f"input A: mat[2, 3] = ones\ninput B: mat[3, 4] = ones\n{source}\n")
    result = run("grad", path)
    assert result.exit_code == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.rstrip("\n").split("\n")
    message = lines[0].split("error: ", 1)[1]
    assert re.search(pattern, message), message
    assert lines[0].startswith(f"{path}:3:{column}: error: "), lines[0]
    assert lines[1] == "  " + source and lines[2] == "  " + " " * (column - 1) + "^"
    error = json.loads(run("grad", path, "--json").stderr)["error"]
    assert (error["line"], error["column"]) == (3, column) and "\n" not in error["message"]


def test_too_many_operands_is_one_sentence(tmp_path):
    path = tmp_path / "e.ad"
    n = contraction.MAX_OPERANDS + 1
    path.write_text(f"input x: vec[2] = ones\noutput y = einsum(\"{','.join(['i'] * n)}->i\", {', '.join(['x'] * n)})\n")
    result = run("grad", path)
    assert result.exit_code == 1 and f"at most {contraction.MAX_OPERANDS} operands" in result.stderr


# -- show, compare, codegen -------------------------------------------------------------------------------

def test_show_prints_the_chosen_order_and_the_left_to_right_one():
    result = run("show", CHAIN)
    assert result.exit_code == 0, result.stderr
    assert "chosen:        ((A1 (A2 A3)) ((A4 A5) A6)): 15,125 mults" in result.stdout
    assert "left to right: (((((A1 A2) A3) A4) A5) A6): 40,500 mults" in result.stdout
    data = json.loads(run("show", CHAIN, "--json").stdout)
    assert data["contractions"][0]["mults"] == 15_125


def test_compare_shows_the_orders_and_reports_them_in_json():
    result = run("compare", CHAIN, "--repeat", "1")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert 'einsum("ij,jk,kl,lm,mn,no->io") at matrix_chain.ad:19' in text
    assert re.search(r"chosen\s+\(\(A1 \(A2 A3\)\) \(\(A4 A5\) A6\)\)\s+15,125", text)
    assert re.search(r"left to right\s+\(\(\(\(\(A1 A2\) A3\) A4\) A5\) A6\)\s+40,500", text)
    data = json.loads(run("compare", CHAIN, "--repeat", "1", "--json").stdout)
    entry, = data["contractions"]
    assert (entry["mults"], entry["left_to_right_mults"], entry["line"]) == (15_125, 40_500, 19)
    assert entry["operands"] == ["A1", "A2", "A3", "A4", "A5", "A6"]
    plain = json.loads(run("compare", ROOT / "samples" / "chain.ad", "--repeat", "1", "--json").stdout)
    assert plain["contractions"] == []


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_codegen_writes_readable_einsums_that_run(tmp_path, mode):
    from adcli.codegen import derivative_program, module_source

    program = adcli.load(CHAIN)
    source = module_source(derivative_program(program, mode), "matrix_chain.ad")
    # the primal's first product, as the plan chose it, in a line of its own
    assert "xp_einsum('jk,kl->jl', A2, A3)" in source
    assert "import adcli" not in source
    namespace = {"__name__": "chain_derivative"}
    exec(compile(source, str(tmp_path / "chain_derivative.py"), "exec"), namespace)
    value, gradient = namespace["gradient"]()
    result = program.jacobian(mode=mode, measure_memory=False)
    assert float(value) == pytest.approx(float(result.value["total"]), rel=1e-12)
    for name in ("A3", "A4"):
        np.testing.assert_allclose(gradient[name], result.blocks["total"][name], rtol=1e-12, atol=1e-12)


def test_the_sample_value_is_the_product_numpy_makes():
    """samples/matrix_chain.ad against its matrices drawn as the file says, multiplied by NumPy."""
    dims = CLRS_DIMS
    mats = [np.random.default_rng(s + 1).standard_normal((dims[s], dims[s + 1])) / np.sqrt(dims[s + 1])
            for s in range(6)]
    product = mats[0]
    for m in mats[1:]:
        product = product @ m
    value = adcli.load(CHAIN).evaluate()["total"]
    assert float(value) == pytest.approx(float(product.sum()), rel=1e-12)
