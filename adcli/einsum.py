"""einsum: its subscripts, and the order its pairwise contractions run in.

`einsum("ij,jk,kl->il", A, B, C)` names every axis of every operand with a letter; a letter
shared by operands is one axis, summed over unless the output keeps it. adcli runs it as
NumPy's opt_einsum-style paths do, in two phases:

1. each operand alone: its diagonal taken where a letter repeats (`ii`), and the letters no
   other operand and not the output has summed away (`ij->` is a sum, `ii->` a trace);
2. pairwise contractions, in the order that makes the fewest multiplications, chosen by
   dynamic programming over subsets of operands (the matrix-chain order, generalised): a
   pair's intermediate keeps the letters that operands outside it or the output still need.

A pairwise step whose operands span letters L multiplies prod(size of L) times; when it
sums over letters whose sizes multiply to more than 1 it also adds as often (a matmul
(a×b)(b×c): a·b·c mults, 2·a·b·c flops, as adcli counts matmul). Summing n values alone is
n flops. The derivative rules (adcli.tangents.Linear.einsum) plan their own contractions
with the same rules, the tangent or cotangent one operand among the others.
"""
from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import NamedTuple

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"   # string.ascii_letters, without importing string
# Exact dynamic programming visits every split of every subset (3ⁿ of them): beyond this
# many operands a program is refused rather than planned for seconds.
MAX_OPERANDS = 10


class SubscriptError(Exception):
    """A problem with einsum's subscripts; `offset` is where in the text it is (None: the call)."""

    def __init__(self, message: str, offset: int | None = None, operand: int | None = None):
        super().__init__(message)
        self.offset = offset
        self.operand = operand


# This module's records are NamedTuples: immutable like frozen dataclasses, and defined in a tenth
# of the time (this module is imported at every start).
class Subscripts(NamedTuple):
    inputs: tuple          # one string of letters per operand
    output: str

    @property
    def text(self) -> str:
        return ",".join(self.inputs) + "->" + self.output


def _explain(ch: str) -> str:
    if ch == ".":
        return "an ellipsis ('...') is not supported in einsum: name every axis with a letter"
    return (f"'{ch}' cannot appear in einsum subscripts: letters name axes, ',' separates the "
            "operands and '->' leads to the output")


def parse(text: str, shapes: list) -> Subscripts:
    """The subscripts of einsum for operands of these shapes (NumPy's rules: without '->' the
    output is the letters that appear once, in alphabetical order). Spaces are ignored."""
    from .ir import format_shape

    ranks = [len(shape) for shape in shapes]
    arrow = text.find("->")
    left_end = arrow if arrow >= 0 else len(text)
    terms, starts, current, start = [], [], [], None
    for offset, ch in enumerate(text[:left_end]):
        if ch == ",":
            terms.append("".join(current))
            starts.append(offset if start is None else start)
            current, start = [], None
        elif ch in LETTERS:
            current.append(ch)
            start = offset if start is None else start
        elif not ch.isspace():
            raise SubscriptError(_explain(ch) if ch != "-" and ch != ">" else
                                 "'->' leads to the output, once", offset)
    terms.append("".join(current))
    starts.append(left_end if start is None else start)
    if len(terms) != len(ranks):
        raise SubscriptError(f"the subscripts name {len(terms)} operand{'s' if len(terms) != 1 else ''}, "
                             f"but einsum is given {len(ranks)}")
    for i, (term, rank) in enumerate(zip(terms, ranks)):
        if len(term) != rank:
            raise SubscriptError(f"operand {i + 1} is {format_shape(shapes[i])}, of {rank} "
                                 f"ax{'is' if rank == 1 else 'es'}, but its subscripts '{term}' name "
                                 f"{len(term)}", starts[i], operand=i)
    counts = {}
    for term in terms:
        for ch in term:
            counts[ch] = counts.get(ch, 0) + 1
    if arrow < 0:
        output = "".join(sorted(ch for ch, n in counts.items() if n == 1))
    else:
        output, seen = [], set()
        for offset in range(arrow + 2, len(text)):
            ch = text[offset]
            if ch.isspace():
                continue
            if ch not in LETTERS:
                raise SubscriptError(_explain(ch) if ch not in "->" else "'->' leads to the output, once",
                                     offset)
            if ch in seen:
                raise SubscriptError(f"the output letter '{ch}' is repeated: an output axis is named once",
                                     offset)
            if ch not in counts:
                raise SubscriptError(f"the output letter '{ch}' names no axis of any operand", offset)
            seen.add(ch)
            output.append(ch)
        output = "".join(output)
    if len(counts) >= len(LETTERS):
        raise SubscriptError("einsum may use at most 51 different letters (one is kept for the "
                             "derivative's directions)")
    return Subscripts(tuple(terms), output)


def from_text(text: str) -> Subscripts:
    """Subscripts as Subscripts.text writes them (a node's attribute)."""
    left, output = text.split("->")
    return Subscripts(tuple(left.split(",")), output)


def letter_sizes(subs: Subscripts, shapes) -> dict:
    """Each letter's size, or SubscriptError naming the operands that disagree."""
    from .ir import format_shape

    sizes, where = {}, {}
    for i, (term, shape) in enumerate(zip(subs.inputs, shapes)):
        for ch, n in zip(term, shape):
            if ch in sizes and sizes[ch] != n:
                first = where[ch]
                places = (f"operand {first + 1} ({format_shape(shapes[first])})" if first != i else "")
                raise SubscriptError(f"the letter '{ch}' names axes of different sizes, {sizes[ch]} and {n}, in "
                                     f"{places + ' and ' if places else ''}operand {i + 1} "
                                     f"({format_shape(shape)}): one letter is one axis of one size "
                                     "(einsum does not broadcast)", operand=i)
            sizes.setdefault(ch, n)
            where.setdefault(ch, i)
    return sizes


def unique(term: str) -> str:
    """The letters of a term, each once, in order (the diagonal of `ii` is `i`)."""
    return "".join(dict.fromkeys(term))


# -- the contraction order ------------------------------------------------------------------------------

class Step(NamedTuple):
    """One pairwise contraction: slots `left` and `right` (operands 0..n-1, then the results of
    earlier steps in order) into the next slot, as `spec` (einsum subscripts of the two)."""
    left: int
    right: int
    spec: str
    mults: int
    flops: int


class Plan(NamedTuple):
    reduces: tuple     # per operand: the subscripts of its diagonal and sums ("ii->i", "ij->i"), or None
    reduce_flops: tuple
    steps: tuple       # Step, in the order they run
    terms: tuple       # each operand's letters after its reduce
    output: str

    @property
    def mults(self) -> int:
        return sum(s.mults for s in self.steps)

    @property
    def flops(self) -> int:
        return sum(self.reduce_flops) + sum(s.flops for s in self.steps)


def step_cost(letters_a: str, letters_b: str, kept: str, sizes: dict) -> tuple:
    """(mults, flops) of contracting two operands into the letters `kept`."""
    union = set(letters_a) | set(letters_b)
    mults = prod(sizes[ch] for ch in union)
    summed = prod(sizes[ch] for ch in union - set(kept))
    return mults, (2 * mults if summed > 1 else mults)


def _reduced(terms, output):
    """Each term's letters after its diagonal and its lone sums, and the reduce's subscripts."""
    reduced, specs = [], []
    for i, term in enumerate(terms):
        others = set(output).union(*(terms[j] for j in range(len(terms)) if j != i))
        kept = "".join(ch for ch in unique(term) if ch in others)
        reduced.append(kept)
        specs.append(None if kept == term else f"{term}->{kept}")
    return tuple(reduced), tuple(specs)


def plan(terms: tuple, output: str, sizes: dict, free: int | None = None,
         left_to_right: bool = False) -> Plan:
    """The contraction of operands with these letters into `output`, in the order of fewest
    mults (ties: fewest flops, then the first found). An operand `free` is a selection
    (a Seed, adcli.tangents): a step that contracts it as it is costs nothing. `left_to_right`
    gives the order ((0 1) 2) ... instead, for comparison."""
    return _plan(tuple(terms), output, tuple(sorted(sizes.items())), free, left_to_right)


@lru_cache(maxsize=4096)
def _plan(terms, output, size_items, free, left_to_right) -> Plan:
    sizes = dict(size_items)
    n = len(terms)
    if n == 1:   # one operand: its diagonal, sums and transposition in one reduce
        term = terms[0]
        flops = 0 if set(output) == set(term) else _reduce_flops(term, sizes)
        return Plan((None if term == output else f"{term}->{output}",), (flops,), (), (output,), output)
    reduced, specs = _reduced(terms, output)
    reduce_flops = tuple(0 if spec is None or kept == unique(t) else _reduce_flops(t, sizes)
                         for t, spec, kept in zip(terms, specs, reduced))
    full = (1 << n) - 1
    order = {ch: i for i, ch in enumerate(dict.fromkeys("".join(terms) + output))}

    def letters_of(mask: int) -> str:
        inside = set().union(*(reduced[i] for i in range(n) if mask >> i & 1))
        if mask == full:
            return output
        outside = set(output).union(*(reduced[i] for i in range(n) if not mask >> i & 1))
        return "".join(sorted(inside & outside, key=order.get))

    letters = {}
    best = {}      # mask -> (mults, flops, tree)
    for i in range(n):
        letters[1 << i] = reduced[i]
        best[1 << i] = (0, 0, i)

    def cost(a: int, b: int, kept: str):
        if free is not None and (a == 1 << free or b == 1 << free):
            return 0, 0
        return step_cost(letters[a], letters[b], kept, sizes)

    if left_to_right:
        mask = 1
        for i in range(1, n):
            new = mask | 1 << i
            letters[new] = letters_of(new)
            m, f = cost(mask, 1 << i, letters[new])
            best[new] = (best[mask][0] + m, best[mask][1] + f, (best[mask][2], i))
            mask = new
    else:
        for mask in range(1, full + 1):
            if mask & (mask - 1) == 0:
                continue
            letters[mask] = letters_of(mask)
            low = mask & -mask
            rest = mask ^ low
            found = None
            sub = rest
            while True:   # every split {A ∋ lowest operand, B}, B non-empty
                a = low | sub
                b = mask ^ a
                if b:
                    m, f = cost(a, b, letters[mask])
                    total = (best[a][0] + best[b][0] + m, best[a][1] + best[b][1] + f)
                    if found is None or total < found[:2]:
                        found = total + ((best[a][2], best[b][2]),)
                if sub == 0:
                    break
                sub = (sub - 1) & rest
            best[mask] = found

    steps = []

    def emit(tree) -> tuple:
        """(slot, mask) of a subtree, its steps appended in order."""
        if isinstance(tree, int):
            return tree, 1 << tree
        (sa, ma), (sb, mb) = emit(tree[0]), emit(tree[1])
        mask = ma | mb
        m, f = cost(ma, mb, letters[mask])
        steps.append(Step(sa, sb, f"{letters[ma]},{letters[mb]}->{letters[mask]}", m, f))
        return n + len(steps) - 1, mask

    emit(best[full][2])
    return Plan(specs, reduce_flops, tuple(steps), reduced, output)


def _reduce_flops(term: str, sizes: dict) -> int:
    """A diagonal moves; a sum of the (diagonal's) values is one flop per value."""
    return prod(sizes[ch] for ch in unique(term))


def run(xp, plan: Plan, operands):
    """Evaluate a plan with xp.einsum, each intermediate dropped after its one use."""
    slots = [x if spec is None else xp.einsum(spec, x) for spec, x in zip(plan.reduces, operands)]
    for step in plan.steps:
        a, b = slots[step.left], slots[step.right]
        slots[step.left] = slots[step.right] = None
        slots.append(xp.einsum(step.spec, a, b))
    return slots[-1]


def scratch(plan: Plan, sizes: dict) -> int:
    """The most scalars of reduced operands and intermediates alive at once besides the
    result (while a step runs, its two operands and its result), for the memory prediction."""
    if not plan.steps:
        return 0
    size = [prod(sizes[ch] for ch in term) if spec is not None else 0
            for term, spec in zip(plan.terms, plan.reduces)]
    alive = peak = sum(size)
    for index, step in enumerate(plan.steps):
        out = 0 if index == len(plan.steps) - 1 else prod(sizes[ch] for ch in step.spec.split("->")[1])
        peak = max(peak, alive + out)
        alive += out - size[step.left] - size[step.right]
        size.append(out)
    return peak


def tree_text(plan: Plan, names: list) -> str:
    """The order as nested brackets of operand names: ((A (B C)) ((D E) F))."""
    parts = list(names)
    for step in plan.steps:
        parts.append(f"({parts[step.left]} {parts[step.right]})")
    return parts[-1] if plan.steps else parts[0]


class Summary(NamedTuple):
    """What `show` and `compare` print about one einsum node."""
    subscripts: str
    order: str           # the chosen order, as nested brackets
    mults: int
    left_to_right_order: str
    left_to_right_mults: int
    steps: tuple         # (spec, mults) per pairwise step of the chosen order


def summary(subscripts: str, shapes, names: list) -> Summary:
    subs = from_text(subscripts)
    sizes = letter_sizes(subs, shapes)
    best = plan(subs.inputs, subs.output, sizes)
    naive = plan(subs.inputs, subs.output, sizes, left_to_right=True)
    return Summary(subscripts, tree_text(best, names), best.mults, tree_text(naive, names), naive.mults,
                   tuple((s.spec, s.mults) for s in best.steps))


def operand_name(graph, node_id: int, longest: int = 16) -> str:
    """An operand as a reader knows it: the input's or const's name, its expression's text
    when short, else its node (v7)."""
    node = graph.nodes[node_id]
    if node.op in ("input", "const") and "name" in node.attrs:
        return node.attrs["name"]
    text = " ".join(node.text.split())
    return text if text and len(text) <= longest else node.var


def report(graph) -> list:
    """For each einsum of the graph (loop bodies aside): where it is, its subscripts, the order
    chosen with its mults and the left-to-right order's, and the chosen order's steps (what
    `adcli show` prints and `adcli compare` and its JSON's `contractions` report)."""
    import os

    entries = []
    for node in graph.nodes:
        if node.op != "einsum":
            continue
        names = [operand_name(graph, i) for i in node.inputs]
        shapes = [graph.nodes[i].shape for i in node.inputs]
        s = summary(node.attrs["subscripts"], shapes, names)
        entries.append({"node": node.var, "file": os.path.basename(graph.filename), "line": node.line,
                        "column": node.column, "subscripts": s.subscripts, "operands": names,
                        "order": s.order, "mults": s.mults, "left_to_right_order": s.left_to_right_order,
                        "left_to_right_mults": s.left_to_right_mults,
                        "steps": [{"subscripts": spec, "mults": m} for spec, m in s.steps]})
    return entries
