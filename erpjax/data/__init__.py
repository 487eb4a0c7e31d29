"""Routing datasets: the data model, readers and writers, real-data adapters and synthetic data.

Names are imported on first use (`erpjax._lazy`): `from erpjax.data import RoutingDataset` does
not load pyarrow or the adapters.
"""

from erpjax._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    # Data model.
    "_errors": ("DataError",),
    "_schema": ("RewardSamples", "RoutingDataset"),
    # Reading and writing the on-disk format (docs/data_format.md).
    "_io": ("load_folder", "read_dataset", "read_prompts", "write_dataset"),
    "_convert": ("convert_dataset",),  # a dataset folder to records, streamed (`erpjax convert`)
    # ArrayRecord records: samples for scoring, features streamed to fitting (grain).
    "_records": ("FeatureChunk", "feature_chunks", "read_manifest", "read_samples",
                 "write_features", "write_samples"),
    # Train/test overlap and prompt text handling.
    "_splits": ("Overlap", "drop_overlap", "find_overlap"),
    "_text": ("keep_tail", "normalize_text", "shared_prefix", "strip_prefix"),
    # Real-data adapters.
    "_routerbench": ("load_routerbench",),
    "_llmrouter": ("load_llmrouter",),
    "_perfectblend": ("read_perfectblend",),
    # Preference pairs (Anthropic HH-RLHF), read by `erpjax train-rm`.
    "_hh_rlhf": ("HH_FILES", "PreferencePairs", "read_hh_pairs", "split_pairs"),
    # The seeded synthetic benchmark of `erpjax demo`, with known expected rewards.
    "_synthetic": ("SyntheticBenchmark", "make_synthetic_benchmark"),
})
