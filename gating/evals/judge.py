"""Model-graded assertions: a judge model scores an answer 1-5 against a rubric, a reference, g-eval style
criteria, or (the RAG metrics) the retrieved context.

The judge must reply with JSON `{"score": 1-5, "reason": "..."}` (a fenced block or JSON inside prose
is accepted). Anything else is a JudgeParseError, which fails the case with category `parse`: a judge
that cannot be read never counts as a pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gating.errors import FAILED, GatingError
from gating.evals.assertions import MODEL_GRADED, Observation, base_type, default_name
from gating.evals.llm import LLM
from gating.evals.records import AssertionResult
from gating.evals.targets import chat_request

SCALE = (1, 2, 3, 4, 5)
DEFAULT_THRESHOLD = 0.75  # normalised score; 4 of 5 passes

JUDGE_SYSTEM = (
    "You are a strict evaluator of a customer-facing AI system. Grade the ANSWER on a 1-5 scale: "
    "5 = fully meets the criterion, 4 = meets it with minor issues, 3 = partly, 2 = mostly not, 1 = not at all. "
    'Reply with only a JSON object: {"score": <1-5>, "reason": "<one sentence>"}.'
)

_JSON_OBJ = re.compile(r"\{.*\}", re.S)


class JudgeParseError(GatingError):
    """The judge's reply holds no score (the case fails with category `parse`)."""

    exit_code = FAILED


def rubric_messages(rubric: str, question: str, answer: str) -> tuple[tuple[str, str], ...]:
    user = f"CRITERION:\n{rubric.strip()}\n\nINPUT:\n{question.strip()}\n\nANSWER:\n{answer.strip()}"
    return (("system", JUDGE_SYSTEM), ("user", user))


def factuality_messages(reference: str, question: str, answer: str) -> tuple[tuple[str, str], ...]:
    crit = ("The ANSWER is factually consistent with the REFERENCE: it states no fact that contradicts or is "
            "missing from the reference, and it contains the reference's key facts.")
    user = (f"CRITERION:\n{crit}\n\nINPUT:\n{question.strip()}\n\nREFERENCE:\n{reference.strip()}\n\n"
            f"ANSWER:\n{answer.strip()}")
    return (("system", JUDGE_SYSTEM), ("user", user))


G_EVAL_STEPS = (
    "Evaluate in steps before you grade: 1. Restate the CRITERIA as the concrete properties a good answer has. "
    "2. Check the ANSWER against each property, in order, noting where it falls short. 3. Weigh the shortfalls "
    "and grade. Keep the steps to yourself: the reply is only the JSON object, whose reason names the decisive step."
)
RAG = {
    "context-faithfulness": ("Every claim the ANSWER makes is supported by the CONTEXT (the retrieved text); a "
                             "claim the context does not support, or contradicts, counts against it."),
    "context-recall": ("The CONTEXT (the retrieved text) contains the facts of the REFERENCE answer: grade by "
                       "the share of the reference's facts the context supports. The ANSWER is not graded."),
    "answer-relevance": ("The ANSWER addresses the INPUT that was asked, completely and without going into "
                         "unrelated matters; correctness is not graded, only relevance."),
}


def g_eval_messages(criteria: str, question: str, answer: str) -> tuple[tuple[str, str], ...]:
    user = f"CRITERIA:\n{criteria.strip()}\n\n{G_EVAL_STEPS}\n\nINPUT:\n{question.strip()}\n\nANSWER:\n{answer.strip()}"
    return (("system", JUDGE_SYSTEM), ("user", user))


def rag_messages(kind: str, question: str, answer: str, context: str, reference: str | None = None
                 ) -> tuple[tuple[str, str], ...]:
    parts = [f"CRITERION:\n{RAG[kind]}", f"INPUT:\n{question.strip()}"]
    if kind != "answer-relevance":
        parts.append(f"CONTEXT:\n{context.strip()}")
    if reference is not None:
        parts.append(f"REFERENCE:\n{reference.strip()}")
    parts.append(f"ANSWER:\n{answer.strip()}")
    return (("system", JUDGE_SYSTEM), ("user", "\n\n".join(parts)))


def parse_judgement(text: str) -> tuple[int, str]:
    """(score 1-5, reason) from the judge's reply; raises JudgeParseError."""
    t = text.strip()
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", t, re.S)
    candidate = fenced.group(1) if fenced else (t if t.startswith("{") else None)
    if candidate is None:
        m = _JSON_OBJ.search(t)
        candidate = m.group(0) if m else None
    if candidate is None:
        raise JudgeParseError(f"judge reply has no JSON object: {t[:120]!r}")
    try:
        d = json.loads(candidate)
    except ValueError as e:
        why = e.msg if isinstance(e, json.JSONDecodeError) else str(e)  # int() over 4,300 digits: no .msg
        raise JudgeParseError(f"judge reply is not valid JSON ({why}): {candidate[:120]!r}") from None
    if not isinstance(d, dict):
        raise JudgeParseError("judge reply is not a JSON object")
    score = d.get("score")
    if isinstance(score, str) and score.strip().isdigit():
        score = int(score.strip())
    if isinstance(score, float) and score.is_integer():
        score = int(score)
    if not isinstance(score, int) or isinstance(score, bool) or score not in SCALE:
        raise JudgeParseError(f"judge score must be a whole number 1-5, got {d.get('score')!r}")
    return score, str(d.get("reason", "")).strip()


def judge_messages(spec: Mapping[str, Any], question: str, answer: str, expected: Any,
                   context: Any = None) -> tuple[tuple[str, str], ...]:
    kind = MODEL_GRADED[base_type(spec["type"])]
    if kind == "rubric":
        return rubric_messages(str(spec["value"]), question, answer)
    if kind == "g-eval":
        return g_eval_messages(str(spec["value"]), question, answer)
    if kind in RAG:
        if kind != "answer-relevance" and (context is None or (isinstance(context, str) and not context.strip())):
            raise ValueError(f"{kind} needs the retrieved text in the case's `context` var")
        text = context if isinstance(context, str) else json.dumps(context, ensure_ascii=False)
        ref = None
        if kind == "context-recall":
            r = spec.get("value") if isinstance(spec.get("value"), str) else expected
            ref = r if isinstance(r, str) else json.dumps(r)
        return rag_messages(kind, question, answer, text or "", ref)
    ref = spec.get("value") if isinstance(spec.get("value"), str) else expected
    return factuality_messages(ref if isinstance(ref, str) else json.dumps(ref), question, answer)


async def judge_score(llm: LLM, judge_model: Mapping[str, Any], messages: tuple[tuple[str, str], ...],
                      dataset: str = "") -> tuple[int, str, Any]:
    """Ask the judge; returns (score, reason, completion). Raises ProviderError or JudgeParseError."""
    req = chat_request(judge_model, messages, extra_params={"temperature": 0})
    got = await llm.complete(req, dataset, check=parse_judgement)  # an unreadable reply is never cached
    score, reason = parse_judgement(got.text)
    return score, reason, got


async def grade(spec: Mapping[str, Any], obs: Observation, question: str, expected: Any, llm: LLM,
                judge_model: Mapping[str, Any], dataset: str = "", context: Any = None) -> tuple[AssertionResult, Any]:
    """One model-graded assertion; `not-` flips pass/fail and the score. `context` is the retrieved text
    (the case's `context` var) the RAG metrics grade against."""
    msgs = judge_messages(spec, question, obs.output, expected, context)
    score, reason, got = await judge_score(llm, judge_model, msgs, dataset)
    norm = (score - 1) / (len(SCALE) - 1)
    ok = norm >= float(spec.get("threshold", DEFAULT_THRESHOLD))
    why = f"judge {score}/5: {reason}" if reason else f"judge {score}/5"
    if spec["type"].startswith("not-"):
        ok, norm, why = not ok, 1 - norm, f"{why} (negated)"
    return AssertionResult(spec["type"], ok, norm, why, default_name(dict(spec)), float(spec.get("weight", 1.0))), got
