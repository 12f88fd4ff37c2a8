"""Architecture configuration of a sparse autoencoder, and the named presets.

An SAE here is described by an encoder family plus four switches. The four
switches are exactly the four differences the paper lists at the end of
Section 4.1 between the gated SAE of Rajamanoharan et al. (Eqs. 4-5) and
SAE-Rad (Eqs. 8-9), so the ablation chapter can flip them one at a time::

    switch                    meaning when True                          gated   sae_rad
    unit_norm_decoder         decoder columns kept at unit norm          True    False
    decoder_norm_in_sparsity  penalty λ Σ_i RA_i ||W_dec[:, i]||         False   True
    centre_input              the encoder sees x - b_dec                 True    False
    aux_stop_gradient         auxiliary loss decodes with a frozen copy  True    False
                              of the decoder (no gradient into it)

The same switches describe the plain ReLU family: ``conerly`` (Eqs. 6-7) and
``vanilla`` (Eqs. 1-3). ``aux_stop_gradient`` only means something for the
gated family (the others have no auxiliary loss).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from saerad.checkpoints import known_fields

#: Encoder families, named as SAELens names its architectures.
ARCHITECTURES = ("gated", "standard", "topk", "matryoshka")

#: Families whose features open when a pre-activation beats a bias (and whose sparsity is a penalty).
BIAS_GATED_FAMILIES = ("gated", "standard")

#: Families whose features open by rank among the pre-activations (k per input or per batch).
RANKED_FAMILIES = ("topk", "matryoshka")

#: The four switches that separate the gated SAE from SAE-Rad (Section 4.1).
SWITCHES = ("unit_norm_decoder", "decoder_norm_in_sparsity", "centre_input", "aux_stop_gradient")


@dataclass(frozen=True)
class SAEConfig:
    """Everything needed to build (and rebuild) one SAE.

    Parameters
    ----------
    architecture
        ``"gated"`` (Eqs. 4 and 8), ``"standard"`` (ReLU encoder, Eqs. 1 and 6)
        or ``"topk"`` (ReLU then keep the ``k`` largest).
    d_in
        Input dimension n (the encoder's class-token width).
    expansion_factor
        Dictionary size m = ``d_in * expansion_factor``.
    unit_norm_decoder
        Keep every decoder column at unit L2 norm (renormalised after each
        optimiser step, with the gradient's radial component removed first).
    decoder_norm_in_sparsity
        Weight each feature's L1 penalty by its decoder column norm (Eqs. 7, 9).
    centre_input
        Subtract ``b_dec`` from the input before the encoder (Eqs. 1, 4).
    aux_stop_gradient
        Gated family only: the auxiliary reconstruction uses a frozen copy of
        the decoder, so it sends no gradient into ``W_dec`` or ``b_dec`` (Eq. 5).
    seed
        Seed of the initial encoder directions.
    k
        TopK: number of features kept per input. Matryoshka: the average per
        input (BatchTopK keeps the ``k * batch`` largest of a batch).
    prefixes
        Matryoshka only: the sizes of the nested dictionaries, increasing and
        ending with ``d_sae``; each prefix of features must reconstruct the
        input on its own (Bussmann et al., 2025).
    """

    architecture: str
    d_in: int
    expansion_factor: int
    unit_norm_decoder: bool
    decoder_norm_in_sparsity: bool
    centre_input: bool
    aux_stop_gradient: bool
    seed: int = 0
    k: int | None = None
    prefixes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.prefixes is not None and not isinstance(self.prefixes, tuple):
            object.__setattr__(self, "prefixes", tuple(int(size) for size in self.prefixes))  # from JSON lists
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.d_in < 1 or self.expansion_factor < 1:
            raise ValueError(f"d_in and expansion_factor must be positive, got {self.d_in}, {self.expansion_factor}")
        if self.aux_stop_gradient and self.architecture != "gated":
            raise ValueError("aux_stop_gradient only applies to the gated family (others have no auxiliary loss)")
        if self.architecture in RANKED_FAMILIES:
            if self.k is None or not 1 <= self.k <= self.d_sae:
                raise ValueError(f"{self.architecture} needs 1 <= k <= d_sae={self.d_sae}, got k={self.k}")
        elif self.k is not None:
            raise ValueError(f"k is only used by the topk and matryoshka architectures, not {self.architecture!r}")
        if self.architecture == "matryoshka":
            sizes = self.prefixes
            if not sizes or list(sizes) != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] != self.d_sae:
                raise ValueError(f"matryoshka needs prefixes increasing from >= 1 to d_sae={self.d_sae}, got {sizes}")
        elif self.prefixes is not None:
            raise ValueError(f"prefixes are only used by the matryoshka architecture, not {self.architecture!r}")

    @property
    def d_sae(self) -> int:
        """Dictionary size m (number of features)."""
        return self.d_in * self.expansion_factor

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``d_sae`` is included for readers and checked on load."""
        return {**asdict(self), "d_sae": self.d_sae}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> "SAEConfig":
        """Inverse of :meth:`to_dict` (unknown keys are an error, so typos do not pass silently)."""
        payload = dict(payload)
        d_sae = payload.pop("d_sae", None)
        config = cls(**known_fields(cls, payload))
        if d_sae is not None and d_sae != config.d_sae:
            raise ValueError(f"d_sae={d_sae} does not equal d_in * expansion_factor = {config.d_sae}")
        return config

    def preset_name(self) -> str | None:
        """The preset whose architecture and switches this config has, or None."""
        for name, preset in PRESETS.items():
            if all(getattr(self, key) == value for key, value in preset.items() if key in _ARCHITECTURE_KEYS):
                return name
        return None


_ARCHITECTURE_KEYS = ("architecture",) + SWITCHES

#: Named architectures. Values are the :class:`SAEConfig` fields they fix.
PRESETS: dict[str, dict[str, Any]] = {
    # Eqs. 8-9: gated encoder, free decoder norms inside the sparsity term,
    # no centring, auxiliary loss trains the decoder too.
    "sae_rad": dict(architecture="gated", unit_norm_decoder=False, decoder_norm_in_sparsity=True,
                    centre_input=False, aux_stop_gradient=False),
    # Eqs. 4-5 (Rajamanoharan et al., 2024).
    "gated": dict(architecture="gated", unit_norm_decoder=True, decoder_norm_in_sparsity=False,
                  centre_input=True, aux_stop_gradient=True),
    # Eqs. 6-7 (Conerly et al., 2024).
    "conerly": dict(architecture="standard", unit_norm_decoder=False, decoder_norm_in_sparsity=True,
                    centre_input=False, aux_stop_gradient=False),
    # Eqs. 1-3 (Bricken et al., 2023) with the usual unit-norm decoder.
    "vanilla": dict(architecture="standard", unit_norm_decoder=True, decoder_norm_in_sparsity=False,
                    centre_input=True, aux_stop_gradient=False),
    # Bussmann et al. (2025): BatchTopK with nested dictionaries, each prefix trained to reconstruct alone,
    # so that general concepts settle in the first features and specific ones split off later. k and
    # prefixes must be given.
    "matryoshka": dict(architecture="matryoshka", unit_norm_decoder=True, decoder_norm_in_sparsity=False,
                       centre_input=True, aux_stop_gradient=False),
    # Gao et al. (2024): sparsity by construction, no penalty. k must be given.
    "topk": dict(architecture="topk", unit_norm_decoder=True, decoder_norm_in_sparsity=False,
                 centre_input=True, aux_stop_gradient=False),
}


def make_config(name: str, d_in: int, expansion_factor: int, **overrides: Any) -> SAEConfig:
    """Build the config of a preset, optionally flipping switches.

    Parameters
    ----------
    name
        A key of :data:`PRESETS`.
    d_in, expansion_factor
        Input width and dictionary multiplier.
    **overrides
        Any :class:`SAEConfig` field, e.g. ``centre_input=True`` to ablate one
        switch of ``sae_rad``, ``seed=1`` or ``k=16`` for ``topk``.

    Returns
    -------
    SAEConfig
    """
    if name not in PRESETS:
        raise KeyError(f"unknown SAE preset {name!r}; known presets: {sorted(PRESETS)}")
    return SAEConfig(**{**PRESETS[name], "d_in": d_in, "expansion_factor": expansion_factor, **overrides})
