"""Figures and the ``gpusim reproduce`` run that writes every figure, table and trace."""
