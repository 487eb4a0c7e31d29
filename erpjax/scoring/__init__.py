"""Reward-model scoring: (id, prompt, response) items -> scores in resumable Parquet shards."""

# The engine.
from erpjax.scoring._engine import (
    ScoreItem,
    ScoringConfig,
    ScoringEngine,
    ScoringSummary,
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

# Score folders.
from erpjax.scoring._shards import ScoreFolderError, Scores, read_scores

# Routing datasets.
from erpjax.scoring._dataset import score_dataset
