"""Sphinx extension: drop script tags that a page would include twice.

Jupyter Book 1.x registers some inline scripts twice (once with no file name,
once with an empty one), among them sphinx-thebe's configuration: every page
then declares ``const THEBE_JS_URL`` twice and the browser reports a
JavaScript error (``Identifier 'THEBE_JS_URL' has already been declared``).
This keeps the first of scripts with the same file and attributes.
"""


def _unique_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        key = (getattr(script, "filename", str(script)) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
