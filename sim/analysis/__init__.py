"""Analyses built on the engine: a workload prepared and simulated, the limits report, sweeps."""
