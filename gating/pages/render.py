"""Records to HTML: one Jinja2 environment over the templates beside this module, autoescaped."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from jinja2 import ChainableUndefined, Environment, FileSystemLoader, select_autoescape

from gating.evals.report import _num, _signed

TEMPLATES = Path(__file__).parent / "templates"


def fmt_num(v: float | None, metric: str = "") -> str:
    """Numbers as the check run writes them: scores to 3 decimals, costs in dollars, latencies in ms."""
    if isinstance(v, int) and not isinstance(v, bool) and not metric.startswith("cost"):
        return f"{v:,}"  # counts: cases, passed, errors
    return _num(v if isinstance(v, int | float) else None, metric)


def fmt_signed(v: float | None, metric: str = "") -> str:
    return _signed(v, metric) if isinstance(v, int | float) else ""


@functools.cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                      undefined=ChainableUndefined, trim_blocks=True, lstrip_blocks=True, auto_reload=False)
    env.filters["short"] = lambda s: (s or "")[:7]
    env.filters["num"] = fmt_num
    env.filters["signed"] = fmt_signed
    env.filters["who"] = lambda s: s if not s or s.startswith("@") else "@" + s
    return env


def render(template: str, **ctx: Any) -> str:
    return environment().get_template(template).render(**ctx)


def render_row(site: Any, row: Any) -> str:
    """One timeline row (the index stores it; see gating.pages.index.RowRenderer)."""
    return str(environment().get_template("_row.html").module.row(site, row))  # type: ignore[attr-defined]
