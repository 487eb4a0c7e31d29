"""erpjax kernels: one folder per op, a pure-jnp reference beside each fused implementation."""
