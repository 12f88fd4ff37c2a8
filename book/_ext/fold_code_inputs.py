"""Sphinx extension: a chapter's code is folded unless its cell says otherwise.

The book is read for its results; the code that made them is one click away. myst-nb folds a code cell's
input when the cell is tagged ``hide-input`` (``hide-output``, ``hide-cell``, ``remove-input`` likewise act
on their part). This folds, in the HTML build, the input of every code cell that carries none of those
tags, as if it were tagged ``hide-input``; a cell tagged ``hide-output`` gets its input folded too. Cells
with tags are left as their tags say. ``python -m saerad.book_check`` fails a page that shows code unfolded.
"""

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform

#: Added to what a cell's own tags asked for.
_FOLD_INPUT = {None: "input", "output": "input+output"}


class FoldCodeInputs(SphinxPostTransform):
    """Give every code cell with a visible input myst-nb's ``hide_mode`` for a folded input."""

    # Before myst-nb's HideInputCells (199), which wraps the inputs in <details> according to hide_mode.
    default_priority = 198
    formats = ("html",)

    def run(self, **kwargs):
        config = self.app.config
        for cell in self.document.findall(nodes.container):
            if cell.get("nb_element") != "cell_code" or not cell.children:
                continue
            if cell.children[0].get("nb_element") != "cell_code_source":
                continue  # the input was removed (remove-input)
            mode = cell.get("hide_mode")
            if mode not in _FOLD_INPUT:
                continue  # already folded (input, input+output, all)
            cell["hide_mode"] = _FOLD_INPUT[mode]
            cell.setdefault("prompt_show", config.nb_code_prompt_show)
            cell.setdefault("prompt_hide", config.nb_code_prompt_hide)


def setup(app):
    app.setup_extension("myst_nb")
    app.add_post_transform(FoldCodeInputs)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
