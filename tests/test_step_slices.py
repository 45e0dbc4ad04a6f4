"""Step slices x[lo:hi:step]: Python's meaning, values and derivatives in both modes
against NumPy and central differences, prediction = count, and the two errors (an empty
slice is a value: tests/test_empty.py)."""
import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from conftest import fd_jacobian

SOURCE = """input x: vec[7] = [0.5, -1, 2, 0.25, 3, -2, 1.5]
input A: mat[5, 3] = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, 15]]
output evens = x[:6:2] * x[1::2]
output back = x[::-1] * x
output rows = sum(A[4:0:-2, :] ^ 2) + sum(A[1::3, 1])
"""


def test_step_slices_have_pythons_meaning_and_their_derivatives():
    program = adcli.loads(SOURCE)
    x = np.array([0.5, -1, 2, 0.25, 3, -2, 1.5])
    A = np.arange(1.0, 16.0).reshape(5, 3)
    want = {"evens": x[:6:2] * x[1::2], "back": x[::-1] * x,
            "rows": (A[4:0:-2, :] ** 2).sum() + A[1::3, 1].sum()}
    fd = fd_jacobian(program)
    for mode in ("forward", "reverse"):
        result = program.jacobian(mode=mode)
        for name, value in want.items():
            assert np.allclose(result.value[name], value), (mode, name)
        assert np.allclose(result.jacobian, fd, atol=1e-7), mode
        assert result.cost.counts() == program.predict(mode).counts()


@pytest.mark.parametrize("text, message, column", [
    ("x[3:1]", "slice 3:1 ends before it starts (an empty slice is lo:lo, a reversed one lo:hi:-1)", 14),
    ("x[::0]", "a slice step must not be 0", 16),
])
def test_step_slice_errors(tmp_path, text, message, column):
    path = tmp_path / "bad.ad"
    path.write_text(f"input x: vec[6] = 1\noutput y = {text}\n")
    result = CliRunner().invoke(cli, ["grad", str(path)])
    assert result.exit_code == 1
    assert f"bad.ad:2:{column}: error: {message}" in result.output
