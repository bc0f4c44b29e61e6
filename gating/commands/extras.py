"""The optional parts of gating and what each needs installed, checked before a command starts one.

The Action installs gating without extras (`pip install .`: what `gating check` needs, nothing more),
so the App's server and the offline demo's GitHub emulator may be missing; a command that needs them
says which extra to install and exits 2, instead of failing with a traceback half-way through.
"""

from __future__ import annotations

import importlib.util

from gating.commands.cli import UsageError

# extra -> the modules it brings that a command checks for (pyproject's [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {
    "app": ("flask", "gunicorn"),  # the App: Flask under gunicorn
    "test": ("flask", "openapi_core"),  # the GitHub emulator: werkzeug (Flask's) and openapi-core's validation
    "postgres": ("psycopg",),  # the App's database shared by replicas (GATING_QUEUE_URL)
}


def require(extra: str, command: str) -> None:
    """Raise UsageError naming `pip install 'gating[extra]'` if a module of `extra` is not installed."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"{command} needs {' and '.join(missing)}, which a plain install leaves out: "
                         f"pip install 'gating[{extra}]'")
