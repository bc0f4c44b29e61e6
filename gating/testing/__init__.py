"""A local GitHub for tests and the offline demo: REST API, git smart HTTP, webhooks (see README.md).

Names are imported lazily, so `gating.testing.<module>` imports stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for the type checker
    from gating.testing.emulator_auth import AppIdentity as AppIdentity
    from gating.testing.emulator_repo import RepoHandle as RepoHandle
    from gating.testing.faults import Fault as Fault
    from gating.testing.faults import Faults as Faults
    from gating.testing.github_emulator import Emulator as Emulator
    from gating.testing.github_emulator import RecordedRequest as RecordedRequest
    from gating.testing.github_emulator import start_emulator as start_emulator
    from gating.testing.webhooks import Delivery as Delivery

_EXPORTS = {
    "AppIdentity": "gating.testing.emulator_auth",
    "Delivery": "gating.testing.webhooks",
    "Emulator": "gating.testing.github_emulator",
    "Fault": "gating.testing.faults",
    "Faults": "gating.testing.faults",
    "RecordedRequest": "gating.testing.github_emulator",
    "RepoHandle": "gating.testing.emulator_repo",
    "start_emulator": "gating.testing.github_emulator",
}

__all__ = sorted(_EXPORTS)
# What the emulator imports from the `test` extra: werkzeug (Flask's), openapi-core and its validator.
_TEST_EXTRA = {"werkzeug", "flask", "openapi_core", "openapi_schema_validator"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gating.testing' has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:  # a plain install (the Action's) has neither the App nor the test tools
        if e.name not in _TEST_EXTRA:
            raise
        raise ModuleNotFoundError(f"gating.testing.{name} needs {e.name}, which a plain install leaves out: "
                                  "pip install 'gating[test]'", name=e.name) from e
