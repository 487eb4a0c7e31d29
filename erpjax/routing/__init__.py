"""ERP prediction and cost-aware routing: ridge heads, the router module, sweeps, checkpoints."""

from erpjax.routing._checkpoint import RouterCheckpointError, load_router, save_router
from erpjax.routing._ridge import fit_ridge, fit_ridge_head
from erpjax.routing._router import ERPRouter, RouterSpec, add_llm, fit_router, route
from erpjax.routing._sweep import cost_weight_for_budget, cost_weight_grid, max_useful_cost_weight
