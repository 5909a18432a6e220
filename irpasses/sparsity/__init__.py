"""Sparsity: N:M and unstructured pruning (``prune``, ``nm``) and channel permutations for N:M (``permutation``)."""
