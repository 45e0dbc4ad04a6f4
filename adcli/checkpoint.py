"""Binomial checkpointing: reversing l steps of a loop while keeping at most S states.

Reverse mode needs each step's residuals in the opposite order to the one they are
made in. Keeping all l of them costs memory in proportion to l; keeping a few states
(checkpoints) and running steps forward again from them trades that memory for
recomputation. Griewank's binomial schedule (the one `revolve` implements) does it
with the fewest forward steps possible for S slots.

Conventions (docs/counting.md states them too):
- S counts every state kept at once, the slot holding the initial state included;
- a step run forward only to move between checkpoints counts as a recomputed step;
  the forward step that records a step's residuals right before its backward step
  does not count: every strategy, storing everything included, does it once per step.

With these, the fewest recomputed steps are

    p(l, S) = r·l − C(S + r, r − 1),   r the least integer with C(S + r, S) ≥ l,

so p(10, 3) = 15, p(100, 5) = 316 and p(l, 1) = l(l − 1)/2 (each step recomputed
from the initial state). ``schedule(l, S)`` gives the actions that reach it.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb


def repetitions(steps: int, slots: int) -> int:
    """r: the least integer with C(slots + r, slots) ≥ steps (how many times, at most,
    a step is run forward in an optimal schedule). Found by doubling, then bisection:
    with one or two slots r grows like steps or its square root (10^9 steps, 2 slots:
    r = 44,721), too many to count up to."""
    if slots < 1:
        raise ValueError("checkpointing needs at least one slot (the initial state)")
    if steps <= 1:
        return 0
    hi = 1
    while comb(slots + hi, slots) < steps:
        hi *= 2
    lo = hi // 2   # C(slots + lo, slots) < steps, or lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if comb(slots + mid, slots) < steps:
            lo = mid
        else:
            hi = mid
    return hi


def recomputations(steps: int, slots: int) -> int:
    """p(l, S): the fewest forward steps, recording steps not counted, that reverse
    `steps` steps keeping at most `slots` states."""
    if steps <= 1:
        return 0
    r = repetitions(steps, slots)
    return r * steps - comb(slots + r, r - 1)


@dataclass(frozen=True)
class Action:
    """One action of a schedule.

    kind "advance": run steps start … stop − 1 forward from the state in hand, recording
    nothing; "save": keep the state in hand (the state before step `start`) in `slot`;
    "restore": take the state in `slot` (the state before step `start`) in hand;
    "reverse": run step `start` forward recording its residuals, then its backward step;
    "free": `slot` is no longer needed."""

    kind: str
    start: int
    stop: int = 0
    slot: int = 0


def best_split(steps: int, slots: int) -> int:
    """Where to put the next checkpoint (steps ahead of the one in hand) so that the
    rest costs the least: j minimising j + p(steps − j, slots − 1) + p(j, slots). The
    cost is convex in j (each term's increments grow), so the least j whose next
    increment is not negative is found by bisection."""
    def cost(j):
        return j + recomputations(steps - j, slots - 1) + recomputations(j, slots)

    lo, hi = 1, steps - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cost(mid + 1) - cost(mid) >= 0:
            hi = mid
        else:
            lo = mid + 1
    return lo


def expand(start: int, stop: int, slot: int, free: int):
    """The actions of one work item, in order: reverse steps start … stop − 1 (last first)
    from the state saved in `slot`, with `free` slots (that one included) to use. Where
    the item splits, its two parts come in place as work items, (start, stop, slot,
    free) tuples: first the right part, with a checkpoint (slot + 1) and one slot fewer,
    then the left part, which frees `slot` when it is done (it shares it)."""
    length = stop - start
    if length == 0:
        return
    yield Action("restore", start, slot=slot)
    if length == 1:
        yield Action("reverse", start)
    elif free == 1:   # nowhere to keep another state: advance to each step in turn
        for step in range(stop - 1, start - 1, -1):
            yield from one_slot_step(start, step, slot)
    else:
        j = best_split(length, free)
        yield Action("advance", start, start + j)
        yield Action("save", start + j, slot=slot + 1)
        yield (start + j, stop, slot + 1, free - 1)
        yield (start, start + j, slot, free)
        return
    if slot != 0:
        yield Action("free", start, slot=slot)


def one_slot_step(start: int, step: int, slot: int):
    """Reverse `step` from the state before `start` (in `slot`), with no slot to spare:
    advance to it, reverse it, and take the saved state in hand again."""
    if step > start:
        yield Action("advance", start, step)
    yield Action("reverse", step)
    if step > start:
        yield Action("restore", start, slot=slot)


def actions(steps: int, slots: int):
    """The actions reversing steps 0 … steps − 1 (last first) with at most `slots`
    states kept; the initial state is in slot 0 to begin with. Their "advance" actions
    add up to recomputations(steps, slots) steps. Made as they are read: 10^6 steps at
    1,000 slots take ~6·10^6 actions, too many to hold."""
    if slots < 1:
        raise ValueError("checkpointing needs at least one slot (the initial state)")
    if not steps:
        return
    yield Action("save", 0, slot=0)
    stack = [expand(0, steps, 0, slots)]
    while stack:
        for a in stack[-1]:
            if isinstance(a, tuple):   # a part: its actions come first
                stack.append(expand(*a))
                break
            yield a
        else:
            stack.pop()


def schedule(steps: int, slots: int) -> list[Action]:
    """actions(steps, slots) as a list."""
    return list(actions(steps, slots))


def spine(steps: int, slots: int) -> list[tuple]:
    """The work items the forward sweep goes through: the whole loop, then each one's
    right part, down to the item whose last step is reversed first (length 1, or one
    slot left). The forward sweep of reverse mode runs their advances and saves."""
    items = [(0, steps, 0, slots)]
    while True:
        start, stop, slot, free = items[-1]
        if stop - start <= 1 or free == 1:
            return items
        items.append((start + best_split(stop - start, free), stop, slot + 1, free - 1))


def replay(actions: list[Action], steps: int, slots: int) -> dict:
    """Check a schedule by running it on step numbers: every step reversed once, last
    first; never more than `slots` states kept; each advance starts from the state in
    hand. Returns {"recomputed_steps", "peak_slots", "order"}; raises ValueError."""
    kept: dict[int, int] = {}
    hand = 0
    recomputed = 0
    order = []
    peak = 0
    for a in actions:
        if a.kind == "save":
            if a.start != hand:
                raise ValueError(f"save of state {a.start} while holding {hand}")
            kept[a.slot] = hand
            peak = max(peak, len(kept))
            if peak > slots:
                raise ValueError(f"{peak} states kept, more than {slots}")
        elif a.kind == "restore":
            if kept.get(a.slot) != a.start:
                raise ValueError(f"restore of state {a.start} from slot {a.slot}, which holds {kept.get(a.slot)}")
            hand = a.start
        elif a.kind == "advance":
            if a.start != hand:
                raise ValueError(f"advance from {a.start} while holding {hand}")
            recomputed += a.stop - a.start
            hand = a.stop
        elif a.kind == "reverse":
            if a.start != hand:
                raise ValueError(f"reverse of step {a.start} while holding state {hand}")
            order.append(a.start)
            hand = a.start + 1
        elif a.kind == "free":
            kept.pop(a.slot, None)
    if order != list(range(steps - 1, -1, -1)):
        raise ValueError("the steps were not each reversed once, last first")
    return {"recomputed_steps": recomputed, "peak_slots": peak, "order": order}
