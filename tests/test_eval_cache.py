"""The response cache: hits on a second run, errors never cached, safe for two processes at once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from eval_support import a, live_env, llm, load, write_repo  # noqa: F401

from gating.evals.cache import ResponseCache, request_key
from gating.evals.providers import ChatRequest, Completion
from gating.evals.runner import run_evals
from gating.testing.llm_server import LLMServer

CASES = [{"id": f"c{i}", "prompt": "p", "vars": {"q": a(f"answer {i}")},
          "assert": [{"type": "equals", "value": f"answer {i}"}]} for i in range(20)]


def test_second_run_is_served_from_the_cache(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    snap, reader = load(write_repo(tmp_path / "r", CASES))
    first = run_evals(snap, reader, env=live_env(llm), cache_dir=tmp_path / "cache")
    assert llm.requests == 20 and first.stats["cache_hits"] == 0
    second = run_evals(snap, reader, env=live_env(llm), cache_dir=tmp_path / "cache")
    assert llm.requests == 20  # zero requests reached the server
    assert second.stats["cache_hits"] == 20 and second.stats["requests"] == 0
    assert all(c.cached for c in second.cases) and not any(c.cached for c in first.cases)
    assert [c.to_dict() | {"cached": None} for c in second.cases] == \
        [c.to_dict() | {"cached": None} for c in first.cases]
    third = run_evals(snap, reader, env=live_env(llm), cache_dir=None)  # --no-cache
    assert llm.requests == 40 and third.stats["cache_hits"] == 0


def test_a_changed_prompt_misses_the_cache(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    root = write_repo(tmp_path / "r", CASES[:3])
    snap, reader = load(root)
    run_evals(snap, reader, env=live_env(llm), cache_dir=tmp_path / "cache")
    (root / "prompts/p.md").write_text("Answer briefly. {{ q }}\n")
    snap, reader = load(root)
    run = run_evals(snap, reader, env=live_env(llm), cache_dir=tmp_path / "cache")
    assert run.stats["cache_hits"] == 0 and llm.requests == 6


def test_errors_are_never_cached(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    cases = [{"id": "boom", "prompt": "p", "vars": {"q": "[[fault:malformed]]"}}]
    snap, reader = load(write_repo(tmp_path / "r", cases))
    for expected_requests in (1, 2):
        run = run_evals(snap, reader, env=live_env(llm), cache_dir=tmp_path / "cache")
        assert run.cases[0].error == "parse"
        assert llm.requests == expected_requests
    assert not list((tmp_path / "cache").glob("seg-*.jsonl"))


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    req = ChatRequest("openai", "m", (("user", "hi"),))
    cache.put(request_key(req), Completion("hello", 3, 1, 12.5))
    cache.close()
    seg = next(tmp_path.glob("seg-*.jsonl"))
    with open(seg, "ab") as f:
        f.write(b"f" * 64 + b' {"text": "half wri')  # a writer that has not finished its line
    again = ResponseCache(tmp_path)
    got = again.get(request_key(req))
    assert (got.text, got.tokens_in, got.tokens_out, got.latency_ms, got.source) == ("hello", 3, 1, 12.5, "cache")
    assert again.get("f" * 64) is None
    assert (tmp_path / ".gitignore").read_text() == "# response cache of gating eval\n*\n"


def test_old_segments_are_merged(tmp_path: Path) -> None:
    import os

    for i in range(ResponseCache.MERGE_AT):
        c = ResponseCache(tmp_path)
        c.put(f"{i:064x}", Completion(f"t{i}", 1, 1, 1.0))
        c.close()
    for seg in tmp_path.glob("seg-*.jsonl"):
        os.utime(seg, (1, 1))  # nobody has written to them for a long time
    merged = ResponseCache(tmp_path)
    assert len(list(tmp_path.glob("seg-*.jsonl"))) == 1
    assert [merged.get(f"{i:064x}").text for i in range(ResponseCache.MERGE_AT)] == \
        [f"t{i}" for i in range(ResponseCache.MERGE_AT)]


WRITER = textwrap.dedent("""
    import sys
    from gating.evals.cache import ResponseCache
    from gating.evals.providers import Completion
    cache = ResponseCache(sys.argv[1])
    who = sys.argv[2]
    for i in range(300):
        cache.put(f"{who}{i:063x}", Completion(f"{who}-{i}" * 20, i, i, 1.0))
        hit = cache.get(f"{who}{i:063x}")
        assert hit is not None and hit.text == f"{who}-{i}" * 20
    cache.close()
""")


def test_two_processes_share_a_cache_directory(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), who]) for who in "ab"]
    assert [p.wait(60) for p in procs] == [0, 0]
    cache = ResponseCache(tmp_path)
    for who in "ab":
        for i in range(300):
            assert cache.get(f"{who}{i:063x}").text == f"{who}-{i}" * 20


def test_identical_requests_in_flight_are_sent_once(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    llm.latency = 0.2
    cases = [{"id": f"same{i}", "prompt": "p", "vars": {"q": a("same")}} for i in range(5)]
    cases.append({"id": "broken", "prompt": "p", "vars": {"q": "[[fault:malformed]]"}})
    cases.append({"id": "broken2", "prompt": "p", "vars": {"q": "[[fault:malformed]]"}})
    snap, reader = load(write_repo(tmp_path / "r", cases))
    run = run_evals(snap, reader, env=live_env(llm), concurrency=8)
    assert llm.requests == 2
    assert [c.output for c in run.cases[:5]] == ["same"] * 5
    assert [c.error for c in run.cases[5:]] == ["parse", "parse"]
    assert run.stats["cache_hits"] == 5


def test_two_servers_never_share_cache_entries(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    snap, reader = load(write_repo(tmp_path / "r", CASES[:3]))
    run_evals(snap, reader, env=live_env(llm), cache_dir=tmp_path / "cache")
    with LLMServer(answer=lambda api, body: "from the other server") as other:
        run = run_evals(snap, reader, env=live_env(other), cache_dir=tmp_path / "cache")
        assert other.requests == 3 and run.stats["cache_hits"] == 0
    assert [c.output for c in run.cases] == ["from the other server"] * 3
    again = run_evals(snap, reader, env=live_env(llm), cache_dir=tmp_path / "cache")
    assert llm.requests == 3 and again.stats["cache_hits"] == 3
    assert [c.output for c in again.cases] == ["answer 0", "answer 1", "answer 2"]


def test_a_judge_reply_that_fails_to_parse_is_never_cached(tmp_path: Path) -> None:
    cases = [{"id": "graded", "prompt": "p", "vars": {"q": a("Paris")},
              "assert": [{"type": "rubric", "value": "Names a city."}]}]
    snap, reader = load(write_repo(tmp_path / "r", cases))
    replies = iter(["I would say it is fine.", json.dumps({"score": 5, "reason": "a city"})])
    with LLMServer(answer=lambda api, body: next(replies) if api == "anthropic" else None) as server:
        first = run_evals(snap, reader, env=live_env(server), cache_dir=tmp_path / "cache")
        assert (first.cases[0].error, server.requests) == ("parse", 2)
        second = run_evals(snap, reader, env=live_env(server), cache_dir=tmp_path / "cache")
        assert server.requests == 3  # the answer from the cache, the judge asked again
        assert (second.stats["cache_hits"], second.stats["requests"]) == (1, 1)
        assert second.cases[0].passed and second.cases[0].error is None
        third = run_evals(snap, reader, env=live_env(server), cache_dir=tmp_path / "cache")
        assert server.requests == 3 and third.stats["cache_hits"] == 2 and third.cases[0].passed


def test_an_unparsable_judge_reply_is_not_recorded(tmp_path: Path) -> None:
    cases = [{"id": "graded", "prompt": "p", "vars": {"q": a("Paris")},
              "assert": [{"type": "rubric", "value": "Names a city."}]}]
    root = write_repo(tmp_path / "r", cases)
    snap, reader = load(root)
    with LLMServer(answer=lambda api, body: "no verdict" if api == "anthropic" else None) as server:
        run = run_evals(snap, reader, env=live_env(server), record=True)
    assert run.cases[0].error == "parse" and run.stats["cassettes_written"] == {"evals/cassettes/cases.jsonl": 1}
    assert len((root / "evals/cassettes/cases.jsonl").read_text().splitlines()) == 1  # the answer only
