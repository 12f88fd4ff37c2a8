"""Counterfactual images (Section 5.3, Appendix D): a class-token-conditioned diffusion decoder and SAE interventions.

Modules, one idea each:

``images``         tokens, pixels and planted masks of the data stage at the decoder's resolution
``decoder``        the conditional UNet, the noise schedule, Eq. 12 and DDIM sampling from given noise
``train``          resumable decoder training (checkpoints, divergence guard)
``interventions``  ``do(i, β)`` (Eq. 13), counterfactual tokens (Eq. 14 + δ), the add-then-remove cycle
``axioms``         finding classifier, image distances, segmentation IoU
``experiment``     the chapter's choice of features and images, and the rows of ``axioms.csv``
"""

from saerad.counterfactual.decoder import (
    ConditionalDDPM, DecoderConfig, noise_prediction_loss, noise_schedule, sample_images, starting_noise,
)
from saerad.counterfactual.interventions import add_then_remove, code_value, counterfactual_tokens, do
from saerad.counterfactual.train import (
    PAPER_DECODER_TRAIN_CONFIG, DecoderTrainConfig, DecoderTrainResult, load_decoder, train_decoder,
)

__all__ = [
    "ConditionalDDPM", "DecoderConfig", "noise_prediction_loss", "noise_schedule", "sample_images", "starting_noise",
    "add_then_remove", "code_value", "counterfactual_tokens", "do", "PAPER_DECODER_TRAIN_CONFIG",
    "DecoderTrainConfig", "DecoderTrainResult", "load_decoder", "train_decoder",
]
