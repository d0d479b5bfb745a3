"""Units: inside gpusim every time is in seconds, every size in bytes, all work in FLOP.

Conversions happen only at the edges (command-line tables, JSON written in microseconds,
plots, trace files), always through these constants, so that a reader sees the unit in the
name: ``time_s * US_PER_S`` is microseconds, ``value_us / US_PER_S`` is seconds.
Decimal prefixes for rates and sizes as GPU datasheets use them (GB/s = 1e9 bytes/s); binary
ones (KiB, MiB, GiB) only where a size is a power of two in hardware (shared memory, caches).
"""

from __future__ import annotations

#: Microseconds, milliseconds and nanoseconds per second.
US_PER_S = 1e6
MS_PER_S = 1e3
NS_PER_S = 1e9

#: Decimal prefixes (GB/s, TFLOP/s, MHz, GFLOP).
KILO = 1e3
MEGA = 1e6
GIGA = 1e9
TERA = 1e12

#: Binary sizes in bytes.
KIB = 2**10
MIB = 2**20
GIB = 2**30
