"""Reward-model scoring: (id, prompt, response) items -> scores in resumable Parquet shards.

Names are imported on first use (`erpjax._lazy`): `from erpjax.scoring import ScoringConfig`
does not load transformers or the model families.
"""

from erpjax._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    # The engine.
    "_engine": ("ScoreItem", "ScoringConfig", "ScoringEngine", "ScoringSummary"),
    # Input layouts of reward models.
    "_format": ("FORMATTER_KEY", "ChatTemplateFormatter", "DialogueFormatter", "Formatter",
                "TextPairFormatter", "Tokenized", "dialogue", "formatter_for"),
    # Score folders.
    "_shards": ("ScoreFolderError", "Scores", "read_scores"),
    # Routing datasets.
    "_dataset": ("score_dataset",),
})
