"""MIL aggregators: one small module each, all behind one interface and one registry.

Every model maps tile features ``x`` (B, N, D) and a validity mask (B, N) (True = a real tile,
False = padding) to a `MILOutput`: one slide logit per bag (B,) and one score per tile (B, N) for
heatmaps. Padded positions never influence the logit nor the scores of real tiles (the contract
test in tests/pathology/mil/test_mil_models_contract.py walks the whole registry to check it).
"""

from __future__ import annotations

from domainfm.pathology.mil.models.base import MIL_MODELS, MILModel, MILOutput, build_mil_model

# importing the modules registers them
from domainfm.pathology.mil.models import abmil, chowder, clam, dsmil, pooling, transmil  # noqa: E402,F401  isort: skip

__all__ = ["MIL_MODELS", "MILModel", "MILOutput", "build_mil_model"]
