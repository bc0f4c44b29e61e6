"""The App's pages on the demo's road: sign-in with GitHub, read access as GitHub says, and the pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pages_support import Road, road, sign_in


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Road:
    with road(tmp_path_factory.mktemp("pages-app")) as r:
        yield r


def test_the_timeline_needs_sign_in_and_shows_the_road_newest_first(demo: Road):
    c, page = sign_in(demo, "carol")
    assert page.status_code == 200
    events = re.findall(r'<tr class="entry \w+" data-seq="(\d+)" data-event="(\w+)"', page.text)
    assert events == [("5", "rolled_back"), ("4", "known_good"), ("3", "merged"), ("2", "known_good"),
                      ("1", "merged")]
    assert page.text.count('data-state="verified"') == 5
    assert page.text.count("witness ✓") == 5  # the App's `gating / audit` check runs, read over the API
    assert "signed in as @carol" in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("login", ["mallory"])
def test_a_user_without_read_access_gets_404_like_a_missing_repository(demo: Road, login: str):
    c, page = sign_in(demo, login)
    assert page.status_code == 404
    missing = c.get("/pages/acme/no-such-repo/")
    assert missing.status_code == 404 and missing.text == page.text  # nothing tells the two apart


def test_a_reader_sees_the_entry_and_report_pages(demo: Road):
    c, _ = sign_in(demo, "rita")
    entry = c.get("/pages/acme/support-bot/entry/1")
    assert entry.status_code == 200 and "@carol" in entry.text and "APPROVED" in entry.text
    head = demo.reports[1]["head"]
    report = c.get(f"/pages/acme/support-bot/report/{head}")
    assert report.status_code == 200 and 'id="verdict" class="ok">pass<' in report.text


def test_no_secret_or_key_material_is_ever_rendered(demo: Road):
    c, _ = sign_in(demo, "carol")
    head = demo.reports[0]["head"]
    pages = [c.get(p).text for p in ("/pages/acme/support-bot/", "/pages/acme/support-bot/entry/5",
                                     f"/pages/acme/support-bot/report/{head}", "/pages/acme/support-bot/compare")]
    emu = demo.emu
    for secret in (emu.app.client_secret, emu.app.webhook_secret, "PRIVATE KEY", "ghu_", "ghs_"):
        assert not [p for p in pages if secret in p]
    assert "ghu_" not in str(c.cookies)


def test_odd_repository_names_are_404_and_sign_in_returns_only_to_a_page(demo: Road):
    c, _ = sign_in(demo, "carol")
    for path in ("/pages/%2E%2E/app/", "/pages/acme/%2E%2E/", "/pages/-x/y/", "/pages/acme/..%2Fapp/"):
        assert c.get(path).status_code == 404, path
    import httpx

    fresh = httpx.Client(base_url=demo.app_url)
    fresh.get("/pages/login", params={"next": "https://evil.example/"})
    assert fresh.get("/pages/callback", params={"code": "x", "state": "y"}).status_code == 400
    c2, page = sign_in(demo, "carol", "/pages/login?next=//evil.example/")
    assert page.status_code == 200 and str(page.url).startswith(demo.app_url + "/pages/")


def test_a_forged_sign_in_callback_is_refused(demo: Road):
    import httpx

    c = httpx.Client(base_url=demo.app_url)
    r = c.get("/pages/callback", params={"code": "x", "state": "forged"})
    assert r.status_code == 400 and "state mismatch" in r.text


def test_details_url_of_the_approval_check_points_at_the_report(demo: Road):
    from gating.server.links import report_url
    from gating.server.settings import Settings

    s = Settings.load({"GATING_PUBLIC_URL": "https://gating.example.com"}, environ={})
    assert report_url(s, "acme/support-bot", "a" * 40) == \
        f"https://gating.example.com/pages/acme/support-bot/report/{'a' * 40}"
    assert report_url(Settings.load({}, environ={}), "acme/support-bot", "a" * 40) is None


def test_the_approval_check_run_links_its_report_page(demo: Road):
    from gating.policy.render import CheckOutput
    from gating.server.approval_evaluation import publish

    sha = demo.reports[1]["head"]
    url = f"{demo.app_url}/pages/acme/support-bot/report/{sha}"
    out = CheckOutput("completed", "success", "Approved", "all rules approved", "")
    publish(demo.state.api, sha, out, str(demo.emu.app.app_id), url)
    runs = [r for r in demo.emu.list_check_runs(demo.state.repo, sha) if r["name"] == "gating / approval"]
    assert max(runs, key=lambda r: r["id"])["details_url"] == url
    c, _ = sign_in(demo, "carol", url.removeprefix(demo.app_url))
    assert c.get(url).status_code == 200


def test_pages_are_off_without_a_public_url_and_refused_without_oauth_settings(tmp_path: Path):
    from gating.server.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET"):
        Settings.load({"GATING_PUBLIC_URL": "https://x.example", "WEBHOOK_SECRET": "s", "APP_ID": "1",
                       "GATING_DB": str(tmp_path / "q.sqlite3")}, environ={}).check()
