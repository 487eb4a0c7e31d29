"""Evaluation: metrics on arrays, peer routers, cost frontiers and the one report of `erpjax run`
and `erpjax evaluate` (import it as `erpjax.eval`, or its modules; not as a bare `eval`).

Shapes: N prompts, M LLMs, D embedding dims; rewards and utilities are `[N, M]`, costs `[M]`
(or observed `[N, M]`), choices `[N]` LLM indices.
"""

# Prediction and per-prompt routing metrics.
from erpjax.eval.metrics import auroc
from erpjax.eval.metrics import chosen
from erpjax.eval.metrics import mean_r2
from erpjax.eval.metrics import mean_regret
from erpjax.eval.metrics import pairwise_auroc
from erpjax.eval.metrics import pairwise_auroc_per_pair
from erpjax.eval.metrics import pearson
from erpjax.eval.metrics import pooled_pairwise_auroc
from erpjax.eval.metrics import r2
from erpjax.eval.metrics import r2_by_category
from erpjax.eval.metrics import rankdata
from erpjax.eval.metrics import regret
from erpjax.eval.metrics import spearman
from erpjax.eval.metrics import top1_accuracy

# Routing over the cost weight λ, frontiers, area metrics (RouterBench AIQ, RouteLLM APGR/CPT).
from erpjax.eval.frontier import AIQ
from erpjax.eval.frontier import CostInterval
from erpjax.eval.frontier import Frontier
from erpjax.eval.frontier import GapRecovery
from erpjax.eval.frontier import Hull
from erpjax.eval.frontier import aiq
from erpjax.eval.frontier import default_interval
from erpjax.eval.frontier import gap_recovery
from erpjax.eval.frontier import measure
from erpjax.eval.frontier import nondecreasing_hull
from erpjax.eval.frontier import realized_costs
from erpjax.eval.frontier import route
from erpjax.eval.frontier import single_llm_points
from erpjax.eval.frontier import sweep
from erpjax.eval.frontier import weak_and_strong

# Peer routers.
from erpjax.eval.peers import CategoryBest
from erpjax.eval.peers import KNNRouter
from erpjax.eval.peers import Oracle
from erpjax.eval.peers import PeerRouter
from erpjax.eval.peers import RandomRouter
from erpjax.eval.peers import RouterData
from erpjax.eval.peers import SingleLLM
from erpjax.eval.peers import peer_utilities
from erpjax.eval.peers import permute_choices
from erpjax.eval.trained_peers import MatrixFactorizationRouter
from erpjax.eval.trained_peers import MLPRouter
from erpjax.eval.trained_peers import TrainConfig
from erpjax.eval.trained_peers import Zooter

# Reports.
from erpjax.eval.report import EvalSet
from erpjax.eval.report import evaluate
from erpjax.eval.report import headline
from erpjax.eval.report import markdown
from erpjax.eval.report import prediction_metrics
from erpjax.eval.report import write_report
