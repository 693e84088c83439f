"""stitchlib: measure how similar neural-network representations are.

Model stitching (direct matching and task loss matching), structural similarity
indices and per-layer OOD detectors, computed from cached activations.

The notebook API (``stitchlib.network``, ``activations``, ``fit_dm``, ``train_tlm``, ``evaluate``,
``compare``; see :mod:`stitchlib.api`) loads on first use, so ``import stitchlib`` stays free of torch for the
workflow's DAG-time validation.
"""

__version__ = "0.1.0"

_API = ("network", "activations", "fit_dm", "train_tlm", "evaluate", "compare")
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        from stitchlib import api

        return getattr(api, name)
    raise AttributeError(f"module 'stitchlib' has no attribute {name!r}")
