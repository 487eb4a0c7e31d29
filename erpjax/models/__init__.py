"""erpjax."""

# Decoder reward models (Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2); importing registers them.
from erpjax.models.decoder import DecoderConfig as DecoderConfig
from erpjax.models.decoder import DecoderRewardModel as DecoderRewardModel
from erpjax.models.decoder import last_token_index as last_token_index
from erpjax.models.decoder import load_decoder_reward_model as load_decoder_reward_model
from erpjax.models.decoder import positions_from_segments as positions_from_segments
from erpjax.models.presets import get_preset as get_decoder_preset
from erpjax.models.rope import RopeConfig as RopeConfig
