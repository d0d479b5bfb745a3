"""Max-min fair sharing (water-filling): one rule for every resource a fluid model shares.

Flows of ``n`` units (blocks) each asking ``demand`` share a ``capacity``. If the summed demand
fits, every unit runs at rate 1. Otherwise flows are taken in increasing per-unit demand
(ties in the order given); while a flow's demand is at most the fair share (capacity left /
units left) its units get all they ask (rate 1) and leave the rest; every remaining unit gets
the fair share, i.e. runs at rate ``fair / demand``. A unit asking less than the fair share
is never slowed: it is not bound by this resource.

The engine uses it for DRAM bandwidth with the memory-parallelism bound off
(docs/model.md §6.7) and, as :func:`max_min_rates_columns`, for one execution resource on many
SMs at once (capacity 1 each: the SM's whole throughput);
:func:`gpu_models.cost.isolated_time_s` uses it for a kernel alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def max_min_rates(capacity: float, flows: Sequence[tuple[int, float]]) -> list[float]:
    """Rate (fraction of its demand) of each flow ``(units, demand per unit)``; sums run in
    the order given, so equal inputs give equal floats."""
    total = 0.0
    for units, demand in flows:
        total += units * demand
    if total <= capacity:
        return [1.0] * len(flows)
    rates = [1.0] * len(flows)
    left = capacity
    units_left = 0
    for units, _ in flows:
        units_left += units
    by_demand = sorted(range(len(flows)), key=lambda i: flows[i][1])  # stable: order given
    i, n = 0, len(by_demand)
    while i < n:
        units, demand = flows[by_demand[i]]
        if demand * units_left > left:
            break  # it and every flow after it get the fair share
        left -= units * demand
        units_left -= units
        i += 1
    fair = left / units_left if units_left else 0.0
    for j in by_demand[i:]:
        rates[j] = fair / flows[j][1]
    return rates


def max_min_rates_columns(capacity: float, units: np.ndarray,
                          demands: Sequence[float]) -> np.ndarray:
    """:func:`max_min_rates` for many independent resources at once: column ``j`` of
    ``units`` (flows x resources) holds each flow's units on resource ``j``; a flow asks the
    same ``demands[i]`` per unit everywhere, so the flows go in the same order in every
    column. Returns each flow's rate per column; sums run in the order given."""
    flows, columns = units.shape
    rates = np.ones((flows, columns))
    total = np.zeros(columns)
    for i in range(flows):
        total = total + units[i] * demands[i]
    active = total > capacity  # columns still filling; the others give every flow rate 1
    if not active.any():
        return rates
    left = np.full(columns, float(capacity))
    units_left = units.sum(axis=0)
    closed = np.zeros(columns, dtype=bool)
    fair = np.zeros(columns)
    for i in sorted(range(flows), key=lambda i: demands[i]):  # stable: order given
        demand = demands[i]
        keep = active & (demand * units_left <= left)
        newly = active & ~keep
        if newly.any():  # the fair share of these columns is found: the rest get it
            fair = np.where(newly, left / np.where(newly, units_left, 1), fair)
            closed |= newly
        active = keep
        left = np.where(keep, left - units[i] * demand, left)
        units_left = np.where(keep, units_left - units[i], units_left)
        rates[i] = np.where(closed, fair / demand, 1.0)
    return rates
