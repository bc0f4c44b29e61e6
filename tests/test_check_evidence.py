"""Evidence a pull request cannot forge, through `gating check` on the GitHub emulator: cassettes or a
response cache committed by the pull request do not make failing cases pass, the base's recordings win
over rewritten ones, and answers obtained two ways (one side replayed, one live) are never a pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from check_support import GATING_YML, Harness, answer_prompt, write_system

from gating.evals.cache import cassette_entry, parse_cassette, render_cassette, request_key
from gating.evals.providers import ChatRequest, Completion
from gating.evals.runner import run_evals
from gating.git.revision import WorkTree
from gating.system.snapshot import build_snapshot
from gating.testing.llm_server import LLMServer

TAPE = "evals/cassettes/cases.jsonl"


class Switch:
    """A test LLM server that can be told to lie: every answer then passes every case."""

    def __init__(self) -> None:
        self.lying = False

    def __call__(self, api: str, body: dict[str, Any]) -> str | None:
        return "yes, hello" if self.lying else None


@pytest.fixture
def switch() -> Switch:
    return Switch()


@pytest.fixture
def h(github, switch: Switch, tmp_path: Path, monkeypatch) -> Harness:
    with LLMServer(answer=switch) as llm:
        repo = github.create_repo("acme/tiny-bot", source_dir=write_system(tmp_path / "src"))
        yield Harness(github, repo, llm, tmp_path, monkeypatch)


def _tree(root: Path, answer: str, manifest: str = GATING_YML) -> Path:
    write_system(root, answer=answer)
    (root / "gating.yml").write_text(manifest, encoding="utf-8")
    return root


def _record(h: Harness, root: Path, *, cache: Path | None = None, record: bool = True) -> None:
    """Run the tree's evals live against the harness's server: recording cassettes or filling `cache`."""
    reader = WorkTree(root)
    run_evals(build_snapshot(reader), reader, env={**h.llm.env(), "GATING_PROVIDER": "live"}, record=record,
              cache_dir=cache)


def _checkout(h: Harness, pr: dict[str, Any]) -> Any:
    """A clone with the pull request's head checked out, as actions/checkout leaves it."""
    clone = h.clone()
    clone.run("checkout", "--quiet", pr["head"]["sha"])
    return clone


def _summary(h: Harness, sha: str) -> dict[str, Any]:
    [run] = h.check_runs(sha)
    return run


def test_cassettes_a_pull_request_commits_do_not_make_failing_cases_pass(h: Harness, switch: Switch):
    forged = _tree(h.tmp / "forge", answer="no")
    switch.lying = True
    _record(h, forged)
    switch.lying = False
    pr = h.open_pr("terse", {"prompts/answer.md": answer_prompt("no"), TAPE: (forged / TAPE).read_text()},
                   "Terser answers, with recordings")
    ran = h.run(pr)
    assert ran.rc == 1
    run = _summary(h, pr["head"]["sha"])
    assert run["conclusion"] == "failure" and run["output"]["title"].startswith("Fail: 10 cases regressed")
    summary = run["output"]["summary"]
    assert f"> cassettes the head adds or changes ({TAPE}) were not used: answers were called live " \
           "(evals.mode: live in the base's gating.yml)" in summary
    assert f"| cassette | cassette {TAPE} added (12 recordings): replay would score these answers | " \
           f"`cassettes.{TAPE}` | **high** |" in summary
    assert ran.report["head_run"]["config"]["mode"] == "live" and ran.report["head_run"]["stats"]["replayed"] == 0


def test_a_response_cache_committed_in_the_checkout_is_never_read(h: Harness, switch: Switch):
    forged = _tree(h.tmp / "forge", answer="no")
    switch.lying = True  # the lies are cached under the very server the check will call
    _record(h, forged, cache=forged / ".gating" / "cache", record=False)
    switch.lying = False
    segments = {f".gating/cache/{p.name}": p.read_text() for p in (forged / ".gating" / "cache").glob("seg-*.jsonl")}
    assert segments
    pr = h.open_pr("terse", {"prompts/answer.md": answer_prompt("no"), **segments}, "Terser answers")
    clone = _checkout(h, pr)
    assert sorted(p.name for p in (clone.root / ".gating/cache").iterdir()) == sorted(Path(p).name for p in segments)
    ran = h.run(pr, clone=clone)  # the default cache lives in the git directory, never in the work tree
    assert ran.rc == 1 and ran.report["head_run"]["stats"]["cache_hits"] == 0
    assert _summary(h, pr["head"]["sha"])["conclusion"] == "failure"
    clone = _checkout(h, pr)
    ran = h.run(pr, clone=clone, args=("--cache-dir", ".gating/cache"))  # asked for by name: refused, and said
    assert ran.rc == 1 and ran.report["head_run"]["stats"]["cache_hits"] == 0
    assert "> the response cache .gating/cache is inside the checkout, where a pull request could commit " \
           "answers: it was not used" in ran.stdout  # the summary, as posted
    assert "gating: warning: the response cache .gating/cache is inside the checkout" in ran.stderr
    assert (clone.common_dir / "gating" / "responses").is_dir() is False  # nothing cached when refused


REPLAY_YML = GATING_YML.replace("  target: {type: prompt}\n", "  target: {type: prompt}\n  mode: replay\n")


def test_the_base_recordings_win_over_recordings_a_pull_request_rewrites(github, tmp_path: Path, monkeypatch):
    honest = _tree(tmp_path / "src", answer="yes", manifest=REPLAY_YML)
    (honest / "prompts/greet.md").write_text("Say hello to {{ name }}.\n[[answer: goodbye]]\n", encoding="utf-8")
    with LLMServer() as llm:
        h = Harness(github, None, llm, tmp_path, monkeypatch)
        _record(h, honest)
        h.repo = github.create_repo("acme/tiny-bot", source_dir=honest)
        tape = parse_cassette(TAPE, (honest / TAPE).read_bytes())
        for entry in tape.values():  # "goodbye" fails the greet cases: the pull request says "hello"
            entry["response"]["text"] = entry["response"]["text"].replace("goodbye", "hello")
        pr = h.open_pr("rerecord", {TAPE: render_cassette(tape.values()).decode()}, "Re-record")
        ran = h.run(pr)
        assert llm.requests == 12  # the recording only: the check replays
    summary = _summary(h, pr["head"]["sha"])["output"]["summary"]
    assert f"| cassette | cassette {TAPE} changed (2 recordings rewritten): the recorded answers replay scores | " \
           f"`cassettes.{TAPE}` | **high** |" in summary
    assert "> 2 recorded answers that the head's cassettes rewrite were not used: the base's recordings were " \
           "served (the head's take effect after merge)" in summary
    head = {c["id"]: c for c in ran.report["head_run"]["cases"]}
    assert not head["greet-1"]["passed"] and not head["greet-2"]["passed"]
    assert ran.report["head_run"]["config"]["mode"] == "replay" and ran.report["head_run"]["stats"]["replayed"] == 12


def _as_replay_provider(tape: bytes) -> str:
    """The same recordings, keyed as requests to a model whose provider is `replay`."""
    out = []
    for entry in parse_cassette(TAPE, tape).values():
        r = entry["request"]
        req = ChatRequest("replay", r["model"], tuple(tuple(m) for m in r["messages"]),
                          tuple(sorted(r["params"].items())), repeat=r.get("repeat", 0))
        out.append(cassette_entry(request_key(req), req, Completion.from_dict(entry["response"], "replay")))
    return render_cassette(out).decode()


def test_base_called_live_and_head_replayed_is_said_and_not_a_pass(h: Harness):
    head = _tree(h.tmp / "head", answer="yes")
    _record(h, head)
    manifest = GATING_YML.replace("bot: {provider: openai,", "bot: {provider: replay,")
    pr = h.open_pr("offline", {"gating.yml": manifest, TAPE: _as_replay_provider((head / TAPE).read_bytes())},
                   "Answer from recordings")
    ran = h.run(pr)
    assert ran.rc == 1
    run = _summary(h, pr["head"]["sha"])
    assert run["conclusion"] == "failure"
    assert run["output"]["title"].startswith("Fail: base and head were not evaluated the same way: base's answers "
                                             "were called live (12), head's were replayed from cassettes (12)")
    assert "recorded and live answers are not comparable, so this is not a pass" in run["output"]["summary"]
    assert ran.report["verdict"] == "fail"


def test_a_base_note_made_live_is_not_the_baseline_of_a_replayed_run(h: Harness):
    """Switching replay on: the first check after it re-runs base in replay, and says why."""
    greet = "Say hi to {{ name }}.\n[[answer: hello there]]\n"
    _record(h, _tree(h.tmp / "tape", answer="yes"))
    edited = _tree(h.tmp / "tape-head", answer="yes")  # the head's requests are recorded too
    (edited / "prompts/greet.md").write_text(greet, encoding="utf-8")
    _record(h, edited)
    both = {**parse_cassette(TAPE, (h.tmp / "tape" / TAPE).read_bytes()),
            **parse_cassette(TAPE, (edited / TAPE).read_bytes())}
    push = h.repo.commit_files("main", {TAPE: render_cassette(both.values()).decode()}, "Record cassettes")
    first = h.open_pr("docs", {"prompts/greet.md": greet}, "Greet")
    assert h.run(first).rc == 0  # live: leaves a live eval note on main's commit
    assert json.loads(h.repo.note("refs/notes/gating/evals", push))["config"]["mode"] == "live"
    ran = h.run(first, args=("--replay",))
    assert ran.rc == 0 and ran.llm_requests == 0
    assert ran.report["head_run"]["config"]["mode"] == "replay"
    assert f"baseline: re-ran base `{push[:7]}` (its eval note was made in live mode, this run is replay)" \
        in ran.stdout


def test_a_pull_request_that_adopts_gating_cannot_switch_replay_on_for_itself(github, switch: Switch,
                                                                              tmp_path: Path, monkeypatch):
    strict = REPLAY_YML.replace('pass_rate: ">= 0.1"', 'pass_rate: ">= 0.9"')
    forged = _tree(tmp_path / "forge", answer="no", manifest=strict)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "README.md").write_text("# tiny-bot\n", encoding="utf-8")
    with LLMServer(answer=switch) as llm:
        h = Harness(github, github.create_repo("acme/tiny-bot", source_dir=tmp_path / "src"), llm, tmp_path,
                    monkeypatch)
        switch.lying = True
        _record(h, forged)
        switch.lying = False
        files = {p.relative_to(forged).as_posix(): p.read_text() for p in forged.rglob("*") if p.is_file()}
        pr = h.open_pr("adopt", files, "Adopt gating")
        ran = h.run(pr)
    assert ran.rc == 1 and ran.report["head_run"]["config"]["mode"] == "live"
    assert "> the head's gating.yml sets evals.mode: replay, but a change is judged by its base, which has no " \
           "evals settings: answers were called live (the base has no evals settings to judge by)" in ran.stdout
