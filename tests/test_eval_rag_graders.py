"""g-eval and the RAG metrics (context faithfulness, context recall, answer relevance): the judge sees the
criterion, the retrieved context and the reference they need, and a case without a context fails alone."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from eval_support import a, fast_retries, load, write_repo

from gating.evals.calibrate import load_ratings
from gating.evals.dataset import DatasetError
from gating.evals.runner import run_evals
from gating.testing.llm_server import LLMServer

SEEN: list[str] = []


def judge(api: str, body: dict[str, Any]) -> str | None:
    """The judge (anthropic) gives 5 when the ANSWER's marker is in what it is shown, else 1."""
    if api != "anthropic":
        return None
    text = body["messages"][-1]["content"]
    SEEN.append(text)
    shown, answer = text.split("ANSWER:\n", 1)
    shown = re.sub(r"INPUT:\n.*?\n\n", "", shown, flags=re.S)  # the question repeats the answer's directive
    m = re.search(r"need=(\w+)", answer)
    ok = m is not None and (m.group(1) in shown or m.group(1) == "refund")
    return json.dumps({"score": 5 if ok else 1, "reason": "marker " + ("found" if ok else "missing")})


def run(tmp_path: Path, cases: list[dict[str, Any]]) -> dict[str, Any]:
    SEEN.clear()
    snap, reader = load(write_repo(tmp_path, cases))
    with LLMServer(answer=judge) as server:
        got = run_evals(snap, reader, env=server.env(), cache_dir=None, retry=fast_retries())
    return {c.id: c for c in got.cases}


def case(cid: str, answer: str, spec: dict[str, Any], **vars_: Any) -> dict[str, Any]:
    return {"id": cid, "prompt": "p", "vars": {"q": a(answer), **vars_}, "assert": [spec],
            **({"expected": vars_.pop("expected")} if "expected" in vars_ else {})}


def test_each_grader_shows_the_judge_what_it_grades(tmp_path: Path) -> None:
    got = run(tmp_path, [
        case("geval", "need=coherent", {"type": "g-eval", "value": "coherent and kind"}),
        case("faithful", "need=policy", {"type": "context-faithfulness"}, context="the policy says 30 days"),
        case("unfaithful", "need=warranty", {"type": "context-faithfulness"}, context="the policy says 30 days"),
        case("recall", "need=ORD", {"type": "context-recall", "value": "ORD-7 shipped"}, context="ORD-7 is on its way"),
        case("relevant", "need=refund", {"type": "answer-relevance"}),
        case("not-relevant", "need=refund", {"type": "not-answer-relevance"}),
    ])
    assert got["geval"].passed and got["faithful"].passed and got["recall"].passed
    assert not got["unfaithful"].passed and got["unfaithful"].assertions[0].reason == "judge 1/5: marker missing"
    assert got["relevant"].passed and not got["not-relevant"].passed
    geval = next(t for t in SEEN if "CRITERIA:\ncoherent and kind" in t)
    assert "Evaluate in steps before you grade" in geval
    faithful = next(t for t in SEEN if "need=policy" in t)
    assert "CONTEXT:\nthe policy says 30 days" in faithful and "supported by the CONTEXT" in faithful
    recall = next(t for t in SEEN if "need=ORD" in t)
    assert "REFERENCE:\nORD-7 shipped" in recall and "CONTEXT:\nORD-7 is on its way" in recall
    relevant = next(t for t in SEEN if "need=refund" in t)
    assert "CONTEXT:" not in relevant


def test_a_rag_metric_without_a_context_var_fails_its_case(tmp_path: Path) -> None:
    got = run(tmp_path, [case("c", "x", {"type": "context-faithfulness"}), case("ok", "need=q", {"type": "answer-relevance"})])
    assert got["c"].error == "assertion"
    assert "context-faithfulness needs the retrieved text in the case's `context` var" in got["c"].error_message
    assert got["ok"].error is None


@pytest.mark.parametrize(("spec", "says"), [
    ({"type": "g-eval"}, "g-eval needs a `value`: the criteria"),
    ({"type": "context-recall"}, "context-recall needs a reference answer"),
    ({"type": "answer-relevance", "value": "x"}, "answer-relevance takes `threshold` (0 to 1), not `value`"),
])
def test_bad_specs(tmp_path: Path, spec: dict[str, Any], says: str) -> None:
    with pytest.raises(DatasetError) as e:
        run(tmp_path, [case("c", "x", spec)])
    assert says in str(e.value)


def test_calibration_ratings_take_the_new_types() -> None:
    lines = [{"id": "g", "type": "g-eval", "rubric": "kind", "output": "o", "human": 4},
             {"id": "f", "type": "context-faithfulness", "context": "ctx", "output": "o", "human": 2},
             {"id": "r", "type": "answer-relevance", "input": "q", "output": "o", "human": 5}]
    got = load_ratings("r.jsonl", "\n".join(json.dumps(x) for x in lines).encode())
    assert [(r.type, r.context) for r in got] == [("g-eval", None), ("context-faithfulness", "ctx"),
                                                  ("answer-relevance", None)]
    with pytest.raises(DatasetError, match="a context-recall rating needs `context`"):
        load_ratings("r.jsonl", json.dumps({"type": "context-recall", "reference": "x", "output": "o",
                                            "human": 3}).encode())
