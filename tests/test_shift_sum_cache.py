"""exporter/shift_sum_cache.py: the selection of copies a cache can hold (scores, the work cap
per step, the cache-rows cap) and the tables that append and read them."""

from __future__ import annotations

import numpy as np
import pytest

from sasq.exporter.qdq_config import ShiftSumConfig
from sasq.exporter.shift_sum import shifts
from sasq.exporter.shift_sum_cache import CachePlan, _tables, plan_cache_layer, position_scores

# Three steps appending 1, 2 and 3 tokens (key counts 1, 3, 6); attention per step.
ATTN = [[1.0], [0.7, 0.2, 0.1], [0.5, 0.05, 0.05, 0.3, 0.05, 0.05]]


def test_score_is_the_most_attention_at_any_step():
    assert np.allclose(position_scores(ATTN), [1.0, 0.2, 0.1, 0.3, 0.05, 0.05])


@pytest.mark.parametrize("rows_cap", [0, 2, 4, 8, 100])
def test_plan_respects_both_caps_and_prefers_high_scores(rows_cap):
    cfg = ShiftSumConfig(enabled=True, max_n=4)
    caps = [100, 100, 100]
    plan = plan_cache_layer("av", ATTN, cfg, caps, rows_cap)
    assert plan.copies <= rows_cap
    assert set(np.unique(plan.n)) <= {1, 2, 4}
    order = np.argsort(-position_scores(ATTN), kind="stable")
    assert all(np.diff(plan.n[order]) <= 0)  # more attention, never fewer copies
    if rows_cap >= 2:
        assert plan.n[0] > 1  # the key every step attends to most is protected first


def test_work_cap_of_an_early_step_limits_the_whole_plan():
    cfg = ShiftSumConfig(enabled=True, max_n=8)
    plan = plan_cache_layer("av", ATTN, cfg, caps=[2, 100, 100], rows_cap=100)
    assert plan.columns(0) <= 2 and all(plan.columns(si) <= 100 for si in range(3))
    assert plan.n[0] == 2  # step 0 sees only key 0: n=2 is all its cap allows


def test_tables_append_each_copy_once_and_weigh_it_one_over_n():
    plan = CachePlan("av", np.array([4, 1, 2, 2, 1, 1]), (1, 3, 6))
    s, p = 0.1, 1 / 127
    t = _tables(plan, s, p)
    assert plan.stored_before == (0, 4, 6)
    assert list(t.n_new[:3]) == [4, 2, 2] and t.n_new[3] == 0  # last row: unknown step
    assert t.keep[1, :2].tolist() == [1.0, 0.0] and t.keep[2, :3].tolist() == [0.0, 1.0, 1.0]
    assert np.allclose(t.new_shift[0, :4], shifts(4, s))
    assert t.new_idx[1, :2].tolist() == [1, 1]  # token 2 (index 1 among step 1's new ones)
    for si, end in enumerate(plan.ends):
        J = t.n_uniq[si]
        selected = [j for j in range(end) if plan.n[j] > 1]
        assert t.uniq[si, :J].tolist() == selected
        stored = plan.stored_before[si] + t.n_new[si]
        # each selected position's weights over its copies sum to 1, nothing else is picked
        assert np.allclose(t.pick[si, :J, :stored].sum(1), 1.0)
        assert t.pick[si, :, stored:].sum() == 0
    assert np.allclose(t.offset[2, :4], shifts(4, p))
