"""Fail closed and no crash from one case, through `gating eval`: a broken setup (no key, a wrong or
unreachable base URL, 401/403/404) is an error verdict that exits 1 and names the URL and the fix;
some cases erroring is an error too (they are not evidence); a template or assertion that raises fails
its own case with its category and the other cases are still evaluated."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from eval_support import a, live_env, load, write_repo

from gating.commands.cli import main
from gating.evals.runner import run_evals
from gating.git.repository import Git, commit_all, init_repo
from gating.testing.llm_server import LLMServer

CASES = [{"id": "one", "prompt": "p", "vars": {"q": a("yes")}, "assert": [{"type": "equals", "value": "yes"}]},
         {"id": "two", "prompt": "p", "vars": {"q": a("yes") + " (2)"}, "assert": [{"type": "equals", "value": "yes"}]}]
MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    g = init_repo(tmp_path / "repo")
    write_repo(g.root, CASES, evals={"thresholds": {"pass_rate": ">= 0.5"}})
    commit_all(g, "evals")
    return g


def gating_eval(repo: Git, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], capsys: pytest.CaptureFixture,
                *args: str) -> tuple[int, str, str]:
    for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "GATING_CACHE_DIR"):
        monkeypatch.delenv(k, raising=False)
    for k, v in {"GATING_PROVIDER": "live", **env}.items():
        monkeypatch.setenv(k, v)
    rc = main(["-C", str(repo.root), "eval", "--no-cache", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_base_url_without_v1_is_an_error_that_names_the_url_and_the_fix(repo, monkeypatch, capsys):
    with LLMServer() as server:
        rc, out, err = gating_eval(repo, monkeypatch, {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "k"}, capsys)
    assert rc == 1
    cause = (f"HTTP 404 from {server.url}/chat/completions: is the base URL missing /v1? "
             f"(OPENAI_BASE_URL={server.url})")
    assert out.startswith(f"### gating / eval: 💥 error\n\n- {cause} (2 of 2 cases at head could not be evaluated)\n")
    assert f"gating: error: {cause} (2 of 2 cases at head could not be evaluated)\n" in err
    assert "| setup | 0 | 2 |" in out


def test_no_api_key_names_the_variable_to_set_and_sends_nothing(repo, monkeypatch, capsys):
    rc, out, err = gating_eval(repo, monkeypatch, {}, capsys)
    assert rc == 1
    assert ("gating: error: no API key for openai: set OPENAI_API_KEY (or a base_url for a local server), or run "
            "on recorded cassettes (2 of 2 cases at head could not be evaluated)\n") in err


@pytest.mark.parametrize("server, key, cause", [
    (LLMServer(api_key="right"), "wrong",
     "HTTP 401 from {v1}/chat/completions: the API key was refused: set a valid OPENAI_API_KEY "
     "(the server said: Incorrect API key provided)"),
    (LLMServer(api_key="right"), "",
     "HTTP 401 from {v1}/chat/completions: no API key was sent: set OPENAI_API_KEY "
     "(the server said: You didn't provide an API key)"),
    (LLMServer(refuse=403), "k",
     f"HTTP 403 from {{v1}}/chat/completions: the API key may not use model '{MODEL}': check the access of "
     "OPENAI_API_KEY (the server said: You are not allowed to use this model)"),
    (LLMServer(refuse=404), "k",
     f"HTTP 404 from {{v1}}/chat/completions: is model '{MODEL}' served there? (OPENAI_BASE_URL={{v1}}; the "
     "server said: The model does not exist or you do not have access to it)"),
], ids=["401-wrong-key", "401-no-key", "403", "404-model"])
def test_the_provider_refusing_is_an_error_that_names_the_url_and_the_fix(repo, monkeypatch, capsys, server, key,
                                                                          cause):
    with server:
        env = {"OPENAI_BASE_URL": server.openai_base_url, **({"OPENAI_API_KEY": key} if key else {})}
        rc, _out, err = gating_eval(repo, monkeypatch, env, capsys)
        assert server.requests == 2  # no retry: a refusal does not change by asking again
    assert rc == 1
    want = cause.format(v1=server.openai_base_url)
    assert f"gating: error: {want} (2 of 2 cases at head could not be evaluated)\n" in err


def test_an_unreachable_base_url_is_an_error_that_names_it(repo, monkeypatch, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    rc, _out, err = gating_eval(repo, monkeypatch, {"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "k"}, capsys)
    assert rc == 1
    assert (f"gating: error: cannot connect to {url}/chat/completions: is the server running, and is "
            f"OPENAI_BASE_URL={url} right? (ConnectError") in err


def test_some_cases_erroring_is_an_error_not_a_pass_on_the_rest(repo, monkeypatch, capsys, tmp_path):
    """Cases that could not be evaluated are not evidence: the gate does not pass without them."""
    cases = [*CASES, {"id": "limited", "prompt": "p", "vars": {"q": a("yes") + "[[fault:429 retry_after=900]]"},
                      "assert": [{"type": "equals", "value": "yes"}]}]
    write_repo(repo.root, cases, evals={"thresholds": {"pass_rate": ">= 0.5"}})
    commit_all(repo, "one case is rate limited")
    with LLMServer() as server:
        rc, out, err = gating_eval(repo, monkeypatch, server.env(), capsys, "--json", str(tmp_path / "r.json"))
    assert rc == 1
    assert f"gating: error: HTTP 429 from {server.openai_base_url}/chat/completions: slow down" in err
    assert "(1 of 3 cases at head could not be evaluated)" in err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["comparison"]["verdict"] == "error"
    assert doc["comparison"]["errored"] == [
        {"side": "head", "id": "limited", "prompt": "p", "category": "rate_limit",
         "message": f"HTTP 429 from {server.openai_base_url}/chat/completions: slow down (the server asked to wait "
                    "900 s; a request waits at most 120 s)"}]
    assert "#### Cases with errors (1)" in out and "| head | `limited` | rate_limit | HTTP 429 from" in out


def test_on_error_neutral_reports_the_error_without_failing(repo, monkeypatch, capsys):
    rc, out, err = gating_eval(repo, monkeypatch, {}, capsys, "--on-error", "neutral")
    assert rc == 0
    assert out.startswith("### gating / eval: 💥 error\n")
    assert "gating: warning: not blocking (--on-error neutral): no API key for openai" in err


PROMPTS = {"p": {"file": "prompts/p.md", "model": "m"}, "t": {"file": "prompts/t.md", "model": "m"}}
TEMPLATE = ("{% if kind == 'divide' %}{{ 10 // n }}{% elif kind == 'range' %}{% for i in range(n) %}.{% endfor %}"
            "{% elif kind == 'filter' %}{{ n | no_such_filter }}{% elif kind == 'repeat' %}{{ 'ab' * n }}"
            "{% elif kind == 'power' %}{{ 7 ** n }}{% endif %}" + a("ok") + "\n")


def test_a_template_or_assertion_that_raises_fails_its_case_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    cases = [
        {"id": "fine", "prompt": "p", "vars": {"q": a("yes")}, "assert": [{"type": "equals", "value": "yes"}]},
        {"id": "divide", "prompt": "t", "vars": {"kind": "divide", "n": 0}},
        {"id": "range", "prompt": "t", "vars": {"kind": "range", "n": 10 ** 9}},
        {"id": "filter", "prompt": "t", "vars": {"kind": "filter", "n": 1}},
        {"id": "repeat", "prompt": "t", "vars": {"kind": "repeat", "n": 10 ** 9}},
        {"id": "power", "prompt": "t", "vars": {"kind": "power", "n": 10 ** 9}},
        {"id": "small", "prompt": "t", "vars": {"kind": "repeat", "n": 3}, "assert": [{"type": "equals", "value": "ok"}]},
        {"id": "template-ok", "prompt": "t", "vars": {"kind": "none", "n": 1}, "assert": [{"type": "equals", "value": "ok"}]},
        {"id": "deep-json", "prompt": "p", "vars": {"q": a("[" * 100_000)}, "assert": [{"type": "is-json"}]},
        {"id": "self-ref", "prompt": "p", "vars": {"q": a("{}")},
         "assert": [{"type": "json-schema", "value": {"$ref": "#"}}]},
    ]
    root = write_repo(tmp_path / "r", cases, prompts=PROMPTS, files={"prompts/t.md": TEMPLATE},
                      evals={"thresholds": {"pass_rate": ">= 0.1"}})
    snap, reader = load(root)
    with LLMServer() as server:
        run = run_evals(snap, reader, env=live_env(server))
        assert server.requests == 5  # fine, template-ok, small, deep-json, self-ref: broken renders send nothing
    got = {c.id: (c.passed, c.error, c.error_message) for c in run.cases}
    assert got["fine"] == (True, None, "") and got["template-ok"] == (True, None, "")
    assert got["divide"] == (False, "render", "prompt 't': the template raised ZeroDivisionError: integer division "
                                              "or modulo by zero")
    assert got["range"] == (False, "render", "prompt 't': the template raised OverflowError: Range too big. The "
                                             "sandbox blocks ranges larger than MAX_RANGE (100000).")
    assert got["filter"] == (False, "render", "prompt 't': No filter named 'no_such_filter' found.")
    assert got["repeat"] == (False, "render", "prompt 't': the template raised OverflowError: `*` would build "
                                              "2,000,000,000 items; a template may build at most 1,000,000")
    assert got["power"] == (False, "render", "prompt 't': the template raised OverflowError: exponent 1,000,000,000 "
                                             "is too large (at most 10,000 in a template)")
    assert got["small"] == (True, None, "")
    assert got["deep-json"][:2] == (False, "assertion")
    assert got["deep-json"][2].startswith("is-json raised RecursionError: maximum recursion depth exceeded")
    assert got["self-ref"][:2] == (False, "assertion")
    assert got["self-ref"][2].startswith("json-schema raised RecursionError: ")
    [broken] = run.case("deep-json").assertions
    assert (broken.passed, broken.score) == (False, 0.0)


def test_the_eval_report_names_each_broken_case_and_why(tmp_path, monkeypatch, capsys):
    g = init_repo(tmp_path / "repo")
    cases = [{"id": "fine", "prompt": "p", "vars": {"q": a("yes")}, "assert": [{"type": "equals", "value": "yes"}]},
             {"id": "divide", "prompt": "t", "vars": {"kind": "divide", "n": 0}}]
    write_repo(g.root, cases, prompts=PROMPTS, files={"prompts/t.md": TEMPLATE})
    commit_all(g, "evals")
    with LLMServer() as server:
        rc, out, _err = gating_eval(g, monkeypatch, server.env(), capsys)
    assert rc == 0  # a broken template is the change's failure, scored like any failing case, not a setup error
    assert ("| `divide` | t | render: prompt 't': the template raised ZeroDivisionError: integer division or modulo "
            "by zero |") in out
