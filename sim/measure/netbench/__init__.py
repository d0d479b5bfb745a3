"""Device campaign 2: real layer kernels and network runs measured with PyTorch and CuPy."""
