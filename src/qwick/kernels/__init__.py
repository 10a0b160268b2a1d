"""All of qwick's native code: the C++ sources (csrc/), their build (build.py) and the Python wrappers of their
ops (cpu_ops.py: attention, norms, bf16 Linear; woq.py: the int8 / int4 kernels' choice). Every op is `qwick::*`;
`QWICK_KERNELS=torch` turns them all off (build.native_kernels_enabled)."""
