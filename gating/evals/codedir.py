"""The pipeline code a `command` target runs, exactly as a revision holds it.

A revision read from git objects (the base of a pull request, or `--rev`) has no working tree of its
own, and the checkout holds another revision's code: running the command there would evaluate the
head's pipeline twice and call it a comparison. So the files `evals.target.code` names are written
to a temporary directory and the command runs there: each side runs its own code, and only the
code the manifest declares (an undeclared file the pipeline needs is missing, and the case says so).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from gating.system.snapshot import Snapshot


def code_checkout(snapshot: Snapshot) -> tempfile.TemporaryDirectory[str] | None:
    """A temporary directory holding the snapshot's declared code (None when it declares none).
    A file that starts with `#!` is made executable, as a script committed with its mode would be."""
    code = snapshot.data.get("code") or {}
    if not code:
        return None
    tmp = tempfile.TemporaryDirectory(prefix="gating-code-")
    root = Path(tmp.name)
    for path in sorted(code):  # repository-relative paths, checked by the manifest (no `..`, no `/`)
        data = snapshot.contents[path]
        dest = root / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        if data.startswith(b"#!"):
            dest.chmod(0o755)
    return tmp
