"""Flax NNX model families and their Hugging Face checkpoint loading."""

# Encoder reward models (DeBERTa-v2/v3, BERT, RoBERTa, XLM-R); importing registers them.
from erpjax.models.classifiers import BertClassifier as BertClassifier
from erpjax.models.classifiers import BertClassifierConfig as BertClassifierConfig
from erpjax.models.classifiers import load_bert_classifier as load_bert_classifier
from erpjax.models.deberta import DebertaV2Config as DebertaV2Config
from erpjax.models.deberta import (
    DebertaV2ForSequenceClassification as DebertaV2ForSequenceClassification)
from erpjax.models.deberta import load_deberta_v2 as load_deberta_v2

# Decoder reward models (Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2); importing registers them.
from erpjax.models.decoder import DecoderConfig as DecoderConfig
from erpjax.models.decoder import DecoderModel as DecoderModel
from erpjax.models.decoder import DecoderRewardModel as DecoderRewardModel
from erpjax.models.decoder import last_token_index as last_token_index
from erpjax.models.decoder import load_decoder_reward_model as load_decoder_reward_model
from erpjax.models.decoder import positions_from_segments as positions_from_segments
from erpjax.models.presets import get_preset as get_decoder_preset
from erpjax.models.rope import RopeConfig as RopeConfig

# BERT encoders (the prompt encoder's backbone).
from erpjax.models.bert import BertConfig as BertConfig
from erpjax.models.bert import BertModel as BertModel
from erpjax.models.bert import load_bert as load_bert
from erpjax.models.bert import save_bert as save_bert

# Hugging Face checkpoints, shared by every family.
from erpjax.models._hf import CheckpointError as CheckpointError
from erpjax.models._hf import KeyMap as KeyMap
from erpjax.models._hf import KeyRule as KeyRule
from erpjax.models._hf import SafetensorsCheckpoint as SafetensorsCheckpoint
from erpjax.models._hf import read_config as read_config
