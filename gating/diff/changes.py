"""What a semantic diff says: each change with its category, path, before/after and risk, and the
set of them between two revisions. The helpers turn deepdiff's findings into dotted paths and short
values, for every module that states changes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

RISKS = ["info", "low", "medium", "high", "breaking", "error"]
ALL = "*"
AFTER_MERGE = ("evals", "policy")  # categories that decide how a pull request is judged or approved


@dataclass(frozen=True)
class Change:
    category: str
    path: str
    kind: str  # added | removed | changed | renamed
    before: Any
    after: Any
    risk: str
    summary: str
    detail: str = ""
    affects: tuple[str, ...] = ()
    lines_added: int = 0
    lines_removed: int = 0
    file: str | None = None
    changed_lines: tuple[int, ...] = ()  # 1-based lines of `file` at head that the change touched


@dataclass
class ChangeSet:
    base: str
    head: str
    base_digest: str | None
    head_digest: str | None
    changes: list[Change] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.changes

    @property
    def has_errors(self) -> bool:
        return any(c.risk == "error" for c in self.changes)

    @property
    def categories(self) -> list[str]:
        return sorted({c.category for c in self.changes})

    @property
    def max_risk(self) -> str:
        return max((c.risk for c in self.changes), key=RISKS.index, default="info")

    @property
    def after_merge(self) -> list[Change]:
        """Changes to how pull requests are judged or approved (evals, approval rules, rollback, monitor): they
        apply from the merge on, never to the pull request that makes them."""
        return [c for c in self.changes if c.category in AFTER_MERGE]

    @property
    def full_reeval(self) -> bool:
        return any(ALL in c.affects for c in self.changes)

    def affected_prompts(self) -> set[str] | None:
        """Prompt names whose eval cases must re-run; None means every case."""
        if self.full_reeval:
            return None
        return {a for c in self.changes for a in c.affects}

    def paths(self) -> list[str]:
        return [c.path for c in self.changes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "head": self.head,
            "base_digest": self.base_digest,
            "head_digest": self.head_digest,
            "empty": self.is_empty,
            "max_risk": self.max_risk,
            "full_reevaluation": self.full_reeval,
            "affected_prompts": None if self.affected_prompts() is None else sorted(self.affected_prompts() or []),
            "changes": [
                {**asdict(c), "affects": list(c.affects), "changed_lines": list(c.changed_lines)} for c in self.changes
            ],
        }


def leaves(a: Any, b: Any, ignore_order: bool = False) -> list[tuple[list[str | int], str, Any, Any]]:
    """(path, kind, before, after) for every changed leaf between two plain structures; with
    `ignore_order`, lists are compared as sets (an approval rule's lists are: order means nothing)."""
    if _same(a, b):  # most of a system is unchanged: no need to load deepdiff for it
        return []
    from deepdiff import DeepDiff  # here, not at the top: a command that diffs nothing starts quicker

    dd = DeepDiff(a, b, view="tree", verbose_level=2, threshold_to_diff_deeper=0, ignore_order=ignore_order)
    out = []
    kinds = {
        "values_changed": "changed",
        "type_changes": "changed",
        "dictionary_item_added": "added",
        "dictionary_item_removed": "removed",
        "iterable_item_added": "added",
        "iterable_item_removed": "removed",
    }
    for report, kind in kinds.items():
        for level in dd.tree.get(report, []):
            before = None if kind == "added" else level.t1
            after = None if kind == "removed" else level.t2
            out.append((level.path(output_format="list"), kind, before, after))
    out.sort(key=lambda x: [str(p) for p in x[0]])
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (deepdiff reports 1 -> 1.0 and 1 -> True as changes)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def dotted(*parts: Any) -> str:
    s = ""
    for p in parts:
        if isinstance(p, int):
            s += f"[{p}]"
        else:
            s += ("." if s else "") + str(p)
    return s


def short(v: Any) -> str:
    s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= 60 else s[:57] + "..."
