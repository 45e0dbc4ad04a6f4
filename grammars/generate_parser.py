"""Writes adcli/_adl_parser.py: Lark's stand-alone LALR(1) parser for grammars/adl.lark.

    python grammars/generate_parser.py            # rewrite it after changing the grammar
    python grammars/generate_parser.py --check    # exit 1 if it was made from another grammar

The generated module holds the parse tables and the part of Lark's runtime that runs them,
so parsing a file at start-up imports no `lark` (whose import and grammar loading cost
about 30 ms per process). Lark numbers the parser's states in an order that changes from
run to run, so the file is not reproducible byte for byte: its header records the grammar's
sha256 instead, and tests/test_startup.py checks that digest and that the module
parses like a Lark parser built from the grammar.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR = ROOT / "grammars" / "adl.lark"
TARGET = ROOT / "adcli" / "_adl_parser.py"
# The options adcli.parser relies on: positions for carets, None for a missing [optional].
OPTIONS = ["--propagate_positions", "--maybe_placeholders"]
COMMAND = "python grammars/generate_parser.py"


def grammar_digest(grammar: bytes) -> str:
    return hashlib.sha256(grammar).hexdigest()


def header(grammar: bytes, lark_version: str) -> str:
    return (
        "# GENERATED FILE: do not edit. Lark's stand-alone LALR(1) parser for grammars/adl.lark\n"
        f"# (lark {lark_version}, options {' '.join(OPTIONS)}); grammar sha256 {grammar_digest(grammar)}\n"
        f"# Regenerate after changing the grammar: {COMMAND}\n"
        "# The code below is Lark's (MPL-2.0, see its licence notice); the tables come from adl.lark,\n"
        "# and grammars/generate_parser.py patched it where PATCHES there says why.\n"
    )


# (text in Lark's output, its replacement, why). Each must be found exactly once: a lark whose
# output differs stops the generator instead of being patched blindly.
PATCHES = [
    ("from typing import (\n",
     "from typing import cast  # (patched in: Transformer_NonRecursive calls it)\nfrom typing import (\n",
     "lark 1.3.1's stand-alone output calls typing.cast without importing it"),
    ("import logging\n", "",
     "importing logging costs about 2 ms a start"),
    ('logger: logging.Logger = logging.getLogger("lark")\nlogger.addHandler(logging.StreamHandler())\n',
     "class _SilentLogger:   # (patched in) Lark set its logger to CRITICAL and logs below it\n"
     "    def _drop(self, *args, **kwargs):\n"
     "        pass\n"
     "    debug = info = warning = exception = _drop\n\n\n"
     "logger = _SilentLogger()\n",
     "the same silence without the logging module"),
    ("logger.setLevel(logging.CRITICAL)\n", "",
     "(the silent logger has no level)"),
    ("import pickle, zlib, base64\nDATA = (", "import pickle\nDATA = (",
     "zlib and base64 decode compressed tables (--compress), which these are not"),
    ('__version__ = "', 'from __future__ import annotations  # (patched in)\n__version__ = "',
     "annotations kept as text, not evaluated while the module loads: about 0.8 ms a start"),
    ('        lexer_by_tokens: Dict[FrozenSet[str], AbstractBasicLexer] = {}\n        self.lexers = {}\n        for state, accepts in states.items():\n            key = frozenset(accepts)\n            try:\n                lexer = lexer_by_tokens[key]\n            except KeyError:\n                accepts = set(accepts) | set(conf.ignore) | set(always_accept)\n                lexer_conf = copy(trad_conf)\n                lexer_conf.terminals = [terminals_by_name[n] for n in accepts if n in terminals_by_name]\n                lexer = self.BasicLexer(lexer_conf, comparator)\n                lexer_by_tokens[key] = lexer\n\n            self.lexers[state] = lexer\n', "        lexer_by_tokens: Dict[FrozenSet[str], AbstractBasicLexer] = {}\n\n        def make(state):   # (patched in: a state's lexer is made when the parser first reaches it)\n            key = frozenset(states[state])\n            try:\n                return lexer_by_tokens[key]\n            except KeyError:\n                accepts = set(states[state]) | set(conf.ignore) | set(always_accept)\n                lexer_conf = copy(trad_conf)\n                lexer_conf.terminals = [terminals_by_name[n] for n in accepts if n in terminals_by_name]\n                lexer = lexer_by_tokens[key] = self.BasicLexer(lexer_conf, comparator)\n                return lexer\n\n        self.lexers = _StateLexers(make)\n",
     "a lexer per parser state (64) was made while loading, though a file reaches a dozen: "
     "made when first reached (their terminals were validated when the module was generated), ~1.5 ms"),
    ("class ContextualLexer(Lexer):\n",
     "class _StateLexers(dict):   # (patched in) parser state -> its lexer, made on first use\n"
     "    def __init__(self, make):\n"
     "        super().__init__()\n"
     "        self.make = make\n\n"
     "    def __missing__(self, state):\n"
     "        lexer = self[state] = self.make(state)\n"
     "        return lexer\n\n\n"
     "class ContextualLexer(Lexer):\n",
     "(the lazy table the patch above uses)"),
    ("class TextSlice(Generic[AnyStr]):\n    #--\n",
     'class TextSlice(Generic[AnyStr]):\n    """A slice of a text (patched in: a docstring spares dataclass the signature it '
     'would otherwise write as one)."""\n',
     "a dataclass without a docstring inspects its own signature to make one: about 0.4 ms a start"),
]


def patched(tables: str) -> str:
    for old, new, why in PATCHES:
        if tables.count(old) != 1:
            raise SystemExit(f"Lark's output has {tables.count(old)} copies of {old!r} (expected one; the "
                             f"patch was: {why}): update PATCHES in grammars/generate_parser.py")
        tables = tables.replace(old, new)
    return tables


def generate() -> str:
    """The module's text, made by the installed lark."""
    import lark

    grammar = GRAMMAR.read_bytes()
    tables = subprocess.run([sys.executable, "-m", "lark.tools.standalone", *OPTIONS, str(GRAMMAR)],
                            check=True, capture_output=True, text=True).stdout
    return header(grammar, lark.__version__) + patched(tables)


def recorded_digest(module_text: str) -> str | None:
    """The grammar sha256 a generated module's header names, or None."""
    match = re.search(r"grammar sha256 ([0-9a-f]{64})", module_text[:1000])
    return match.group(1) if match else None


def is_stale() -> bool:
    """True if adcli/_adl_parser.py is missing or was generated from another grammar."""
    current = TARGET.read_text() if TARGET.exists() else ""
    return recorded_digest(current) != grammar_digest(GRAMMAR.read_bytes())


def main(argv: list[str]) -> int:
    if "--check" in argv:
        if is_stale():
            print(f"adcli/_adl_parser.py was not generated from {GRAMMAR}: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(generate())
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
