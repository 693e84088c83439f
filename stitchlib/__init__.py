"""stitchlib: measure how similar neural-network representations are.

Model stitching (direct matching and task loss matching), structural similarity
indices and per-layer OOD detectors, computed from cached activations.
"""

__version__ = "0.1.0"
