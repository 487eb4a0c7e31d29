"""Prompt embeddings: a BERT sentence encoder or a decoder LLM's hidden states on the shared
runner, and an on-disk cache.

Names are imported on first use (`erpjax._lazy`): the cache does not load the encoder's model.
"""

from erpjax._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    # The encoder.
    "_encoder": ("DEFAULT_NAME", "PromptEncoder", "SentenceConfig", "default_model_dir",
                 "mean_pool"),
    "_tokenize": ("Tokenizer",),
    # Features from a decoder LLM (pooled hidden states over the chat-templated prompt).
    "_decoder_features": ("ChatTokenizer", "DecoderFeaturizer", "default_model_file"),
    # The on-disk cache.
    "cache": ("EmbeddingCache", "encode_cached", "text_key"),
})
