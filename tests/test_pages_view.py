"""`gating view` and the pages rendered from a clone: the demo's road, a tampered entry, the report's
numbers against the JSON report, filters without JavaScript, and the index rebuilt when notes move."""

from __future__ import annotations

import base64
import json
import re
import threading
import time

import httpx
import pytest
from pages_support import Road, road

from gating.audit.entry import split_lines
from gating.commands.view import local_source
from gating.git.notes import AUDIT_REF
from gating.pages.index import Index
from gating.pages.site import Site


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Road:
    with road(tmp_path_factory.mktemp("pages-view")) as r:
        yield r


def site_of(demo: Road) -> Site:
    return Site(local_source(demo.clone, [str(demo.pub)]), Index())


def test_the_timeline_shows_the_demos_road_in_order(demo: Road):
    page = site_of(demo).handle("", {})
    assert page.status == 200
    rows = re.findall(r'data-seq="(\d+)" data-event="(\w+)"', page.html)
    assert rows == [("5", "rolled_back"), ("4", "known_good"), ("3", "merged"), ("2", "known_good"), ("1", "merged")]
    assert "The log does not verify" not in page.html
    merged = site_of(demo).handle("", {"event": "merged"})
    assert re.findall(r'data-seq="(\d+)"', merged.html) == ["3", "1"]


def test_the_reports_numbers_are_the_json_reports(demo: Road):
    report = demo.reports[0]  # the failing first push
    cmp = report["comparison"]
    page = site_of(demo).handle(f"report/{report['head']}", {})
    assert page.status == 200 and 'id="verdict" class="bad">fail<' in page.html
    shown = {m: (float(d), lo, hi) for m, d, lo, hi in re.findall(
        r'<g class="delta \w+" data-metric="([^"]+)" data-delta="([^"]*)" data-low="([^"]*)" data-high="([^"]*)"',
        page.html)}
    want = {r["metric"]: r for r in cmp["rows"] if r["delta"] is not None
            and r["metric"].startswith(("pass_rate", "score", "error_rate"))}
    assert shown.keys() == want.keys()
    for metric, (delta, lo, hi) in shown.items():
        assert delta == pytest.approx(want[metric]["delta"])
        if want[metric]["interval"]:
            assert (float(lo), float(hi)) == pytest.approx(want[metric]["interval"])
    lat = dict(re.findall(r'data-series="(\w+)" data-p50="([^"]+)"', page.html.split('class="chart distribution latency"')[1]
                          .split("</svg>")[0]))
    assert float(lat["head"]) == pytest.approx(cmp["latency"]["total"]["head_p50"])
    assert float(lat["base"]) == pytest.approx(cmp["latency"]["total"]["base_p50"])
    assert 'class="chart distribution cost"' in page.html and 'class="chart trend"' in page.html


def test_case_filters_work_from_the_query(demo: Road):
    report = demo.reports[0]
    site = site_of(demo)
    worse = {f["id"] for f in report["comparison"]["flipped"] if f["after"] != "pass"}
    page = site.handle(f"report/{report['head'][:10]}", {"filter": "regressed"})
    shown = set(re.findall(r'<tr class="case regressed" id="case-[^"]+" data-case="([^"]+)"', page.html))
    assert worse and worse <= shown
    assert "regressed" in re.search(r'aria-current="page">(\w+)', page.html).group(1)
    outputs = re.findall(r'<tr class="outputs" data-case="([^"]+)"', page.html)
    assert set(outputs) == shown  # regressed cases open with their outputs side by side
    one = site.handle(f"report/{report['head']}", {"case": "refund-window"})
    assert re.findall(r'<tr class="outputs" data-case="([^"]+)"', one.html) == ["refund-window"]


def test_entry_and_compare_pages(demo: Road):
    site = site_of(demo)
    first = site.handle("entry/1", {})
    assert f"eval report of {demo.reports[1]['head'][:7]}" in first.html  # the approved head, against its base
    assert re.search(r"Latency p50 \d+ → \d+ ms", first.html) and "@carol" in first.html
    timeline = site.handle("", {})
    assert timeline.html.count('<span class="muted">production</span>') == 2
    assert re.search(r'class="muted">to [0-9a-f]{7} \(last-good, comment\)', timeline.html)
    entry = site.handle("entry/3", {})
    assert entry.status == 200 and "issue_refund" in entry.html and "What changed" in entry.html
    rolled = site.handle("entry/5", {})
    assert "rolled back to" in rolled.html and "bot refunds orders nobody asked for" in rolled.html
    cmp = site.handle("compare", {"base": "1", "head": "3"})
    assert cmp.status == 200 and "issue_refund" in cmp.html
    assert site.handle("compare", {"base": "nonsense!"}).status == 404
    day = re.search(r"<td>(\d{4}-\d{2}-\d{2})T", site.handle("", {}).html).group(1)
    same = site.handle("compare", {"base": day, "head": "now"})  # "that day" and "now": the newest both times
    assert same.status == 200 and "No change to the LLM system." in same.html and "the newest at or before" in same.html
    before = site.handle("compare", {"base": "2000-01-01"})
    assert before.status == 404 and "no entry with a snapshot at or before 2000-01-01" in before.html
    assert site.handle("entry/99", {}).status == 404
    assert site.handle("report/" + "0" * 40, {}).status == 404


def test_a_tampered_entry_shows_as_failed_verification(demo: Road, tmp_path):
    from gating.git.repository import Git

    clone = Git(tmp_path / "tampered")
    Git(tmp_path).run("clone", "-q", str(demo.clone.root), str(clone.root))
    clone.run("fetch", "-q", "origin", "+refs/notes/gating/*:refs/notes/gating/*")
    commit = next(c.split()[1] for c in clone.run("notes", f"--ref={AUDIT_REF}", "list").splitlines()
                  if b'"seq":3' in b"".join(base64.b64decode(json.loads(ln)["payload"])
                                           for ln in split_lines(clone.notes_show(AUDIT_REF, c.split()[1]))))
    lines = split_lines(clone.notes_show(AUDIT_REF, commit))
    forged = []
    for ln in lines:
        env = json.loads(ln)
        payload = base64.b64decode(env["payload"])
        if b'"seq":3' in payload:
            env["payload"] = base64.b64encode(payload.replace(b'"actor":"maya"', b'"actor":"mallory"')).decode()
        forged.append(json.dumps(env, separators=(",", ":")))
    (tmp_path / "note").write_text("\n".join(forged) + "\n")
    clone.run("-c", "user.name=m", "-c", "user.email=m@example.invalid", "notes", f"--ref={AUDIT_REF}", "add", "-f", "-F", str(tmp_path / "note"), commit)
    page = Site(local_source(clone, [str(demo.pub)]), Index()).handle("", {})
    row = re.search(r'<tr class="entry merged" data-seq="3".*?</tr>', page.html, re.S).group(0)
    assert 'data-state="failed"' in row and "signature ✗" in row and "@mallory" in row
    after = re.search(r'<tr class="entry known_good" data-seq="4".*?</tr>', page.html, re.S).group(0)
    assert 'data-state="failed"' in after and "chain ✗" in after  # its prev no longer matches seq 3
    assert page.html.count('data-state="verified"') == 3
    entry = Site(local_source(clone, [str(demo.pub)]), Index()).handle("entry/3", {})
    assert 'class="bad"' in entry.html and "signature" in entry.html


def test_the_index_is_rebuilt_when_the_notes_move(demo: Road, tmp_path):
    idx = Index(str(tmp_path / "index.sqlite3"))
    src = local_source(demo.clone, [str(demo.pub)])
    assert idx.refresh(src) is True and idx.refresh(src) is False
    assert idx.count() == 5
    idx._db().execute("DELETE FROM entries")  # an index lost or damaged: the notes rebuild it
    idx._db().commit()
    idx.rebuild(src)
    assert idx.count() == 5


def test_gating_view_serves_the_pages_on_loopback(demo: Road, capsys, monkeypatch):
    from app_support import free_port

    from gating.commands.cli import main

    monkeypatch.setenv("GITHUB_TOKEN", demo.emu.read_only_token())  # the App's witnesses, read from the API
    for k in ("GITHUB_REPOSITORY", "GITHUB_API_URL", "GATING_AUDIT_APP_ID"):
        monkeypatch.delenv(k, raising=False)

    port = free_port()
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(main(["-C", str(demo.clone.root), "view", "--port", str(port),
                                                          "--key", str(demo.pub)])), daemon=True)
    t.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            r = httpx.get(base + "/")
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert r.status_code == 200 and 'data-seq="5"' in r.text
    assert r.text.count("witness ✓") == 5
    assert httpx.get(base + "/entry/1").status_code == 200
    assert httpx.post(base + "/").status_code == 405
    assert f"at {base}/ (Ctrl-C stops it)" in capsys.readouterr().out


def test_gating_view_imports_no_web_framework():
    """It runs on the Action's slim install (requirements/action.txt: Jinja2, no Flask or werkzeug)."""
    import subprocess
    import sys

    code = ("import sys, gating.commands.view, gating.pages.wsgi, gating.pages.site; "
            "print(sorted({'flask', 'werkzeug', 'gunicorn'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
