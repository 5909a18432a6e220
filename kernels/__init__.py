"""Compiled kernels (sparse, low-bit) with numpy reference implementations; none ship yet."""
