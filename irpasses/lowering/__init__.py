"""Lowering for a target: standard ops rewritten into the target's own kernels where they run faster."""
