"""Figures and the ``gpusim reproduce`` run that writes every figure, table and trace."""

#: Where ``gpusim reproduce`` writes unless told otherwise (here, not in
#: :mod:`sim.report.reproduce`, so that the CLI can show it without importing matplotlib).
DEFAULT_OUT_DIR = "reproduce_out"
