"""Integer consts from files (labels in a .csv column, an .npy of ints, a .json list, an .npz
member): read when the file is built, whole numbers only, checked against the axes they
index; and why a run cannot set them (--at, --inputs, at=)."""
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from adcli.errors import AdError, UsageProblem
from conftest import fd_jacobian


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "labels.csv").write_text("x,label\n0.5,2\n1.5,0\n\n2.5,1\n3.5,2\n")
    np.save(tmp_path / "labels.npy", np.array([3, 0, 1, 1], dtype=np.int32))
    np.save(tmp_path / "whole.npy", np.array([1.0, 2.0, 0.0, -1.0]))   # floats, each a whole number
    np.save(tmp_path / "flags.npy", np.array([True, False, True, True]))
    np.savez(tmp_path / "pairs.npz", idx=np.array([[0, 3], [2, 2]], dtype=np.uint8))
    (tmp_path / "one_based.json").write_text(json.dumps({"y": [4, 1, 2, 4], "k": 2}))
    return tmp_path


def write(folder, text, name="model.ad"):
    path = folder / name
    path.write_text(text)
    return path


def test_every_format_gives_exact_indices_that_gathers_use(folder):
    path = write(folder, """const labels: ivec[4] = load("labels.csv", "label")
dim n = rows(labels)
const from_npy: ivec[n] = load("labels.npy")
const whole: ivec[n] = load("whole.npy")
const flags: ivec[n] = load("flags.npy")
const pairs: imat[2, 2] = load("pairs.npz", "idx")
const shifted: ivec[n] = load("one_based.json", "y") - 1
const k: int = load("one_based.json", "k")
input x: vec[4] = [0.5, -1.2, 2.0, 0.7]
output y = x[labels] * x[from_npy] + x[whole] * x[flags] + x[shifted]^2 + x[k]
output z = sum(x[pairs]^3, axis=1)
""")
    program = adcli.load(path)
    ints = program.graph.builder.int_consts
    expected = {"labels": [2, 0, 1, 2], "from_npy": [3, 0, 1, 1], "whole": [1, 2, 0, -1],
                "flags": [1, 0, 1, 1], "pairs": [[0, 3], [2, 2]], "shifted": [3, 0, 1, 3], "k": 2}
    for name, values in expected.items():
        assert ints[name].dtype == np.int64 and ints[name].tolist() == values, name
    x = np.array([0.5, -1.2, 2.0, 0.7])
    idx = {name: np.array(v) for name, v in expected.items()}
    y = (x[idx["labels"]] * x[idx["from_npy"]] + x[idx["whole"]] * x[idx["flags"]]
         + x[idx["shifted"]] ** 2 + x[2])
    z = np.sum(x[idx["pairs"]] ** 3, axis=1)
    values = program.evaluate()
    np.testing.assert_allclose(values["y"], y, rtol=1e-15)
    np.testing.assert_allclose(values["z"], z, rtol=1e-15)
    fd = fd_jacobian(program)
    for mode in ("forward", "reverse"):
        np.testing.assert_allclose(program.jacobian(mode=mode).jacobian, fd, rtol=1e-8, atol=1e-9)


def test_labels_from_a_file_pick_the_log_probabilities(folder):
    """The cross-entropy idiom with the labels a .csv column: logp[arange(n), labels]."""
    path = write(folder, """const table = load("labels.csv")
dim n = rows(table)
const labels: ivec[n] = load("labels.csv", "label")
const example: ivec[n] = arange
input Z: mat[n, 3] = 0.3 * randn(seed=2)
output loss = -mean(log_softmax(Z, axis=1)[example, labels])
""")
    program = adcli.load(path)
    Z = program.resolve_inputs()["Z"]
    labels = np.array([2, 0, 1, 2])
    p = np.exp(Z - np.log(np.exp(Z).sum(axis=1, keepdims=True)))
    assert program.evaluate()["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(4), labels])), rel=1e-14)
    gradient = (p - np.eye(3)[labels]) / 4
    for mode in ("forward", "reverse"):
        np.testing.assert_allclose(program.jacobian(mode=mode).jacobian[0], gradient.ravel(), rtol=1e-12)


@pytest.mark.parametrize("files, text, message, column", [
    ({"bad.csv": "label\n2\n0.5\n1\n1.25\n"}, 'const i: ivec[4] = load("bad.csv", "label")',
     "bad.csv holds 2 values that are not whole numbers, the first 0.5 at [1] (from 0); "
     "integer data (indices) must be whole numbers", 25),
    ({"bad.csv": "label\n2\nnan\n1\n"}, 'const i: ivec[3] = load("bad.csv", "label")',
     "bad.csv holds 1 non-finite value, the first nan at [1] (from 0); data must be finite numbers", 25),
    ({"big.npy": np.array([0, 2**60])}, 'const i: ivec[2] = load("big.npy")',
     "big.npy holds 1 value that is over 2^53 in size, the first 1152921504606846976 at [1] (from 0); "
     "integer data (indices) that large is surely a mistake", 25),
    ({"huge.npy": np.array([2**63 + 1], dtype=np.uint64)}, 'const i: ivec[1] = load("huge.npy")',
     "huge.npy holds 1 value that is over 2^53 in size, the first 9223372036854775809 at [0] (from 0)", 25),
    ({"words.npy": np.array(["a", "b"])}, 'const i: ivec[2] = load("words.npy")',
     "words.npy holds strings, not real numbers", 25),
    ({"l.npy": np.array([0, 1, 2])}, 'const i: ivec[4] = load("l.npy")',
     "l.npy holds an ivec[3], but i is declared ivec[4]", 20),
    ({"l.npy": np.array([0, 1])}, 'const i: imat[2, 2] = load("l.npy")',
     "l.npy holds an ivec[2], but i is declared imat[2, 2]", 23),
    ({"l.npy": np.array([0, 1, 4])}, 'const i: ivec[3] = load("l.npy")\ninput x: vec[4] = 1\noutput y = x[i]',
     "index 4 (element 2) is out of range for an axis of length 4 in vec[4]", 14),
    ({"l.json": json.dumps({"y": [1, 2]})}, 'const i: ivec[2] = load("l.json", "z")',
     "l.json has no key 'z' (it has 'y')", 25),
])
def test_problems_are_one_sentence_with_a_caret(tmp_path, files, text, message, column):
    for name, content in files.items():
        if isinstance(content, str):
            (tmp_path / name).write_text(content)
        else:
            np.save(tmp_path / name, content)
    if "output" not in text:
        text += "\ninput x: vec[4] = 1\noutput y = sum(x)"
    path = write(tmp_path, text + "\n", "bad.ad")
    result = CliRunner().invoke(cli, ["grad", str(path)])
    assert result.exit_code == 1, result.output
    line = 3 if "x[i]" in text else 1
    assert f"bad.ad:{line}:{column}: error: {message}" in result.output, result.output
    assert "^" in result.output and "Traceback" not in result.output


def test_a_run_cannot_set_integer_data(folder):
    """--at, --inputs and at= refuse an integer const by name, with the reason: its values
    made the gathers' index maps when the file was built, so a value given per run would be
    ignored by them (a wrong result), or would need the program rebuilt."""
    path = write(folder, """const labels: ivec[4] = load("labels.csv", "label")
input x: vec[3] = [1, 2, 3]
output y = x[labels]
""")
    program = adcli.load(path)
    reason = ("'labels' is integer data (ivec[4]), which a run cannot set: the program's gathers are "
              "built from its values when the file is read")
    for call in (program.evaluate, program.jacobian):
        with pytest.raises(UsageProblem, match=re.escape(reason)):
            call(at={"labels": [0, 0, 0, 0]})
    (folder / "at.json").write_text(json.dumps({"labels": [0, 0, 0, 0]}))
    (folder / "odd.json").write_text(json.dumps({"labels": [0, "a"]}))   # refused by name, not by value
    for option in (["--at", "labels=[0, 0, 0, 0]"], ["--at", "labels=[0, a]"],
                   ["--inputs", str(folder / "at.json")], ["--inputs", str(folder / "odd.json")]):
        for command in ("grad", "compare"):
            result = CliRunner().invoke(cli, [command, str(path), *option])
            assert result.exit_code == 2 and f"{option[0]} labels: {reason}" in result.output, result.output
    assert program.evaluate()["y"].tolist() == [3, 1, 2, 3]   # the file's labels, unchanged


@pytest.mark.parametrize("line, message", [
    ("dim m = cols(lab)", "an ivec[3] has no cols; a vector's length is rows(v)"),
    ("dim m = rows(k)", "an int has no rows"),
    ("dim m = cols(x)", "a vec[2] has no cols"),
    ("output z = x[lab[0, 1]]", "2 indices for an ivec[3], which has 1 axis"),
    ("output z = x[0, 1]", "2 indices for a vec[2], which has 1 axis"),
    ('const z: ivec[2] = load("n.json", "k")', "n.json holds an ivec[3], but z is declared ivec[2]"),
    ('const z: vec[2] = load("one.json", "k")', "one.json holds a number, not an object with keys"),
])
def test_messages_name_types_with_their_article(tmp_path, line, message):
    """'an ivec', 'an imat', 'an int' (not 'a imat'), 'a vec', 'a number'."""
    (tmp_path / "n.json").write_text(json.dumps({"k": [1, 2, 3]}))
    (tmp_path / "one.json").write_text("3")
    path = write(tmp_path, f"const lab: ivec[3] = [0, 1, 1]\nconst k: int = 1\ninput x: vec[2] = 1\n{line}\n"
                           "output y = sum(x)\n", "bad.ad")
    with pytest.raises(AdError) as caught:
        adcli.load(path)
    assert str(caught.value.message).startswith(message), caught.value.message
