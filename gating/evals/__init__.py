"""The eval engine: datasets, targets, providers, assertions, runner, comparison. See README.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for the type checker
    from gating.evals.compare import compare as compare
    from gating.evals.dataset import DatasetError as DatasetError
    from gating.evals.metrics import compute_metrics as compute_metrics
    from gating.evals.records import load_run as load_run
    from gating.evals.runner import run_evals as run_evals

__all__ = ["run_evals", "compare", "compute_metrics", "load_run", "DatasetError"]


def __getattr__(name: str) -> Any:
    # Lazy so that `import gating.evals.records` stays cheap for readers of stored results.
    if name == "run_evals":
        from gating.evals.runner import run_evals

        return run_evals
    if name == "compare":
        from gating.evals.compare import compare

        return compare
    if name == "compute_metrics":
        from gating.evals.metrics import compute_metrics

        return compute_metrics
    if name == "load_run":
        from gating.evals.records import load_run

        return load_run
    if name == "DatasetError":
        from gating.evals.dataset import DatasetError

        return DatasetError
    raise AttributeError(name)
