"""Start-up (issue 11): the generated parser (adcli/_adl_parser.py) made from the grammar as it
is now and parsing exactly like a Lark parser built from grammars/adl.lark (trees, positions,
errors); the modules `grad --json` does not import; the subcommands imported when named."""
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adcli import _adl_parser
from adcli.parser import _BracketNewlines, _parser, grammar_path

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "grammars" / "generate_parser.py"

pytestmark = pytest.mark.skipif(not GENERATOR.exists(), reason="needs the checkout's grammars/")


def generator():
    sys.path.insert(0, str(GENERATOR.parent))
    try:
        import generate_parser
    finally:
        sys.path.remove(str(GENERATOR.parent))
    return generate_parser


def test_the_generated_parser_was_made_from_the_current_grammar():
    gen = generator()
    assert not gen.is_stale(), (
        f"adcli/_adl_parser.py was generated from another grammar than grammars/adl.lark: run {gen.COMMAND}")


def test_a_changed_grammar_makes_it_stale(tmp_path, monkeypatch):
    gen = generator()
    changed = tmp_path / "adl.lark"
    changed.write_bytes(gen.GRAMMAR.read_bytes() + b"\n// one more comment\n")
    monkeypatch.setattr(gen, "GRAMMAR", changed)
    assert gen.is_stale()
    assert gen.main(["--check"]) == 1


# Programs that reach most of the grammar, then inputs that fail in each way parse() reports.
PROGRAMS = [
    "input x = 2.0\noutput f = x * x + sin(x)\n",
    "dim n = 3\ninput v: vec[n] = [1, 2, 3]\nconst w: mat[n, n] = eye(n)\noutput y = sum(w @ v)\n",
    "input a: tensor[2, 3, 4]\ninput b: tensor[] = 1\nconst k: int = 2\nconst i: ivec[2] = [0, 1]\n"
    "const m: imat[1, 2] = [[0, 1]]\noutput s = sum(a) * b\n",
    "input x = 1.0\ndef f(a, b) = a * b, a + b\np, q = f(x, x)\noutput p, q\n",
    "input x = 1.0\ndef g(a) {\n  b = a ^ -2\n  return b, -b\n}\noutput u, v = g(x)\n",
    "input h = 0.5\nrepeat 3 as i {\n  h = h * 2 - (h / 3)\n}\noutput y = h\n",
    "input x = 1.0\noutput y = grad(f)(x) + hessian(f)(x)\n",
    "input x = 1.0\ny = where(x < 2 and not (x >= 1 or x == 0), x, -x)\noutput z = y\n",
    "input v: vec[4]\noutput y = sum(v[1:3]) + sum(v[::2]) + v[:, None][0, 0] + v[-1] + v.T[0]\n",
    "input x = 1.0\noutput y = f(x,\n   axis=(0, 2), keepdims=True, order='C', path=\"d.npz\",\n)\n",
    "# a comment\n\n\ninput x = .5e-3  # trailing\ny = x \\\n  + 1\noutput z = (y,)[0] + [y, y,][1]\n",
    "input x = 1.0\r\noutput y = x\r\n",
]
ERRORS = [
    "input x = 1.0\noutput y = x)\n",          # unexpected token
    "input x = 1.0\noutput y = (x + \n",       # end of file inside brackets
    "input x = $1\n",                          # unexpected character
    "def f(a) {\n  return a\n",                # unclosed block
    "inptu x = 2.0\n",                         # keyword near miss
    "input x = 1.0 output y = x\n",
    "input x = 1.0\noutput y = x +\n",
    "output = 3\n",
    "x = [1, 2\ny = 3\n",
    "input x = 1.0\noutput y = 'open\n",
    "",
]


@functools.lru_cache(maxsize=1)
def reference_parser():
    lark = pytest.importorskip("lark")
    return lark.Lark(grammar_path().read_text(), parser="lalr", propagate_positions=True,
                     postlex=_BracketNewlines(), maybe_placeholders=True)


def flatten(tree) -> list:
    """Every node in order with its positions: Tree equality alone ignores meta."""
    out = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if hasattr(node, "children"):
            meta = node.meta
            where = (None if getattr(meta, "empty", True) else
                     (meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos, meta.end_pos))
            out.append(("tree", node.data, len(node.children), where))
            stack.extend(reversed(node.children))
        elif node is None:
            out.append(("none",))
        else:
            out.append(("token", node.type, str(node), node.line, node.column, node.start_pos, node.end_pos))
    return out


def samples() -> list:
    return [path.read_text() for path in sorted((ROOT / "samples").glob("*.ad"))]


@pytest.mark.parametrize("text", PROGRAMS + samples(), ids=lambda t: t[:30])
def test_it_parses_like_lark_built_from_the_grammar(text):
    expected = reference_parser().parse(text)
    assert flatten(_parser().parse(text)) == flatten(expected)


def failure(parse, text) -> tuple:
    try:
        parse(text)
    except Exception as exc:   # both raise their own copies of Lark's exception classes
        token = getattr(exc, "token", None)
        return (type(exc).__name__, exc.line, exc.column, getattr(exc, "pos_in_stream", None),
                sorted(getattr(exc, "expected", None) or []), sorted(getattr(exc, "accepts", None) or []),
                sorted(getattr(exc, "allowed", None) or []),
                None if token is None else (token.type, str(token)))
    pytest.fail(f"{text!r} parsed")


@pytest.mark.parametrize("text", ERRORS, ids=lambda t: t[:30])
def test_it_fails_like_lark_built_from_the_grammar(text):
    text = text if text.endswith("\n") else text + "\n"   # as adcli.parser.parse hands it over
    if text == "\n":
        return   # an empty file parses; checked below
    assert failure(_parser().parse, text) == failure(reference_parser().parse, text)


def test_an_empty_file_parses_to_no_statements():
    assert _parser().parse("\n").children == []


# Modules `adcli grad --json` leaves alone, for start-up time (benchmarks/README.md, issue 11):
# the lark package (the generated parser replaces it), logging (patched out of the generated
# parser), pathlib (about 3 ms: the machine model is read by os.path), the data-file
# readers that only load(...) needs, and the modules of the other subcommands.
NOT_IMPORTED_AT_START = ("lark", "logging", "pathlib", "csv", "adcli.data_files", "adcli.cli_inspect",
                         "adcli.cli_calibrate")


def test_grad_json_leaves_slow_imports_alone():
    # (not named adcli: the command would end before printing what it imported)
    code = ("import sys\nfrom adcli.cli import main\nsys.argv = ['run', 'grad', sys.argv[1], '--json']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "samples" / "seed_example.ad")],
                         capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, check=True)
    assert '"jacobian"' in out.stdout
    imported = set(out.stderr.split())
    assert "adcli._adl_parser" in imported
    assert not [m for m in imported if m.split(".")[0] in NOT_IMPORTED_AT_START or m in NOT_IMPORTED_AT_START]


def test_the_generated_module_is_the_one_parse_uses():
    assert type(_parser()).__module__ == _adl_parser.__name__


def test_every_lazily_imported_command_is_named_where_it_is_defined():
    import adcli.cli_calibrate   # noqa: F401  (importing registers their commands)
    import adcli.cli_inspect   # noqa: F401
    from adcli.cli import AdcliGroup, cli

    defined = {name: cli.commands[name].callback.__module__.rsplit(".", 1)[-1] for name in cli.commands
               if cli.commands[name].callback.__module__ != "adcli.cli"}
    assert defined == AdcliGroup.LAZY_COMMANDS


# -- the `adcli` process ends without the interpreter's teardown, its output and status intact --------

def as_adcli(tmp_path, *args, stdout=subprocess.PIPE):
    """Run main() in a script named `adcli`, as the console script does. Its atexit handler
    would print 'teardown' if the interpreter's usual exit ran."""
    script = tmp_path / "adcli"
    script.write_text("import atexit, sys\natexit.register(lambda: print('teardown', file=sys.stderr))\n"
                      "from adcli.cli import main\nsys.exit(main())\n")
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=stdout,
                            stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})


def test_the_command_prints_everything_and_its_status(tmp_path):
    process = as_adcli(tmp_path, "grad", ROOT / "samples" / "mlp.ad", "--json")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert json.loads(out)["kind"] == "jacobian" and err == b""
    process = as_adcli(tmp_path, "grad", tmp_path / "missing.ad")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and out == b"" and b"no such file" in err and b"teardown" not in err


def test_the_command_on_a_closed_pipe_still_ends_with_141(tmp_path):
    process = as_adcli(tmp_path, "grad", ROOT / "samples" / "mlp.ad", "--set", "n=200", "--full")
    process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read()
    process.wait(timeout=60)
    assert process.returncode == 141 and stderr == b"", stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_the_command_on_a_full_disk_still_ends_with_4(tmp_path):
    with open("/dev/full", "w") as full:
        process = as_adcli(tmp_path, "grad", ROOT / "samples" / "seed_example.ad", "--json", stdout=full)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 4, err
    assert json.loads(err)["error"]["message"] == "cannot write the output (No space left on device)"


def test_main_called_by_another_program_raises_system_exit():
    from adcli.cli import main

    with pytest.raises(SystemExit) as ended:
        main(["--version"])
    assert ended.value.code == 0


def _started_with_closed(tmp_path, descriptor: int, *args):
    """The adcli script run with file descriptor 1 or 2 closed before it starts."""
    script = tmp_path / "adcli"
    script.write_text("from adcli.cli import main\nimport sys\nsys.exit(main())\n")
    keep = 2 if descriptor == 1 else 1
    shell = f"exec {descriptor}>&-; exec {sys.executable} {script} " + " ".join(map(str, args))
    return subprocess.run(["sh", "-c", shell], stdout=subprocess.PIPE if keep == 1 else None,
                          stderr=subprocess.PIPE if keep == 2 else None, env={**os.environ, "NO_COLOR": "1"},
                          timeout=60)


def test_a_closed_standard_output_is_an_error_not_a_silent_success(tmp_path):
    """Python makes a closed stdout None, and click drops what is written to it: the result
    is lost, so the command says so (exit 4) instead of ending 0 or with a traceback."""
    done = _started_with_closed(tmp_path, 1, "grad", ROOT / "samples" / "seed_example.ad", "--json")
    assert done.returncode == 4, done.stderr
    assert json.loads(done.stderr)["error"]["message"] == "cannot write the output (standard output is closed)"


def test_a_closed_standard_error_leaves_a_good_run_alone(tmp_path):
    done = _started_with_closed(tmp_path, 2, "grad", ROOT / "samples" / "seed_example.ad", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["kind"] == "jacobian"
