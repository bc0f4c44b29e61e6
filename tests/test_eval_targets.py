"""Targets: prompt templates (sandboxed, strict), the user's command and an HTTP endpoint."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from eval_support import a, live_env, llm, load, write_repo  # noqa: F401

from gating.evals.runner import run_evals
from gating.evals.targets import PromptLibrary, RenderError
from gating.testing.llm_server import LLMServer

MODELS = {"m": {"provider": "openai", "model": "gpt-4o-mini-2024-07-18", "params": {"temperature": 0.2}}}


def library(files: dict[str, str], prompts: dict) -> PromptLibrary:
    return PromptLibrary(prompts, MODELS, {k: v.encode() for k, v in files.items()})


def test_plain_prompt_is_the_user_message_after_its_system_prompt() -> None:
    lib = library({"s.md": "You help {{ who }}.", "p.md": "Q: {{ q | upper }}\n"},
                  {"s": {"file": "s.md"}, "p": {"file": "p.md", "model": "m", "system": "s"}})
    assert lib.render("p", {"who": "Acme", "q": "why?"}) == (("system", "You help Acme."), ("user", "Q: WHY?"))


def test_yaml_prompt_is_a_list_of_chat_messages() -> None:
    text = "- role: system\n  content: Label it.\n- role: user\n  content: \"{{ message }}\"\n"
    lib = library({"c.yml": text}, {"c": {"file": "c.yml", "model": "m"}})
    assert lib.render("c", {"message": "charged twice"}) == (("system", "Label it."), ("user", "charged twice"))


def test_undefined_variable_is_an_error_not_an_empty_string() -> None:
    lib = library({"p.md": "Context: {{ context }}\nQ: {{ q }}"}, {"p": {"file": "p.md", "model": "m"}})
    with pytest.raises(RenderError, match=r"prompt 'p': 'context' is undefined \(add it to the case's vars\)"):
        lib.render("p", {"q": "x"})


def test_templates_run_in_a_sandbox() -> None:
    lib = library({"p.md": "{{ q.__class__.__mro__ }}"}, {"p": {"file": "p.md", "model": "m"}})
    with pytest.raises(RenderError, match="unsafe"):
        lib.render("p", {"q": "x"})


def test_a_broken_prompt_fails_only_its_cases(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    prompts = {"p": {"file": "prompts/p.md", "model": "m"}, "bad": {"file": "prompts/bad.yml", "model": "m"}}
    cases = [{"id": "ok", "prompt": "p", "vars": {"q": a("fine")}},
             {"id": "broken", "prompt": "bad", "vars": {}},
             {"id": "undefined", "prompt": "p", "vars": {}}]
    root = write_repo(tmp_path / "r", cases, prompts=prompts, files={"prompts/bad.yml": "- role: robot\n  content: x\n"})
    snap, reader = load(root)
    run = run_evals(snap, reader, env=live_env(llm))
    got = {c.id: (c.passed, c.error, c.error_message) for c in run.cases}
    assert got["ok"] == (True, None, "")
    assert got["broken"] == (False, "render", "prompt 'bad': prompts/bad.yml: message 1 needs `role` "
                             "(system, user, assistant) and string `content`")
    assert got["undefined"] == (False, "render", "prompt 'p': 'q' is undefined (add it to the case's vars)")
    assert llm.requests == 1


PIPELINE = """
import json, sys, time
case = json.load(sys.stdin)
q = case["vars"]["q"]
if q == "hang":
    time.sleep(5)
if q == "crash":
    sys.exit("index not found")
if q == "garbage":
    print("not json"); sys.exit(0)
print(json.dumps({"output": "answer to " + q, "tokens_in": 40, "tokens_out": 8, "model": "gpt-4o-2024-08-06",
                  "provider": "openai",
                  "latency_ms": {"embedding": 12.5, "retrieval": 30, "llm": 420, "post": 1.5},
                  "echo": case}))
"""


def command_repo(tmp_path: Path, timeout: float = 5) -> Path:
    (tmp_path / "r").mkdir()
    (tmp_path / "r/pipeline.py").write_text(PIPELINE)
    cases = [{"id": q, "vars": {"q": q}, "assert": [{"type": "icontains", "value": "answer"}]}
             for q in ("refund", "hang", "crash", "garbage")]
    target = {"type": "command", "run": f"{sys.executable} pipeline.py", "timeout_s": timeout, "code": ["pipeline.py"]}
    return write_repo(tmp_path / "r", cases, evals={"target": target})


def test_command_target_keeps_stage_timings_and_classifies_failures(tmp_path: Path) -> None:
    snap, reader = load(command_repo(tmp_path, timeout=1.5))
    run = run_evals(snap, reader, env={"PATH": "/usr/bin:/bin"})
    by = {c.id: c for c in run.cases}
    ok = by["refund"]
    assert ok.passed and ok.output == "answer to refund"
    assert {k: v for k, v in ok.latency_ms.items() if k != "total"} == \
        {"embedding": 12.5, "retrieval": 30.0, "llm": 420.0, "post": 1.5}
    assert ok.latency_ms["total"] > 0 and (ok.tokens_in, ok.tokens_out) == (40, 8)
    assert ok.cost_usd == pytest.approx((40 * 2.5 + 8 * 10) / 1e6)
    assert (by["hang"].error, by["hang"].error_message) == ("timeout", "command did not answer within 1.5 s")
    assert (by["crash"].error, by["crash"].error_message) == ("provider", "command exited with 1: index not found")
    assert by["garbage"].error == "parse"
    assert run.metrics["latency_p50_ms:retrieval"] == 30.0


class _App(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen.append({"body": body, "auth": self.headers.get("authorization")})
        if body["vars"]["q"] == "limited" and sum(s["body"]["id"] == body["id"] for s in self.seen) == 1:
            self.send_response(429)
            self.send_header("retry-after", "0.1")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        out = json.dumps({"output": f"http {body['vars']['q']}", "latency_ms": {"retrieval": 7}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app() -> Iterator[str]:
    _App.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/answer"
    server.shutdown()
    server.server_close()


def test_http_target_posts_the_case_and_retries_429(tmp_path: Path, app: str) -> None:
    cases = [{"id": "a", "prompt": "p", "vars": {"q": "refund"}, "expected": "x"},
             {"id": "b", "vars": {"q": "limited"}, "assert": [{"type": "equals", "value": "http limited"}]}]
    target = {"type": "http", "url": app, "headers": {"authorization": "Bearer ${APP_TOKEN}"}}
    snap, reader = load(write_repo(tmp_path / "r", cases, evals={"target": target}))
    run = run_evals(snap, reader, env={"APP_TOKEN": "s3cret"})
    assert [(c.id, c.passed, c.output) for c in run.cases] == [("a", True, "http refund"), ("b", True, "http limited")]
    assert run.cases[0].latency_ms["retrieval"] == 7.0
    first = next(s for s in _App.seen if s["body"]["id"] == "a")
    assert first["auth"] == "Bearer s3cret"
    assert first["body"] == {"id": "a", "prompt": "p", "vars": {"q": "refund"}, "repeat": 0, "expected": "x",
                             "messages": [{"role": "user", "content": "refund"}]}
    assert sum(s["body"]["id"] == "b" for s in _App.seen) == 2


def test_repeat_runs_each_case_n_times_with_majority(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    cases = [{"id": "flaky", "prompt": "p", "vars": {"q": a("yes")}, "assert": [{"type": "equals", "value": "yes"}]}]
    snap, reader = load(write_repo(tmp_path / "r", cases))
    run = run_evals(snap, reader, env=live_env(llm), repeat=3, cache_dir=tmp_path / "c")
    c = run.cases[0]
    assert (c.repeats, c.repeat_passed, c.passed, c.score) == (3, [True, True, True], True, 1.0)
    assert llm.requests == 3  # each repeat is its own sample, not a cache hit of the first
    again = run_evals(snap, reader, env=live_env(llm), repeat=3, cache_dir=tmp_path / "c")
    assert llm.requests == 3 and again.cases[0].cached


def test_repeat_majority_and_mean_over_a_flaky_answer(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    from eval_support import fast_retries

    cases = [{"id": "flaky", "prompt": "p", "vars": {"q": a("yes") + "[[fault:500 times=1]]"},
              "assert": [{"type": "equals", "value": "yes"}]},
             {"id": "down", "prompt": "p", "vars": {"q": a("yes") + "[[fault:500 times=2]]"},
              "assert": [{"type": "equals", "value": "yes"}]}]
    snap, reader = load(write_repo(tmp_path / "r", cases))
    run = run_evals(snap, reader, env=live_env(llm), repeat=3, concurrency=1, retry=fast_retries(0))
    flaky, down = run.cases
    assert (flaky.repeat_passed, flaky.passed, flaky.error) == ([False, True, True], True, None)
    assert flaky.score == pytest.approx(2 / 3)
    assert (down.repeat_passed, down.passed, down.error) == ([False, False, True], False, "provider")


def test_a_target_reply_counts_only_whole_non_negative_tokens() -> None:
    """A count that is not one (12.5, -3, true) is unknown, not a token count the costs multiply."""
    from gating.evals.targets import parse_target_reply

    for bad in (12.5, -3, True, "40"):
        got = parse_target_reply(json.dumps({"output": "x", "tokens_in": bad, "tokens_out": bad}).encode(), "cmd")
        assert (got.tokens_in, got.tokens_out) == (None, None), bad
    got = parse_target_reply(b'{"output": "x", "tokens_in": 40, "tokens_out": 0, "cost_usd": 0.5}', "cmd")
    assert (got.tokens_in, got.tokens_out, got.cost_usd) == (40, 0, 0.5)
