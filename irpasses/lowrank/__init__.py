"""Low-rank factorization of MatMul/Gemm weights and 1x1 Conv kernels (``lowrank``)."""
