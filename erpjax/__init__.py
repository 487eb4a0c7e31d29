"""erpjax: expected reward prediction and cost-aware model routing in JAX."""

__version__ = "0.1.0"
