"""Tag a release: checks the version, the changelog and the tree, then tags `vX.Y.Z` and moves `vX`.

    python scripts/release.py [--dry-run]

Users write `uses: OWNER/REPO@vX`, so the major tag moves with every release of that major; the
exact tag `vX.Y.Z` never moves. Nothing is pushed: the script prints the push commands.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def problems(version: str, changelog: str, dirty: str, tags: list[str]) -> list[str]:
    """Why this commit cannot be released as `version` (none: it can)."""
    out = []
    if not SEMVER.match(version):
        out.append(f"gating/__init__.py: __version__ {version!r} is not a semantic version X.Y.Z")
    if not re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M):
        out.append(f"CHANGELOG.md: no section `## [{version}] - YYYY-MM-DD`")
    if dirty:
        out.append("the working tree has uncommitted changes:\n" + dirty)
    if f"v{version}" in tags:
        out.append(f"tag v{version} exists already: a released version is never re-tagged")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="check only; create no tag")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from gating.about import major, version

    v = version()
    found = problems(v, (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), git("status", "--porcelain"),
                     git("tag", "--list").split())
    for p in found:
        print(f"release: {p}", file=sys.stderr)
    if found:
        return 1
    if args.dry_run:
        print(f"release: v{v} can be tagged (moving v{major()})")
        return 0
    git("tag", "--annotate", f"v{v}", "--message", f"gating {v}")
    git("tag", "--force", "--annotate", f"v{major()}", "--message", f"gating {v} (latest {major()}.x)", f"v{v}^{{}}")
    print(f"tagged v{v} and moved v{major()} to {git('rev-parse', '--short', 'HEAD')}; publish with:\n"
          f"  git push origin v{v} && git push --force origin v{major()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
