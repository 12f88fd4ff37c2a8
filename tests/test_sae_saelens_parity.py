"""Parity with the real SAELens package (run in its own venv, ``.venv-saelens``, through a subprocess).

Our ``save_sae`` output is loaded with SAELens's own ``SAE.load_from_disk``
and its encode / decode / forward are compared with ours on fixed inputs; and
SAEs that SAELens itself saved (inference and training classes) are loaded
with our ``load_sae`` and compared the same way. SAELens cannot be installed
into ``.venv`` (its pins conflict with ours), hence the subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import trained_like_sae
from saerad.sae import load_sae, save_sae

REPO_ROOT = Path(__file__).resolve().parent.parent
SAELENS_PYTHON = REPO_ROOT / ".venv-saelens" / "bin" / "python"
D_IN, EXPANSION, BATCH = 16, 4, 64
TOLERANCE = 1e-5
OURS = [("sae_rad", {}), ("gated", {}), ("conerly", {}), ("vanilla", {}), ("topk", {"k": 5}),
        ("matryoshka", {"k": 5, "prefixes": (8, 32, 64)})]
#: SAEs saved by SAELens: (name, SAELens class, apply_b_dec_to_input, preset our loader should map it to)
THEIRS = [("inference_gated_uncentred", "GatedSAE", False, "sae_rad"),
          ("inference_gated_centred", "GatedSAE", True, "gated"),
          ("training_gated_uncentred", "GatedTrainingSAE", False, "sae_rad"),
          ("inference_standard_uncentred", "StandardSAE", False, "conerly")]

SAELENS_SCRIPT = textwrap.dedent('''
    """Runs under .venv-saelens: load our SAEs with SAELens, save SAELens SAEs for us; outputs as .npy."""
    import json, sys, warnings
    from pathlib import Path
    import numpy as np
    import torch
    warnings.simplefilter("ignore")
    import sae_lens
    from sae_lens import SAE
    from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig, GatedTrainingSAE, GatedTrainingSAEConfig
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig

    root = Path(sys.argv[1])
    job = json.loads((root / "job.json").read_text())
    x = torch.from_numpy(np.load(root / "x.npy"))
    report = {"sae_lens_version": sae_lens.__version__, "loaded": {}}

    def outputs(sae, h_ours, out):
        with torch.no_grad():
            np.save(out / "encode.npy", sae.encode(x).numpy())
            np.save(out / "decode.npy", sae.decode(h_ours).numpy())
            np.save(out / "forward.npy", sae(x).numpy())

    for name in job["ours"]:
        sae = SAE.load_from_disk(root / "ours" / name)
        report["loaded"][name] = {"class": type(sae).__name__,
                                  "apply_b_dec_to_input": sae.cfg.apply_b_dec_to_input}
        outputs(sae, torch.from_numpy(np.load(root / "ours" / name / "h_ours.npy")), root / "ours" / name)

    classes = {"GatedSAE": (GatedSAE, GatedSAEConfig), "GatedTrainingSAE": (GatedTrainingSAE, GatedTrainingSAEConfig),
               "StandardSAE": (StandardSAE, StandardSAEConfig)}
    torch.manual_seed(11)  # SAELens initialises from the global generator
    generator = torch.Generator().manual_seed(11)
    for name, class_name, centred in job["theirs"]:
        sae_class, config_class = classes[class_name]
        sae = sae_class(config_class(d_in=job["d_in"], d_sae=job["d_sae"], apply_b_dec_to_input=centred))
        with torch.no_grad():
            for parameter in sae.parameters():  # every parameter non-trivial, as after training
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
        out = root / "theirs" / name
        sae.save_model(out)
        with torch.no_grad():
            h = sae.encode(x)
        outputs(sae, h, out)
    (root / "report.json").write_text(json.dumps(report))
''')


def _trained_like(name: str, overrides: dict):
    return trained_like_sae(name, D_IN, EXPANSION, seed=3, noise_seed=5, noise=0.3, overrides=overrides)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    """Write our SAEs, run the SAELens script once, return the folder with everyone's outputs."""
    if not SAELENS_PYTHON.exists():
        pytest.skip(f"SAELens venv missing ({SAELENS_PYTHON}); create it with `make .venv-saelens`")
    root = tmp_path_factory.mktemp("saelens")
    x = torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(7)) * 1.5
    np.save(root / "x.npy", x.numpy())
    for name, overrides in OURS:
        sae = _trained_like(name, overrides)
        if name == "matryoshka":
            sae.threshold.fill_(0.3)  # as after training: some positive pre-activations fall below it
            sae.eval()
        save_sae(sae, root / "ours" / name)
        with torch.no_grad():
            h = sae.encode(x)
            np.save(root / "ours" / name / "h_ours.npy", h.numpy())
            np.save(root / "ours" / name / "ours_encode.npy", h.numpy())
            np.save(root / "ours" / name / "ours_decode.npy", sae.decode(h).numpy())
            np.save(root / "ours" / name / "ours_forward.npy", sae(x)[0].numpy())
    job = {"ours": [name for name, _ in OURS], "theirs": [[n, c, centred] for n, c, centred, _ in THEIRS],
           "d_in": D_IN, "d_sae": D_IN * EXPANSION}
    (root / "job.json").write_text(json.dumps(job))
    (root / "saelens_side.py").write_text(SAELENS_SCRIPT)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                   "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    completed = subprocess.run([str(SAELENS_PYTHON), str(root / "saelens_side.py"), str(root)],
                               capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, f"SAELens side failed:\n{completed.stderr[-4000:]}"
    return root


def _max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.mark.parametrize("name", [name for name, _ in OURS])
def test_saelens_loads_our_sae_and_computes_the_same(exchange, name):
    folder = exchange / "ours" / name
    report = json.loads((exchange / "report.json").read_text())
    expected_class = {"sae_rad": "GatedSAE", "gated": "GatedSAE", "conerly": "StandardSAE",
                      "vanilla": "StandardSAE", "topk": "TopKSAE", "matryoshka": "JumpReLUSAE"}[name]
    assert report["loaded"][name]["class"] == expected_class
    assert report["loaded"][name]["apply_b_dec_to_input"] == (name in ("gated", "vanilla", "topk", "matryoshka"))
    for output in ("encode", "decode", "forward"):
        ours, theirs = np.load(folder / f"ours_{output}.npy"), np.load(folder / f"{output}.npy")
        assert _max_abs_difference(ours, theirs) <= TOLERANCE, (name, output)
    # the comparison is not vacuous: features fire, but not all of them
    firing = np.load(folder / "ours_encode.npy") > 0
    assert 0 < firing.mean() < 1


@pytest.mark.parametrize("name, _class, _centred, preset", THEIRS, ids=[t[0] for t in THEIRS])
def test_we_load_a_saelens_saved_sae_and_compute_the_same(exchange, name, _class, _centred, preset):
    folder = exchange / "theirs" / name
    sae = load_sae(folder)
    assert sae.config.preset_name() == preset
    assert (sae.config.d_in, sae.config.d_sae) == (D_IN, D_IN * EXPANSION)
    x = torch.from_numpy(np.load(exchange / "x.npy"))
    with torch.no_grad():
        h = sae.encode(x)
        ours = {"encode": h, "decode": sae.decode(torch.from_numpy(np.load(folder / "encode.npy"))),
                "forward": sae(x)[0]}
    for output, value in ours.items():
        assert _max_abs_difference(value.numpy(), np.load(folder / f"{output}.npy")) <= TOLERANCE, (name, output)
    assert 0 < (h > 0).float().mean() < 1
