"""Derivatives inside the language: grad, jacobian, hessian, jvp and vjp of a def (adcli/derive.py).

Every op case of test_ops (whose Jacobians are checked there against central differences)
is wrapped in a def and differentiated inside the language with respect to each input: the
in-language vjp and jvp must equal uᵀJ and J v from the engine's own Jacobian, and the
program's outer derivatives of them (second derivatives through the derivative nodes) must
agree in both modes and with central differences. Then closed forms (Rosenbrock's Hessian,
a Newton step, higher derivatives), counts checked by hand, and the refusals.
"""
import math

import numpy as np
import pytest

import adcli
from adcli.errors import AdError

from conftest import fd_jacobian, jacobians
from test_ops import CASES

# the intervals test_ops draws each domain from (Hypothesis strategies there)
DOMAINS = {"any": [(-2, 2)], "pos": [(0.3, 3)], "away0": [(0.2, 2), (-2, -0.2)], "small": [(-1.2, 1.2)],
           "log1p": [(-0.5, 3)], "unit": [(-0.9, 0.9)], "acosh": [(1.1, 3)], "gamma": [(0.2, 4)],
           "gamma-": [(-2.8, -2.2), (-1.8, -1.2), (-0.8, -0.2)], "mgamma": [(1.2, 4)]}
# ops whose derivative rule needs an array function no node computes (adcli.derive refuses them)
NOT_EXPRESSIBLE = {"prod": "cumulative products", "digamma": "the Hurwitz zeta function"}


def draw(case, program, rng):
    """A point inside the case's domains (and its `ok` predicate), as test_ops draws one."""
    for _ in range(200):
        at = {}
        for name in program.input_names:
            intervals = DOMAINS[case.domains.get(name, "any")]
            shape = program.input_shape(name)
            pick = rng.integers(len(intervals), size=shape)
            lo = np.choose(pick, [a for a, _ in intervals])
            hi = np.choose(pick, [b for _, b in intervals])
            at[name] = lo + (hi - lo) * rng.random(shape)
        if case.ok is None or case.ok(at):
            return at
    raise AssertionError("no point found")


def literal(value) -> str:
    return np.array2string(np.asarray(value, dtype=float), separator=", ", precision=17,
                           floatmode="unique", threshold=10**6).replace("\n", "")


def wrapped(case, program, rng):
    """The case's expression as a def of each input (that input first), with the in-language
    vjp (cotangent u) and jvp (direction v) of each as outputs, and the u and v used."""
    lines = case.text.splitlines()
    expr = lines[-1].split("=", 1)[1].strip()
    head = [line for line in lines[:-1]]
    names = program.input_names
    out_shape = program.output_shape("y")
    seeds = {}
    for k, name in enumerate(names):
        others = [n for n in names if n != name]
        params = ", ".join([name] + others)
        rest = "".join(f", {n}" for n in others)
        u = rng.standard_normal(out_shape)
        v = rng.standard_normal(program.input_shape(name))
        seeds[name] = (u, v)
        head.append(f"def f{k}({params}) = {expr}")
        head.append(f"output vjp{k} = vjp(f{k}, {name}, {literal(u)}{rest})")
        head.append(f"output jvp{k} = jvp(f{k}, {name}, {literal(v)}{rest})")
    return "\n".join(head), seeds


def close(a, b, tol):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max(initial=0)))


@pytest.mark.parametrize("index", range(len(CASES)), ids=lambda i: CASES[i].id)
def test_every_op_case_inside_the_language(index):
    case = CASES[index]
    rng = np.random.default_rng(index)
    program = adcli.loads(case.text)
    at = draw(case, program, rng)
    text, seeds = wrapped(case, program, rng)
    if case.op in NOT_EXPRESSIBLE:
        with pytest.raises(AdError, match=f"derivative of {case.op} .* needs {NOT_EXPRESSIBLE[case.op]}"):
            adcli.loads(text)
        return
    derived = adcli.loads(text)
    values = derived.evaluate(at=at)
    J = program.jacobian(mode="reverse", at=at, measure_memory=False).jacobian
    offset = 0
    for k, name in enumerate(program.input_names):
        size = math.prod(program.input_shape(name))
        block = J[:, offset:offset + size]
        offset += size
        u, v = seeds[name]
        assert close(values[f"vjp{k}"].reshape(-1), u.reshape(-1) @ block, 1e-10), name
        assert close(values[f"jvp{k}"].reshape(-1), block @ v.reshape(-1), 1e-10), name
    # second derivatives: the program's modes through the derivative nodes, and differences
    forward, reverse = jacobians(derived, at=at)
    assert close(forward.jacobian, reverse.jacobian, 1e-9)
    assert close(reverse.jacobian, fd_jacobian(derived, at=at), 2e-5)


# -- closed forms ------------------------------------------------------------------------------

ROSENBROCK = """
input x: vec[2] = [-1.2, 1.0]
def rosen(x) = (1 - x[0])^2 + 100 * (x[1] - x[0]^2)^2
"""


def rosenbrock(x, y):
    value = (1 - x) ** 2 + 100 * (y - x * x) ** 2
    gradient = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
    hessian = np.array([[2 - 400 * (y - 3 * x * x), -400 * x], [-400 * x, 200]])
    return value, gradient, hessian


@pytest.mark.parametrize("point", [(-1.2, 1.0), (0.3, -0.7), (1.0, 1.0)])
def test_rosenbrock_gradient_hessian_and_products(point):
    program = adcli.loads(ROSENBROCK + """
output g = grad(rosen)(x)
output H = hessian(rosen)(x)
output H2 = jacobian(grad(rosen))(x)
output hv = jvp(grad(rosen), x, [1.0, -2.0])
output vh = vjp(grad(rosen), x, [1.0, -2.0])
output step = x - solve(hessian(rosen)(x), grad(rosen)(x))
""")
    x = np.array(point)
    _, gradient, hessian = rosenbrock(*x)
    values = program.evaluate(at={"x": x})
    np.testing.assert_allclose(values["g"], gradient, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(values["H"], hessian, rtol=1e-13)
    np.testing.assert_allclose(values["H2"], hessian, rtol=1e-13)
    np.testing.assert_allclose(values["hv"], hessian @ [1.0, -2.0], rtol=1e-13)
    np.testing.assert_allclose(values["vh"], np.array([1.0, -2.0]) @ hessian, rtol=1e-13)
    np.testing.assert_allclose(values["step"], x - np.linalg.solve(hessian, gradient), rtol=1e-12, atol=1e-14)
    # third derivatives: the program's modes through the Hessian's nodes, against differences
    forward, reverse = jacobians(program, at={"x": x})
    np.testing.assert_allclose(forward.jacobian, reverse.jacobian, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(reverse.jacobian, fd_jacobian(program, at={"x": x}), rtol=1e-6, atol=1e-4)


def test_nested_grads_of_a_scalar_function():
    """grad(grad(g)) and grad(grad(grad(g))) of g(t) = sin t · eᵗ: 2 cos t eᵗ, 2 (cos t − sin t) eᵗ."""
    program = adcli.loads("""
input t = 0.7
def g(t) = sin(t) * exp(t)
output d1 = grad(g)(t)
output d2 = grad(grad(g))(t)
output d3 = grad(grad(grad(g)))(t)
output d2h = hessian(g)(t)
""")
    for t in (0.7, -1.3, 2.0):
        values = program.evaluate(at={"t": t})
        e = math.exp(t)
        assert values["d1"] == pytest.approx((math.sin(t) + math.cos(t)) * e, rel=1e-14)
        assert values["d2"] == pytest.approx(2 * math.cos(t) * e, rel=1e-13)
        assert values["d3"] == pytest.approx(2 * (math.cos(t) - math.sin(t)) * e, rel=1e-13)
        assert values["d2h"] == pytest.approx(2 * math.cos(t) * e, rel=1e-13)


def test_jacobian_shapes_and_the_other_arguments():
    """jacobian's layout (the value's axes, then the point's), both pass directions (rows by
    VJPs when the value is smaller, columns by JVPs otherwise), and arguments held fixed."""
    program = adcli.loads("""
input x: vec[3] = [0.5, -1.0, 2.0]
input W: mat[2, 3] = [[1, 2, 0.5], [0.3, -1, 1]]
input s = 0.4
def layer(x, W) = tanh(W @ x)
def spread(s, x) = s * x + s^2
def loss(W, x) = sum(layer(x, W)^2)
output J = jacobian(layer)(x, W)
output Js = jacobian(spread)(s, x)
output Jx = jacobian(spread)(x, s)
output GW = jacobian(loss)(W, x)
""")
    values = program.evaluate()
    x, W, s = np.array([0.5, -1.0, 2.0]), np.array([[1, 2, 0.5], [0.3, -1, 1]]), 0.4
    y = np.tanh(W @ x)
    np.testing.assert_allclose(values["J"], (1 - y * y)[:, None] * W, rtol=1e-14)
    np.testing.assert_allclose(values["Js"], x + 2 * s, rtol=1e-14)
    assert values["Jx"].shape == (3, 3)
    np.testing.assert_allclose(values["Jx"], np.diag(s + 2 * x), rtol=1e-14)   # spread(x, s) = x s + x²
    np.testing.assert_allclose(values["GW"], np.outer(2 * y * (1 - y * y), x), rtol=1e-14)
    forward, reverse = jacobians(program)
    np.testing.assert_allclose(forward.jacobian, reverse.jacobian, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reverse.jacobian, fd_jacobian(program), rtol=1e-6, atol=1e-7)


def test_movements_and_repeats_inside_a_def():
    """Slices, concat, stack (reverse: gathers and scatter-adds), and a repeat unrolled in the
    def, even where the program keeps its repeats as loops."""
    text = """
input x: vec[3] = [1, 2, 3]
def mix(x) = concat(x[1:], stack(x[0], x[0]))
def h(x) = sum(mix(x) * [1, 2, 3, 4])
def f(x) {
    repeat 3 {
        x = sin(x)
    }
    return sum(x)
}
output J = jacobian(mix)(x)
output g = grad(h)(x)
output gf = grad(f)(x)
"""
    expected = np.sin(np.sin(np.sin([1.0, 2.0, 3.0])))
    for loops in ("auto", "always"):
        values = adcli.loads(text, loops=loops).evaluate()
        np.testing.assert_array_equal(values["J"], [[0, 1, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0]])
        np.testing.assert_array_equal(values["g"], [7, 1, 2])
        x = np.array([1.0, 2.0, 3.0])
        chain = np.cos(x) * np.cos(np.sin(x)) * np.cos(np.sin(np.sin(x)))
        np.testing.assert_allclose(values["gf"], chain, rtol=1e-14)
        assert expected.shape == (3,)


def test_grad_inside_a_loop_body():
    """Gradient descent written with grad, its repeat kept as a loop or unrolled: the same."""
    text = """
input x: vec[3] = [1, 2, 3]
input W: mat[3, 3] = [[1, 0, 1], [0, 1, 1], [2, 1, 0]]
def f(x, W) = x @ W @ x + sum(sin(x))
h = x
repeat 4 {
    h = h - 0.01 * grad(f)(h, W)
}
output loss = sum(h * h)
"""
    unrolled, looped = adcli.loads(text, loops="never"), adcli.loads(text, loops="always")
    assert any(node.op == "loop" for node in looped.graph.nodes)
    assert looped.evaluate()["loss"] == pytest.approx(unrolled.evaluate()["loss"], rel=1e-14)
    for mode in ("forward", "reverse"):
        a = unrolled.jacobian(mode=mode, measure_memory=False)
        b = looped.jacobian(mode=mode, measure_memory=False)
        np.testing.assert_allclose(a.jacobian, b.jacobian, rtol=1e-12)
    np.testing.assert_allclose(a.jacobian, fd_jacobian(unrolled), rtol=1e-6)


def test_same_node_as_the_point_and_another_argument():
    """grad(f)(x, x) differentiates in the first argument only; a const read by f that is
    also the point stays a const."""
    values = adcli.loads("""
const c = 2.0
input x = 3.0
def f(a, b) = a * b^2
def g(a) = a * c
output d = grad(f)(x, x)
output dc = grad(g)(c)
output zero = grad(g)(x) - c
""").evaluate()
    assert values["d"] == 9.0 and values["dc"] == 2.0 and values["zero"] == 0.0


# -- counts ------------------------------------------------------------------------------------

def test_grad_counts_by_hand():
    """grad(f)(x) for f(x) = sum(sin(x)): the nodes are f's forward pass and one reverse
    sweep of its body, counted as primal work of the program; f's own value is not needed
    by the output here, so its nodes are dropped as any unused node is."""
    n = 4
    program = adcli.loads(f"""
dim n = {n}
input x: vec[n] = linspace(0.1, 0.9)
def f(x) = sum(sin(x))
output g = grad(f)(x)
""")
    result = program.jacobian(mode="forward", measure_memory=False)
    # the reverse sweep: the seed 1 broadcast to n (a gather: free), the partial cos x
    # (n flops), cos x · ct (n mults, n flops); sin x and the sum are not read: dropped
    assert (result.cost.mults_primal, result.cost.flops_primal) == (n, 2 * n)
    np.testing.assert_allclose(result.jacobian, np.diag(-np.sin(np.linspace(0.1, 0.9, n))), rtol=1e-14)
    # the prediction counts exactly what the run did, in both modes
    for mode in ("forward", "reverse"):
        run = program.jacobian(mode=mode, measure_memory=False)
        assert program.predict(mode).counts() == run.cost.counts()


def test_hessian_counts_n_forward_passes_over_one_reverse_sweep():
    """hessian(f) of f(x) = Σ xᵢ³ (n = 5) is n JVPs through grad's nodes: each column
    scales the unit tangent through the two products of 3x² → 6x."""
    n = 5
    program = adcli.loads(f"""
dim n = {n}
input x: vec[n] = linspace(1, 2)
def f(x) = sum(x^3)
output H = hessian(f)(x)
""")
    x = np.linspace(1, 2, n)
    np.testing.assert_allclose(program.evaluate()["H"], np.diag(6 * x), rtol=1e-14)
    gathers = [node for node in program.graph.nodes if node.op == "stack"]
    assert len(gathers) == 1 and len(gathers[0].inputs) == n   # one column per forward pass


# -- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("input x: vec[3]\ndef f(x) = x * 2\noutput g = grad(f)(x)",
     "grad(f) needs a scalar-valued function, but it returns a vec[3]: use jacobian"),
    ("input x: vec[3]\ndef g(x) = sin(x)\noutput h = hessian(g)(x)",
     "hessian(g) needs a scalar-valued function, but it returns a vec[3]: use jacobian(jacobian(g)) for the "
     "second derivatives of a vector-valued function"),
    ("input x: vec[3]\ndef f(x) = sum(digamma(x))\noutput g = grad(f)(x)",
     "the derivative of digamma (line 2) needs the Hurwitz zeta function, which no node computes yet"),
    ("input x: vec[3]\noutput g = grad(sin)(x)", "'sin' is a built-in function, not a def"),
    ("input x: vec[3]\ndef f(x) = sum(x)\noutput g = grad(f)", "grad(...) is a function: call it"),
    ("input x: vec[3]\ndef f(x) = x\noutput g = jvp(f, x, [1, 2])",
     "jvp's direction must have the shape of the point, vec[3], got vec[2]"),
    ("input x: vec[3]\ndef f(x) = x\noutput g = vjp(f, x, 1)",
     "vjp's cotangent must have the shape of the function's value, vec[3], got scalar"),
    ("input x: vec[3]\ndef f(x) = prod(x)\noutput g = grad(f)(x)",
     "grad(f) cannot be made of graph nodes: the derivative of prod (line 2) needs cumulative products, "
     "which no node computes yet"),
    ("input x: vec[3]\ndef f(x, y) = sum(x * y)\noutput g = grad(f)(x)", "f takes 2 arguments (x, y), got 1"),
    ("input x: vec[3]\ndef f(x) = sum(x), x\noutput g = grad(f)(x)",
     "grad(f) needs a function of one value, but it returns 2"),
    ("input x: vec[3]\ndef f(x) = sum(x)\noutput g = grad(f)(x, axis=0)", "grad(f)(...) takes no keywords"),
    ("input x: vec[3]\ndef f(x) = sum(x)\noutput g = grad(f, f)(x)", "grad takes one function, a def: grad(f)"),
    ("input x: vec[3]\ndef f(x) = sum(x)\noutput g = jvp(f, x)", "jvp takes a function, a point and a direction"),
    ("input x: vec[3]\ndef f(x) = sum(x)\noutput g = grad(x)(x)", "'x' is a value, not a def"),
    ("input x: vec[3]\ndef f(x) = sum(x)\noutput g = grad(f)()", "grad(f) needs the function's arguments"),
    ("input x: vec[3]\ndef f(x) = sum(x)\noutput g = (x + 1)(x)", "expected"),
])
def test_refusals_are_one_sentence_at_the_call(text, message):
    with pytest.raises(AdError) as info:
        adcli.loads(text)
    assert message in str(info.value)
    assert info.value.location is not None and info.value.location.line >= 2
