"""Text → AST: the Lark grammar in grammars/adl.lark (its parser generated into
adcli/_adl_parser.py) and a Transformer.

The AST is deliberately small (``Ast`` records with a kind, children and a
source span); adcli.build turns it into the typed graph IR.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from .errors import AdError, ResourceProblem, SourceLocation, SyntaxProblem

GRAMMAR_NAME = "adl.lark"
MAX_SOURCE_BYTES = 10_000_000   # source text read by default (--max-source-bytes raises it)
MAX_NESTING = 4_000             # levels of nested expressions: -(-(-x)), sin(sin(x)), x+x+…+x
BOM = "\ufeff"                  # a UTF-8 byte-order mark some editors write first


def grammar_path():
    """The grammar shipped inside the package, else the checkout's grammars/ (a Path)."""
    from pathlib import Path   # here, not at start-up: parsing uses the generated tables

    packaged = Path(__file__).parent / "grammars" / GRAMMAR_NAME
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / "grammars" / GRAMMAR_NAME


@dataclass(slots=True)
class Ast:
    """One statement or expression. Its source text is not copied: `start`/`end`
    are offsets into `source` (the whole file's text, shared by every node), and
    `text` slices it on demand, so a long expression costs memory linear in its
    length, not quadratic."""

    kind: str
    args: tuple
    line: int = 0
    column: int = 0
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    source: str = field(default="", compare=False, repr=False)
    depth: int = field(default=1, compare=False, repr=False)   # nesting levels below, this one included

    @property
    def text(self) -> str:
        return self.source[self.start:self.end]

    def __repr__(self) -> str:  # compact, for debugging and tests
        return f"{self.kind}{self.args!r}"


class _BracketNewlines:
    """Post-lexer: newlines inside ( ) or [ ] do not end a statement."""

    always_accept = ("_NL",)  # the contextual lexer must still hand us newlines

    def process(self, stream):
        depth = 0
        for token in stream:
            if token.type in ("LPAR", "LSQB"):
                depth += 1
            elif token.type in ("RPAR", "RSQB"):
                depth = max(depth - 1, 0)
            elif token.type == "_NL" and depth:
                continue
            yield token


@lru_cache(maxsize=1)
def _parser():
    # The LALR tables of grammars/adl.lark, generated into the package with Lark's runtime
    # (grammars/generate_parser.py): no `lark` import, no grammar analysis per process.
    from . import _adl_parser

    return _adl_parser.Lark_StandAlone(postlex=_BracketNewlines())


_SYMBOLS = {
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "PLUS": "'+'",
    "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'", "CIRCUMFLEX": "'^'",
    "DOT": "'.'", "COMPARE": "a comparison", "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "end of line",
    "$END": "end of file",
}


def _describe_expected(names) -> str:
    described = []
    for name in sorted(names):
        if name in _SYMBOLS:
            described.append(_SYMBOLS[name])
        elif name.isupper():  # keyword terminals are named after their text
            described.append(f"'{name.lower()}'")
        else:
            described.append(name)
    described = sorted(set(described))
    if len(described) > 8:
        described = described[:8] + ["…"]
    return ", ".join(described)


STATEMENT_KEYWORDS = ("dim", "input", "const", "output", "def", "repeat", "return")


def _keyword_hint(lines, line: int, column: int) -> str | None:
    """'did you mean input?' when the error sits right after a line's first word and
    that word is a near miss of a statement keyword (`inptu x = 2.0`)."""
    from difflib import get_close_matches

    source = lines[line - 1] if 0 < line <= len(lines) else ""
    words = source[:column - 1].split()
    if len(words) != 1 or not words[0].isidentifier() or words[0] in STATEMENT_KEYWORDS:
        return None
    close = get_close_matches(words[0], STATEMENT_KEYWORDS, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? (a statement starts with {', '.join(STATEMENT_KEYWORDS)} " \
           "or a name and '=')" if close else None


def _token_text(token) -> str:
    if token.type == "_NL":
        return "end of line"
    if token.type == "$END":
        return "end of file"
    return repr(str(token))


def strip_bom(text: str) -> str:
    """The text without a leading UTF-8 byte-order mark (editors hide it; columns ignore it)."""
    return text[1:] if text.startswith(BOM) else text


def check_statement_count(text: str, limit: int, filename: str = "<input>") -> None:
    """Refuse a file of more than `limit` statements before parsing it (Lark takes
    minutes and gigabytes over a million lines). Counted cheaply: lines with content
    (other than a block's closing brace) outside brackets and not continued with a
    backslash; stops at the first one over."""
    if text.count("\n") < limit:
        return
    count = depth = 0
    continued = False
    for number, raw in enumerate(_lines(text), 1):
        code = raw.split("#", 1)[0]
        starts = not continued and depth == 0 and code.strip() not in ("", "}")   # "}" ends a block
        depth = max(depth + code.count("(") + code.count("[") - code.count(")") - code.count("]"), 0)
        continued = code.rstrip().endswith("\\")
        if starts:
            count += 1
            if count > limit:
                raise ResourceProblem(
                    f"the file has more than {limit:,} statements (the node limit)",
                    SourceLocation(filename, number, 1, raw),
                    hint="split the program, or raise --node-limit")


def _lines(text: str):
    """The lines of `text`, one at a time (not a list of all of them)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            end = len(text)
        yield text[start:end].rstrip("\r")
        start = end + 1


def parse(text: str, filename: str = "<input>", max_statements: int | None = None) -> list[Ast]:
    """Parse .ad source into a list of statement ASTs, or raise SyntaxProblem.
    With `max_statements`, a file of more statements is refused before parsing."""
    from ._adl_parser import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken,
                              VisitError)

    text = strip_bom(text)
    if max_statements is not None:
        check_statement_count(text, max_statements, filename)
    if not text.endswith("\n"):
        text += "\n"
    lines = text.splitlines()

    def location(line: int, column: int) -> SourceLocation:
        source = lines[line - 1] if 0 < line <= len(lines) else ""
        return SourceLocation(filename, line, column, source)

    try:
        tree = _parser().parse(text)
    except UnexpectedCharacters as exc:
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else "?"
        raise SyntaxProblem(f"unexpected character {char!r}",
                            location(exc.line, exc.column)) from None
    except UnexpectedEOF as exc:
        last = len(lines)
        raise SyntaxProblem(
            f"unexpected end of file; expected {_describe_expected(exc.expected)}"
            " (an unclosed bracket or block?)",
            location(last, len(lines[-1]) + 1 if lines else 1)) from None
    except UnexpectedToken as exc:
        token = exc.token
        if token.type == "$END":
            line = len(lines)
            column = len(lines[-1]) + 1 if lines else 1
            problem = "unexpected end of file (an unclosed bracket or block?)"
        else:
            line, column = token.line, token.column
            problem = f"unexpected {_token_text(token)}"
        raise SyntaxProblem(
            f"{problem}; expected {_describe_expected(exc.accepts or exc.expected)}",
            location(line, column), hint=_keyword_hint(lines, line, column)) from None
    except UnexpectedInput as exc:  # any other parse failure
        raise SyntaxProblem("could not parse this", location(exc.line, exc.column)) from None
    try:
        return _ToAst(text).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, AdError):
            problem = exc.orig_exc
            if problem.location is not None:
                problem.location = location(problem.location.line, problem.location.column)
                problem.location.file = filename
            raise problem from None
        if isinstance(exc.orig_exc, RecursionError):
            raise ResourceProblem(f"this file nests expressions more deeply than adcli can follow "
                                  f"(at most {MAX_NESTING:,} levels)") from None
        raise


def _make_transformer():
    from ._adl_parser import Transformer_NonRecursive, v_args

    @v_args(meta=True)
    class ToAst(Transformer_NonRecursive):   # a sum of 5,000 terms is a tree 5,000 deep
        def __init__(self, text: str):
            super().__init__()
            self._text = text

        def _ast(self, kind, meta, *args):
            # expressions nest; a statement only holds its expressions (or a block's statements)
            depth = (kind not in _STATEMENTS) + max((_depth(a) for a in args), default=0)
            if getattr(meta, "empty", True):
                return Ast(kind, args, depth=depth)
            if depth > MAX_NESTING:   # refused here, with a caret, not by a RecursionError later
                raise ResourceProblem(
                    "this statement nests expressions more deeply than adcli can follow "
                    f"({depth:,} levels here; at most {MAX_NESTING:,})",
                    SourceLocation("", meta.line, meta.column), hint="split it into several assignments")
            return Ast(kind, args, meta.line, meta.column, meta.start_pos, meta.end_pos,
                       self._text, depth)

        # statements
        def start(self, meta, children):
            return list(children)

        def block(self, meta, children):
            return list(children)

        def params(self, meta, children):
            return [str(c) for c in children]

        def dim_stmt(self, meta, c):
            return self._ast("dim", meta, str(c[0]), c[1])

        def input_stmt(self, meta, c):
            return self._ast("input", meta, str(c[0]), c[1], c[2])

        def const_stmt(self, meta, c):
            return self._ast("const", meta, str(c[0]), c[1], c[2])

        def output_stmt(self, meta, c):
            names = tuple(str(n) for n in c[:-1])   # several: `output a, b = f(x)`
            return self._ast("output", meta, names[0] if len(names) == 1 else names, c[-1])

        def assign_stmt(self, meta, c):
            return self._ast("assign", meta, str(c[0]), c[1])

        def def_expr(self, meta, c):
            values = c[2:]   # one expression, or several: a tuple return
            first, last = values[0], values[-1]
            return self._ast("def", meta, str(c[0]), c[1] or [],
                             [Ast("return", tuple(values), first.line, first.column, first.start, last.end,
                                  first.source, max(v.depth for v in values))])

        def def_block(self, meta, c):
            return self._ast("def", meta, str(c[0]), c[1] or [], c[2])

        def repeat_stmt(self, meta, c):
            count, index, body = c   # index: the NAME after `as`, or None
            if index is not None:    # kept as a name expression, for carets at it
                index = Ast("name", (str(index),), index.line, index.column, index.start_pos,
                            index.end_pos, self._text)
            return self._ast("repeat", meta, count, body, index)

        def return_stmt(self, meta, c):
            return self._ast("return", meta, *c)   # several expressions: a tuple return

        def unpack_stmt(self, meta, c):
            return self._ast("unpack", meta, tuple(str(n) for n in c[:-1]), c[-1])

        def scalar_type(self, meta, c):
            return self._ast("type", meta)

        def vec_type(self, meta, c):
            return self._ast("type", meta, c[0])

        def mat_type(self, meta, c):
            return self._ast("type", meta, c[0], c[1])

        def tensor_type(self, meta, c):
            return self._ast("type", meta, *(x for x in c if x is not None))

        def int_type(self, meta, c):
            return self._ast("itype", meta)

        def ivec_type(self, meta, c):
            return self._ast("itype", meta, c[0])

        def imat_type(self, meta, c):
            return self._ast("itype", meta, c[0], c[1])

        # expressions
        def number(self, meta, c):
            return self._ast("number", meta, float(c[0]))

        def name(self, meta, c):
            return self._ast("name", meta, str(c[0]))

        def string(self, meta, c):   # the text between the quotes
            return self._ast("string", meta, str(c[0])[1:-1])

        def _binary(op):
            def rule(self, meta, c):
                return self._ast("binop", meta, op, c[0], c[1])
            return rule

        add = _binary("+")
        sub = _binary("-")
        mul = _binary("*")
        div = _binary("/")
        matmul = _binary("@")
        pow = _binary("^")

        def neg(self, meta, c):
            return self._ast("neg", meta, c[0])

        def compare(self, meta, c):
            # c is [a, op, b] or, chained, [a, op, b, op, c, ...]: refused at the second operator
            if len(c) > 3:
                op = c[3]
                raise SyntaxProblem(f"comparisons do not chain: write (a {c[1]} b) and (b {op} c)",
                                    SourceLocation("", op.line, op.column))
            return self._ast("compare", meta, str(c[1]), c[0], c[2])

        def logical_and(self, meta, c):
            return self._ast("logic", meta, "and", c[0], c[1])

        def logical_or(self, meta, c):
            return self._ast("logic", meta, "or", c[0], c[1])

        def logical_not(self, meta, c):
            return self._ast("not", meta, c[0])

        def index(self, meta, c):
            return self._ast("index", meta, c[0], c[1])

        def subscripts(self, meta, c):
            return list(c)

        def slice(self, meta, c):   # lo:hi or lo:hi:step (a missing part is None)
            return self._ast("slice", meta, c[0], c[1], c[2] if len(c) > 2 else None)

        def attribute(self, meta, c):
            return self._ast("attr", meta, c[0], str(c[1]))

        def list(self, meta, c):
            return self._ast("list", meta, tuple(x for x in c if x is not None))

        def tuple(self, meta, c):
            return self._ast("tuple", meta, tuple(x for x in c if x is not None))

        def call(self, meta, c):
            positional, keywords = _arguments(c[1])
            return self._ast("call", meta, str(c[0]), positional, keywords)

        def apply(self, meta, c):   # grad(f)(x): the callee is itself a call
            positional, keywords = _arguments(c[1])
            return self._ast("apply", meta, c[0], positional, keywords)

        def args(self, meta, c):
            return [x for x in c if x is not None]

        def kwarg(self, meta, c):
            return (str(c[0]), c[1])

    return ToAst


def _arguments(given) -> tuple:
    """A call's arguments: (positional, keywords), a positional one after a keyword refused."""
    positional, keywords = [], {}
    for arg in given or []:
        if isinstance(arg, tuple):
            if arg[0] in keywords:
                raise SyntaxProblem(f"keyword argument {arg[0]!r} given twice",
                                    SourceLocation("", arg[1].line, arg[1].column))
            keywords[arg[0]] = arg[1]
        else:
            if keywords:
                raise SyntaxProblem("a positional argument follows a keyword argument",
                                    SourceLocation("", arg.line, arg.column))
            positional.append(arg)
    return tuple(positional), keywords


_STATEMENTS = frozenset(("dim", "input", "const", "output", "assign", "unpack", "def", "repeat", "return",
                         "type", "itype"))


def _depth(arg) -> int:
    """Nesting depth of a transformer child: an Ast, or a list, tuple or dict of them."""
    if isinstance(arg, Ast):
        return arg.depth
    if isinstance(arg, (list, tuple)):
        return max((_depth(a) for a in arg), default=0)
    if isinstance(arg, dict):
        return max((_depth(a) for a in arg.values()), default=0)
    return 0


class _LazyToAst:
    _cls = None

    def __call__(self, text):
        if _LazyToAst._cls is None:
            _LazyToAst._cls = _make_transformer()
        return _LazyToAst._cls(text)


_ToAst = _LazyToAst()
