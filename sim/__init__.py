"""The simulator: a SimPy model of a GPU executing kernels from several streams."""
