"""The pages of one repository: a path and a query in, a status and HTML out. Both doors (the App,
`gating view`) call `Site.handle`; neither knows a route of its own.

    ""                 the timeline (?event=merged&page=2&per=100)
    entry/<seq>        one entry: what changed, the evidence, approvals, the rollback pointer
    report/<sha>       the eval report of a commit (?filter=regressed|failed|errored, ?case=<id>)
    compare            the semantic diff of two snapshots (?base=<seq|sha|YYYY-MM-DD>&head=...)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlencode

from markupsafe import Markup

from gating.check.notes import parse_note
from gating.diff.changes import ChangeSet
from gating.diff.semantic import diff_snapshots
from gating.errors import GatingError
from gating.evals.compare import compare, outcome, why
from gating.evals.records import Comparison, RunResult
from gating.pages import charts
from gating.pages.index import Index, Row
from gating.pages.render import fmt_num, fmt_signed, render, render_row
from gating.pages.source import Source
from gating.system.manifest import ManifestError
from gating.system.snapshot import Snapshot, build_snapshot

PER_PAGE = 100
MAX_PER_PAGE = 10_000
TREND_MERGES = 20
FILTERS = ("all", "regressed", "failed", "errored")
_SHA = re.compile(r"^[0-9a-f]{4,64}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2})?Z?)?$")


@dataclass
class Page:
    status: int
    html: str
    headers: dict[str, str] = field(default_factory=dict)


class NotFound(GatingError):
    """What a page names does not exist (or may not be shown): the door answers 404."""


def _int(query: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    try:
        return min(max(int(query.get(key, default)), lo), hi)
    except ValueError:
        return default


class Site:
    def __init__(self, source: Source, index: Index, prefix: str = "", signed_in: str | None = None,
                 sign_out: str | None = None):
        self.source, self.index, self.prefix = source, index, prefix.rstrip("/")
        self.signed_in, self.sign_out = signed_in, sign_out

    # -- links -----------------------------------------------------------------------------------------

    def url(self, path: str = "", **query: Any) -> str:
        q = {k: v for k, v in query.items() if v not in (None, "")}
        return f"{self.prefix}/{path}" + (f"?{urlencode(q)}" if q else "")

    def commit_url(self, sha: str) -> str | None:
        return f"{self.source.web_url}/commit/{sha}" if self.source.web_url else None

    def pull_url(self, number: int | None) -> str | None:
        return f"{self.source.web_url}/pull/{number}" if self.source.web_url and number else None

    @property
    def key(self) -> str:
        """What the stored timeline rows depend on (gating.pages.index.RowRenderer)."""
        return f"{self.prefix}|{self.source.web_url or ''}"

    def render(self, row: Row) -> str:
        return render_row(self, row)

    def _page(self, template: str, status: int = 200, **ctx: Any) -> Page:
        return Page(status, render(template, site=self, repo=self.source.name, **ctx))

    # -- dispatch --------------------------------------------------------------------------------------

    def handle(self, path: str, query: Mapping[str, str]) -> Page:
        path = path.strip("/")
        try:
            self.index.refresh(self.source, self)
            if path == "":
                return self.timeline(query)
            if m := re.fullmatch(r"entry/(\d{1,12})", path):
                return self.entry(int(m.group(1)))
            if m := re.fullmatch(r"report/([0-9a-f]{4,64})", path):
                return self.report(m.group(1), query)
            if path == "compare":
                return self.compare(query)
            raise NotFound(f"no page {path!r}")
        except NotFound as e:
            return self._page("message.html", 404, title="Not found", message=str(e))

    # -- timeline --------------------------------------------------------------------------------------

    def timeline(self, query: Mapping[str, str]) -> Page:
        event = query.get("event") or None
        per = _int(query, "per", PER_PAGE, 1, MAX_PER_PAGE)
        total = self.index.count(event)
        pages = max((total + per - 1) // per, 1)
        page = _int(query, "page", 1, 1, pages)
        rows = Markup("".join(self.index.page_html((page - 1) * per, per, event)))
        nav = {"newer": self.url("", event=event, page=page - 1, per=per if per != PER_PAGE else None)
               if page > 1 else None,
               "older": self.url("", event=event, page=page + 1, per=per if per != PER_PAGE else None)
               if page < pages else None}
        return self._page("timeline.html", title=f"{self.source.name}: audit timeline", rows=rows, total=total,
                          page=page, pages=pages, event=event, nav=nav, problems=self.index.log_problems(),
                          key_source=self.index.meta("key_source") or "",
                          witness_app=self.index.meta("witness_app") or "",
                          events=("merged", "deployed", "known_good", "deploy_failed", "rolled_back", "override",
                                  "key_rotated"))

    # -- entry -----------------------------------------------------------------------------------------

    def entry(self, seq: int) -> Page:
        row = self.index.entry(seq)
        if row is None:
            raise NotFound(f"no audit entry with seq {seq}")
        pred = self._predicate(row)
        before = self.index.previous_with_snapshot(seq) if row.has_snapshot else None
        changes: ChangeSet | None = None
        diff_problem = ""
        if before is not None:
            try:
                changes = self._diff(before.commit, row.commit)
            except (ManifestError, ValueError) as e:
                diff_problem = str(e)
        evals = pred.get("evals") if isinstance(pred.get("evals"), dict) else None
        report = self._report_commit(row, pred)
        cmp, base_sha = None, None
        if report:
            try:
                _full, _head, _base, base_sha, cmp, _meta = self.evaluation(report)
            except NotFound:
                pass
        return self._page("entry.html", title=f"{self.source.name}: seq {seq} ({row.event})", row=row, pred=pred,
                          before=before, changes=changes, diff_problem=diff_problem, evals=evals,
                          report=report, cmp=cmp, base_sha=base_sha, fmt_num=fmt_num, fmt_signed=fmt_signed)

    def _predicate(self, row: Row) -> dict[str, Any]:
        """The entry's statement, read again from the notes (the index keeps only what lists need)."""
        from gating.audit.entry import EntryError, parse_line, split_lines

        tip = self.source.audit.tip()
        if tip:
            from gating.audit.log import NotesBackend, read_note

            data = read_note(cast("NotesBackend", self.source.audit), row.commit, tip)
            for line in split_lines(data or b""):
                try:
                    e = parse_line(line, row.commit)
                except EntryError:
                    continue
                if e.seq == row.seq:
                    return e.predicate
        return {}

    def _report_commit(self, row: Row, pred: Mapping[str, Any]) -> str | None:
        """The commit whose eval report backs this entry: the approved head of its pull request (its
        evals compared with the base), else a note on the entry's own commit."""
        for a in reversed(pred.get("approvals") or []):
            if isinstance(a, dict) and isinstance(a.get("sha"), str) and _SHA.match(a["sha"]) \
                    and self.index.eval_of(a["sha"]):
                return str(a["sha"])
        return row.commit if self.index.eval_of(row.commit) else None

    # -- report ----------------------------------------------------------------------------------------

    def _run(self, sha: str) -> tuple[RunResult | None, dict[str, Any]]:
        data = self.source.note(sha)
        run = parse_note(data)
        meta: dict[str, Any] = {}
        if data and run is not None:
            from gating import limits

            doc = limits.load_json(data, "eval note", limits.NOTE)
            meta = {k: doc.get(k) for k in ("verdict", "role", "compared_with", "comparison")}
        return run, meta

    def _evals_config(self, *commits: str | None) -> dict[str, Any]:
        for c in commits:
            if not c:
                continue
            try:
                return dict(build_snapshot(self.source.revision(c)).manifest.evals)
            except (ManifestError, ValueError, KeyError):
                continue
        return {}

    def evaluation(self, sha: str) -> tuple[str, RunResult, RunResult | None, str | None, Comparison, dict[str, Any]]:
        """(commit, head run, base run, base commit, comparison, the note's own fields) of a commit's
        eval note; the comparison is recomputed from both runs under the base's evals settings."""
        full = sha if len(sha) in (40, 64) else self.index.find_eval(sha)
        head, meta = self._run(full) if full else (None, {})
        if head is None or full is None:
            raise NotFound(f"no eval results for commit {sha}: the `gating / eval` check stores them as a git "
                           "note (refs/notes/gating/evals) on the commit it evaluated")
        base_sha = meta.get("compared_with")
        if not isinstance(base_sha, str) or not _SHA.match(base_sha):  # a note names its base by full sha
            base_sha = None
        base, _ = self._run(base_sha) if base_sha else (None, {})
        cmp = compare(base, head, self._evals_config(base_sha if base else None, full))
        return full, head, base, base_sha if base else None, cmp, meta

    def report(self, sha: str, query: Mapping[str, str]) -> Page:
        full, head, base, base_sha, cmp, meta = self.evaluation(sha)
        flt = str(query.get("filter")) if query.get("filter") in FILTERS else "all"
        cases = self._cases(base, head, cmp, flt)
        counts = {f: len(self._cases(base, head, cmp, f)) for f in FILTERS}
        chosen = query.get("case")
        verdict = meta.get("verdict") or cmp.verdict
        reasons = (meta.get("comparison") or {}).get("reasons") or cmp.reasons
        return self._page("report.html", title=f"{self.source.name}: evals of {full[:7]}", sha=full, head=head,
                          base=base, base_sha=base_sha, cmp=cmp, verdict=verdict,
                          reasons=reasons, cases=cases, filter=flt, counts=counts, chosen=chosen,
                          charts=self._report_charts(base, head, cmp, full), entries=self.index.entries_on(full),
                          fmt_num=fmt_num, fmt_signed=fmt_signed)

    @staticmethod
    def _cases(base: RunResult | None, head: RunResult, cmp: Comparison, flt: str) -> list[dict[str, Any]]:
        flipped = {f.id for f in cmp.flipped if f.after != "pass"}
        out = []
        for c in head.cases:
            b = base.case(c.id) if base else None
            regressed = c.id in flipped or (b is not None and c.score < b.score - 1e-9)
            if flt == "regressed" and not regressed:
                continue
            if flt == "failed" and (c.passed or c.error):
                continue
            if flt == "errored" and not c.error:
                continue
            out.append({"id": c.id, "head": c, "base": b, "regressed": regressed, "outcome": outcome(c),
                        "base_outcome": outcome(b) if b else "absent", "why": "" if c.passed else why(c)})
        return out

    def _report_charts(self, base: RunResult | None, head: RunResult, cmp: Comparison, sha: str) -> dict[str, Any]:
        deltas = [charts.Delta(r.metric, r.delta, r.interval[0] if r.interval else None,
                               r.interval[1] if r.interval else None, r.status, fmt_signed(r.delta, r.metric))
                  for r in cmp.rows if r.delta is not None and r.metric.startswith(("pass_rate", "score", "error_rate"))]

        def lat(run: RunResult | None) -> list[float]:
            return [c.latency_ms["total"] for c in run.cases if "total" in c.latency_ms] if run else []

        def cost(run: RunResult | None) -> list[float]:
            return [c.cost_usd for c in run.cases if c.cost_usd is not None] if run else []

        sides = [("base", base), ("head", head)] if base else [("head", head)]
        trends = []
        merges = self.index.merges(TREND_MERGES)
        for metric in ("pass_rate", "score", "latency_p95_ms", "cost_per_request_usd"):
            pts = [charts.Point(f"seq {m.seq} · {m.commit[:7]}", float(m.metrics[metric]))
                   for m in merges if isinstance(m.metrics.get(metric), int | float)]
            if isinstance(head.metrics.get(metric), int | float) and not any(m.commit == sha for m in merges):
                pts.append(charts.Point(f"this change · {sha[:7]}", float(head.metrics[metric]), current=True))
            if pts:
                trends.append(charts.trend_chart(metric, pts[-TREND_MERGES:], _formatter(metric)))
        return {
            "deltas": charts.delta_chart(deltas, "Score deltas, head − base, with 95% intervals"),
            "latency": charts.distribution_chart([(n, lat(r)) for n, r in sides], "Latency per case (ms)",
                                                 lambda v: fmt_num(v, "latency_ms"), "latency"),
            "cost": charts.distribution_chart([(n, cost(r)) for n, r in sides], "Cost per case (US dollars)",
                                              lambda v: fmt_num(v, "cost_usd"), "cost"),
            "trends": trends,
        }

    # -- compare ---------------------------------------------------------------------------------------

    def _snapshot_point(self, text: str, default: Row | None) -> tuple[str, str]:
        """(commit, how it was chosen) for a seq, a commit (prefix) or a date (the newest entry up to it)."""
        text = text.strip()
        if text.lower() == "now":
            text, default = "", self.index.newest_with_snapshot()
        if not text:
            if default is None:
                raise NotFound("the log has no entry with a snapshot to compare")
            return default.commit, f"seq {default.seq} ({default.event}, {default.time})"
        if text.isdigit() and len(text) < 12:
            row = self.index.entry(int(text))
            if row is None:
                raise NotFound(f"no audit entry with seq {text}")
            return row.commit, f"seq {row.seq} ({row.event}, {row.time})"
        if _DATE.match(text):
            stamp = text if "T" in text else text + "T23:59:59Z"
            row = self.index.at_or_before(stamp)
            if row is None:
                raise NotFound(f"no entry with a snapshot at or before {text}")
            return row.commit, f"seq {row.seq} ({row.event}, {row.time}), the newest at or before {text}"
        if _SHA.match(text.lower()):
            full = self.source.resolve(text.lower()) if self.source.resolve else (text if len(text) >= 40 else None)
            if full:
                return full, f"commit {full[:12]}"
        raise NotFound(f"{text!r} is neither an entry's seq, a commit nor a date (YYYY-MM-DD)")

    def _diff(self, a: str, b: str) -> ChangeSet:
        base = build_snapshot(self.source.revision(a))
        head: Snapshot = build_snapshot(self.source.revision(b), like=base)
        return diff_snapshots(base, head, a, b)

    def compare(self, query: Mapping[str, str]) -> Page:
        newest = self.index.newest_with_snapshot()
        first = self.index.previous_with_snapshot(newest.seq) if newest else None
        a, a_why = self._snapshot_point(query.get("base", ""), first or newest)
        b, b_why = self._snapshot_point(query.get("head", ""), newest)
        try:
            changes: ChangeSet | None = self._diff(a, b)
            problem = ""
        except (ManifestError, ValueError) as e:
            changes, problem = None, str(e)
        return self._page("compare.html", title=f"{self.source.name}: {a[:7]} → {b[:7]}", a=a, b=b, a_why=a_why,
                          b_why=b_why, changes=changes, problem=problem, base_q=query.get("base", ""),
                          head_q=query.get("head", ""))


def _formatter(metric: str) -> charts.Fmt:
    return lambda v: fmt_num(v, metric)
