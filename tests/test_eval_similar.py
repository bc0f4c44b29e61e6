"""`similar`: cosine similarity of embeddings from the model `evals.embedding` names, through the same cache
and cassettes as answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eval_support import MODELS, a, fast_retries, llm, load, write_repo  # noqa: F401

from gating.evals.dataset import DatasetError
from gating.evals.runner import run_evals
from gating.testing.llm_server import LLMServer

EMBED = {"provider": "ollama", "model": "nomic-embed-text"}


def run(root: Path, server: LLMServer, **kw: Any) -> dict[str, Any]:
    snap, reader = load(root)
    got = run_evals(snap, reader, env=server.env(), cache_dir=None, retry=fast_retries(), **kw)
    return {c.id: c for c in got.cases}


def cases() -> list[dict[str, Any]]:
    return [
        {"id": "same", "prompt": "p", "vars": {"q": a("returns within 30 days")},
         "assert": [{"type": "similar", "value": "within 30 days returns", "threshold": 0.9}]},
        {"id": "list", "prompt": "p", "vars": {"q": a("shipping is free")},
         "assert": [{"type": "similar", "value": ["refunds", "free shipping is"]}]},
        {"id": "far", "prompt": "p", "vars": {"q": a("the weather is nice")},
         "assert": [{"type": "similar", "value": "refunds within 30 days"}]},
        {"id": "not", "prompt": "p", "vars": {"q": a("the weather is nice")},
         "assert": [{"type": "not-similar", "value": "refunds within 30 days"}]},
    ]


def test_similar_passes_on_close_meaning_and_fails_far(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    root = write_repo(tmp_path, cases(), models={**MODELS, "emb": EMBED}, evals={"embedding": "emb"})
    got = run(root, llm)
    assert got["same"].passed and got["same"].scores["similar"] == pytest.approx(1.0)
    assert got["list"].passed  # the best of the references
    assert not got["far"].passed and got["far"].assertions[0].reason.startswith("cosine similarity 0.")
    assert got["not"].passed and got["not"].assertions[0].reason.endswith("(negated)")
    assert any(e["path"] == "/api/embed" for e in llm.log)


def test_embeddings_are_recorded_and_replayed(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    root = write_repo(tmp_path, cases(), models={**MODELS, "emb": EMBED}, evals={"embedding": "emb"})
    recorded = run(root, llm, record=True)
    n = llm.requests
    snap, reader = load(root)
    replayed = {c.id: c for c in run_evals(snap, reader, env={"GATING_PROVIDER": "replay"}, cache_dir=None).cases}
    assert llm.requests == n
    assert {k: c.passed for k, c in replayed.items()} == {k: c.passed for k, c in recorded.items()}


def test_similar_without_an_embedding_model_is_a_dataset_error(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    with pytest.raises(DatasetError, match="similar needs an embedding model"):
        run(write_repo(tmp_path, cases()), llm)


def test_an_embedding_failure_is_an_error_not_a_score(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    unreachable = {**EMBED, "base_url": "http://127.0.0.1:9"}
    root = write_repo(tmp_path, cases()[:1], models={**MODELS, "emb": unreachable}, evals={"embedding": "emb"})
    got = run(root, llm)
    assert (got["same"].passed, got["same"].error) == (False, "transport")
    assert got["same"].error_message.startswith("embedding: cannot connect to http://127.0.0.1:9/api/embed")
