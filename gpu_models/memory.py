"""Memory-level parallelism: the DRAM bandwidth that resident warps can draw (docs/model.md §6.7).

A warp streaming through memory keeps a few hundred bytes of loads and stores in flight and
waits a DRAM latency for them, so by Little's law a kernel whose resident warps keep ``F``
bytes in flight reaches at most ``X = F / L0`` at the unloaded latency ``L0``. The latency is
not fixed: it rises as the memory system fills (queues in the memory controllers), and the
published curves (gpu-benches, ``shared/reference/microbench``) bend smoothly into their
plateau rather than following ``min(X, peak)``. The model takes the latency at utilisation
``rho = R / B`` of the plateau ``B`` to be

    L(rho) = L0 / (1 - rho^n)^(1/n)

(``n`` = :attr:`MemoryParams.knee`; ``n = 1`` is the M/M/1 queue's ``L0 / (1 - rho)``), and
solving ``R = F / L(R / B)`` gives the **single-kernel curve**

    R = X / (1 + (X / B)^n)^(1/n),    X = F / L0

which is linear (Little's law) at low parallelism and approaches ``B`` smoothly.
:func:`stream_bandwidth_Bps` is that curve for a streaming kernel with ``W`` resident warps
on every SM (``F = sm_count x W x bytes_in_flight_per_warp_B``): what the latency-aware cost
model prices memory time with.

**Several kernels at once** share one memory system, so they see one latency: kernel ``i``
with ``X_i`` gets ``min(D_i, X_i x L0 / L(rho))`` (its demand ``D_i`` if it asks less), and
``rho`` is the fixed point of the total. Two kernels of ``W`` warps per SM each reach
together what one kernel of ``2W`` reaches alone; a kernel asking less than its parallelism
allows keeps its demand (it still adds load, so the others' latency rises).
:class:`MemorySystem` solves this for the engine.

**Units in the engine.** The engine's DRAM is ``dram_bw_Bps`` of *bandwidth-equivalent*
bytes (cost models divide bytes by the fraction of the bandwidth a kind of kernel reaches,
docs/model.md §4.3). So :class:`MemorySystem` scales the curve to reach ``dram_bw_Bps`` at
full occupancy: a kernel with ``W`` warps per SM alone gets
``dram_bw_Bps x R(W) / R(max_warps_per_sm)`` equivalent bytes/s, i.e. the fraction of its
full-occupancy rate the measured curve shows, and the cost model keeps saying what that
full-occupancy rate is. A cost model that prices real bytes with :func:`stream_bandwidth_Bps`
converts them with :meth:`MemorySystem.equivalent_bytes`.

**Parameters** (:class:`MemoryParams`) come from ``data/memory.toml``: fitted per measured GPU
by ``scripts/fit_memory_model.py`` (``bytes_in_flight_per_warp_B``, ``plateau_fraction``,
``knee``; ``latency_s`` measured), with the measured points kept as the fit's evidence.
A preset without a measurement takes those of a measured GPU of its architecture, or of the
measured architecture with the nearest compute capability, and says so in its ``source``.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gpu_models.errors import GpusimError
from gpu_models.sharing import max_min_rates
from gpu_models.spec import GPUSpec

DATA_FILE = "memory.toml"


@dataclass(frozen=True)
class MemoryParams:
    """Memory-parallelism parameters of one GPU (or architecture)."""

    #: Bytes one resident warp of a streaming kernel keeps in flight.
    bytes_in_flight_per_warp_B: float
    #: DRAM latency of an unloaded memory system.
    latency_s: float
    #: The curve's plateau ``B`` as a fraction of the GPU's ``dram_bw_Bps``.
    plateau_fraction: float
    #: Sharpness ``n >= 1`` of the latency rise (and of the curve's knee).
    knee: float
    #: Where the values come from: ``"measured: ..."`` or ``"derived: ..."``.
    source: str

    def __post_init__(self) -> None:
        for name in ("bytes_in_flight_per_warp_B", "latency_s", "plateau_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise GpusimError(f"memory parameters: {name} must be a finite number > 0 "
                                  f"(got {value!r})")
        if not (isinstance(self.knee, (int, float)) and 1 <= self.knee < math.inf):
            raise GpusimError(f"memory parameters: knee must be a finite number >= 1 "
                              f"(got {self.knee!r})")

    @property
    def derived(self) -> bool:
        """Whether the values were carried from another GPU rather than measured on this one."""
        return self.source.startswith("derived")


@dataclass(frozen=True)
class MeasuredCurve:
    """One fitted microbenchmark curve: bandwidth against resident warps per SM."""

    #: Preset the measurement is for.
    preset: str
    gpu: str
    source: str
    sm_count: int
    #: Datasheet bandwidth of the measured part (``plateau_fraction`` is relative to it).
    datasheet_bw_Bps: float
    warps_per_sm: tuple[float, ...]
    measured_Bps: tuple[float, ...]
    fit_max_rel_error: float
    fit_rms_rel_error: float
    params: MemoryParams


# ---------------------------------------------------------------------- the curve
def curve_Bps(unloaded_Bps: float, plateau_Bps: float, knee: float) -> float:
    """Bandwidth reached by parallelism worth ``unloaded_Bps`` at the unloaded latency:
    ``X / (1 + (X / B)^n)^(1/n)`` (module docstring)."""
    if unloaded_Bps <= 0:
        return 0.0
    ratio = unloaded_Bps / plateau_Bps
    if ratio > 1.0:  # the same value, written so that a huge ratio cannot overflow
        return plateau_Bps / (1.0 + ratio ** -knee) ** (1.0 / knee)
    return unloaded_Bps / (1.0 + ratio ** knee) ** (1.0 / knee)


def loaded_latency_s(params: MemoryParams, utilisation: float) -> float:
    """DRAM latency with the memory system at ``utilisation`` (0 <= rho < 1) of its plateau:
    ``L0 / (1 - rho^n)^(1/n)``."""
    if not 0 <= utilisation < 1:
        raise GpusimError(f"utilisation must be in [0, 1) (got {utilisation!r})")
    return params.latency_s / (1.0 - utilisation ** params.knee) ** (1.0 / params.knee)


def stream_bandwidth_Bps(spec: GPUSpec, warps_per_sm: float,
                         params: MemoryParams | None = None) -> float:
    """DRAM bandwidth (real bytes/s) one streaming kernel reaches alone with ``warps_per_sm``
    resident warps on every SM of ``spec``: the single-kernel curve.

    ``params`` default to :func:`memory_params` of ``spec``.
    """
    if not 0 <= warps_per_sm <= spec.max_warps_per_sm:
        raise GpusimError(f"warps_per_sm must be in [0, {spec.max_warps_per_sm}] on "
                          f"{spec.name} (got {warps_per_sm!r})")
    p = memory_params(spec) if params is None else params
    unloaded = spec.sm_count * warps_per_sm * p.bytes_in_flight_per_warp_B / p.latency_s
    return curve_Bps(unloaded, p.plateau_fraction * spec.dram_bw_Bps, p.knee)


# ---------------------------------------------------------------------- several kernels
@dataclass(frozen=True)
class Grant:
    """DRAM bandwidth granted to each kernel by :meth:`MemorySystem.share`."""

    #: Bandwidth-equivalent bytes/s per kernel, in the order asked.
    rates_Bps: tuple[float, ...]
    #: Their sum.
    used_Bps: float
    #: Some kernel got less than it asked.
    limited: bool


@dataclass(frozen=True)
class MemorySystem:
    """The DRAM of one GPU as the engine sees it: ``capacity_Bps`` of bandwidth-equivalent
    bytes, reached at full occupancy, and the memory-parallelism bound below it."""

    capacity_Bps: float
    params: MemoryParams
    #: Plateau ``B`` of the real curve, bytes/s.
    plateau_Bps: float
    #: Real bandwidth of a streaming kernel at full occupancy on every SM, bytes/s.
    full_rate_Bps: float
    #: Bytes such a kernel keeps in flight.
    full_in_flight_B: float

    @classmethod
    def for_gpu(cls, spec: GPUSpec, params: MemoryParams | None = None) -> MemorySystem:
        """The memory system of ``spec`` (``params`` default to :func:`memory_params`)."""
        p = memory_params(spec) if params is None else params
        return cls(capacity_Bps=spec.dram_bw_Bps, params=p,
                   plateau_Bps=p.plateau_fraction * spec.dram_bw_Bps,
                   full_rate_Bps=stream_bandwidth_Bps(spec, spec.max_warps_per_sm, p),
                   full_in_flight_B=(spec.sm_count * spec.max_warps_per_sm
                                     * p.bytes_in_flight_per_warp_B))

    def block_in_flight_B(self, warps: int, declared_B: float = 0.0) -> float:
        """Bytes one resident block keeps in flight: its warps at the streaming rate, or what
        its cost model declares (e.g. shared-memory tiles being loaded), whichever is more."""
        return max(warps * self.params.bytes_in_flight_per_warp_B, declared_B)

    def unloaded_Bps(self, in_flight_B: float) -> float:
        """Little's law at the unloaded latency: ``in_flight / L0`` (real bytes/s)."""
        return in_flight_B / self.params.latency_s

    def equivalent_bytes(self, real_bytes: float) -> float:
        """Bandwidth-equivalent bytes of ``real_bytes`` for a kernel whose real rate the
        curve gives: ``capacity`` stands for the full-occupancy rate."""
        return real_bytes * self.capacity_Bps / self.full_rate_Bps

    def share(self, demands_Bps: Sequence[float], unloaded_Bps: Sequence[float],
              blocks: Sequence[int]) -> Grant:
        """Bandwidth for kernels asking ``demands_Bps`` (bandwidth-equivalent) whose
        ``blocks`` resident blocks keep ``unloaded_Bps`` in flight (:meth:`unloaded_Bps`,
        real bytes/s).

        First the parallelism bound: every kernel sees the latency of the total load, so
        kernel ``i`` may draw ``min(D_i, C x xi_i x s(y p))`` with ``xi_i = X_i / R_full``,
        ``p = R_full / B``, ``s(rho) = (1 - rho^n)^(1/n)`` and ``y`` the fixed point
        ``y = sum_i min(d_i, xi_i s(y p))`` (``d_i = D_i / C``). With streaming warps only,
        ``y <= 1`` (every SM full of them uses the bandwidth to the full). Then, where
        blocks declare more in flight than streaming warps keep and the total still exceeds
        the capacity, the capacity is shared max-min fairly per block
        (:func:`gpu_models.sharing.max_min_rates`).
        """
        capacity = self.capacity_Bps
        n = self.params.knee
        p = self.full_rate_Bps / self.plateau_Bps
        d = [demand / capacity for demand in demands_Bps]
        xi = [x / self.full_rate_Bps for x in unloaded_Bps]
        total = 0.0
        for value in d:
            total += value
        if _all_within(d, xi, _s(total * p, n)):
            return _capped(tuple(demands_Bps), blocks, capacity, False)

        def g(y: float) -> tuple[float, float]:
            """sum_i min(d_i, xi_i s(y p)) - y, and its slope."""
            s = _s(y * p, n)
            ds = _ds(y * p, n) * p
            value, slope = -y, -1.0
            for di, xii in zip(d, xi, strict=True):
                if xii * s < di:
                    value += xii * s
                    slope += xii * ds
                else:
                    value += di
            return value, slope

        # g is concave and decreasing with g(0) >= 0 > g(hi): Newton from the right moves
        # monotonically down to the root; bisection guards the steps where the slope is
        # infinite (at rho = 1) or the step leaves the bracket. The root were every kernel
        # held by its parallelism, xi / (1 + (xi p)^n)^(1/n), lies at or right of the root.
        xi_total = 0.0
        for value in xi:
            xi_total += value
        all_held = xi_total / (1.0 + (xi_total * p) ** n) ** (1.0 / n)
        lo, hi = 0.0, min(total, all_held, 1.0 / p)
        y = hi
        for _ in range(200):
            value, slope = g(y)
            if value >= 0:
                lo = y
            else:
                hi = y
            if hi - lo <= 4 * math.ulp(hi):
                break
            step = y - value / slope if math.isfinite(slope) and slope < 0 else math.nan
            if abs(step - y) <= 4 * math.ulp(y):
                break  # converged (a nan step compares False)
            y = step if lo < step < hi else 0.5 * (lo + hi)
        s = _s(y * p, n)
        rates = tuple(min(demand, capacity * x * s) for demand, x in zip(demands_Bps, xi,
                                                                          strict=True))
        return _capped(rates, blocks, capacity,
                       any(r < demand for r, demand in zip(rates, demands_Bps, strict=True)))

    def alone_Bps(self, demand_Bps: float, unloaded_Bps: float, blocks: int) -> float:
        """:meth:`share` for one kernel: what it gets alone."""
        return self.share((demand_Bps,), (unloaded_Bps,), (blocks,)).rates_Bps[0]

    def in_flight_for(self, demand_Bps: float, blocks: int) -> float:
        """Bytes per block that ``blocks`` resident blocks must keep in flight for a kernel
        alone to get ``demand_Bps`` (bandwidth-equivalent): ``xi = d / s(d p)``, i.e. the
        parallelism a cost model's own time for the kernel implies. A demand beyond the
        capacity needs what the capacity needs (the bandwidth binds beyond it)."""
        if demand_Bps <= 0:
            return 0.0
        d = demand_Bps / self.capacity_Bps
        s = _s(d * self.full_rate_Bps / self.plateau_Bps, self.params.knee)
        if d >= 1.0 or s <= 0.0:
            return self.full_in_flight_B / blocks  # what reaches the capacity: a full GPU
        return min(d / s * self.full_rate_Bps * self.params.latency_s,
                   self.full_in_flight_B) / blocks


def _capped(rates: tuple[float, ...], blocks: Sequence[int], capacity: float,
            limited: bool) -> Grant:
    """``rates`` shared max-min fairly per block where their sum exceeds ``capacity``."""
    used = 0.0
    for rate in rates:
        used += rate
    if used > capacity:
        fractions = max_min_rates(capacity, [(b, r / b) for b, r in zip(blocks, rates,
                                                                          strict=True)])
        rates = tuple(r * f for r, f in zip(rates, fractions, strict=True))
        used, limited = capacity, True
    return Grant(rates, used, limited)


def _s(rho: float, n: float) -> float:
    """Latency factor ``L0 / L = (1 - rho^n)^(1/n)``; 0 at or beyond the plateau."""
    if rho >= 1.0:
        return 0.0
    return (1.0 - rho ** n) ** (1.0 / n)


def _ds(rho: float, n: float) -> float:
    """Derivative of :func:`_s` (``-inf`` at the plateau)."""
    if rho >= 1.0:
        return -math.inf
    if rho <= 0.0:
        return 0.0 if n > 1 else -1.0
    return -(rho ** (n - 1)) * (1.0 - rho ** n) ** (1.0 / n - 1.0)


def _all_within(d: Sequence[float], xi: Sequence[float], s: float) -> bool:
    return all(di <= xii * s for di, xii in zip(d, xi, strict=True))


# ---------------------------------------------------------------------- parameters
@functools.cache
def _table() -> dict[str, Any]:
    text = (resources.files("gpu_models") / "data" / DATA_FILE).read_text(encoding="utf-8")
    return tomllib.loads(text)


def _params_of(preset: str, entry: dict[str, Any], source: str) -> MemoryParams:
    return MemoryParams(
        bytes_in_flight_per_warp_B=float(entry["bytes_in_flight_per_warp_B"]),
        latency_s=float(entry["latency_s"]),
        plateau_fraction=float(entry["plateau_fraction"]),
        knee=float(entry["knee"]),
        source=source,
    )


def measured_curves() -> tuple[MeasuredCurve, ...]:
    """Every fitted curve of ``data/memory.toml``, in file order."""
    curves = []
    for preset, entry in _table()["measured"].items():
        curves.append(MeasuredCurve(
            preset=preset, gpu=entry["gpu"], source=entry["source"],
            sm_count=int(entry["sm_count"]), datasheet_bw_Bps=float(entry["datasheet_bw_Bps"]),
            warps_per_sm=tuple(float(w) for w in entry["warps_per_sm"]),
            measured_Bps=tuple(float(v) * 1e9 for v in entry["measured_GBps"]),
            fit_max_rel_error=float(entry["fit_max_rel_error"]),
            fit_rms_rel_error=float(entry["fit_rms_rel_error"]),
            params=_params_of(preset, entry, f"measured: {entry['gpu']}, {entry['source']}"),
        ))
    return tuple(curves)


@functools.cache
def _params_for(preset: str, compute_capability: tuple[int, int]) -> MemoryParams:
    table = _table()
    measured: dict[str, Any] = table["measured"]
    if preset in measured:
        entry = measured[preset]
        return _params_of(preset, entry, f"measured: {entry['gpu']}, {entry['source']}")
    arch: dict[str, str] = table["architecture"]
    cc = f"{compute_capability[0]}.{compute_capability[1]}"
    if cc in arch:
        origin = arch[cc]
        rule = f"architecture {cc} takes {origin!r}'s"
    else:
        value = compute_capability[0] + compute_capability[1] / 10
        # The nearest measured architecture; the older one on a tie.
        nearest = min(arch, key=lambda k: (abs(float(k) - value), float(k)))
        origin = arch[nearest]
        rule = f"no measured {cc} GPU: the nearest measured architecture {nearest} ({origin!r})"
    entry = measured[origin]
    return _params_of(origin, entry, f"derived: {rule} (measured: {entry['gpu']})")


def memory_params(spec: GPUSpec) -> MemoryParams:
    """The memory-parallelism parameters of ``spec``: its preset's measurement, else those
    of its architecture (module docstring). A hypothetical variant (``spec.replace``) keeps
    its preset's; the curve then follows its SM count and bandwidth."""
    return _params_for(spec.preset or spec.name, tuple(spec.compute_capability))
