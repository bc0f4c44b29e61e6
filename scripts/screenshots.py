"""Screenshots of every page the App serves, at a desktop and a phone width, on the demo's road.

Runs `gating demo`'s steps on the emulator, starts the App with its pages, signs in through the
(emulated) GitHub authorize page in headless chromium, and writes PNGs:

    .venv/bin/python scripts/screenshots.py [OUT_DIR]      # default: screenshots/

Needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser_support import browser  # noqa: E402
from pages_support import road  # noqa: E402

WIDTHS = {"desktop": (1280, 1600), "phone": (390, 1600)}


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gating-shots-") as tmp, road(Path(tmp)) as r, browser() as b:
        base = f"{r.app_url}/pages/acme/support-bot"
        failing, passing = r.reports[0]["head"], r.reports[1]["head"]
        pages = {"timeline": "/", "entry": "/entry/3", "rollback-entry": "/entry/5",
                 "report-failing": f"/report/{failing}?filter=regressed", "report-passing": f"/report/{passing}",
                 "compare": "/compare?base=1&head=3"}
        b.get(base + "/")
        b.wait_for("#app-name")
        b.type("#login", "carol")
        b.click("#authorize")
        b.wait_for("#timeline")
        for name, path in pages.items():
            for label, (w, h) in WIDTHS.items():
                b.window(w, h)
                b.get(base + path)
                b.wait_for("main h1")
                target = out / f"{name}-{label}.png"
                target.write_bytes(b.screenshot())
                print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
