"""Reward-model scoring: (id, prompt, response) items -> scores in resumable Parquet shards."""

# The engine.
from erpjax.scoring._engine import (
    ScoreItem,
    ScoringConfig,
    ScoringEngine,
    ScoringSummary,
    param_shardings,
)

# Input layouts of reward models.
from erpjax.scoring._format import (
    FORMATTER_KEY,
    ChatTemplateFormatter,
    DialogueFormatter,
    Formatter,
    TextPairFormatter,
    Tokenized,
    dialogue,
    formatter_for,
)

# Bucketing and packing.
from erpjax.scoring._packing import Batch, Buckets, bucket_lengths, first_fit_decreasing, pack

# Score folders.
from erpjax.scoring._shards import ScoreFolderError, Scores, read_scores

# Routing datasets.
from erpjax.scoring._dataset import score_dataset
