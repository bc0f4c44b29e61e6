"""The pages: the audit timeline, an entry, an eval report with charts, and the comparison of two
snapshots, rendered from records to HTML with Jinja2.

Both doors serve them: the App (gating/server/pages.py, behind GitHub sign-in) and `gating view`
(gating/commands/view.py, from a clone, with the standard library's WSGI server). Nothing here
imports a web framework: a `Site` turns a path and a query into a status and a page, reading git
through the `Source` seam (gating/pages/source.py) and keeping an index of the log
(gating/pages/index.py) rebuilt from the notes whenever their tip moves.
"""
