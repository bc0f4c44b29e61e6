"""Placing a `gating check` run: event payloads and GITHUB_* variables in, a CheckContext out (pure)."""

from __future__ import annotations

import pytest

from gating.check.context import CheckContext, ContextError, Settings, build_context, is_fork

BASE, HEAD, BEFORE = "b" * 40, "h" * 40, "f" * 40


def pull_event(head_repo: dict | None = None, number: int = 7) -> dict:
    repo = {"full_name": "acme/bot", "fork": False}
    return {"action": "opened", "number": number, "repository": repo,
            "pull_request": {"number": number,
                             "head": {"sha": HEAD, "ref": "tweak", "repo": repo if head_repo is None else head_repo},
                             "base": {"sha": BASE, "ref": "main", "repo": repo}}}


def workflow_run_event(head_repo: str, numbers: list[int]) -> dict:
    """A finished `pull_request` run as `workflow_run` reports it (pull_requests is empty for forks)."""
    return {"action": "completed", "repository": {"full_name": "acme/bot"},
            "workflow_run": {"event": "pull_request", "head_sha": HEAD, "head_repository": {"full_name": head_repo},
                             "pull_requests": [{"number": n, "base": {"sha": BASE, "ref": "main"}} for n in numbers]}}


ACTIONS = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/bot", "GITHUB_TOKEN": "ghs_x",
           "GITHUB_API_URL": "https://ghe.example/api/v3", "GITHUB_SERVER_URL": "https://ghe.example",
           "GITHUB_RUN_ID": "99", "GITHUB_SHA": "m" * 40, "GITHUB_STEP_SUMMARY": "/tmp/s.md",
           "GITHUB_OUTPUT": "/tmp/o.txt"}


@pytest.mark.parametrize("env, event, want", [
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"}, pull_event(),
                 dict(event_name="pull_request", head_sha=HEAD, base=BASE, base_ref="main", pull_number=7,
                      fork=False, can_post=True, read_only_reason=None), id="pull_request"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"},
                 pull_event({"full_name": "mallory/bot", "fork": True}),
                 dict(fork=True, can_post=False, head_sha=HEAD), id="fork"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"}, {**pull_event(), "pull_request": {
        **pull_event()["pull_request"], "head": {"sha": HEAD, "ref": "x", "repo": None}}},
                 dict(fork=True), id="deleted-fork"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "push"},
                 {"ref": "refs/heads/main", "before": BEFORE, "after": HEAD, "repository": {"full_name": "acme/bot"}},
                 dict(event_name="push", head_sha=HEAD, base=BEFORE, base_ref="main", pull_number=None), id="push"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "push"},
                 {"ref": "refs/heads/new", "before": "0" * 40, "after": HEAD}, dict(head_sha=HEAD, base=None),
                 id="push-new-branch"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "workflow_dispatch"}, {"inputs": {}},
                 dict(head_sha="m" * 40, base=None), id="workflow_dispatch"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request_target"}, pull_event(),
                 dict(event_name="pull_request_target", head_sha=HEAD, fork=False, untrusted=None),
                 id="pull_request_target-same-repository"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "workflow_run"}, workflow_run_event("acme/bot", [7]),
                 dict(event_name="workflow_run", head_sha=HEAD, base=BASE, pull_number=7, fork=False, untrusted=None),
                 id="workflow_run-same-repository"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "workflow_run"}, workflow_run_event("mallory/bot", []),
                 dict(head_sha=HEAD, base=None, pull_number=None, fork=True), id="workflow_run-fork"),
    pytest.param({}, None, dict(event_name="local", head_sha="HEAD", base=None, repository=None, can_post=False,
                                in_actions=False, api_url="https://api.github.com",
                                read_only_reason="no GitHub repository or token was given, so nothing was posted"),
                 id="local"),
])
def test_context_from_event_and_environment(env: dict, event: dict | None, want: dict):
    ctx = build_context(env, event)
    got = {k: getattr(ctx, k) for k in want}
    assert got == want


def test_actions_details_and_files():
    ctx = build_context({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"}, pull_event())
    assert ctx.details_url == "https://ghe.example/acme/bot/actions/runs/99"
    assert (ctx.api_url, ctx.step_summary, ctx.output_file) == ("https://ghe.example/api/v3", "/tmp/s.md", "/tmp/o.txt")
    assert "ghs_x" not in repr(ctx)


def test_details_link_the_apps_eval_report_page_when_gating_pages_url_is_set():
    ctx = build_context({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request", "GATING_PAGES_URL": "https://gating.example/"},
                        pull_event())
    assert ctx.details_url == f"https://gating.example/pages/acme/bot/report/{ctx.head_sha}"


def test_explicit_flags_win_over_the_event():
    ctx = build_context({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"}, pull_event(), head="abc", base="main",
                        repository="other/repo", pull_number=9, api_url="http://127.0.0.1:1/api/v3/")
    assert (ctx.head_sha, ctx.base, ctx.repository, ctx.pull_number, ctx.api_url) == \
        ("abc", "main", "other/repo", 9, "http://127.0.0.1:1/api/v3")


def test_fork_reason_is_the_sentence_users_read():
    ctx = build_context({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"}, pull_event({"full_name": "m/bot"}))
    assert ctx.read_only_reason == ("this pull request comes from a fork: its GITHUB_TOKEN is read-only and "
                                    "repository secrets are withheld, so no check run, comment or eval note was written")


def test_no_head_in_actions_is_a_clear_error():
    env = {k: v for k, v in ACTIONS.items() if k != "GITHUB_SHA"}
    with pytest.raises(ContextError, match="no head commit: GITHUB_SHA is unset and the event names none; pass --head"):
        build_context({**env, "GITHUB_EVENT_NAME": "workflow_dispatch"}, {"inputs": {}})


@pytest.mark.parametrize("kwargs, message", [
    ({"baseline": "latest"}, "baseline 'latest' is not one of: notes, rerun, none"),
    ({"fail_on": "always"}, "fail-on 'always' is not one of: regression, threshold, never"),
    ({"notes": "maybe"}, "notes 'maybe' is not one of: auto, push, local, off"),
    ({"concurrency": 0}, "concurrency must be a positive number, not 0"),
])
def test_settings_refuse_bad_values(kwargs: dict, message: str):
    with pytest.raises(ContextError) as e:
        Settings(**kwargs)
    assert str(e.value) == message


def test_is_fork_by_name_or_flag():
    assert is_fork({"head": {"repo": {"fork": True}}, "base": {"repo": {}}})
    assert not is_fork({"head": {"repo": {"full_name": "a/b"}}, "base": {"repo": {"full_name": "a/b"}}})
    assert isinstance(build_context({}, None), CheckContext)


@pytest.mark.parametrize("event_name, event", [
    pytest.param("pull_request_target", pull_event({"full_name": "mallory/bot", "fork": True}), id="pull_request_target"),
    pytest.param("pull_request_target", {**pull_event(), "pull_request": {
        **pull_event()["pull_request"], "head": {"sha": HEAD, "ref": "x", "repo": None}}}, id="deleted-fork"),
    pytest.param("workflow_run", workflow_run_event("mallory/bot", []), id="workflow_run"),
])
def test_a_forks_head_under_a_privileged_event_is_untrusted_and_the_reason_names_the_pattern(event_name, event):
    ctx = build_context({**ACTIONS, "GITHUB_EVENT_NAME": event_name}, event)
    assert ctx.untrusted is not None
    assert ctx.untrusted.startswith(f"a pull request from a fork is not evaluated under `{event_name}`, which holds "
                                    "a write token and the repository's secrets: use the fork pattern")
    assert "examples/workflows/gating-collect.yml and gating-evaluate.yml" in ctx.untrusted


def test_a_forks_head_under_pull_request_is_not_privileged():
    ctx = build_context({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"}, pull_event({"full_name": "mallory/bot"}))
    assert ctx.fork and ctx.untrusted is None
