"""The parameters a chapter ran with, shown once as a small table.

The chapter's ``parameters`` cell (the defaults) and papermill's injected cell (the profile's values and
``--set`` overrides) are removed from the page; in their place the chapter calls
:func:`parameter_table` with its namespace, which lists every parameter with the value this run used,
marks the ones that differ from the notebook's default, and gives the meaning written next to the
default.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping

from saerad.params import notebook_parameters
from saerad.paths import REPO_ROOT


class ParameterTable:
    """HTML for the page: a collapsed ``<details>`` holding the table of parameters."""

    def __init__(self, rows: list[dict[str, Any]], notebook: str):
        self.rows = rows
        self.notebook = notebook

    @property
    def changed(self) -> list[str]:
        return [row["parameter"] for row in self.rows if row["changed"]]

    def to_html(self) -> str:
        body = "".join(
            "<tr{cls}><td><code>{name}</code></td><td><code>{value}</code></td><td>{default}</td><td>{help}</td></tr>".format(
                cls=' class="changed"' if row["changed"] else "",
                name=html.escape(row["parameter"]),
                value=html.escape(row["value"]),
                default=("default" if not row["changed"] else f"set (default <code>{html.escape(row['default'])}</code>)"),
                help=html.escape(row["meaning"]),
            )
            for row in self.rows
        )
        changed = self.changed
        summary = (f"Parameters of this run: {len(self.rows)}, of which {len(changed)} differ from the defaults "
                   f"({', '.join(changed)})" if changed else
                   f"Parameters of this run: {len(self.rows)}, all at their defaults")
        return (f'<details class="saerad-parameters"><summary>{html.escape(summary)}</summary>'
                f'<div class="saerad-table"><table class="saerad parameters"><thead><tr><th>parameter</th>'
                f'<th>value</th><th>source</th><th>meaning</th></tr></thead><tbody>{body}</tbody></table></div>'
                f'<p>Re-run this chapter with other values: <code>python -m saerad.pipeline --only STAGE '
                f'--set STAGE.NAME=VALUE</code> (see the page on re-running).</p></details>')

    def _repr_html_(self) -> str:
        return self.to_html()


def parameter_table(notebook: str, namespace: Mapping[str, Any], notebooks_dir: str | Path | None = None
                    ) -> ParameterTable:
    """The chapter's parameters with the values in ``namespace`` (a chapter passes ``globals()``).

    Parameters
    ----------
    notebook
        The chapter's notebook file name, e.g. ``"02_sae.ipynb"``.
    namespace
        Where the executed parameter cells left their values.
    """
    path = Path(notebooks_dir or REPO_ROOT / "notebooks") / notebook
    rows = []
    for name, parameter in notebook_parameters(path).items():
        if name not in namespace:
            raise KeyError(f"{path}: parameter {name!r} is not defined in the chapter's namespace; "
                           "call parameter_table after the parameters cell has run")
        value = namespace[name]
        rows.append({"parameter": name, "value": repr(value), "default": repr(parameter.default),
                     "changed": value != parameter.default, "meaning": parameter.help})
    return ParameterTable(rows, notebook)
