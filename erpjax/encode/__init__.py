"""Prompt embeddings: a BERT sentence encoder on the shared runner, and an on-disk cache."""

# The encoder.
from erpjax.encode._encoder import DEFAULT_NAME as DEFAULT_NAME
from erpjax.encode._encoder import PromptEncoder as PromptEncoder
from erpjax.encode._encoder import SentenceConfig as SentenceConfig
from erpjax.encode._encoder import default_model_dir as default_model_dir
from erpjax.encode._encoder import mean_pool as mean_pool
from erpjax.encode._tokenize import Tokenizer as Tokenizer

# The on-disk cache.
from erpjax.encode.cache import EmbeddingCache as EmbeddingCache
from erpjax.encode.cache import encode_cached as encode_cached
from erpjax.encode.cache import text_key as text_key
