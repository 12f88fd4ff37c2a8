"""Claims about the sparse autoencoder itself (SAE chapter): reconstruction, sparsity, dead features, Tables 3 and 5."""

from __future__ import annotations

import pandas as pd

from saerad.sae.experiments import PAPER_TABLE3, PAPER_TABLE5
from saerad.scorecard import paper_claims
from saerad.scorecard.artifacts import Artifacts
from saerad.scorecard.claim import Claim, number, percent
from saerad.scorecard.verdicts import (NOT_REPRODUCED, REPRODUCED, Outcome, count_rule, factor_rule,
                                       single_run_rule)

_T3 = PAPER_TABLE3.set_index("architecture")
_T5 = PAPER_TABLE5.set_index("paper_name")

#: "Accurate while sparse": explained variance at most this many points below the paper's 84.3 % ...
RECONSTRUCTION_POINTS_BELOW_PAPER = 5.0
#: ... at an L0 of at most this multiple of the paper's 13.6.
SPARSITY_MULTIPLE_OF_PAPER = 1.5
#: "About 15 features": within this factor of 15 (partly within the second).
FEATURES_PER_IMAGE_FACTORS = (1.25, 2.0)
_SAE_RAD_TUNED = (f"the demo's sparsity coefficient was searched so that L0 lands near the paper's "
                  f"{_T3.loc['sae_rad', 'paper_l0']:g}, so the sparsity holds by construction")


def _main_sae(artifacts: Artifacts) -> pd.Series:
    return artifacts.csv("sae", "main_sae.csv", ("l0", "explained_variance", "dead_features", "d_sae")).iloc[0]


def _reconstruction(artifacts: Artifacts) -> Outcome:
    main = _main_sae(artifacts)
    paper_ev = 100 * _T3.loc["sae_rad", "paper_explained_variance"]
    paper_l0 = _T3.loc["sae_rad", "paper_l0"]
    ev, l0 = 100 * main["explained_variance"], main["l0"]
    accurate = ev >= paper_ev - RECONSTRUCTION_POINTS_BELOW_PAPER
    sparse = l0 <= SPARSITY_MULTIPLE_OF_PAPER * paper_l0
    verdict, counted = count_rule(int(accurate) + int(sparse), 2, "parts (accurate, sparse)")
    return Outcome(f"explained variance {number(ev)} % at L0 {number(l0)} (held-out tokens)", verdict,
                   f"{counted}; {_SAE_RAD_TUNED}")


def _features_per_image(artifacts: Artifacts) -> Outcome:
    summary = artifacts.json("features", "summary.json")
    mean_l0 = float(summary["mean_l0"])
    verdict, reason = factor_rule(mean_l0, paper_claims.FEATURES_PER_IMAGE, *FEATURES_PER_IMAGE_FACTORS,
                                  what="mean active features per image")
    return Outcome(f"{number(mean_l0)} active features per image (all {summary['images']:,} images)", verdict,
                   f"{reason}; {_SAE_RAD_TUNED}")


def _dead_features(artifacts: Artifacts) -> Outcome:
    main = _main_sae(artifacts)
    dead, size = int(main["dead_features"]), int(main["d_sae"])
    ours = f"{dead:,} of {size:,} dead ({percent(dead / size)})"
    if dead == paper_claims.DEAD_FEATURES:
        return Outcome(ours, REPRODUCED, "no feature is dead on the training tokens")
    return Outcome(ours, NOT_REPRODUCED, f"{dead:,} features never fire on the training tokens; the paper reports none")


def _table3(column: str, claimed_lower: bool, what: str):
    def measure(artifacts: Artifacts) -> Outcome:
        table = artifacts.csv("sae", "table3.csv", ("architecture", column)).set_index("architecture")
        scale = 100 if column == "explained_variance" else 1
        ours, theirs = scale * table.loc["sae_rad", column], scale * table.loc["conerly", column]
        verdict, reason = single_run_rule(ours, theirs, claimed_lower, what=what)
        unit = " %" if scale == 100 else ""
        return Outcome(f"{number(ours)}{unit} vs {number(theirs)}{unit}", verdict, reason)

    return measure


def _table5(artifacts: Artifacts) -> pd.DataFrame:
    table = artifacts.csv("sae", "table5.csv", ("name", "expansion_factor", "l0", "explained_variance"))
    table["dense"] = table["name"].str.endswith("_dense")
    return table


def _dense_variants(artifacts: Artifacts) -> Outcome:
    table = _table5(artifacts)
    sparse = table[~table["dense"]].set_index("expansion_factor")
    dense = table[table["dense"]].set_index("expansion_factor")
    sizes = sorted(set(sparse.index) & set(dense.index))
    if not sizes:
        raise ValueError("sae/table5.csv: no expansion factor has both a sparse and a dense SAE")
    holding, parts = 0, []
    for size in sizes:
        s, d = sparse.loc[size], dense.loc[size]
        holding += int(d["l0"] > s["l0"] and d["explained_variance"] > s["explained_variance"])
        parts.append(f"x{size}: L0 {number(s['l0'])} -> {number(d['l0'])}, EV {percent(s['explained_variance'])} -> "
                     f"{percent(d['explained_variance'])}")
    verdict, reason = count_rule(holding, len(sizes), "sizes (dense has both higher L0 and higher EV)")
    return Outcome("; ".join(parts), verdict, reason)


def _size_trend(column: str, rising: bool):
    def measure(artifacts: Artifacts) -> Outcome:
        sparse = _table5(artifacts).query("~dense").sort_values("expansion_factor")
        values = sparse[column].tolist()
        steps = len(values) - 1
        if steps < 1:
            raise ValueError("sae/table5.csv: fewer than two sparse sizes")
        holding = sum((b > a) if rising else (b < a) for a, b in zip(values, values[1:]))
        scale = 100 if column == "explained_variance" else 1
        ours = ", ".join(f"x{size}: {number(scale * value)}" for size, value in zip(sparse["expansion_factor"], values))
        verdict, reason = count_rule(holding, steps, f"steps up in size ({'rise' if rising else 'fall'})")
        return Outcome(ours + (" %" if scale == 100 else ""), verdict, reason)

    return measure


def _paper_table5(column: str, dense: bool = False) -> str:
    scale = 100 if column == "paper_explained_variance" else 1
    return ", ".join(f"x{size}: {number(scale * _T5.loc[f'x{size}' + ('_dense' if dense else ''), column])}"
                     for size in paper_claims.TABLE5_SIZES)


CLAIMS = (
    Claim("abstract-reconstruction",
          "The SAE reconstructs the encoder's class tokens accurately while only a few features fire",
          "Abstract; Table 3",
          f"explained variance {number(100 * _T3.loc['sae_rad', 'paper_explained_variance'])} % at L0 "
          f"{number(_T3.loc['sae_rad', 'paper_l0'])} (x64, MIMIC-CXR)",
          "sec-sae-training",
          f"both parts: held-out explained variance at most {RECONSTRUCTION_POINTS_BELOW_PAPER:g} points below the "
          f"paper's, and L0 at most {SPARSITY_MULTIPLE_OF_PAPER:g}x the paper's; one part: partly",
          _reconstruction),
    Claim("title-15-features",
          "About 15 features are active per image",
          "Title",
          f"about {paper_claims.FEATURES_PER_IMAGE} (L0 {number(_T3.loc['sae_rad', 'paper_l0'])} in Table 3)",
          "sec-features-active",
          f"mean active features per image within {FEATURES_PER_IMAGE_FACTORS[0]:g}x of "
          f"{paper_claims.FEATURES_PER_IMAGE} (partly within {FEATURES_PER_IMAGE_FACTORS[1]:g}x)",
          _features_per_image),
    Claim("no-dead-features",
          "No feature of the trained SAE is dead, without resampling or ghost gradients",
          "Appendix B.3",
          f"{paper_claims.DEAD_FEATURES} dead of 49,152",
          "sec-sae-dead-features",
          "reproduced only if no feature of the main SAE is dead on the training tokens",
          _dead_features),
    Claim("table3-l0",
          "SAE-Rad fires fewer features per token than Conerly et al.'s SAE of the same size",
          "Table 3; Section 4.1",
          f"L0 {number(_T3.loc['sae_rad', 'paper_l0'])} vs {number(_T3.loc['conerly', 'paper_l0'])}",
          "sec-sae-table3",
          "held-out L0 lower by more than 1 % (one run each; a smaller difference is a tie)",
          _table3("l0", claimed_lower=True, what="L0")),
    Claim("table3-explained-variance",
          "SAE-Rad also explains more of the token variance than Conerly et al.'s SAE",
          "Table 3; Section 4.1",
          f"{number(100 * _T3.loc['sae_rad', 'paper_explained_variance'])} % vs "
          f"{number(100 * _T3.loc['conerly', 'paper_explained_variance'])} %",
          "sec-sae-table3",
          "held-out explained variance higher by more than 1 % (one run each; a smaller difference is a tie)",
          _table3("explained_variance", claimed_lower=False, what="explained variance")),
    Claim("table5-dense",
          "A dense variant (smaller sparsity coefficient) fires more features and explains more variance than the "
          "sparse SAE of the same size",
          "Table 5; Appendix H",
          f"L0 {_paper_table5('paper_l0', True)} vs {_paper_table5('paper_l0')}",
          "sec-sae-table5",
          "count of sizes where the dense SAE has both a higher L0 and a higher explained variance: all, some, none",
          _dense_variants),
    Claim("table5-size-variance",
          "Among the sparse SAEs, a larger dictionary explains more variance",
          "Table 5",
          f"EV {_paper_table5('paper_explained_variance')} %",
          "sec-sae-table5",
          "count of steps up in size where held-out explained variance rises: all, some, none",
          _size_trend("explained_variance", rising=True)),
    Claim("table5-size-l0",
          "Among the sparse SAEs, a larger dictionary fires fewer features per token",
          "Table 5",
          f"L0 {_paper_table5('paper_l0')}",
          "sec-sae-table5",
          "count of steps up in size where held-out L0 falls: all, some, none",
          _size_trend("l0", rising=False)),
)
