"""Tangents and cotangents, and the counted linear algebra the rules use.

A derivative value for one node and one block of directions is one of
- ``None``: a symbolic zero; never materialised, never counted;
- ``Seed``: a selection of the identity: each element is direction ``src[i]``
  or nothing. A direction may be selected by several elements (a gather that
  repeats an element, ``[x, x]``, copies it), and then a linear map applied to
  the Seed sums the entries it selects for that direction. Applying a linear map
  to a Seed only selects (and, for repeats, adds) entries of the map, so it is
  not counted; data movement keeps a Seed a Seed;
- ``Scaled``: a Seed times a per-element scale (for the whole identity, a diagonal):
  element i is direction ``src[i]`` with the value ``scale[i]``. Scaling a Seed makes
  one (free, as scaling a Seed always was); scaling, negating or adding Scaleds of one
  Seed costs one flop per element of the node, a product with one scales rows or
  columns of the other operand, and adding one to a dense value adds its entries
  only. The scale is data (an array of the node's shape); the selection is the Seed's;
- a dense array with the directions on a leading axis: shape ``(k,) + shape``;
- ``ScaledDense``: a dense tangent times a scale whose product is not made yet: the
  value ``scale * base`` (broadcasting). Scaling it again multiplies the scale when that
  is smaller than the base (a per-element vector, not k copies of it), the base
  otherwise; it is made dense, counted, where a rule needs the product. It lives inside
  one sweep only: a sweep's results and what crosses a loop's boundary are made dense.

Every JVP and VJP rule in adcli.ops is written with the methods of
``Linear``, which do the work on the array module ``xp`` and count the scalar
multiplications and flops as they go. With ``xp=None`` the same methods
only compute shapes and counts (``Abstract`` stand-ins), which is how the
static prediction gets exactly the figures a real run counts.
"""
from __future__ import annotations

from math import prod

from .ir import broadcast_shapes


class Shaped:
    """What an array-like with a `shape` knows from it alone (Abstract, derive.NodeValue)."""

    __slots__ = ()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return prod(self.shape)


class Abstract(Shaped):
    """A shape-only stand-in for an array, used by the predictor."""

    __slots__ = ("shape",)

    def __init__(self, shape):
        self.shape = tuple(shape)

    @property
    def T(self) -> "Abstract":
        return Abstract(self.shape[::-1])

    def __repr__(self):
        return f"Abstract{self.shape}"


class Seed:
    """Directions selected from the identity: element i is direction src[i] (-1: none)."""

    __slots__ = ("src", "k", "node_shape", "identity", "full")

    def __init__(self, src, k: int, node_shape, identity: bool = False, full: bool | None = None):
        self.src = src              # integer array of node_shape, or None when abstract
        self.k = k
        self.node_shape = tuple(node_shape)
        # the whole identity in order (direction i is element i, every element selected):
        # known from how the seed was made, so a prediction knows it too
        self.identity = identity
        # every element selects a direction (the identity, moved without leaving holes):
        # then a Scaled of it has exactly one entry per element, which is what it counts
        self.full = identity if full is None else full

    @property
    def shape(self):
        return (self.k,) + self.node_shape


class Scaled:
    """A Seed times a per-element scale: element i of the node is direction seed.src[i]
    with the value scale[i] (a diagonal placement, for the whole identity). Its Seed is
    always full (every element selects one direction), so its entries are its node's
    elements, as many as a prediction knows from the shape alone. The scale is
    an array of the node's shape (an Abstract when predicting), never a constant of a
    plan: it depends on the inputs. Two Scaleds of the same Seed object (or a Scaled and
    its Seed) add entry by entry; identity of the Seed object is structural (a prediction
    makes the same objects a run does), so prediction and run agree on when they do."""

    __slots__ = ("seed", "scale")

    def __init__(self, seed: Seed, scale):
        self.seed = seed
        self.scale = scale

    @property
    def k(self) -> int:
        return self.seed.k

    @property
    def node_shape(self) -> tuple:
        return self.seed.node_shape

    @property
    def identity(self) -> bool:
        return self.seed.identity

    @property
    def src(self):
        return self.seed.src

    @property
    def full(self) -> bool:
        return self.seed.full   # (always: only full Seeds are scaled)

    @property
    def shape(self):
        return (self.seed.k,) + self.seed.node_shape


class ScaledDense:
    """A dense tangent times a scale, the product not made yet: its value, of shape
    (k,) + node shape, is ``scale * base`` with NumPy's broadcasting. `base` is dense, of
    shape (kb,) + node shape, kb = k, or 1 for one row every direction shares (p·ṡ for a
    tangent ṡ of one element: the row p, the scale ṡ per direction). `scale` has the full
    rank, 1 + the node's: a direction axis of k or 1, then each node axis its length or
    1; it has fewer elements than the value (a vector over the node, one number per
    direction, a number). Scaling it again costs what the smaller of scale and base
    costs to scale; making it dense costs k·|node|. The base and the scale are arrays a
    rule made (or residuals), never constants of a plan unless made of constants only.
    Two ScaledDenses of the same base object add by their scales; identity of the base is
    structural, as a Seed's is (a prediction makes the same objects a run does)."""

    __slots__ = ("base", "scale", "k")

    def __init__(self, base, scale, k: int):
        self.base = base
        self.scale = scale
        self.k = k

    @property
    def node_shape(self) -> tuple:
        return tuple(self.base.shape[1:])

    @property
    def shape(self):
        return (self.k,) + self.node_shape

    @property
    def per_direction(self) -> bool:
        """The scale is the same for every element of the node (a number per direction)."""
        return all(d == 1 for d in self.scale.shape[1:])


def structured(t) -> bool:
    """A Seed or a Scaled: a selection of the identity, scaled or not."""
    return isinstance(t, (Seed, Scaled))


def root(t):
    """The Seed object a Seed or a Scaled selects by."""
    return t.seed if isinstance(t, Scaled) else t


class Counter:
    """Running totals of work: the chain-product figures (mults, flops) and what the
    time model (adcli.machine) needs besides: array operations executed (`ops`),
    scalars read and written by them (`moved`), and the flops of contractions
    (`gemm`, matmul-like work, also included in `flops`)."""

    __slots__ = ("mults", "flops", "ops", "moved", "gemm", "on_temporary", "indexed")
    COUNTS = ("mults", "flops", "ops", "moved", "gemm")

    def __init__(self, on_temporary=None):
        self.mults = self.flops = self.ops = self.moved = self.gemm = 0
        self.on_temporary = on_temporary   # told the scalars a rule holds only briefly
        self.indexed = False   # some rule indexed with integer arrays (NumPy allocates scratch)

    def add(self, mults: int, flops: int):
        self.mults += mults
        self.flops += flops

    def traffic(self, ops: int, moved: int, gemm: int = 0):
        self.ops += ops
        self.moved += moved
        self.gemm += gemm

    def temporary(self, values: int, wide: int = 0, widened: int = 0):
        """Told what a rule holds only while it runs: `values` of the run's dtype, `wide`
        8-byte elements (int64 index arrays, bincount's float64 sums) and `widened`
        elements copied to float64 when the run's dtype is narrower (bincount's weights)."""
        if self.on_temporary is not None:
            self.on_temporary(values, wide, widened)

    def snapshot(self) -> tuple:
        return (self.mults, self.flops, self.ops, self.moved, self.gemm)

    def repeat(self, before: tuple, times: int):
        """Count the work done since `before` `times` more times (identical sweeps)."""
        for name, old in zip(self.COUNTS, before):
            setattr(self, name, getattr(self, name) + (getattr(self, name) - old) * times)


def _column_major(a) -> bool:
    """Whether an array (a staged value's array, while compiling) is laid out column-major
    and not row-major: a layout choice for speed, never for correctness."""
    flags = getattr(getattr(a, "value", a), "flags", None)
    return flags is not None and bool(flags.f_contiguous) and not bool(flags.c_contiguous)


def shape_of(value) -> tuple:
    if isinstance(value, (int, float)):
        return ()
    return tuple(value.shape)


def live_size(value) -> int:
    """Scalars a derivative value occupies: Seeds and zeros occupy none, a Scaled its
    scale (one per element of its node), a ScaledDense its scale (and its base, an array
    of its own: adcli.interpret._Live holds it)."""
    if value is None or isinstance(value, Seed):
        return 0
    if isinstance(value, Scaled):
        return prod(value.node_shape)
    if isinstance(value, ScaledDense):   # its scale (its base is counted as its own array)
        return prod(value.scale.shape)
    return prod(value.shape)


class Linear:
    """Counted linear algebra on derivative values with k directions."""

    def __init__(self, xp, k: int, counter: Counter, dtype=None):
        self.xp = xp            # None: abstract (shapes and counts only)
        self.k = k
        self.counter = counter
        self.dtype = dtype
        # ScaledDenses this Linear made dense: id -> (the ScaledDense, its product): the
        # rules of one node (one block) that need one dense make it once
        self.resolved = {}

    # -- helpers -------------------------------------------------------------
    def node_shape(self, t) -> tuple:
        return t.node_shape if structured(t) or isinstance(t, ScaledDense) else tuple(t.shape[1:])

    def dense(self, t):
        """Materialise a Seed as a 0/1 array, a Scaled as its entries put in place in
        zeros (bookkeeping: not counted here, _materialized counts it), a ScaledDense as
        its product (for display and the store; rules make it with _plain, counted)."""
        if isinstance(t, ScaledDense):
            return Abstract(t.shape) if self.xp is None else t.scale * t.base
        if not structured(t):
            return t
        if self.xp is None:
            return Abstract(t.shape)
        xp = self.xp
        if isinstance(t, Scaled):
            size = prod(t.node_shape)
            out = xp.zeros((t.k, size), dtype=self.dtype)
            if t.identity:
                out.reshape(-1)[::size + 1] = t.scale.reshape(-1)   # the diagonal, strided
            else:
                positions, dirs = self._seed_entries(t.seed)
                out[dirs, positions] = t.scale.reshape(-1)[positions]
            return out.reshape(t.shape)
        directions = xp.arange(t.k).reshape((t.k,) + (1,) * len(t.node_shape))
        return (t.src[None, ...] == directions).astype(self.dtype)

    def _count(self, mults: int, flops: int):
        self.counter.add(mults, flops)

    def _traffic(self, ops: int, moved: int, gemm: int = 0):
        self.counter.traffic(ops, moved, gemm)

    def _materialized(self, *ts, result: int = 0, wide: int = 0, widened: int = 0):
        """Count making Seeds dense (a k × |node| array written) for the methods that
        will call dense(): counted before they branch on abstract or real, so a
        prediction counts exactly what a run does. The dense copies live only while
        the method runs, beside its `result` (scalars) and `wide` 8-byte elements the
        method holds as well: a temporary peak."""
        dense = 0
        for t in ts:
            if structured(t):
                self._traffic(1, prod(t.shape))
                dense += prod(t.shape)
                if isinstance(t, Scaled) and not t.identity:
                    self._indexes()   # its entries put in place by index arrays
        if dense or wide or widened:
            self.counter.temporary(dense + result, wide, widened)

    def _lift(self, t, shape):
        """Give a dense tangent of a smaller node shape leading unit axes."""
        extra = len(shape) - (t.ndim - 1)
        if extra <= 0:
            return t
        return t.reshape((t.shape[0],) + (1,) * extra + tuple(t.shape[1:]))

    def _elementwise(self, t, out_shape, residual_size: int):
        """One elementwise kernel on a derivative value t and a residual: reads both,
        writes k × out (a Seed is made dense first: dense() counts that)."""
        self._traffic(1, prod(self.node_shape(t)) * self.k + residual_size + self.k * prod(out_shape))

    # -- elementwise ------------------------------------------------------------
    def scale(self, p, t):
        """p * t, p a residual (array or number) broadcasting with t's node shape."""
        if t is None:
            return None
        out = broadcast_shapes(shape_of(p), self.node_shape(t))
        if isinstance(t, ScaledDense) and out == t.node_shape:
            return self._rescaled(t, p, "mul")
        t = self._plain(t)
        if (isinstance(t, Scaled) or (isinstance(t, Seed) and t.full)) and out == t.node_shape:
            return self._scaled(t, p, "mul")
        later = self._scaled_later(t, p, out)
        if later is not None:
            return later
        if not isinstance(t, Seed):
            self._count(self.k * prod(out), self.k * prod(out))
        self._elementwise(t, out, prod(shape_of(p)))
        self._materialized(t, result=self.k * prod(out))
        if isinstance(t, Seed) and out == t.node_shape:
            self._indexes()   # the entries are put in place by index arrays
        if self.xp is None:
            return Abstract((self.k,) + out)
        if isinstance(t, Seed) and out == t.node_shape:
            return self._seed_diagonal(t, p)
        if isinstance(t, Seed) and t.identity and prod(t.node_shape) == 1 and shape_of(p) == out:
            return p.reshape((1,) + out)   # a scalar's one direction scaling p: p itself
        return p * self._lift(self.dense(t), out)

    def divide(self, t, q):
        """t / q, q a residual; a division counts as a multiplication."""
        if t is None:
            return None
        out = broadcast_shapes(shape_of(q), self.node_shape(t))
        if isinstance(t, ScaledDense) and out == t.node_shape:
            return self._rescaled(t, q, "div")
        t = self._plain(t)
        if (isinstance(t, Scaled) or (isinstance(t, Seed) and t.full)) and out == t.node_shape:
            return self._scaled(t, q, "div")
        if not isinstance(t, Seed):
            self._count(self.k * prod(out), self.k * prod(out))
        self._elementwise(t, out, prod(shape_of(q)))
        self._materialized(t, result=self.k * prod(out))
        if isinstance(t, Seed) and out == t.node_shape:
            self._indexes()
        if self.xp is None:
            return Abstract((self.k,) + out)
        if isinstance(t, Seed) and out == t.node_shape:
            return self._seed_diagonal(t, 1 / q)
        return self._lift(self.dense(t), out) / q

    def _scaled_later(self, t, p, out):
        """p * t left unmade, as a ScaledDense, where that is exact and smaller (else None):
        - t dense, of more than one element, and p over its node (out is t's node shape)
          with less than half as many elements as t (a smaller scale saves too little to
          pay for a tangent two rules each make dense from it): the scale p, t the base
          (free now; made dense where needed: k·|node|);
        - t of one element (dense, or a scaled Seed with one direction) and p as large as
          the result: the row p shared by every direction, t's values the scale per direction
          (free now: p·ṫ is an outer product, made dense where needed: k·|out|).
        Seeds keep their own free products."""
        if isinstance(t, Seed):
            return None
        size, rank = prod(out), 1 + len(out)
        if out == self.node_shape(t):
            # (a tangent of one element is k numbers, as few as any scale of it: made now, as
            # a course's trace shows it, in the row of the op that scales it)
            if isinstance(t, Scaled) or size == 1 or 2 * prod(shape_of(p)) >= self.k * size:
                return None
            if self.xp is None:
                return ScaledDense(t, Abstract((1,) * (rank - len(shape_of(p))) + shape_of(p)), self.k)
            return ScaledDense(t, self._full_rank(p, rank), self.k)
        if prod(self.node_shape(t)) != 1 or prod(shape_of(p)) != size or size == 1:
            return None
        if isinstance(t, Scaled) and self.k != 1:   # one entry among k directions: made dense
            return None
        if self.xp is None:
            return ScaledDense(Abstract((1,) + out), Abstract((self.k,) + (1,) * len(out)), self.k)
        per_direction = t.scale if isinstance(t, Scaled) else t
        return ScaledDense(p.reshape((1,) + out), per_direction.reshape((self.k,) + (1,) * len(out)), self.k)

    def _full_rank(self, p, rank: int):
        """A residual (or a number) as a scale of a ScaledDense: leading unit axes up to `rank`."""
        if not hasattr(p, "shape"):
            return self.xp.asarray(p, dtype=self.dtype).reshape((1,) * rank)
        return p.reshape((1,) * (rank - p.ndim) + tuple(p.shape))

    def _rescaled(self, t, p, how: str):
        """A ScaledDense times p ("mul") or divided by it ("div"), p over its node: the scale
        takes p when the two together are smaller than the base (the scale's elements of
        mults), else the base does (the base's elements): a ScaledDense again."""
        rank = 1 + len(t.node_shape)
        scale_shape, p_shape = tuple(t.scale.shape), shape_of(p)
        joint = broadcast_shapes(scale_shape, (1,) * (rank - len(p_shape)) + p_shape)
        base_size = prod(t.base.shape)
        if prod(joint) < base_size:   # the scale takes p
            n = prod(joint)
            self._count(n, n)
            self._traffic(1, prod(scale_shape) + prod(p_shape) + n)
            if self.xp is None:
                return ScaledDense(t.base, Abstract(joint), self.k)
            q = self._full_rank(p, rank)
            return ScaledDense(t.base, t.scale * q if how == "mul" else t.scale / q, self.k)
        self._count(base_size, base_size)   # the base takes p
        self._traffic(1, 2 * base_size + prod(p_shape))
        if self.xp is None:
            return ScaledDense(Abstract(t.base.shape), t.scale, self.k)
        return ScaledDense(p * t.base if how == "mul" else t.base / p, t.scale, self.k)

    def _plain(self, t):
        """A ScaledDense made dense where a rule needs the product: k·|node| mults and
        flops, one array operation (once per Linear: the same ScaledDense again is the same
        product, self.resolved). Anything else as it is."""
        if not isinstance(t, ScaledDense):
            return t
        made = self.resolved.get(id(t))
        if made is not None:
            return made[1]
        size = self.k * prod(t.node_shape)
        self._count(size, size)
        self._traffic(1, prod(t.scale.shape) + prod(t.base.shape) + size)
        self.counter.temporary(size)
        dense = Abstract(t.shape) if self.xp is None else t.scale * t.base
        self.resolved[id(t)] = (t, dense)
        return dense

    def _seed_diagonal(self, t, p):
        """p scaling a Seed that is not full (a chunk of the directions: some elements
        select none): each selected element's entry of p put in place, not p times a
        k × |node| 0/1 array. Same values, one scatter instead of a product over every
        entry. (A full Seed becomes a Scaled instead.)"""
        xp = self.xp
        size = prod(t.node_shape)
        if not (hasattr(p, "reshape") and tuple(p.shape) == t.node_shape):   # a number, or an
            p = p * xp.ones(t.node_shape, dtype=self.dtype)                # array broadcasting in
        out = xp.zeros((self.k, size), dtype=self.dtype)
        positions, dirs = self._seed_entries(t)
        out[dirs, positions] = p.reshape(-1)[positions]   # one direction per element
        return out.reshape((self.k,) + t.node_shape)

    def _densified(self, t):
        """A Seed, Scaled or ScaledDense made dense where a rule needs it so (counted:
        _materialized, _plain)."""
        if not structured(t):
            return self._plain(t)
        self._materialized(t)
        return Abstract(t.shape) if self.xp is None else self.dense(t)

    def _scaled(self, t, p, how: str):
        """A Seed or a Scaled times p ("mul") or divided by it ("div"), p broadcasting to
        its node: a Scaled of the same Seed. Scaling a Seed is free, as a diagonal placement
        is (the Seed's entries are ones): p spread over the node becomes the scale. Scaling
        a Scaled is one mult (and flop) per element of the node, not k per element."""
        shape = t.node_shape
        size = prod(shape)
        if isinstance(t, Scaled):
            self._count(size, size)
            self._traffic(1, 2 * size + prod(shape_of(p)))
            if self.xp is None:
                return Scaled(t.seed, Abstract(shape))
            return Scaled(t.seed, t.scale * p if how == "mul" else t.scale / p)
        spread = not (hasattr(p, "shape") and tuple(p.shape) == shape)
        if spread or how == "div":   # a new array of the node's shape (else p itself)
            self._traffic(1, size + prod(shape_of(p)))
        if self.xp is None:
            return Scaled(t, Abstract(shape))
        if spread:   # a number, or an array broadcasting in: the scale has the node's shape
            p = p * self.xp.ones(shape, dtype=self.dtype)
        return Scaled(t, p if how == "mul" else 1 / p)

    def _entries(self, d, t, negate: bool = False):
        """A dense d plus (or minus) a Scaled t's entries: a copy of d (the plan writes into
        d instead when d dies here), then t's entries added where they are. Where their
        places in d's memory are an arithmetic progression (the diagonal, for the whole
        identity), known while compiling, one strided slice of d flattened takes them;
        otherwise index arrays over d's axes do."""
        xp = self.xp
        out = xp.copy(d)   # (staged even when d is a constant: the entries are data)
        size = prod(t.node_shape)
        if t.identity:
            positions = dirs = xp.arange(size)
        else:
            positions, dirs = self._seed_entries(t.seed)
        strided = self._strided(out, positions, dirs, t.node_shape)
        if strided is not None:
            flat, places, picked, unflatten = strided
            values = t.scale.reshape(-1) if picked is None else t.scale.reshape(-1)[picked]
            part = flat[places]
            if negate:
                part -= values
            else:
                part += values
            return unflatten(flat)
        values = t.scale.reshape(-1)[positions]
        index = (dirs,) + tuple(xp.unravel_index(positions, t.node_shape)) if t.node_shape else (dirs,)
        if negate:
            out[index] -= values
        else:
            out[index] += values   # (direction, place) pairs are distinct: no add is lost
        return out

    def _strided(self, out, positions, dirs, node_shape):
        """Where entries (direction dirs[i], element positions[i]) of a dense (k,) + node
        array `out` lie in its memory at a constant stride (the identity's diagonal: every
        size + 1): (out flattened, the slice, the order of the entries along it as flat
        positions in the node (None: in order, 0, 1, ...), a function that shapes the flat
        array back), else None. The layout is the one `out` has while compiling: row-major,
        or column-major (a product with a transposed matrix), then flattened through its
        transpose. A flattening that copies (another layout at run time) is still right:
        the result is the flat array shaped back, never `out`."""
        xp, k, size = self.xp, self.k, prod(node_shape)
        count = int(positions.shape[0])
        if count == 0:
            return None
        column_major = _column_major(out)
        if column_major:   # out.T is row-major: element (d, place) at d + k·(place, column-major)
            place = xp.ravel_multi_index(xp.unravel_index(positions, node_shape), node_shape, order="F") \
                if len(node_shape) > 1 else positions
            keys = dirs + k * place
        else:
            keys = dirs * size + positions
        order = xp.argsort(keys)
        keys = keys[order]
        step = int(keys[1] - keys[0]) if count > 1 else 1
        if step <= 0 or (count > 1 and not bool((keys[1:] - keys[:-1] == step).all())):
            return None
        picked = positions[order]
        if bool((picked == xp.arange(size)).all()) if count == size else False:
            picked = None   # every element once, in order: the scale itself
        places = slice(int(keys[0]), int(keys[-1]) + 1, step)
        if column_major:
            transposed = out.T
            return transposed.reshape(-1), places, picked, lambda flat: flat.reshape(transposed.shape).T
        return out.reshape(-1), places, picked, lambda flat: flat.reshape(out.shape)

    def _combined(self, a, b, how: str):
        """The sum ("add") or difference ("sub") of two derivative values when one is a
        Scaled and the structure can stay (else None): of one Seed, a Scaled again (one
        flop per element); a dense value and a Scaled, the dense value with the Scaled's
        entries added (one flop per element of the node, not k)."""
        if not (isinstance(a, Scaled) or isinstance(b, Scaled)):
            return None
        shape = self.node_shape(a)
        size = prod(shape)
        if structured(a) and structured(b):
            if root(a) is not root(b):
                return None
            self._count(0, size)
            self._traffic(1, 3 * size)
            if self.xp is None:
                return Scaled(root(a), Abstract(shape))
            sa = a.scale if isinstance(a, Scaled) else 1
            sb = b.scale if isinstance(b, Scaled) else 1
            scale = sa + sb if how == "add" else sa - sb
            if not hasattr(scale, "shape"):   # (both Seeds never come here)
                scale = scale * self.xp.ones(shape, dtype=self.dtype)
            return Scaled(root(a), scale)
        if isinstance(a, Scaled):
            if how == "sub":   # Scaled − dense: the dense side negated first, as a dense sub
                return None
            a, b = b, a
        if structured(a):   # a Seed and a Scaled of other Seeds: both made dense, as before
            return None
        self._count(0, size)
        self._traffic(2, 2 * self.k * size + 3 * size)   # the copy, then the entries
        self._indexes()
        if self.xp is None:
            return Abstract((self.k,) + shape)
        return self._entries(a, b, negate=how == "sub")

    def _same_base(self, a, b, how: str):
        """The sum or difference of two ScaledDenses of one base: the scales added (their
        joint elements of flops), a ScaledDense again while that is smaller (else None)."""
        if not (isinstance(a, ScaledDense) and isinstance(b, ScaledDense) and a.base is b.base):
            return None
        joint = broadcast_shapes(tuple(a.scale.shape), tuple(b.scale.shape))
        n = prod(joint)
        if n >= self.k * prod(a.node_shape):
            return None
        self._count(0, n)
        self._traffic(1, prod(a.scale.shape) + prod(b.scale.shape) + n)
        if self.xp is None:
            return ScaledDense(a.base, Abstract(joint), self.k)
        return ScaledDense(a.base, a.scale + b.scale if how == "add" else a.scale - b.scale, self.k)

    def add(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        return self._sum(a, b, "add")

    def sub(self, a, b):
        if b is None:
            return a
        if a is None:
            return self.neg(b)
        return self._sum(a, b, "sub")

    def _sum(self, a, b, how: str):
        """a + b (`how` "add") or a − b ("sub") of two tangents, neither None: on the scales
        where both scale one base, entry by entry where structure allows, else dense."""
        same = self._same_base(a, b, how)
        if same is not None:
            return same
        a, b = self._plain(a), self._plain(b)
        combined = self._combined(a, b, how)
        if combined is not None:
            return combined
        shape = self.node_shape(a)
        self._count(0, self.k * prod(shape))
        self._traffic(1, 3 * self.k * prod(shape))
        self._materialized(a, b, result=self.k * prod(shape))
        if self.xp is None:
            return Abstract((self.k,) + shape)
        return self.dense(a) + self.dense(b) if how == "add" else self.dense(a) - self.dense(b)

    def neg(self, t):
        if t is None:
            return None
        shape = self.node_shape(t)
        if isinstance(t, ScaledDense):   # the smaller of scale and base negated (flops)
            if prod(t.scale.shape) <= prod(t.base.shape):
                self._count(0, prod(t.scale.shape))
                self._traffic(1, 2 * prod(t.scale.shape))
                return ScaledDense(t.base, Abstract(t.scale.shape) if self.xp is None else -t.scale, self.k)
            self._count(0, prod(t.base.shape))
            self._traffic(1, 2 * prod(t.base.shape))
            return ScaledDense(Abstract(t.base.shape) if self.xp is None else -t.base, t.scale, self.k)
        if isinstance(t, Scaled):   # one flop per element
            self._count(0, prod(shape))
            self._traffic(1, 2 * prod(shape))
            return Scaled(t.seed, Abstract(shape) if self.xp is None else -t.scale)
        self._count(0, self.k * prod(shape))
        self._traffic(1, 2 * self.k * prod(shape))
        self._materialized(t, result=self.k * prod(shape))
        if self.xp is None:
            return Abstract((self.k,) + shape)
        return -self.dense(t)

    # -- broadcasting and reductions ---------------------------------------------
    def broadcast(self, t, shape):
        """NumPy broadcasting of t's node shape to `shape` (copies: not counted)."""
        shape = tuple(shape)
        if t is None or self.node_shape(t) == shape:
            return t
        t = self._plain(t)
        if isinstance(t, Scaled) and prod(t.node_shape) == prod(shape):   # unit axes only
            return self.reshape(t, shape)
        if isinstance(t, Seed) and prod(t.node_shape) == prod(shape):
            src = None if self.xp is None else t.src.reshape(shape)
            return Seed(src, t.k, shape, full=t.full)
        self._materialized(t)
        if self.xp is None:
            return Abstract((self.k,) + shape)
        return self.xp.broadcast_to(self._lift(self.dense(t), shape), (self.k,) + shape)

    def unbroadcast(self, t, shape):
        """The transpose of broadcast: sum over the broadcast axes."""
        shape = tuple(shape)
        if t is None or self.node_shape(t) == shape:
            return t
        t = self._plain(t)
        node_shape = self.node_shape(t)
        if isinstance(t, Scaled) and prod(node_shape) == prod(shape):   # unit axes only
            return self.reshape(t, shape)
        if isinstance(t, Seed) and prod(node_shape) == prod(shape):
            src = None if self.xp is None else t.src.reshape(shape)
            return Seed(src, t.k, shape, full=t.full)
        self._count(0, self.k * prod(node_shape))
        self._traffic(1, self.k * (prod(node_shape) + prod(shape)))
        self._materialized(t, result=self.k * prod(shape))
        if self.xp is None:
            return Abstract((self.k,) + shape)
        t = self.dense(t)
        lead = len(node_shape) - len(shape)
        if lead:
            t = t.sum(axis=tuple(range(1, 1 + lead)))
        axes = tuple(1 + i for i, d in enumerate(shape) if d == 1 and t.shape[1 + i] != 1)
        if axes:
            t = t.sum(axis=axes, keepdims=True)
        return t

    def sum(self, t, axis=None):
        """Sum over `axis` of the node (None: all); n values summed is n flops."""
        if t is None:
            return None
        t = self._plain(t)
        node_shape = self.node_shape(t)
        self._count(0, self.k * prod(node_shape))
        out = reduced_shape(node_shape, axis)
        self._traffic(1, self.k * (prod(node_shape) + prod(out)))
        self._materialized(t, result=self.k * prod(out))
        if self.xp is None:
            return Abstract((self.k,) + out)
        t = self.dense(t)
        axes = tuple(range(1, t.ndim)) if axis is None else tuple(a + 1 for a in axes_of(axis))
        return t.sum(axis=axes)

    def expand(self, t, shape, axis=None):
        """The transpose of sum: broadcast a reduced value back to `shape`."""
        if t is None:
            return None
        shape = tuple(shape)
        return self.broadcast(self.reshape(t, kept_shape(shape, axis)), shape)

    # -- data movement ---------------------------------------------------------------
    def reshape(self, t, shape):
        shape = tuple(shape)
        if t is None or self.node_shape(t) == shape:
            return t
        t = self._plain(t)
        if isinstance(t, Seed):   # the flat order is unchanged: still the identity if it was
            return Seed(None if self.xp is None else t.src.reshape(shape), t.k, shape, t.identity, t.full)
        if isinstance(t, Scaled):
            return Scaled(self.reshape(t.seed, shape),
                          Abstract(shape) if self.xp is None else t.scale.reshape(shape))
        if self.xp is None:
            return Abstract((self.k,) + shape)
        return t.reshape((t.shape[0],) + shape)

    def move(self, tangents, moves, out_shape):
        """Forward through a data-movement op: out[out_pos] = in_i[in_pos] for each input i."""
        tangents = [self._plain(t) for t in tangents]
        present = [(t, m) for t, m in zip(tangents, moves) if t is not None]
        if not present:
            return None
        out_shape = tuple(out_shape)
        size = prod(out_shape)
        self._indexes()
        # every output element made from an element that selects a direction
        full = all(structured(t) and t.full for t, _ in present) and \
            sum(len(m[0]) for _, m in present) == size
        if all(isinstance(t, Seed) for t, _ in present):
            self._traffic(1 + len(present), 3 * size)   # integer selections, not values
            if self.xp is None:
                return Seed(None, self.k, out_shape, full=full)
            src = self.xp.full(size, -1, dtype=present[0][0].src.dtype)
            for t, (out_pos, in_pos) in present:
                src[out_pos] = t.src.reshape(-1)[in_pos]
            return Seed(src.reshape(out_shape), self.k, out_shape, full=full)
        if full:   # some Scaled: selections and scales moved
            self._traffic(1 + 2 * len(present), 5 * size)
            if self.xp is None:
                return Scaled(Seed(None, self.k, out_shape, full=True), Abstract(out_shape))
            src = self.xp.full(size, -1, dtype=present[0][0].src.dtype)
            scale = self.xp.empty(size, dtype=self.dtype)   # every element filled
            for t, (out_pos, in_pos) in present:
                src[out_pos] = t.src.reshape(-1)[in_pos]
                scale[out_pos] = t.scale.reshape(-1)[in_pos] if isinstance(t, Scaled) else 1
            return Scaled(Seed(src.reshape(out_shape), self.k, out_shape, full=True),
                          scale.reshape(out_shape))
        # one input filling every output element: a gather; otherwise zeros, then each
        # input's elements put in place (diag of a vector, tril: some elements stay 0)
        single = len(present) == 1 and len(tangents) == 1 and len(present[0][1][0]) == size
        self._traffic(1 if single else 1 + len(present), (2 if single else 3) * self.k * size)
        self._materialized(*(t for t, _ in present), result=self.k * size)
        if self.xp is None:
            return Abstract((self.k,) + out_shape)
        if single:
            t, (out_pos, in_pos) = present[0]
            flat = self.dense(t).reshape(self.k, -1)[:, in_pos]
            return flat.reshape((self.k,) + out_shape)
        out = self.xp.zeros((self.k, size), dtype=self.dtype)
        for t, (out_pos, in_pos) in present:
            out[:, out_pos] = self.dense(t).reshape(self.k, -1)[:, in_pos]
        return out.reshape((self.k,) + out_shape)

    def transpose(self, t):
        """Each direction's matrix transposed: data movement (a Seed stays a Seed), not counted."""
        if t is None:
            return None
        t = self._plain(t)
        shape = self.node_shape(t)
        out = (shape[1], shape[0])
        if isinstance(t, Seed):
            self._traffic(1, 2 * prod(shape))   # integer selections
            return Seed(None if self.xp is None else t.src.T, self.k, out, full=t.full)
        if isinstance(t, Scaled):
            self._traffic(2, 4 * prod(shape))   # the selection and the scale
            return Scaled(self.transpose(t.seed), Abstract(out) if self.xp is None else t.scale.T)
        self._traffic(1, 2 * self.k * prod(shape))
        if self.xp is None:
            return Abstract((self.k,) + out)
        return t.transpose(0, 2, 1)

    def move_back(self, ct, move, in_shape, adds: int = 0):
        """Transpose of `move` for one input: in[in_pos] = ct[out_pos], zero elsewhere; where
        in_pos repeats an element (a gather, `adds` > 0), its contributions add."""
        if ct is None:
            return None
        ct = self._plain(ct)
        in_shape = tuple(in_shape)
        out_pos, in_pos = move
        if adds:
            return self.scatter(ct, out_pos, in_pos, adds, in_shape)
        self._indexes()
        full = structured(ct) and ct.full and len(in_pos) == prod(in_shape)   # no place left empty
        if isinstance(ct, Seed):
            self._traffic(2, 2 * prod(in_shape) + len(out_pos))   # integer selections
            if self.xp is None:
                return Seed(None, self.k, in_shape, full=full)
            src = self.xp.full(prod(in_shape), -1, dtype=ct.src.dtype)
            src[in_pos] = ct.src.reshape(-1)[out_pos]
            return Seed(src.reshape(in_shape), self.k, in_shape, full=full)
        if isinstance(ct, Scaled) and not full:   # places left empty: made dense
            ct = self._densified(ct)
        if isinstance(ct, Scaled):   # the selection and the scale put in place
            self._traffic(4, 4 * prod(in_shape) + 2 * len(out_pos))
            seed = self.move_back(ct.seed, move, in_shape)
            if self.xp is None:
                return Scaled(seed, Abstract(in_shape))
            scale = self.xp.zeros(prod(in_shape), dtype=self.dtype)
            scale[in_pos] = ct.scale.reshape(-1)[out_pos]
            return Scaled(seed, scale.reshape(in_shape))
        self._traffic(2, self.k * (prod(in_shape) + 2 * len(out_pos)))
        if self.xp is None:
            return Abstract((self.k,) + in_shape)
        out = self.xp.zeros((self.k, prod(in_shape)), dtype=ct.dtype)
        out[:, in_pos] = ct.reshape(self.k, -1)[:, out_pos]
        return out.reshape((self.k,) + in_shape)

    def scatter(self, t, src_pos, dst_pos, adds: int, shape):
        """result.flat[dst_pos] += t.flat[src_pos] (src_pos None: every element in order),
        zero elsewhere. `adds` (known when the file is built) counts the contributions that
        meet a place reached more than once: k·adds flops. Without any, a Seed stays a
        Seed (a pure scatter); with some, the sum of two directions is not a selection."""
        if t is None:
            return None
        t = self._plain(t)
        shape = tuple(shape)
        size, count = prod(shape), len(dst_pos)
        self._indexes()
        xp = self.xp
        full = structured(t) and t.full and count == size and not adds   # no place left empty
        if isinstance(t, Seed) and not adds:
            self._traffic(2, 2 * size + count)   # integer selections
            if xp is None:
                return Seed(None, self.k, shape, full=full)
            src = xp.full(size, -1, dtype=t.src.dtype)
            flat = t.src.reshape(-1)
            src[xp.asarray(dst_pos)] = flat if src_pos is None else flat[xp.asarray(src_pos)]
            return Seed(src.reshape(shape), self.k, shape, full=full)
        if isinstance(t, Scaled) and not full:   # places left empty, or added: made dense
            t = self._densified(t)
        if isinstance(t, Scaled):   # the selection and the scale put in place
            self._traffic(2, 2 * size + count)
            seed = self.scatter(t.seed, src_pos, dst_pos, adds, shape)
            if xp is None:
                return Scaled(seed, Abstract(shape))
            scale = xp.zeros(size, dtype=self.dtype)
            flat = t.scale.reshape(-1)
            scale[xp.asarray(dst_pos)] = flat if src_pos is None else flat[xp.asarray(src_pos)]
            return Scaled(seed, scale.reshape(shape))
        if not adds:
            self._traffic(2, self.k * (size + 2 * count))   # zeros, then the elements put in place
            if xp is None:
                return Abstract((self.k,) + shape)
            out = xp.zeros((self.k, size), dtype=t.dtype)
            flat = t.reshape(self.k, -1)
            out[:, xp.asarray(dst_pos)] = flat if src_pos is None else flat[:, xp.asarray(src_pos)]
            return out.reshape((self.k,) + shape)
        self._count(0, self.k * adds)
        if isinstance(t, Seed):
            # Directions selected, not values: direction d meets place p as many times as
            # elements holding d are added there. One bincount of the count elements'
            # (direction, place) pairs, not of k·count contributions (k times less work
            # and memory than making the Seed dense); places of elements holding no
            # direction go to one extra bin, dropped.
            self._traffic(3, 3 * count + self.k * size)
            # held: the directions in order, their places, bincount's int64 counts
            self.counter.temporary(self.k * size, wide=2 * count + self.k * size)
            if xp is None:
                return Abstract((self.k,) + shape)
            held = t.src.reshape(-1)
            if src_pos is not None:
                held = held[xp.asarray(src_pos)]
            places = xp.where(held >= 0, held.astype(xp.int64) * size + xp.asarray(dst_pos), self.k * size)
            counts = xp.bincount(places, minlength=self.k * size + 1)[:self.k * size]
            return counts.reshape((self.k,) + shape).astype(self.dtype)
        # the contributions in order, then one scatter-add (a bincount over k·size places)
        self._traffic(1 if src_pos is None else 2, self.k * (3 * count + size))
        # held while bincount runs, beside a Seed made dense: the contributions gathered
        # in order (k·count), their k·count int64 places, and its float64 sums (k·size;
        # the result once cast). (A float32 run also copies the contributions to float64:
        # not counted yet, see the session note of 2026-11-25.)
        gathered = self.k * count if src_pos is not None else 0
        self._materialized(t, result=gathered + self.k * size, wide=self.k * (count + size))
        if xp is None:
            return Abstract((self.k,) + shape)
        flat = self.dense(t).reshape(self.k, -1)
        if src_pos is not None:
            flat = flat[:, xp.asarray(src_pos)]
        places = xp.asarray(dst_pos)
        if self.k > 1:
            places = (xp.arange(self.k).reshape(-1, 1) * size + places.reshape(1, -1)).reshape(-1)
        total = xp.bincount(places, weights=flat.reshape(-1), minlength=self.k * size)
        return total.reshape((self.k,) + shape).astype(flat.dtype, copy=False)

    def gather(self, t, positions, shape):
        """result.flat[i] = t.flat[positions[i]]: a movement (Seeds stay Seeds, a direction
        may be selected by several elements)."""
        if t is None:
            return None
        t = self._plain(t)
        shape = tuple(shape)
        size = prod(shape)
        self._indexes()
        xp = self.xp
        if isinstance(t, Seed):
            self._traffic(2, 3 * size)   # integer selections, not values
            if xp is None:
                return Seed(None, self.k, shape, full=t.full)
            return Seed(t.src.reshape(-1)[xp.asarray(positions)].reshape(shape), self.k, shape, full=t.full)
        if isinstance(t, Scaled):   # the selection and the scale gathered
            self._traffic(1, 2 * size)
            seed = self.gather(t.seed, positions, shape)
            if xp is None:
                return Scaled(seed, Abstract(shape))
            return Scaled(seed, t.scale.reshape(-1)[xp.asarray(positions)].reshape(shape))
        self._traffic(1, 2 * self.k * size)
        if xp is None:
            return Abstract((self.k,) + shape)
        return t.reshape(self.k, -1)[:, xp.asarray(positions)].reshape((self.k,) + shape)

    # -- products with a residual ------------------------------------------------------
    def _product(self, t, result_node_shape, contraction: int, compute, residual_size: int):
        if t is None:
            return None
        t = self._plain(t)
        if not isinstance(t, Seed):
            mults = self.k * prod(result_node_shape) * contraction
            self._count(mults, 2 * mults if contraction > 1 else mults)
        out = self.k * prod(result_node_shape)
        self._traffic(1, self.k * prod(self.node_shape(t)) + residual_size + out,
                      2 * out * contraction if contraction > 1 else 0)
        self._materialized(t, result=out)
        if self.xp is None:
            return Abstract((self.k,) + tuple(result_node_shape))
        return compute(self.dense(t))

    def _indexes(self):
        """This rule gathers or scatters with integer index arrays."""
        self.counter.indexed = True

    def _seed_entries(self, t):
        """Where a Seed's ones are: flat positions in the node, and their directions."""
        flat = t.src.reshape(-1)
        positions = self.xp.nonzero(flat >= 0)[0]
        return positions, flat[positions]

    def _seed_product(self, out_shape, fill):
        """A product with a Seed, made by copying entries of the residual into place
        (A·I selects columns of A): no k×|node| identity is ever materialised."""
        out = self.xp.zeros((self.k,) + tuple(out_shape), dtype=self.dtype)
        fill(out)
        return out

    def _place(self, out, index, values, key):
        """out[index] += values, where `key` (one integer per entry) says which entries
        land in the same place: a direction selected by several elements of a Seed.
        Plain assignment would keep only the last of them (d/dx of [x, x] @ c is
        c0 + c1, not c1), so repeated keys are added in rounds, each round a plain
        assignment over distinct places (the same on NumPy and CuPy)."""
        xp = self.xp
        entries = xp.arange(key.size)
        last = xp.zeros(int(key.max()) + 1 if key.size else 0, dtype=entries.dtype)
        last[key] = entries           # with repeated keys, one entry's write wins
        if bool((last[key] == entries).all()):   # every key once: a plain assignment
            out[index] = values
            return
        order = xp.argsort(key)   # any order: ranks come from searchsorted
        ordered = key[order]
        rank = xp.empty_like(order)
        rank[order] = entries - xp.searchsorted(ordered, ordered, side="left")
        for level in range(int(rank.max()) + 1):
            take = xp.nonzero(rank == level)[0]
            sub = tuple(i if isinstance(i, slice) else i[take] for i in index)
            out[sub] += values[take]

    def matmul_left(self, a, t):
        """a @ t for a residual a (vec or mat) and a tangent t of the right operand."""
        if t is None:
            return None
        t = self._plain(t)
        t_shape = self.node_shape(t)
        out = matmul_shape(shape_of(a), t_shape)
        contraction = a.shape[-1]
        if isinstance(t, Scaled):
            return self._scaled_product(t, a, out, left=True)
        if isinstance(t, Seed):
            self._traffic(2, 2 * self.k * prod(out))   # zeros, then entries of a copied in
            if not (len(t_shape) == 1 and t.identity):
                self._indexes()
            if self.xp is None:
                return Abstract((self.k,) + tuple(out))
            if len(t_shape) == 1 and t.identity:   # a @ I: a's columns as rows
                # a new view (a plan copies results that are views): never `a` itself, since
                # live values are counted by identity, as the prediction counts them
                return a.T if a.ndim == 2 else a.reshape(a.shape)
            positions, dirs = self._seed_entries(t)

            def fill(result):
                if len(t_shape) == 1:               # a @ e_i: column i of a (or a[i])
                    self._place(result, (dirs,), a[:, positions].T if a.ndim == 2 else a[positions],
                                dirs)
                else:                               # a @ E_ij: column i of a in column j
                    rows, cols = divmod(positions, t_shape[1])
                    key = dirs * t_shape[1] + cols
                    if a.ndim == 2:
                        self._place(result, (dirs, slice(None), cols), a[:, rows].T, key)
                    else:
                        self._place(result, (dirs, cols), a[rows], key)

            return self._seed_product(out, fill)
        if len(t_shape) == 1:   # a @ vector: batch the directions as rows
            return self._product(t, out, contraction,
                                 lambda d: d @ (a.T if a.ndim == 2 else a), prod(a.shape))

        def compute(d):
            # One 2-D GEMM with the directions folded into the columns: NumPy's
            # broadcasting matmul over a leading batch axis is several times slower.
            k, rows, cols = d.shape
            folded = d.transpose(1, 0, 2).reshape(rows, k * cols)
            product = a @ folded
            if a.ndim == 1:
                return product.reshape(k, cols)
            return product.reshape(a.shape[0], k, cols).transpose(1, 0, 2)

        return self._product(t, out, contraction, compute, prod(a.shape))

    def matmul_right(self, t, b):
        """t @ b for a tangent t of the left operand and a residual b."""
        if t is None:
            return None
        t = self._plain(t)
        t_shape = self.node_shape(t)
        out = matmul_shape(t_shape, shape_of(b))
        if isinstance(t, Scaled):
            return self._scaled_product(t, b, out, left=False)
        if isinstance(t, Seed):
            self._traffic(2, 2 * self.k * prod(out))   # zeros, then entries of b copied in
            if not (len(t_shape) == 1 and t.identity):
                self._indexes()
            if self.xp is None:
                return Abstract((self.k,) + tuple(out))
            if len(t_shape) == 1 and t.identity:   # I @ b: b itself, as a new view
                return b.reshape(b.shape)
            positions, dirs = self._seed_entries(t)

            def fill(result):
                if len(t_shape) == 1:               # e_i @ b: row i of b (or b[i])
                    self._place(result, (dirs,), b[positions], dirs)
                else:                               # E_ij @ b: row j of b in row i
                    rows, cols = divmod(positions, t_shape[1])
                    self._place(result, (dirs, rows), b[cols], dirs * t_shape[0] + rows)

            return self._seed_product(out, fill)

        def compute(d):
            if d.ndim == 2:
                return d @ b
            k, rows, inner = d.shape   # fold the directions into the rows: one GEMM
            return (d.reshape(k * rows, inner) @ b).reshape((k, rows) + tuple(b.shape[1:]))

        return self._product(t, out, b.shape[0], compute, prod(b.shape))

    def _scaled_product(self, t, r, out, left: bool):
        """r @ t (left) or t @ r for a Scaled t and a residual r (vec or mat): each selected
        element's row or column of r (as a product with a Seed selects it) times its scale.
        One mult per element of t's node per entry of r it scales (for the whole identity of
        a vector, r's columns or rows scaled: |t|·|r|), not a product with a k × |t| matrix."""
        t_shape, xp = t.node_shape, self.xp
        size = prod(t_shape)
        # what one element of t meets: a column of r (left), a row of r (right)
        reach = prod(out) // (prod(t_shape[1:]) if left else prod(t_shape[:-1]))
        mults = size * reach
        self._count(mults, mults)
        vector_identity = len(t_shape) == 1 and t.identity
        if vector_identity:   # r's columns (rows) scaled: one product, no zeros
            self._traffic(1, size + prod(shape_of(r)) + self.k * prod(out))
        else:
            self._traffic(3, 2 * self.k * prod(out) + 2 * mults)   # zeros, the entries, placed
            self._indexes()
        if xp is None:
            return Abstract((self.k,) + tuple(out))
        scale = t.scale
        if vector_identity:
            if r.ndim == 1:    # r · (s_i e_i) = r_i s_i: one number per direction
                return r * scale
            if left:           # r @ (s_i e_i) = s_i r[:, i]: r's columns scaled, as rows
                return scale.reshape(-1, 1) * r.T
            return scale.reshape(-1, 1) * r   # (s_i e_i) @ r = s_i r[i]: r's rows scaled
        positions, dirs = self._seed_entries(t.seed)
        picked = scale.reshape(-1)[positions]

        def fill(result):
            if len(t_shape) == 1:
                if left:       # r @ s e_i: column i of r (or r[i]) scaled
                    values = r[:, positions].T * picked.reshape(-1, 1) if r.ndim == 2 else r[positions] * picked
                else:          # s e_i @ r: row i of r (or r[i]) scaled
                    values = r[positions] * (picked.reshape(-1, 1) if r.ndim == 2 else picked)
                self._place(result, (dirs,), values, dirs)
                return
            rows, cols = divmod(positions, t_shape[1])
            if left:           # r @ s E_ij: column i of r, scaled, in column j
                key = dirs * t_shape[1] + cols
                if r.ndim == 2:
                    self._place(result, (dirs, slice(None), cols), r[:, rows].T * picked.reshape(-1, 1), key)
                else:
                    self._place(result, (dirs, cols), r[rows] * picked, key)
            else:              # s E_ij @ r: row j of r, scaled, in row i
                values = r[cols] * (picked.reshape(-1, 1) if r.ndim == 2 else picked)
                self._place(result, (dirs, rows), values, dirs * t_shape[0] + rows)

        return self._seed_product(out, fill)

    def outer(self, t, b, t_first: bool = True):
        """t ⊗ b (or b ⊗ t): every element of one times every element of the other."""
        if t is None:
            return None
        t = self._plain(t)
        t_shape, b_shape = self.node_shape(t), shape_of(b)
        out = t_shape + b_shape if t_first else b_shape + t_shape
        k = self.k

        def compute(d):
            if t_first:
                return d.reshape((k,) + t_shape + (1,) * len(b_shape)) * b
            return b.reshape(b_shape + (1,) * len(t_shape)) * d.reshape((k,) + (1,) * len(b_shape) + t_shape)

        return self._product(t, out, 1, compute, prod(b_shape))

    # -- einsum ------------------------------------------------------------------------------
    def einsum(self, t, letters: str, residuals, result: str, sizes: dict):
        """t contracted with residual operands [(array, letters)] into the axes `result`: the
        one einsum of a JVP (t a tangent of one operand, the others the residuals) or a VJP
        (t the cotangent of the output). t's letters are distinct. The direction axis is one
        more letter, of size k, on t's side, and the order of the pairwise contractions is
        planned for it (adcli.einsum.plan): contracting the other operands first is often
        cheaper than carrying k directions through every step. A step that contracts a
        Seed as it is only selects entries of the other side (as A·I = A): not counted."""
        from .einsum import LETTERS, plan as contraction_plan

        if t is None:
            return None
        t = self._plain(t)
        if isinstance(t, Scaled):   # contracted as a dense tangent (made dense: counted)
            t = self._densified(t)
        used = set(letters) | set(result)
        for _, other in residuals:
            used |= set(other)
        d = next(ch for ch in LETTERS if ch not in used)
        sizes = {**sizes, d: self.k}
        terms = (d + letters,) + tuple(other for _, other in residuals)
        needed = set(result).union(*(other for _, other in residuals))
        # a Seed stays one until a step contracts it, unless its lone letters are summed first
        free = 0 if isinstance(t, Seed) and set(letters) <= needed else None
        plan = contraction_plan(terms, d + result, sizes, free=free)

        def size(term: str) -> int:
            return prod(sizes[ch] for ch in term)

        def shape(term: str) -> tuple:
            return tuple(sizes[ch] for ch in term)

        xp = self.xp
        slots = [t] + [x for x, _ in residuals]
        held = [0] * len(slots)   # scalars of each reduced operand or intermediate made here
        for i, spec in enumerate(plan.reduces):
            if spec is None:
                continue
            before, after = spec.split("->")
            if i == 0 and isinstance(t, Seed) and set(before) == set(after):   # a permutation: moved
                self._traffic(1, 2 * size(before))   # integer selections
                if xp is not None:
                    order = tuple(before.index(ch) for ch in after)
                    slots[0] = Seed(t.src.transpose(tuple(j - 1 for j in order[1:])), self.k, shape(after[1:]),
                                    full=t.full)
                else:
                    slots[0] = Seed(None, self.k, shape(after[1:]), full=t.full)
                continue
            self._count(0, plan.reduce_flops[i])
            self._traffic(1, size(before) + size(after))
            if i == 0:
                self._materialized(t, result=size(after))
            held[i] = size(after)
            if xp is None:
                slots[i] = Abstract(shape(after))
            else:
                slots[i] = xp.einsum(spec, self.dense(slots[i]) if i == 0 else slots[i])
        if not plan.steps:
            return slots[0]
        alive, peak = sum(held), 0
        for index, step in enumerate(plan.steps):
            (left, right), out = step.spec.split("->")[0].split(","), step.spec.split("->")[1]
            a, b = slots[step.left], slots[step.right]
            self._count(step.mults, step.flops)
            seed_side = next((j for j, x in ((0, a), (1, b)) if isinstance(x, Seed)), None)
            dense = 0
            if seed_side is None:
                self._traffic(1, size(left) + size(right) + size(out), step.flops if step.flops > step.mults else 0)
            else:   # the Seed's step: entries of the other side put in place
                self._traffic(2, 2 * size(out))
                seed, seed_letters = (a, left) if seed_side == 0 else (b, right)
                other, other_letters = (b, right) if seed_side == 0 else (a, left)
                shortcut = seed.identity and not set(seed_letters[1:]) & set(out)
                if not shortcut:
                    self._materialized(seed)
                    dense = size(seed_letters)
            peak = max(peak, alive + dense + size(out))
            last = index == len(plan.steps) - 1
            alive += (0 if last else size(out)) - held[step.left] - held[step.right]
            held.append(0 if last else size(out))
            slots[step.left] = slots[step.right] = None
            if xp is None:
                slots.append(Abstract(shape(out)))
            elif seed_side is None:
                slots.append(xp.einsum(step.spec, a, b))
            elif shortcut:   # I·R: R's axes over the Seed's letters become the directions
                rest = out[1:]
                moved = xp.einsum(f"{other_letters}->{seed_letters[1:]}{rest}", other)
                slots.append(moved.reshape(shape(d + rest)))
            else:
                slots.append(xp.einsum(step.spec, self.dense(a), b) if seed_side == 0
                             else xp.einsum(step.spec, a, self.dense(b)))
        if peak > size(plan.steps[-1].spec.split("->")[1]):   # intermediates beside the result
            self.counter.temporary(peak)
        return slots[-1]


def axes_of(axis) -> tuple:
    """A reduction's axis attribute (an int, or a tuple of ints for several) as a tuple."""
    return (axis,) if isinstance(axis, int) else tuple(axis)


def reduced_shape(shape, axis) -> tuple:
    if axis is None:
        return ()
    axes = axes_of(axis)
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def kept_shape(shape, axis) -> tuple:
    """The shape of a reduction over `axis` (None: all) with its reduced axes kept as 1."""
    axes = None if axis is None else axes_of(axis)
    return tuple(1 if axes is None or i in axes else d for i, d in enumerate(shape))


def matmul_shape(a, b) -> tuple | None:
    """Result shape of a @ b for vec/mat operands, or None when they do not fit."""
    if not a or not b or len(a) > 2 or len(b) > 2 or a[-1] != b[0]:
        return None
    return tuple(a[:-1]) + tuple(b[1:])
