"""Max-min fair sharing (gpu_models/sharing.py): hand-computed rates, and the many-column form
equal to the one-resource rule column by column."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_models.sharing import max_min_rates, max_min_rates_columns


def test_water_filling_by_hand() -> None:
    # Capacity 100: 10 units x 1, 10 x 4, 5 x 20 ask 150. Fair share 100 / 25 = 4: the first
    # two flows ask no more and keep rate 1; the last gets (100 - 10 - 40) / 5 = 10 per
    # unit, rate 10 / 20.
    assert max_min_rates(100.0, [(10, 1.0), (10, 4.0), (5, 20.0)]) == [1.0, 1.0, 0.5]
    assert max_min_rates(100.0, [(10, 1.0), (10, 4.0)]) == [1.0, 1.0]
    # One SM: blocks asking 0.75 and 0.5: the 0.5 block keeps rate 1, the other gets 2/3.
    assert max_min_rates(1.0, [(1, 0.75), (1, 0.5)]) == [pytest.approx(2 / 3), 1.0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=4).flatmap(
    lambda demands: st.tuples(
        st.just(demands),
        st.lists(st.lists(st.integers(0, 8), min_size=len(demands), max_size=len(demands)),
                 min_size=1, max_size=6))))
def test_columns_apply_the_rule_to_each_column(case: tuple[list[float], list[list[int]]]
                                               ) -> None:
    demands, columns = case
    units = np.array(columns, dtype=np.int64).T  # flows x columns
    rates = max_min_rates_columns(1.0, units, demands)
    for j, column in enumerate(columns):
        expected = max_min_rates(1.0, list(zip(column, demands, strict=True)))
        for i, units_i in enumerate(column):
            if units_i:  # a flow without units on a column has no rate to speak of there
                assert rates[i, j] == pytest.approx(expected[i], rel=1e-12)
        used = sum(u * d * r for u, d, r in zip(column, demands, rates[:, j], strict=True))
        assert used <= 1.0 + 1e-12 or all(r == 1.0 for r in rates[:, j])
