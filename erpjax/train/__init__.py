"""Training jobs: the Bradley-Terry reward model of `erpjax train-rm`.

Names are imported on first use (`erpjax._lazy`).
"""

from erpjax._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    # The reward-model job: config, run, result; its model and loss.
    "reward_model": ("TrainRMConfig", "TrainRMResult", "PairData", "load_pair_data",
                     "train_reward_model", "build_reward_model", "export_reward_model",
                     "bradley_terry_loss"),
    # Preference pairs packed into fixed-shape batches.
    "_pairs": ("PairBatch", "pack_pairs"),
})
