"""Bidirectional attention with a key padding mask: a tuned XLA formulation beside its reference."""

from erpjax_kernels.attention._api import IMPLEMENTATIONS as IMPLEMENTATIONS
from erpjax_kernels.attention._api import Implementation as Implementation
from erpjax_kernels.attention._api import dot_product_attention as dot_product_attention
from erpjax_kernels.attention._reference import attention_reference as attention_reference
from erpjax_kernels.attention._xla import attention_xla as attention_xla
