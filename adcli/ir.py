"""The graph IR: a flat list of nodes in topological order with static shapes.

Each ``Node`` is one equation ``v<id> = op(inputs...)``. Inputs and consts are
nodes too (ops ``input`` and ``const``), so interpreters walk a single list.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

Shape = tuple


@dataclass(eq=False)   # compared by identity (no field-by-field __eq__ to generate at start-up)
class Node:
    """One equation of the graph: `op` applied to the values of `inputs` (node ids), of
    `shape`, with the op's `attrs`."""

    id: int
    op: str
    inputs: tuple
    shape: Shape
    attrs: dict = field(default_factory=dict)
    line: int = 0
    column: int = 0
    # the source expression this node came from: offsets into `source`, the file's
    # text (shared, never copied), sliced on demand by `text`
    start: int = field(default=0, repr=False, compare=False)
    end: int = field(default=0, repr=False, compare=False)
    source: str = field(default="", repr=False, compare=False)
    # for data-movement ops: per input (out_positions, in_positions) index arrays on
    # the host, out.flat[out_pos] = input.flat[in_pos]; or a recipe (a callable) that
    # makes them when a run first reads `moves` (adcli.build.index_maps)
    _moves: object = field(default=None, repr=False, compare=False)
    _move_counts: tuple = field(default=(), repr=False, compare=False)   # set with the recipe
    _index_itemsize: int = field(default=8, repr=False, compare=False)   # int32 or int64 maps
    # repeat: (repeat id, iteration, count, line, position in the iteration) of the
    # outermost `repeat` this node was unrolled from, or None. Used to draw collapsed graphs.
    repeat: tuple | None = field(default=None, repr=False, compare=False)
    # an `index` node of a loop body whose key follows the loop index (X[t], Ws[t*h:(t+1)*h]):
    # per part of its key, how far that part moves per iteration; attrs["key"] is
    # iteration 0's (adcli.build.Builder._moving_index, adcli.interpret.Runner.evaluate)
    key_steps: tuple | None = field(default=None, repr=False, compare=False)
    key_index: str | None = field(default=None, repr=False, compare=False)   # the index's name (t)

    @property
    def text(self) -> str:
        return self.source[self.start:self.end]

    @property
    def moves(self) -> list | None:
        """The index maps, made from their recipe on first use and then kept."""
        if callable(self._moves):
            self._moves = self._moves()
        return self._moves

    @moves.setter
    def moves(self, value):
        self._moves = value

    def abstract_moves(self) -> list:
        """Stand-ins for `moves` when only counting (no arrays are made): per input a
        pair of Positions whose len() is the number of elements that input moves."""
        return [(Positions(c), Positions(c)) for c in self.move_counts]

    @property
    def move_counts(self) -> tuple:
        """Elements each input moves: every output element comes from exactly one input
        element (index, transpose, reshape: one input; concat, stack: all of each)."""
        return self._move_counts or (self.size,)

    def index_bytes(self) -> int:
        """Host bytes of the index maps (out_pos and in_pos per input)."""
        return 2 * self._index_itemsize * sum(self.move_counts)

    @property
    def size(self) -> int:
        return prod(self.shape)

    @property
    def var(self) -> str:
        """The name users see: v1, v2, … (1-based, as in evaluation traces)."""
        return f"v{self.id + 1}"

    def __repr__(self) -> str:
        args = " ".join(f"v{i + 1}" for i in self.inputs)
        return f"{self.var}:{format_shape(self.shape)} = {self.op} {args}".rstrip()


@dataclass(eq=False)   # compared by identity (no field-by-field __eq__ to generate at start-up)
class Graph:
    """A program as a flat list of nodes in evaluation order, with its named inputs,
    consts and outputs."""

    nodes: list
    inputs: dict            # input name -> node id, in declaration order
    consts: dict            # const name -> node id
    outputs: dict           # output name -> node id, in declaration order
    dims: dict              # dim name -> int
    filename: str = "<input>"
    source: str = ""
    input_defaults: dict = field(default_factory=dict)   # name -> host array or None
    input_lines: dict = field(default_factory=dict)      # name -> line number
    unrolled: list = field(default_factory=list)         # (line, why) of each repeat written out

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def shape_of(self, name: str) -> Shape:
        if name in self.inputs:
            return self.nodes[self.inputs[name]].shape
        return self.nodes[self.outputs[name]].shape


class Positions:
    """The length of an index array that is not made (predictions only count)."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def format_shape(shape: Shape) -> str:
    if len(shape) == 0:
        return "scalar"
    if len(shape) == 1:
        return f"vec[{shape[0]}]"
    if len(shape) == 2:
        return f"mat[{shape[0]}, {shape[1]}]"
    return "tensor[" + ", ".join(str(d) for d in shape) + "]"


def with_article(kind: str) -> str:
    """'a vec[3]', 'a scalar', 'an ivec[3]', 'an int', 'an imat[2, 2]', 'a tensor[…]'."""
    return ("an " if kind[:1] in "aeiou" else "a ") + kind


def broadcast_shapes(a: Shape, b: Shape) -> Shape | None:
    """NumPy's broadcasting of two shapes, or None when they do not broadcast."""
    result = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da != db and 1 not in (da, db):
            return None
        result.append(da if db == 1 else db)   # the one that is not 1 (a 0 included)
    return tuple(reversed(result))


def element_labels(name: str, shape: Shape) -> list[str]:
    """Row-major labels of a value's elements: x, x[0], W[2,0]."""
    if len(shape) == 0:
        return [name]
    if len(shape) == 1:
        return [f"{name}[{i}]" for i in range(shape[0])]
    labels = []

    def walk(prefix, dims):
        if not dims:
            labels.append(f"{name}[{','.join(map(str, prefix))}]")
            return
        for i in range(dims[0]):
            walk(prefix + [i], dims[1:])

    walk([], list(shape))
    return labels
