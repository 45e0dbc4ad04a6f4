"""Binomial checkpointing (adcli.checkpoint): the closed form of the fewest recomputed
steps against an independent dynamic programme over every split, the issue's table,
and every schedule replayed on step numbers (each step reversed once, last first, never
more than S states kept, and exactly p(l, S) steps recomputed)."""
from functools import lru_cache

import pytest

from adcli.checkpoint import Action, recomputations, replay, schedule


@lru_cache(maxsize=None)
def fewest(steps: int, slots: int) -> int:
    """The oracle: try every place for the next checkpoint (Griewank's recursion)."""
    if steps <= 1:
        return 0
    if slots == 1:
        return steps * (steps - 1) // 2
    return min(j + fewest(steps - j, slots - 1) + fewest(j, slots) for j in range(1, steps))


@pytest.mark.parametrize("steps, slots, expected", [(10, 3, 15), (100, 5, 316), (10, 1, 45),
                                                     (1, 4, 0), (0, 2, 0), (2, 2, 1)])
def test_the_table(steps, slots, expected):
    assert recomputations(steps, slots) == expected


def test_one_slot_recomputes_from_the_start_every_time():
    for steps in range(0, 200, 7):
        assert recomputations(steps, 1) == steps * (steps - 1) // 2


def test_closed_form_equals_the_best_of_every_split():
    for steps in range(0, 80):
        for slots in range(1, 8):
            assert recomputations(steps, slots) == fewest(steps, slots), (steps, slots)


def test_schedules_reach_the_optimum_and_keep_the_limit():
    for steps in range(0, 60):
        for slots in range(1, 7):
            result = replay(schedule(steps, slots), steps, slots)
            assert result["recomputed_steps"] == recomputations(steps, slots), (steps, slots)
            assert result["peak_slots"] <= slots


def test_more_slots_never_cost_more_and_enough_slots_cost_the_least():
    for steps in (10, 37, 100):
        costs = [recomputations(steps, s) for s in range(1, steps + 1)]
        assert costs == sorted(costs, reverse=True)
        # with a slot for every step, each state is kept once it is reached: l − 1 advances
        assert costs[-1] == steps - 1


def test_a_long_loop_is_scheduled():
    steps, slots = 20_000, 8
    result = replay(schedule(steps, slots), steps, slots)
    assert result["recomputed_steps"] == recomputations(steps, slots)
    assert result["peak_slots"] == slots


def test_replay_rejects_a_wrong_schedule():
    good = schedule(5, 2)
    with pytest.raises(ValueError):
        replay([a for a in good if a.kind != "reverse" or a.start != 2], 5, 2)   # a step never reversed
    with pytest.raises(ValueError):
        replay(good, 5, 1)                                                        # too many states kept
    with pytest.raises(ValueError):
        replay([Action("save", 0, slot=0), Action("advance", 1, 3)], 3, 2)         # advance from elsewhere
    with pytest.raises(ValueError):
        schedule(5, 0)
