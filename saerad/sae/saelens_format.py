"""Save and load SAEs in the on-disk format of SAELens (``cfg.json`` + ``sae_weights.safetensors``).

Our parameter names and layouts are SAELens's, so the weights file is the
state dict as is:

* gated family: ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec``,
  ``b_gate``, ``b_mag``, ``r_mag``;
* standard and topk: ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``;
* matryoshka: those four and ``threshold [d_sae]``, written as SAELens's
  ``jumprelu`` architecture (its forward pass at inference).

SAELens's gated forward pass is::

    x' = x - b_dec if apply_b_dec_to_input else x
    h  = 1[x' W_enc + b_gate > 0] * ReLU(x' (W_enc ⊙ exp(r_mag)) + b_mag)
    x̂  = h W_dec + b_dec

which is Eq. 8 when ``apply_b_dec_to_input`` is false (how we write SAE-Rad)
and Eq. 4 when it is true (how we write the gated preset), so an exported
SAE-Rad computes the same features under SAELens. Its standard forward pass
is ``ReLU(x' W_enc + b_enc)``: Eq. 6 (``conerly``) or Eq. 1 (``vanilla``).

``cfg.json`` is written in SAELens's flat (pre-6.0) layout, which both old
and new SAELens versions read; our own full config sits under ``saerad``
(SAELens ignores unknown keys), so :func:`load_sae` rebuilds the exact model,
including the training switches that the forward pass does not show.
``tests/test_sae_saelens_parity.py`` checks both directions against the real
package (pinned in ``requirements-saelens.txt``): SAELens's
``SAE.load_from_disk`` on our files, and our loader on files SAELens saved
(its 6.x layout, inference and training classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from saerad.io import atomic_path, read_json, write_json
from saerad.sae.config import SAEConfig, make_config
from saerad.sae.models import SparseAutoencoder, build_sae

CONFIG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
DEFAULT_MODEL_NAME = "microsoft/rad-dino"
DEFAULT_HOOK_NAME = "rad_dino.pooler_output"


def saelens_config(sae: SparseAutoencoder, model_name: str = DEFAULT_MODEL_NAME,
                   hook_name: str = DEFAULT_HOOK_NAME) -> dict[str, Any]:
    """The ``cfg.json`` content for ``sae``.

    Parameters
    ----------
    sae
        Any of our models.
    model_name, hook_name
        Where the SAE's inputs come from; informational for SAELens (there is
        no TransformerLens hook for an image encoder's class token).
    """
    config = sae.config
    payload: dict[str, Any] = {
        "architecture": config.architecture,
        "d_in": config.d_in,
        "d_sae": config.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": config.centre_input,
        # Tokens are scaled to mean norm sqrt(d) before they reach the SAE
        # (saerad.encode.tokens); the SAE itself applies no normalisation.
        "normalize_activations": "none",
        "model_name": model_name,
        "hook_name": hook_name,
        "hook_layer": 0,
        "hook_head_index": None,
        "context_size": 1,
        "prepend_bos": False,
        "dataset_path": "",
        "dataset_trust_remote_code": False,
        "activation_fn_str": "relu",
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": None,
        "saerad": config.to_dict(),
    }
    if config.architecture == "matryoshka":
        # At inference a Matryoshka BatchTopK SAE is a JumpReLU SAE with one threshold shared by all features.
        payload["architecture"] = "jumprelu"
    if config.architecture == "topk":
        payload["k"] = config.k
        payload["activation_fn_str"] = "topk"
        payload["activation_fn_kwargs"] = {"k": config.k}
    return payload


def save_sae(sae: SparseAutoencoder, directory: str | Path, model_name: str = DEFAULT_MODEL_NAME,
             hook_name: str = DEFAULT_HOOK_NAME) -> Path:
    """Write ``cfg.json`` and ``sae_weights.safetensors`` into ``directory`` (atomically).

    Returns
    -------
    Path
        ``directory``.
    """
    directory = Path(directory)
    tensors = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in sae.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILENAME) as temporary:
        save_file(tensors, str(temporary))
    write_json(directory / CONFIG_FILENAME, saelens_config(sae, model_name, hook_name))
    return directory


def load_sae(directory: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Rebuild an SAE written by :func:`save_sae` (or a gated/standard SAE written by SAELens).

    A ``cfg.json`` without our ``saerad`` key is mapped onto the closest
    preset: gated without input centring is SAE-Rad, gated with it the gated
    preset, standard without centring Conerly, with it vanilla. The forward
    pass is then exact; the training switches are a guess.
    """
    directory = Path(directory)
    payload = read_json(directory / CONFIG_FILENAME)
    config = SAEConfig.from_dict(payload["saerad"]) if "saerad" in payload else _config_from_saelens(payload)
    sae = build_sae(config)
    state = load_file(str(directory / WEIGHTS_FILENAME))
    sae.load_state_dict(state, strict=True)
    # Eval mode: a Matryoshka SAE encodes by its threshold there, by the batch rule in training mode.
    return sae.to(device).eval()


def _config_from_saelens(payload: dict[str, Any]) -> SAEConfig:
    d_in, d_sae = int(payload["d_in"]), int(payload["d_sae"])
    if d_sae % d_in:
        raise ValueError(f"d_sae={d_sae} is not a multiple of d_in={d_in}; cannot express it as an expansion factor")
    if payload.get("normalize_activations", "none") not in ("none", None):
        raise ValueError(f"normalize_activations={payload['normalize_activations']!r} is not supported")
    centred = bool(payload.get("apply_b_dec_to_input", True))
    architecture = payload.get("architecture", "standard")
    if architecture == "gated":
        name = "gated" if centred else "sae_rad"
    elif architecture == "standard":
        name = "vanilla" if centred else "conerly"
    else:
        raise ValueError(f"cannot load a SAELens {architecture!r} SAE without our 'saerad' config key")
    return make_config(name, d_in, d_sae // d_in)
