"""The project around the code: the installed command, the grammar as package
data, and docs that cover every op and builtin."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import adcli
from adcli.build import BUILTINS
from adcli.ops import REGISTRY
from adcli.parser import grammar_path

ROOT = Path(__file__).resolve().parent.parent


def installed_command():
    """The `adcli` console script of the running interpreter's environment."""
    candidate = Path(sys.executable).parent / "adcli"
    return str(candidate) if candidate.exists() else shutil.which("adcli")


@pytest.mark.skipif(installed_command() is None, reason="the adcli console script is not installed")
def test_installed_command_differentiates_a_sample():
    out = subprocess.run([installed_command(), "grad", str(ROOT / "samples" / "seed_example.ad"), "--json"],
                         capture_output=True, text=True, check=True, env={**os.environ, "NO_COLOR": "1"})
    data = json.loads(out.stdout)
    assert data["value"]["f"] == pytest.approx(6.909297426825682, abs=1e-15)
    assert data["jacobian"] == [[pytest.approx(2.5838531634528574, abs=1e-15), 2.0]]


def test_grammar_is_found():
    path = grammar_path()
    assert path.exists() and path.name == "adl.lark"
    # installed non-editably, the grammar must come from inside the package
    package_dir = Path(adcli.__file__).resolve().parent
    if not (package_dir.parent / "grammars").exists():
        assert package_dir in path.resolve().parents


def test_counting_doc_covers_every_op():
    doc = (ROOT / "docs" / "counting.md").read_text()
    table = doc[doc.index("## The op table"):doc.index("## Memory figures")]
    missing = [op for op in REGISTRY if f"`{op}`" not in table]
    assert not missing, f"docs/counting.md has no row for {missing}"


def test_language_doc_covers_every_builtin():
    doc = (ROOT / "docs" / "language.md").read_text()
    missing = [name for name in sorted(BUILTINS) if not re.search(rf"\b{name}\b", doc)]
    assert not missing, f"docs/language.md does not mention {missing}"


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme[readme.index("## Set up"):readme.index("## Use")], re.S)
    commands = [line for block in blocks for line in block.strip().splitlines()]
    assert len(commands) == 2, "the README's set-up section must hold exactly two commands"
    assert commands[0].startswith("python3 -m venv .venv") and commands[1].startswith(".venv/bin/pytest")
    assert "grep -m1 '^python3 -m venv .venv' README.md" in ci
    assert "grep -m1 '^\\.venv/bin/pytest' README.md" in ci


def test_readme_lists_every_sample():
    """The README's samples table names each shipped sample, and no sample that is gone."""
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\| `(\w+\.ad)` \|", readme, re.M))
    shipped = {path.name for path in (ROOT / "samples").glob("*.ad")}
    assert listed == shipped, (f"not in the README's table: {sorted(shipped - listed)}; "
                               f"listed but not shipped: {sorted(listed - shipped)}")
