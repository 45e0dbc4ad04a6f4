"""Data from files, dims from data, constant expressions with every function, and consts
set by --at / --inputs / at=: load() of .npy, .npz, .json and .csv relative to the .ad file;
each problem one sentence with a caret; a huge .npy refused from its header; a const set
for a run never answered from plans compiled with the old value."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from adcli.errors import AdError, ResourceProblem, UsageProblem
from conftest import fd_jacobian


@pytest.fixture
def data_dir(tmp_path):
    """A folder of data files in every format, with a logistic-regression data set."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3))
    y = (rng.random(6) > 0.5).astype(np.float64)
    np.save(tmp_path / "X.npy", X)
    np.savez(tmp_path / "set.npz", x=X, y=y, counts=np.arange(4))
    (tmp_path / "set.json").write_text(json.dumps({"w": [[1, 2], [3, 4]], "v": [0.5, 1.5], "s": 2}))
    (tmp_path / "list.json").write_text(json.dumps([[1, 2, 3], [4, 5, 6]]))
    rows = "\n".join(",".join(repr(float(v)) for v in list(x) + [label]) for x, label in zip(X, y))
    (tmp_path / "set.csv").write_text("a,b,c,label\n" + rows + "\n\n")
    (tmp_path / "plain.csv").write_text("1,2\n3,4\n5,6\n")
    return tmp_path, X, y


def write(folder, text, name="model.ad"):
    path = folder / name
    path.write_text(text)
    return path


def test_every_format_loads_relative_to_the_ad_file(data_dir, monkeypatch, tmp_path_factory):
    folder, X, y = data_dir
    path = write(folder, """const A = load("X.npy")
const B: mat[6, 3] = load("set.npz", "x")
const counts = load("set.npz", "counts")
const W = load("set.json", "w")
const s = load("set.json", "s")
const L: mat[2, 3] = load("list.json")
const T = load("set.csv")
const labels: vec[6] = load("set.csv", "label")
const second = load("plain.csv", 1)
const P = load("plain.csv")
input x = 1.0
output o = x * (sum(A) + sum(B) + sum(counts) + sum(W) + s + sum(L) + sum(T) + sum(labels)
                + sum(second) + sum(P))
""")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))   # not the file's folder
    program = adcli.load(path)
    values = {name: np.asarray(data) for name, data in program.graph.builder.const_values.items()}
    assert np.array_equal(values["A"], X) and np.array_equal(values["B"], X)
    assert values["counts"].dtype == np.float64 and list(values["counts"]) == [0, 1, 2, 3]
    assert values["W"].tolist() == [[1, 2], [3, 4]] and values["s"].shape == () and values["s"] == 2
    assert values["L"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert np.array_equal(values["T"], np.column_stack([X, y]))   # the header row is names
    assert np.array_equal(values["labels"], y)
    assert values["second"].tolist() == [2, 4, 6] and values["P"].shape == (3, 2)   # no header
    total = 2 * X.sum() + 6 + 10 + 2 + 21 + X.sum() + 2 * y.sum() + 12 + 21
    assert np.isclose(float(program.evaluate()["o"]), total)


def test_loads_reads_from_the_working_directory_or_base_dir(data_dir, monkeypatch):
    folder, X, _ = data_dir
    text = 'const A = load("X.npy")\ninput x = 1.0\noutput o = x * sum(A)\n'
    assert np.isclose(float(adcli.loads(text, base_dir=folder).evaluate()["o"]), X.sum())
    monkeypatch.chdir(folder)
    assert np.isclose(float(adcli.loads(text).evaluate()["o"]), X.sum())


def test_logistic_regression_on_loaded_data_differentiates_correctly(data_dir):
    folder, X, y = data_dir
    path = write(folder, """const X = load("set.npz", "x")
dim n = rows(X)
dim d = cols(X)
const y: vec[n] = load("set.csv", "label")
input w: vec[d] = [0.3, -0.2, 0.1]
input b = 0.05
z = X @ w + b
output loss = mean(softplus(z) - y * z)
""")
    program = adcli.load(path)
    w, b = np.array([0.3, -0.2, 0.1]), 0.05
    z = X @ w + b
    want_loss = np.mean(np.logaddexp(0, z) - y * z)
    residual = 1 / (1 + np.exp(-z)) - y
    want_grad = np.concatenate([X.T @ residual / 6, [residual.mean()]])
    fd = fd_jacobian(program)
    for mode in ("forward", "reverse"):
        result = program.jacobian(mode=mode)
        assert np.isclose(result.value["loss"], want_loss, rtol=1e-13)
        assert np.allclose(result.jacobian[0], want_grad, rtol=1e-12)
        assert np.allclose(result.jacobian, fd, rtol=1e-6, atol=1e-9)
        assert result.cost.counts() == program.predict(mode).counts()


@pytest.mark.parametrize("line, message, column", [
    ('const A = load("nothing.npy")', "no such data file: nothing.npy", 16),
    ('const A = load("set.npz", "q")', "set.npz has no array named 'q' (it has 'x', 'y', 'counts')", 16),
    ('const A = load("set.npz")', 'set.npz holds several arrays: name one, e.g. load("set.npz", "x")', 16),
    ('const A = load("X.npy", "x")', "X.npy holds one array: load it without a key", 16),
    ('const A: mat[3, 6] = load("X.npy")', "X.npy holds a mat[6, 3], but A is declared mat[3, 6]", 22),
    ('const A = load("set.json")', "set.json holds an object: name one of its keys ('w', 'v', 's')", 16),
    ('const A = load("set.json", "z")', "set.json has no key 'z' (it has 'w', 'v', 's')", 16),
    ('const A = load("bad.csv")', "line 2, column 2 of bad.csv is 'abc', not a number", 16),
    ('const A = load("ragged.csv")', "line 2 of ragged.csv has 1 field, not 2 like the first row", 16),
    ('const A = load("ragged.json")', "ragged.json is a list whose rows have different lengths", 16),
    ('const A = load("words.json")', "words.json is not a number or a (nested) list of numbers", 16),
    ('const A = load("set.csv", "zz")', "set.csv has no column named 'zz' (it has 'a', 'b', 'c', 'label')", 16),
    ('const A = load("plain.csv", "a")', "plain.csv has no header row to name column 'a'; select a column "
                                         "by its number (from 0)", 16),
    ('const A = load("strings.npy")', "strings.npy holds strings, not real numbers", 16),
    ('const i: imat[2, 2] = load("cube.npy")', "cube.npy holds an array of 3 dimensions; integer data has "
                                              "at most 2", 23),
    ('const A = load("X.txt")', "load reads .npy, .npz, .json, .csv files, not 'X.txt'", 16),
    ("const A = load(X)", 'the path of load(...) is a string in quotes: load("data.npy")', 16),
    ('const A = load("X.npy", 1, 2)', 'load takes a path and, for some formats, a key: load("data.npz", "x")', 11),
    ('const A = "X.npy"', "a string is only the path or key of load(...)", 11),
    ('const A = load("nan.csv")', "nan.csv holds 2 non-finite values, the first nan at [1, 0] (from 0); "
                                  "data must be finite numbers", 16),
    ('const A = 1\ndim n = cols(A)', "a scalar has no cols", 9),
])
def test_data_file_errors_are_one_sentence_with_a_caret(data_dir, line, message, column):
    folder, _, _ = data_dir
    (folder / "bad.csv").write_text("1,2\n3,abc\n")
    (folder / "ragged.csv").write_text("1,2\n3\n")
    (folder / "ragged.json").write_text("[[1, 2], [3]]")
    (folder / "words.json").write_text('["a", 1]')
    (folder / "nan.csv").write_text("1,2\nnan,4\n5,inf\n")
    np.save(folder / "strings.npy", np.array(["a", "b"]))
    np.save(folder / "cube.npy", np.zeros((2, 2, 2)))
    path = write(folder, f"input x = 1.0\n{line}\noutput o = x * sum(A)\n")
    result = CliRunner().invoke(cli, ["grad", str(path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{path}:"), lines[0]
    assert lines[0].endswith(f":{column}: error: {message}"), lines[0]
    assert lines[2].index("^") == column + 1   # two spaces of indent, then the caret under the column


def test_a_huge_npy_is_refused_from_its_header_before_its_data_is_read(tmp_path):
    with open(tmp_path / "huge.npy", "wb") as f:   # a header for 8 TB, and no data at all
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                 "shape": (10**6, 10**6)})
    with pytest.raises(ResourceProblem) as info:
        adcli.loads('const A = load("huge.npy")\ninput x = 1.0\noutput o = x * sum(A)\n', base_dir=tmp_path)
    assert "the data in huge.npy is mat[1000000, 1000000]" in info.value.message
    assert info.value.location.line == 1


def test_npy_data_is_read_only_when_a_run_needs_it(tmp_path):
    np.save(tmp_path / "X.npy", np.ones((3, 2)))
    program = adcli.loads('const A = load("X.npy")\ninput x = 1.0\noutput o = x * sum(A)\n', base_dir=tmp_path)
    np.save(tmp_path / "X.npy", 2 * np.ones((3, 2)))     # rewritten after the build: the run reads this
    assert float(program.evaluate()["o"]) == 12.0
    np.save(tmp_path / "X.npy", np.ones((2, 2)))
    program = adcli.loads('const A = load("X.npy")\ninput x = 1.0\noutput o = x * sum(A)\n', base_dir=tmp_path)
    np.save(tmp_path / "X.npy", np.ones((5, 2)))
    with pytest.raises(AdError) as info:
        program.evaluate()
    assert "X.npy changed since the file was built: it held a mat[2, 2] and now holds a mat[5, 2]" \
        in info.value.message


def test_a_text_file_too_large_to_parse_is_refused_before_it_is_read(tmp_path):
    (tmp_path / "big.csv").write_text("1,2\n" * 1000)   # 4 KB, against a limit set low below
    from adcli.build import Builder

    builder = Builder('const A = load("big.csv")\ninput x = 1.0\noutput o = x * sum(A)\n', "m.ad",
                      base_dir=tmp_path)
    builder.memory_cap = 10_000
    with pytest.raises(AdError) as info:
        builder.build()
    assert "big.csv is 4.0 KB of text; parsing it could need about 64.0 KB" in info.value.message
    assert info.value.hint.startswith("save the data as .npy or .npz")


def test_dims_from_data(data_dir):
    folder, X, _ = data_dir
    program = adcli.load(write(folder, """const X = load("X.npy")
dim n = rows(X)
dim d = cols(X)
input w: vec[d] = ones
input v: vec[rows(w)] = ones
s = 0 * sum(w)
repeat rows(X) as t {
    s = s + X[t] @ w
}
output o = s + cols(X) * sum(v) + rows(X[0:2])
"""))
    assert program.graph.dims == {"n": 6, "d": 3}
    assert np.isclose(float(program.evaluate()["o"]), X.sum() + 3 * 3 + 2)


def test_constant_expressions_use_every_function():
    program = adcli.loads("""dim n = 3
const A: mat[2, n] = [[1, 2, 3], [4, 5, 6]]
def centre(M) = M - mean(M, axis=0)
const total = sum(A)
const p = softmax(A[0])
const G = A @ A.T
const C = centre(A)
const big = A > 2.5
const picked = where(A > 2.5, A, 0) + concat(A[1], A[0])[0:3]
const s: vec[2] = 0.5 * randn(seed=1) + max(A, axis=1)
input x = 1.0
output o = x * (total + sum(p * [1, 2, 3]) + sum(G) + sum(C ^ 2) + sum(big) + sum(picked) + sum(s))
""")
    A = np.array([[1.0, 2, 3], [4, 5, 6]])
    values = {name: np.asarray(data) for name, data in program.graph.builder.const_values.items()}
    assert values["total"] == 21
    e = np.exp(A[0] - A[0].max())
    assert np.allclose(values["p"], e / e.sum(), rtol=1e-15)
    assert np.array_equal(values["G"], A @ A.T)
    assert np.array_equal(values["C"], A - A.mean(axis=0))
    assert values["big"].tolist() == [[0, 0, 1], [1, 1, 1]]
    assert values["picked"].tolist() == (np.where(A > 2.5, A, 0) + np.concatenate([A[1], A[0]])[:3]).tolist()
    assert np.allclose(values["s"], 0.5 * np.random.default_rng(1).standard_normal(2) + A.max(axis=1))


@pytest.mark.parametrize("value, message", [
    ("sum(x)", "'x' is not a dim or const; initial values are constant data"),
    ("sum(randn(seed=1))", "randn(...) needs a declared type to know its shape"),
    ("sum(A, axis=2)", "axis=2 is out of range for mat[2, 2]"),
    ("A[5]", "index 5 is out of range for an axis of length 2 in mat[2, 2]"),
])
def test_constant_expression_errors(value, message):
    with pytest.raises(AdError) as info:
        adcli.loads(f"input x = 1.0\nconst A: mat[2, 2] = 1\nconst c = {value}\noutput o = x * sum(c)\n")
    assert info.value.message.startswith(message)
    assert info.value.location.line == 3


SET_CONST = """const P: vec[3] = [1, 2, 3]
const Pc = P - mean(P)
input x: vec[3] = 2 * P
output y = sum(x * Pc) + sum(P * P)
"""


def want(P, x=None):
    P = np.asarray(P, dtype=np.float64)
    x = 2 * P if x is None else x
    Pc = P - P.mean()
    return np.sum(x * Pc) + np.sum(P * P), Pc


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_a_const_set_by_at_is_used_and_never_served_from_an_old_plan(mode):
    program = adcli.loads(SET_CONST)
    program.check_plans = False   # the compiled plans alone: what a user's repeated calls get
    for P in ([1, 2, 3], [0, 0, 3], [5, -1, 2], [1, 2, 3]):
        result = program.jacobian(mode=mode, at={"P": np.array(P, dtype=float)})
        value, Pc = want(P)
        assert np.isclose(result.value["y"], value), P
        assert np.allclose(result.jacobian, Pc[None, :]), P        # P has no column: x's only
        assert result.wrt == ["x"] and result.consts["P"].tolist() == P
        assert np.isclose(float(program.evaluate(at={"P": P})["y"]), value)
    cold = adcli.loads(SET_CONST).jacobian(mode=mode, at={"P": [5, -1, 2]})
    assert np.isclose(cold.value["y"], want([5, -1, 2])[0])
    assert program.jvp({"x": [1, 0, 0]}, at={"P": [0, 0, 3]}).tangent["y"] == -1.0
    assert np.allclose(program.vjp({"y": 1.0}, at={"P": [0, 0, 3]}).cotangent["x"], [-1, -1, 2])


def test_consts_set_from_the_command_line(tmp_path, monkeypatch):
    path = write(tmp_path, SET_CONST)
    (tmp_path / "values.json").write_text(json.dumps({"P": [0, 0, 3], "x": [1, 1, 1]}))
    np.save(tmp_path / "P.npy", np.array([5.0, -1, 2]))
    runner = CliRunner()
    for args, P, x in ([["--at", "P=[0, 0, 3]"], [0, 0, 3], None],
                       [["--inputs", str(tmp_path / "values.json")], [0, 0, 3], np.ones(3)],
                       [["--at", "P=sum([1, 2]) * ones"], [3, 3, 3], None]):
        result = runner.invoke(cli, ["grad", str(path), "--json"] + args)
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        value, Pc = want(P, x)
        assert np.isclose(data["value"]["y"], value) and np.allclose(data["jacobian"], [Pc])
        assert list(data["inputs"]) == ["x"]
        assert data["consts"] == {"P": P}   # the const set, not Pc computed from it
        # inputs and consts given back as --inputs reproduce the run
        (tmp_path / "again.json").write_text(json.dumps({**data["inputs"], **data["consts"]}))
        again = json.loads(runner.invoke(cli, ["grad", str(path), "--json", "--inputs",
                                               str(tmp_path / "again.json")]).output)
        assert again["value"] == data["value"] and again["jacobian"] == data["jacobian"]
    for extra in ([], ["--direction", "x=ones"]):   # a run that sets no const; a jvp
        data = json.loads(runner.invoke(cli, ["grad", str(path), "--json"] + extra).output)
        assert data["consts"] == {}
    monkeypatch.chdir(tmp_path)   # load() in --at reads from the working directory
    result = runner.invoke(cli, ["grad", str(path), "--json", "--at", 'P=load("P.npy")'])
    assert result.exit_code == 0, result.output
    assert np.isclose(json.loads(result.output)["value"]["y"], want([5, -1, 2])[0])
    result = runner.invoke(cli, ["grad", str(path), "--at", "P=[1, 2]"])
    assert result.exit_code == 1 and "the value of P is vec[2], which does not fit its type vec[3]" in result.output
    result = runner.invoke(cli, ["grad", str(path), "--at", "Q=1"])
    assert result.exit_code == 2 and "there is no input or const named 'Q' (inputs: x; consts: P, Pc)" in result.output
    result = runner.invoke(cli, ["grad", str(path), "--wrt", "P"])
    assert result.exit_code == 2 and "'P' is a const, which is not differentiated" in result.output


def test_at_checks_a_consts_shape():
    program = adcli.loads(SET_CONST)
    with pytest.raises(AdError) as info:
        program.jacobian(at={"P": np.ones((2, 2))})
    assert info.value.message == "the value given for const P is mat[2, 2], but P is vec[3]"
    with pytest.raises(UsageProblem):
        program.jacobian(wrt=["P"])


def test_codegen_writes_the_const_a_run_set_and_load_gives_an_inputs_start(tmp_path, monkeypatch):
    np.save(tmp_path / "w0.npy", np.array([0.5, -1.0, 2.0]))
    path = write(tmp_path, SET_CONST.replace("input x: vec[3] = 2 * P", 'input x: vec[3] = load("w0.npy")'))
    output = tmp_path / "generated.py"
    result = CliRunner().invoke(cli, ["codegen", str(path), "--mode", "reverse", "--at", "P=[0, 0, 3]",
                                      "-o", str(output)])
    assert result.exit_code == 0, result.output
    monkeypatch.syspath_prepend(str(tmp_path))
    import generated

    values, blocks = generated.jacobian()
    value, Pc = want([0, 0, 3], np.array([0.5, -1.0, 2.0]))
    assert np.isclose(values["y"], value) and np.allclose(blocks["y"]["x"], Pc)
