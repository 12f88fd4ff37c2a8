"""Sparse autoencoders: SAE-Rad (Eqs. 8-9) and the architectures it is compared with.

Modules, one idea each:

``config``          :class:`SAEConfig`, the presets and the four switches of Section 4.1
``losses``          each loss term as a plain function of tensors
``models``          the gated, standard (ReLU), TopK and Matryoshka BatchTopK modules
``sparse``          the live-columns-only (gathered) products used when few features fire
``schedule``        learning-rate and λ schedules
``train``           resumable training loop
``resampling``      restarting dead features (optional)
``ghost_grads``     ghost gradients for dead features (optional)
``metrics``         L0, explained variance, MSE, dead features over a data set
``saelens_format``  ``cfg.json`` + ``sae_weights.safetensors`` as SAELens reads them
"""

from saerad.sae.config import ARCHITECTURES, PRESETS, SWITCHES, SAEConfig, make_config
from saerad.sae.metrics import evaluate_sae
from saerad.sae.models import GatedSAE, MatryoshkaSAE, SparseAutoencoder, StandardSAE, TopKSAE, build_sae
from saerad.sae.saelens_format import load_sae, save_sae
from saerad.sae.train import (
    PAPER_EXPANSION_FACTOR,
    PAPER_TRAIN_CONFIG,
    CheckpointMismatch,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    train_sae,
)

__all__ = [
    "ARCHITECTURES", "PRESETS", "SWITCHES", "SAEConfig", "make_config", "evaluate_sae", "GatedSAE", "MatryoshkaSAE",
    "SparseAutoencoder", "StandardSAE", "TopKSAE", "build_sae", "load_sae", "save_sae", "PAPER_EXPANSION_FACTOR",
    "PAPER_TRAIN_CONFIG", "CheckpointMismatch", "TrainConfig", "TrainingDiverged", "TrainResult", "train_sae",
]
