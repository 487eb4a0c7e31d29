"""ERP prediction and cost-aware routing: predictors, the router module, sweeps, checkpoints."""

from erpjax.routing._checkpoint import RouterCheckpointError, load_router, save_router
from erpjax.routing._predictors import (
    KNN,
    PREDICTORS,
    GlobalMean,
    MLPPredictor,
    Predictor,
    Ridge,
    Shrunk,
    SoftCluster,
)
from erpjax.routing._predictors import from_spec as predictor_from_spec
from erpjax.routing._ridge import fit_ridge, fit_ridge_heads, loo_errors, ridge_path
from erpjax.routing._router import ERPRouter, RouterSpec, add_llm, fit_router, route
from erpjax.routing._safe import calibrate_margins
from erpjax.routing._select import CVRow, Selection, default_candidates, fit_selected_router
from erpjax.routing._sweep import cost_weight_for_budget, cost_weight_grid, max_useful_cost_weight
