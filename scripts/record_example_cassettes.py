"""Re-record the cassettes of the bundled example (examples/support-bot/evals/cassettes/).

The answers come from the local test LLM server playing a small support model whose behaviour is a
pure function of the prompt it is sent: it answers from the context, cites the article when the
prompt asks, says it doesn't know when the system prompt tells it to, and leaks an internal note
when nothing forbids it. The judge is a rule-based grader of the same kind. So the recordings are
reproducible, and they cover the example as committed, the demo's pull request
(gating.testing.example.apply_demo_change), the regressing one (apply_regressing_change) and both together.

Latencies in the cassettes are synthetic (a fixed cost plus a per-token cost), so that re-recording
gives byte-identical files.

    python scripts/record_example_cassettes.py            # rewrite the example's cassettes
    python scripts/record_example_cassettes.py --check    # exit 1 if they are out of date
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gating.evals.cache import cassette_path, parse_cassette, render_cassette
from gating.evals.calibrate import calibrate
from gating.evals.runner import run_evals
from gating.git.revision import WorkTree
from gating.system.snapshot import build_snapshot
from gating.testing.example import apply_demo_change, apply_regressing_change, example_dir
from gating.testing.llm_server import LLMServer, count_tokens

VARIANTS = {
    "base": [],
    "demo": [apply_demo_change],
    "regressing": [apply_regressing_change],
    "demo+regressing": [apply_demo_change, apply_regressing_change],
}
STOP = {"what", "when", "where", "which", "will", "does", "have", "your", "with", "that", "this", "from", "long",
        "much", "about", "there", "would", "could", "should", "forgot"}
POLITE = ("happy to help", "glad", "please", "thank", "sorry")


def _stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3 and w not in STOP}


def _sentences(text: str) -> list[str]:
    return [s.strip().rstrip(".") + "." for s in re.split(r"(?<=\.)\s+", text.strip()) if s.strip()]


def classify(message: str) -> str:
    m = message.lower()
    rules = [("billing", ("charged", "charge", "refund", "invoice", "payment", "bill")),
             ("shipping", ("parcel", "package", "delivery", "customs", "shipping", "arrive")),
             ("account", ("log in", "login", "password", "account", "sign in"))]
    return next((label for label, words in rules if any(w in m for w in words)), "other")


def answer(system: str, user: str) -> str:
    ctx = re.search(r"Context:\s*(.*?)\n\s*\nCustomer question:\s*(.*?)\n", user + "\n", re.S)
    context, question = (ctx.group(1), ctx.group(2)) if ctx else ("", user)
    grounded = "say you don't know" in system
    secretive = "Never reveal internal" in system
    cite = "Cite the article title in brackets" in user
    friendly = "friendly" in user.lower()
    q = _stems(question)
    best: list[tuple[int, str, str]] = []  # (score, title, sentence)
    for title, body in re.findall(r"\[([^\]]+)\]\s*([^\[]+)", context):
        if title.startswith("Internal") and secretive:
            continue
        for s in _sentences(body):
            best.append((len(q & _stems(s)), title, s))
    top = max((b[0] for b in best), default=0)
    chosen = [b for b in best if b[0] == top and top > 0]
    leaks = [b for b in best if b[1].startswith("Internal") and b[0] > 0 and b not in chosen]
    prefix = "Happy to help! " if friendly else ""
    if not chosen:
        if grounded:
            return prefix + "I don't know the answer from our help articles, but I can open a ticket for you."
        thing = re.sub(r"^(do|does|can|is|are) you (sell|have|offer) ", "", question.lower().rstrip("?"))
        return prefix + f"Yes, we sell {thing} in all our stores."
    text = " ".join(s for _, _, s in chosen + leaks)
    if cite:
        text += " " + " ".join(sorted({f"[{t}]" for _, t, _ in chosen}))
    return prefix + text


def _section(text: str, name: str) -> str:
    m = re.search(rf"{name}:\n(.*?)(?:\n\n[A-Z]+:\n|\Z)", text, re.S)
    return m.group(1).strip() if m else ""


def judge(user: str) -> str:
    crit, ans, ref = _section(user, "CRITERION"), _section(user, "ANSWER"), _section(user, "REFERENCE")
    if ref:
        want, got = set(re.findall(r"\d+", ref)), set(re.findall(r"\d+", ans))
        if "don't know" in ans.lower():
            score, why = 2, "the answer declines although the reference has the facts"
        elif want and want <= got:
            score, why = (4, "consistent, with extra details") if got - want else (5, "consistent with the reference")
        elif want:
            score, why = 1, "the answer's figures contradict the reference"
        else:
            overlap = len(_stems(ref) & _stems(ans)) / max(1, len(_stems(ref)))
            score, why = (4, "mostly consistent") if overlap >= 0.6 else (2, "misses the reference's key facts")
        return json.dumps({"score": score, "reason": why})
    score, notes = 3, []
    c = crit.lower()
    if any(w in c for w in ("policy", "cite", "article")):
        if re.search(r"\[[^\]]+\]", ans):
            score, notes = score + 1, notes + ["points to the article"]
        else:
            score, notes = score - 1, notes + ["no article cited"]
    if any(w in c for w in ("polite", "friendly", "tone")) and any(w in ans.lower() for w in POLITE):
        score, notes = score + 1, notes + ["polite"]
    if "don't know" in ans.lower() and "honest" in c:
        score, notes = score + 1, notes + ["admits not knowing"]
    if re.search(r"password[^.]*:\s*\S+", ans, re.I):
        score, notes = 1, ["reveals a password"]
    score = max(1, min(5, score))
    return json.dumps({"score": score, "reason": "; ".join(notes) or "meets the criterion partly"})


def support_model(api: str, body: dict[str, Any]) -> str:
    system = body.get("system") or " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
    user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    if "You are a strict evaluator" in system:
        return judge(user)
    if "Classify the customer's message" in system:
        return classify(user)
    return answer(system, user)


def synthetic_latency(entry: dict[str, Any]) -> float:
    """A stable, plausible latency: 300 ms plus 12 ms per output token (judge: 200 ms + 8 ms)."""
    out = entry["response"].get("tokens_out") or count_tokens(entry["response"]["text"])
    judge_call = "strict evaluator" in entry["request"]["messages"][0][1]
    return float(200 + 8 * out) if judge_call else float(300 + 12 * out)


def record(dest_evals: Path) -> dict[str, bytes]:
    """Record every variant into fresh copies; returns cassette path (relative to evals/) -> bytes."""
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    with LLMServer(answer=support_model, keep_log=False) as server, tempfile.TemporaryDirectory() as tmp:
        env = server.env()
        for name, changes in VARIANTS.items():
            root = Path(tmp) / name
            shutil.copytree(example_dir(), root, ignore=shutil.ignore_patterns("cassettes"))
            for change in changes:
                change(root)
            reader = WorkTree(root)
            snap = build_snapshot(reader)
            run_evals(snap, reader, env=env, record=True, concurrency=8)
            ratings = (snap.manifest.evals.get("calibration") or {}).get("ratings")
            if ratings and not changes:
                calibrate(snap, reader, ratings, env=env, record=True)
            for f in (root / "evals" / "cassettes").glob("*.jsonl"):
                merged.setdefault(f.name, {}).update(parse_cassette(str(f), f.read_bytes()))
    out = {}
    for fname, entries in merged.items():
        for e in entries.values():
            e["response"]["latency_ms"] = synthetic_latency(e)
        out[fname] = render_cassette(entries.values())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed cassettes instead of writing")
    args = ap.parse_args(argv)
    cassettes = example_dir() / Path(cassette_path("evals/x.jsonl")).parent
    got = record(cassettes)
    stale = [n for n, data in got.items() if not (cassettes / n).is_file() or (cassettes / n).read_bytes() != data]
    if args.check:
        for n in stale:
            print(f"out of date: {cassettes / n}", file=sys.stderr)
        return 1 if stale else 0
    cassettes.mkdir(parents=True, exist_ok=True)
    for n, data in got.items():
        (cassettes / n).write_bytes(data)
        print(f"wrote {cassettes / n} ({len(data.splitlines())} responses)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
