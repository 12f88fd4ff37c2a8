"""Reading other stages' artifacts for the scorecard, so that a missing one reads "not run".

An artifact counts only if its stage finished: ``<stage>/stage.json`` says
``status: ok`` (:mod:`saerad.stage_records` rewrites it as ``running`` before a
stage executes, so a failed or killed run never says ok) and the file itself
exists. Anything else raises :class:`ArtifactMissing`, which the scorecard
turns into the verdict "not run" instead of showing a number left behind by an
earlier or unfinished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from saerad.io import read_json
from saerad.paths import project_path
from saerad.stage_records import OK, RECORD_NAME, read_record


class ArtifactMissing(LookupError):
    """An artifact a claim reads is absent, or its stage has not finished."""

    def __init__(self, stage: str, name: str, why: str):
        self.stage, self.name, self.why = stage, name, why
        super().__init__(f"{stage}/{name}: {why}")


class Artifacts:
    """The artifacts of one profile (``artifacts/<profile>``), read stage by stage.

    Parameters
    ----------
    root
        ``artifacts/<profile>``; a relative path is taken from the repository root.
    """

    def __init__(self, root: str | Path):
        self.root = project_path(root)

    def stage_record(self, stage: str) -> dict[str, Any]:
        """The ``stage.json`` of a finished stage; raises :class:`ArtifactMissing` otherwise."""
        record = read_record(self.root / stage)
        if record is None:
            raise ArtifactMissing(stage, RECORD_NAME, f"the {stage} stage has not run for this profile")
        if record.get("status") != OK:
            raise ArtifactMissing(stage, RECORD_NAME,
                                  f"the {stage} stage has not finished (its record says {record.get('status')!r})")
        return record

    def path(self, stage: str, name: str) -> Path:
        """The path of ``<stage>/<name>`` after checking that the stage finished and the file exists."""
        self.stage_record(stage)
        path = self.root / stage / name
        if not path.exists():
            raise ArtifactMissing(stage, name, f"the {stage} stage finished without writing it")
        return path

    def csv(self, stage: str, name: str, columns: tuple[str, ...] = ()) -> pd.DataFrame:
        """``<stage>/<name>`` as a data frame; ``columns`` must all be present (else a clear ValueError)."""
        path = self.path(stage, name)
        table = pd.read_csv(path)
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise ValueError(f"{path}: lacks column(s) {missing}; expected at least {list(columns)}")
        return table

    def json(self, stage: str, name: str) -> Any:
        """``<stage>/<name>`` read as JSON."""
        return read_json(self.path(stage, name))

    def parameters(self, stage: str) -> dict[str, Any]:
        """The parameters a finished stage recorded in its ``stage.json`` (profile values and overrides only)."""
        return dict(self.stage_record(stage).get("parameters", {}))
