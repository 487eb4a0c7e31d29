"""Prompt embeddings: a BERT sentence encoder with length bucketing, and an on-disk cache."""

# Length buckets: [batch, bucket] batches, so few programs are compiled.
from erpjax.encode._buckets import Batch as Batch
from erpjax.encode._buckets import batch_shapes as batch_shapes
from erpjax.encode._buckets import default_buckets as default_buckets
from erpjax.encode._buckets import make_batches as make_batches

# The encoder.
from erpjax.encode._encoder import CPU_COMPILER_OPTIONS as CPU_COMPILER_OPTIONS
from erpjax.encode._encoder import DEFAULT_NAME as DEFAULT_NAME
from erpjax.encode._encoder import PromptEncoder as PromptEncoder
from erpjax.encode._encoder import SentenceConfig as SentenceConfig
from erpjax.encode._encoder import cpu_compiler_options as cpu_compiler_options
from erpjax.encode._encoder import default_model_dir as default_model_dir
from erpjax.encode._encoder import mean_pool as mean_pool
from erpjax.encode._tokenize import Tokenizer as Tokenizer

# The on-disk cache.
from erpjax.encode.cache import EmbeddingCache as EmbeddingCache
from erpjax.encode.cache import encode_cached as encode_cached
from erpjax.encode.cache import text_key as text_key
