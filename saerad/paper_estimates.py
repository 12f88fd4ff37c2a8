"""Time, memory and LLM cost of each stage of the paper profile, from measured inputs.

The book's page *MIMIC-CXR at paper scale* shows the tables :func:`markdown_tables`
writes; ``tests/test_paper_estimates.py`` fails when the page and this module
disagree.  Regenerate them with ``python -m saerad.paper_estimates``.

Three kinds of number, kept apart:

* **measured** (``MEASURED_CPU``): this project's 2-core CPU machine, by
  ``benchmarks/encoder_throughput.py`` and ``benchmarks/paper_shapes.py``;
* **computed** from the architecture or the code: parameter counts, FLOPs
  (counted by ``FlopCounterMode`` on the meta device:
  :func:`saerad.reports.cost.sae_training_flops_per_step` for a dense SAE step,
  :func:`saerad.reports.cost.paper_scale_flops` for the encoder), bytes of weights, gradients,
  Adam state and saved activations, and prompt tokens of the prompts the
  pipeline builds (``ceil(chars / 4)``, :func:`saerad.llm.approx_tokens`);
* **assumed** (``ASSUMED``): sustained GPU rates and reply lengths.  GPU times
  are arithmetic from these, not measurements (no GPU was available).
"""

from __future__ import annotations

import json

from saerad.llm import Price, approx_tokens, estimate_cost, price_for
from saerad.llm.pricing import PAPER_MODEL

# The paper profile (params/paper.yaml, Sections 5 and B.3).
PAPER = {"frontal_images": 243_334, "test_studies": 3_403, "d_in": 768, "expansion_factor": 64,
         "encoder_parameters": 86_580_480,  # Rad-DINO's ViT-B/14 (checked in the tests)
         "steps": 200_000, "batch_size": 2_048, "encode_batch_size": 256, "encode_workers": 8,
         "features_chunk_size": 1_024, "top_k": 10, "score_reports": 12, "report_configs": 3}
# Table 4's cost rows, SAE-Rad column (saerad.reports.cost.PAPER_TABLE4 holds its other rows).
PAPER_TABLE4_COSTS = {"training": "$3.25", "per report": "$0.00005"}
MEASURED_CPU = {
    "vit_images_per_s": 0.45,  # README "Benchmarks": Rad-DINO-sized ViT-B/14 at 518 px, 2 threads, batch 4
    "decode_images_per_s_per_core": 7.0,  # same script: one MIMIC-sized JPEG read + preprocessed, 1 core
    "sae_step_s": 30.8,  # paper_shapes.py sae_step: x64 of 768, batch 2,048, dense path, 2 threads
    "sae_step_peak_bytes": 4.08e9,  # same run: growth of the peak RSS
    "activation_tokens_per_s": 307.0,  # paper_shapes.py activations: chunks of 1,024, L0 13.3, top-k included
    "activation_peak_bytes": 1.35e9,  # same run
    "vit_weights_bytes": 0.36e9,  # paper_shapes.py vit1/vit4: RSS of the float32 weights
    "vit_bytes_per_image": 84.4e6,  # (peak growth at batch 4 - at batch 1) / 3, float32, SDPA attention
}
ASSUMED = {
    "gpu_tflops_bf16": 100.0,  # sustained, encoder and LLM in bfloat16
    "gpu_tflops_fp32": 20.0,  # sustained, SAE in float32 (the trainer does not enable TF32)
    "llm_parameters": 70e9,  # Llama-3-70B-Instruct, RadFact's judge in the paper
    "annotation_output_tokens": 400,  # reasoning over 10 reports, then the asterisk line
    "active_features": 15,  # features per report given to the composer (the paper's title)
}
# Made-up findings of an assumed typical MIMIC-CXR length (60 words), not MIMIC data.
REFERENCE_REPORT = (
    "PA and lateral views of the chest were obtained. The lungs are clear bilaterally without focal "
    "consolidation. There is no pleural effusion or pneumothorax. The cardiomediastinal silhouette is normal "
    "in size. A right-sided PICC line terminates in the lower SVC. Mild degenerative changes are seen in the "
    "thoracic spine. No acute osseous abnormality is identified. Overall, no acute cardiopulmonary process.")
CANDIDATE_REPORT = (
    "The lungs are clear without consolidation. No pleural effusion or pneumothorax is seen. The heart size is "
    "normal. A right PICC line ends in the SVC. There is no acute cardiopulmonary process.")
DESCRIPTION = "a right-sided PICC line with its tip in the lower superior vena cava and clear lungs"
# Saved-for-backward tensors of shape [batch, d_sae] in one SAE-Rad training step (checked in the tests).
SAVED_FEATURE_TENSORS = 5


def sae_parameter_count(d_in: int, d_sae: int) -> int:
    """Parameters of SAE-Rad: ``W_enc`` and ``W_dec`` (``d_in x d_sae`` each), ``b_dec``, ``b_gate``,
    ``b_mag`` and ``r_mag``."""
    return 2 * d_in * d_sae + d_in + 3 * d_sae


def sae_training_memory(d_in: int, d_sae: int, batch: int) -> dict[str, float]:
    """Bytes of an SAE-Rad training step in float32.

    Returns
    -------
    dict
        ``weights_grads_adam`` (parameters x 4 bytes x (weights + gradients + 2 Adam
        moments)), ``saved_activations`` (``SAVED_FEATURE_TENSORS`` tensors
        ``[batch, d_sae]``) and their ``total``.
    """
    state = sae_parameter_count(d_in, d_sae) * 4 * (1 + 1 + 2)
    saved = SAVED_FEATURE_TENSORS * batch * d_sae * 4
    return {"weights_grads_adam": state, "saved_activations": saved, "total": state + saved}


def duration(seconds: float) -> str:
    """Seconds as the page writes them: s, min, h or days."""
    if seconds < 120:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 7_200:
        return f"{seconds / 60:.0f} min"
    if seconds < 864_000:
        return f"{seconds / 3600:.1f} h" if seconds < 36_000 else f"{seconds / 3600:.0f} h"
    return f"{seconds / 86_400:.0f} days"


def gigabytes(n_bytes: float) -> str:
    """Bytes as GB (10^9 bytes), two decimals."""
    return f"{n_bytes / 1e9:.2f} GB"


def usd(amount: float | None) -> str:
    """Dollars, whole from $10 up, cents below; ``n/a`` for an unknown price."""
    if amount is None:
        return "n/a"
    return f"${amount:,.0f}" if amount >= 10 else f"${amount:,.2f}"


def stage_rows(measured: dict = MEASURED_CPU, assumed: dict = ASSUMED, encoder_flops: int | None = None) -> dict:
    """Time and memory per stage of the paper profile.

    Parameters
    ----------
    measured, assumed
        The inputs (defaults: ``MEASURED_CPU`` and ``ASSUMED``).
    encoder_flops
        FLOPs of one Rad-DINO forward pass; default counted on the meta device
        by :func:`saerad.reports.cost.paper_scale_flops`.

    Returns
    -------
    dict
        ``{"time": rows, "memory": rows}``, each row a list of cell strings in
        the order of ``TIME_HEADER`` / ``MEMORY_HEADER``.
    """
    from saerad.reports.cost import PAPER_TABLE4, paper_scale_flops, sae_training_flops_per_step
    from saerad.sae import make_config

    if encoder_flops is None:
        encoder_flops = paper_scale_flops()["encoder"]
    p = PAPER
    d_in, images = p["d_in"], p["frontal_images"]
    d_sae = d_in * p["expansion_factor"]
    bf16, fp32 = assumed["gpu_tflops_bf16"] * 1e12, assumed["gpu_tflops_fp32"] * 1e12
    step = sae_training_flops_per_step(make_config("sae_rad", d_in, p["expansion_factor"]), p["batch_size"])
    parameters = sae_parameter_count(d_in, d_sae)
    token_flops = 2 * d_in * d_sae
    decode_rate = measured["decode_images_per_s_per_core"] * p["encode_workers"]
    tokens_per_s = measured["activation_tokens_per_s"]
    time = [
        ["encode", f"{images:,} images x {encoder_flops / 1e12:.3f} TFLOP",
         f"{measured['vit_images_per_s']} images/s: {duration(images / measured['vit_images_per_s'])}",
         f"{duration(images * encoder_flops / bf16)} of compute; {duration(images / decode_rate)} "
         f"JPEG-bound with {p['encode_workers']} workers", "-"],
        ["SAE training", f"{p['steps']:,} steps x {step / 1e12:.2f} TFLOP = {p['steps'] * step / 1e12:,.0f} TFLOP "
         f"(2 x {parameters / 1e6:.1f}M params x tokens: {2 * parameters * p['steps'] * p['batch_size'] / 1e12:,.0f})",
         f"{measured['sae_step_s']} s/step: {duration(p['steps'] * measured['sae_step_s'])}",
         duration(p["steps"] * step / fp32),
         f"{PAPER_TABLE4['active training parameters'] / 1e6:.0f}M params, "
         f"{PAPER_TABLE4['training TFLOP']:,.0f} TFLOP, {PAPER_TABLE4_COSTS['training']}"],
        ["activation pass", f"{images:,} tokens x {token_flops / 1e6:.1f} MFLOP",
         f"{tokens_per_s:.0f} tokens/s: {duration(images / tokens_per_s)}",
         f"{duration(images * token_flops / fp32)} of products", "-"],
        ["one report (offline composer)", f"{(encoder_flops + token_flops) / 1e12:.3f} TFLOP",
         duration(1 / measured["vit_images_per_s"] + 1 / tokens_per_s),
         duration(encoder_flops / bf16 + token_flops / fp32),
         f"{PAPER_TABLE4['inference TFLOP per report']} TFLOP, {PAPER_TABLE4_COSTS['per report']}"],
    ]
    training = sae_training_memory(d_in, d_sae, p["batch_size"])
    batch = p["encode_batch_size"]
    memory = [
        [f"encode, batch {batch}, bfloat16", f"{gigabytes(p['encoder_parameters'] * 2)} weights + {batch} x "
         f"{measured['vit_bytes_per_image'] / 2e6:.0f} MB = "
         f"{gigabytes(p['encoder_parameters'] * 2 + batch * measured['vit_bytes_per_image'] / 2)}",
         f"{gigabytes(measured['vit_weights_bytes'])} weights + {measured['vit_bytes_per_image'] / 1e6:.0f} MB "
         "per image (float32)"],
        [f"SAE training, batch {p['batch_size']:,}", f"{gigabytes(training['weights_grads_adam'])} weights, "
         f"gradients, Adam + {gigabytes(training['saved_activations'])} saved activations = "
         f"{gigabytes(training['total'])}", f"{gigabytes(measured['sae_step_peak_bytes'])} peak"],
        [f"activation pass, chunks of {p['features_chunk_size']:,}", f"{gigabytes(parameters * 4)} weights + "
         f"{gigabytes(p['features_chunk_size'] * d_sae * 4)} per dense chunk tensor",
         f"{gigabytes(measured['activation_peak_bytes'])} peak"],
        ["RadFact judge, Llama-3-70B-Instruct", f"{gigabytes(assumed['llm_parameters'] * 2)} bfloat16 weights "
         "+ KV cache", "-"],
    ]
    return {"time": time, "memory": memory}


def llm_prompts() -> dict[str, tuple[list, float]]:
    """``{task: (prompts for one unit of work, output tokens per prompt)}`` built by the pipeline's own code."""
    from saerad.features.annotation import annotation_prompt
    from saerad.features.explanation import scoring_prompt
    from saerad.metrics.radfact import entailment_prompt, phrase_split_prompt, split_sentences
    from saerad.reports.prompt import CONFIGS, PriorReport, build_report_prompt

    n_active = ASSUMED["active_features"]
    features = [(DESCRIPTION, round(1 - k / n_active, 2)) for k in range(n_active)]
    priors = [PriorReport(REFERENCE_REPORT, hours) for hours in (30.5, 400.25, 9000.0)]
    compose = [build_report_prompt(features, config, "Shortness of breath. Evaluate for pneumonia.", priors)
               for config in CONFIGS]
    candidate, reference = split_sentences(CANDIDATE_REPORT), split_sentences(REFERENCE_REPORT)
    entail = [entailment_prompt(h, reference) for h in candidate] + [entailment_prompt(h, candidate) for h in reference]
    scores = json.dumps({str(n): 0.85 for n in range(1, PAPER["score_reports"] + 1)})
    return {
        "feature annotation": ([annotation_prompt([REFERENCE_REPORT] * PAPER["top_k"])],
                               ASSUMED["annotation_output_tokens"]),
        "explanation scoring": ([scoring_prompt(DESCRIPTION, [REFERENCE_REPORT] * PAPER["score_reports"], 0)],
                                approx_tokens(scores)),
        "report composition": (compose, approx_tokens(CANDIDATE_REPORT)),
        "RadFact phrase split": ([phrase_split_prompt(CANDIDATE_REPORT), phrase_split_prompt(REFERENCE_REPORT)],
                                 approx_tokens(json.dumps(reference))),
        "RadFact entailment": (entail, approx_tokens('{"status": "not_entailed", "evidence": [1, 2]}')),
    }


def cost_rows(assumed: dict = ASSUMED, model: str = PAPER_MODEL) -> list[list[str]]:
    """LLM work per task of the paper profile, and a RadFact total.

    Parameters
    ----------
    assumed
        ``llm_parameters`` and ``gpu_tflops_bf16`` of the local model, and the
        reply lengths (default ``ASSUMED``).
    model
        Model priced with :func:`saerad.llm.estimate_cost` (default the paper's
        Claude 3.5 Sonnet).

    Returns
    -------
    list of rows
        Cells in the order of ``COST_HEADER``: prompts, input and output tokens,
        USD at list price, USD with Message Batches, and GPU-hours of the local
        model (2 FLOPs per parameter and token at ``gpu_tflops_bf16``).
    """
    per_feature = PAPER["d_in"] * PAPER["expansion_factor"]
    units = {"feature annotation": per_feature, "explanation scoring": per_feature,
             "report composition": PAPER["test_studies"], "RadFact phrase split": PAPER["test_studies"],
             "RadFact entailment": PAPER["test_studies"]}
    price = price_for(model) or Price(0, 0)
    estimates = {}
    for task, (prompts, output) in llm_prompts().items():
        direct = estimate_cost(prompts * units[task], model, output, price=price)
        batch = estimate_cost(prompts * units[task], model, output, price=price, batch=True)
        estimates[task] = [direct[key] for key in ("n_prompts", "input_tokens", "output_tokens", "cost_usd")]
        estimates[task].append(batch["cost_usd"])
    estimates["RadFact, one system, total"] = [sum(values) for values in zip(
        *(row for task, row in estimates.items() if task.startswith("RadFact")))]
    rows = []
    for task, (n_prompts, tokens_in, tokens_out, direct, batch) in estimates.items():
        gpu_seconds = 2 * assumed["llm_parameters"] * (tokens_in + tokens_out) / (assumed["gpu_tflops_bf16"] * 1e12)
        rows.append([task, f"{n_prompts:,}", f"{tokens_in / 1e6:.1f}M", f"{tokens_out / 1e6:.1f}M", usd(direct),
                     usd(batch), f"{gpu_seconds / 3600:.1f}"])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table, one line per row, as the page holds it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


TIME_HEADER = ["stage", "work at paper scale (computed)", "2 CPU cores (measured)", "one GPU (arithmetic)",
               "paper's Table 4"]
MEMORY_HEADER = ["stage", "GPU memory (computed)", "2 CPU cores (measured, peak RSS growth)"]
COST_HEADER = ["task (paper profile)", "prompts", "input tokens", "output tokens", "Claude 3.5 Sonnet",
               "same, Message Batches", "local 70B model, GPU-hours"]


def markdown_tables(encoder_flops: int | None = None) -> dict[str, str]:
    """The three tables of the page, as markdown: ``time``, ``memory``, ``cost``."""
    stages = stage_rows(encoder_flops=encoder_flops)
    return {"time": markdown_table(TIME_HEADER, stages["time"]),
            "memory": markdown_table(MEMORY_HEADER, stages["memory"]),
            "cost": markdown_table(COST_HEADER, cost_rows())}


if __name__ == "__main__":
    for name, table in markdown_tables().items():
        print(f"{name}:\n{table}\n")
