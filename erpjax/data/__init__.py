"""Routing datasets: the data model, readers and writers, and real-data adapters."""

# Data model.
from erpjax.data._errors import DataError
from erpjax.data._schema import RewardSamples, RoutingDataset

# Reading and writing the on-disk format (docs/data_format.md).
from erpjax.data._io import load_folder, read_dataset, read_prompts, write_dataset

# Train/test overlap and prompt text handling.
from erpjax.data._splits import Overlap, drop_overlap, find_overlap
from erpjax.data._text import keep_tail, normalize_text, shared_prefix, strip_prefix

# Real-data adapters.
from erpjax.data._routerbench import load_routerbench
from erpjax.data._llmrouter import load_llmrouter
from erpjax.data._perfectblend import read_perfectblend
