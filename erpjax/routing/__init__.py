"""ERP prediction and cost-aware routing: predictors, the router module, sweeps, checkpoints.

Names are imported on first use (`erpjax._lazy`): `from erpjax.routing import route` loads neither
orbax (checkpoints) nor the streamed-statistics fit.
"""

from erpjax._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    # Predictors of expected rewards, behind one interface.
    "_predictors": ("KNN", "PREDICTORS", "GlobalMean", "MLPPredictor", "Predictor", "Ridge",
                    "Shrunk", "SoftCluster", "from_spec as predictor_from_spec"),
    "_ridge": ("fit_ridge", "fit_ridge_heads", "loo_errors", "ridge_path"),
    # Ridge heads from streamed, sharded sufficient statistics (N never on one device).
    "_ridge_stats": ("RidgeStatistics", "fit_ridge_streamed"),
    # The router and the routing rule (cost weight λ; the safe rule at λ = 0).
    "_router": ("ERPRouter", "RouterSpec", "add_llm", "fit_router", "route", "safe_utilities"),
    "_safe": ("calibrate_margins",),
    # `predictor: auto`: the choice by cross-validation on the training split.
    "_select": ("CVRow", "Selection", "default_candidates", "fit_selected_router"),
    # Cost weights: the grid a router is swept over, and the one meeting a budget.
    "_sweep": ("cost_weight_for_budget", "cost_weight_grid", "max_useful_cost_weight"),
    # Checkpoints (orbax).
    "_checkpoint": ("RouterCheckpointError", "check_encoder", "load_router", "save_router"),
})
