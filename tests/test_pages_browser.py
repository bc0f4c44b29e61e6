"""The App's pages in a real headless browser (Debian's chromium): sign-in through GitHub's authorize
page, the road in order, the report's charts and their numbers, 404 without access, the keyboard,
and contrast."""

from __future__ import annotations

import pytest
from browser_support import ENTER, TAB, Browser, browser
from pages_support import Road, road

CONTRAST = """
function lum(c) {
  const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map(v => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function background(el) {
  for (; el; el = el.parentElement) {
    if (el instanceof SVGElement && el.tagName !== 'svg') continue;
    const c = getComputedStyle(el).backgroundColor, m = c.match(/[\\d.]+/g);
    if (m && (m.length < 4 || Number(m[3]) > 0)) return c;
  }
  return 'rgb(255, 255, 255)';
}
let worst = [99, ''];
for (const el of document.querySelectorAll('body *')) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || el.closest('title') || el.getClientRects().length === 0) continue;
  const r0 = el.getBoundingClientRect(); if (r0.right < 0) continue;  // the skip link before it is focused
  const fg = el instanceof SVGElement ? getComputedStyle(el).fill : getComputedStyle(el).color;
  const a = lum(fg), b = lum(background(el));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < worst[0]) worst = [ratio, el.tagName + ': ' + el.textContent.trim().slice(0, 40)];
}
return worst;
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Road:
    with road(tmp_path_factory.mktemp("pages-browser")) as r:
        yield r


def sign_in(b: Browser, demo: Road, login: str, path: str = "/pages/acme/support-bot/") -> None:
    b.get(demo.app_url + path)
    b.wait_for("#app-name")  # GitHub's authorize page (the emulator's)
    b.type("#login", login)
    b.click("#authorize")


def test_the_pages_in_a_browser(demo: Road):
    report = demo.reports[0]
    with browser() as b:
        sign_in(b, demo, "carol")
        b.wait_for("#timeline")
        rows = b.script("return [...document.querySelectorAll('#timeline tbody tr')]"
                        ".map(r => [r.dataset.seq, r.dataset.event, r.querySelector('.verification').dataset.state])")
        assert rows == [["5", "rolled_back", "verified"], ["4", "known_good", "verified"], ["3", "merged", "verified"],
                        ["2", "known_good", "verified"], ["1", "merged", "verified"]]
        assert b.text("header .who").startswith("signed in as @carol")

        # keyboard: the first Tab reaches the skip link, Enter moves focus to the content
        b.press(TAB)
        assert b.script("return document.activeElement.className") == "skip"
        assert b.script("return getComputedStyle(document.activeElement).outlineStyle") != "none"
        b.press(ENTER)
        assert b.script("return document.activeElement.id") == "main"
        assert b.script("return [...document.querySelectorAll('a')].filter(a => !a.href || a.tabIndex < 0).length") == 0
        ratio, where = b.script(CONTRAST)
        assert ratio >= 4.5, f"contrast {ratio:.2f} at {where}"

        b.click('#timeline tr[data-seq="3"] td a')  # the entry page, by its link
        b.wait_for("table.facts")
        assert "seq 3: merged" in b.text("h1")
        assert "issue_refund" in b.text("table.changes")

        b.get(f"{demo.app_url}/pages/acme/support-bot/report/{report['head']}")
        assert b.wait_for("#verdict") == "fail"
        shown = b.script("return [...document.querySelectorAll('svg.deltas g.delta')]"
                         ".map(g => [g.dataset.metric, Number(g.dataset.delta)])")
        want = {r["metric"]: r["delta"] for r in report["comparison"]["rows"]
                if r["delta"] is not None and r["metric"].startswith(("pass_rate", "score", "error_rate"))}
        assert {m: pytest.approx(d) for m, d in shown} == want
        p50 = b.script("return Number(document.querySelector('svg.latency g[data-series=head]').dataset.p50)")
        assert p50 == pytest.approx(report["comparison"]["latency"]["total"]["head_p50"])
        assert b.script("return document.querySelectorAll('svg.trend, svg.cost').length") >= 2
        ratio, where = b.script(CONTRAST)
        assert ratio >= 4.5, f"contrast {ratio:.2f} at {where}"

        b.click('nav.filters a[href*="filter=regressed"]')  # a filter is a link: no JavaScript needed
        b.wait_for("#cases")
        assert "filter=regressed" in b.url
        cases = b.script("return [...document.querySelectorAll('#cases tr.case')].map(r => r.className)")
        assert cases and all("regressed" in c for c in cases)
        assert b.script("return document.querySelectorAll('#cases .sides pre').length") == 2 * len(cases)

        b.get(f"{demo.app_url}/pages/logout")
        assert b.wait_for("#message") == "You are signed out."


def test_a_user_without_access_gets_404_in_the_browser(demo: Road):
    with browser() as b:
        sign_in(b, demo, "mallory")
        assert b.wait_for("#message") == "There is no page here, or you cannot see it."
        assert b.text("h1") == "Not found"
        assert "acme/support-bot" not in b.text()


def test_a_tampered_entry_shows_failed_in_gating_view_in_the_browser(demo: Road, tmp_path):
    import base64
    import json

    from gating.audit.entry import split_lines
    from gating.commands.view import local_source
    from gating.git.notes import AUDIT_REF
    from gating.git.repository import Git
    from gating.pages.index import Index
    from gating.pages.site import Site
    from gating.pages.wsgi import serve

    clone = Git(tmp_path / "tampered")
    Git(tmp_path).run("clone", "-q", str(demo.clone.root), str(clone.root))
    clone.run("fetch", "-q", "origin", "+refs/notes/gating/*:refs/notes/gating/*")
    commit = clone.run("rev-parse", "origin/main")
    lines = split_lines(clone.notes_show(AUDIT_REF, commit))
    env = json.loads(lines[-1])
    env["payload"] = base64.b64encode(base64.b64decode(env["payload"]).replace(b'"deployer"', b'"mallory"')).decode()
    (tmp_path / "note").write_bytes(b"\n".join([*lines[:-1], json.dumps(env, separators=(",", ":")).encode()]) + b"\n")
    clone.run("-c", "user.name=m", "-c", "user.email=m@example.invalid", "notes", f"--ref={AUDIT_REF}", "add", "-f",
              "-F", str(tmp_path / "note"), commit)
    server, thread = serve(Site(local_source(clone, [str(demo.pub)]), Index()))
    try:
        with browser() as b:
            b.get(f"http://127.0.0.1:{server.server_address[1]}/")
            b.wait_for("#timeline")
            states = dict(b.script("return [...document.querySelectorAll('#timeline tbody tr')]"
                                   ".map(r => [r.dataset.seq, r.querySelector('.verification').dataset.state])"))
            assert states["4"] == "failed" and states["1"] == "verified"
            assert "signature ✗" in b.text('#timeline tr[data-seq="4"]')
    finally:
        server.shutdown()
        thread.join(5)
