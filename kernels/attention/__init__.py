"""Softmax attention over padded or packed rows, by segment ids and positions.

`dot_product_attention` is the one entry point every erpjax model calls; `implementation` picks a
tuned XLA formulation (default), the float32 reference, `jax.nn.dot_product_attention` (XLA or
cuDNN), or a Pallas flash-attention kernel.
"""

from erpjax_kernels.attention._api import IMPLEMENTATIONS as IMPLEMENTATIONS
from erpjax_kernels.attention._api import Implementation as Implementation
from erpjax_kernels.attention._api import check_implementation as check_implementation
from erpjax_kernels.attention._api import dot_product_attention as dot_product_attention
from erpjax_kernels.attention._mask import visible_b1ts as visible_b1ts
from erpjax_kernels.attention._pallas import attention_pallas as attention_pallas
from erpjax_kernels.attention._reference import attention_reference as attention_reference
from erpjax_kernels.attention._splash import attention_splash as attention_splash
from erpjax_kernels.attention._xla import attention_xla as attention_xla
