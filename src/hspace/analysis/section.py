"""The result of one experiment: its numbers, one summary line, and where its plot goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Section", "SECTION_ORDER", "pct"]


def pct(x: float | None) -> str:
    """A rate as a percentage for summary lines; "n/a" for None or NaN (e.g. no eligible image)."""
    return "n/a" if x is None or x != x else f"{x:.0%}"

#: The sections of a report, in order (key, title).
SECTION_ORDER: tuple[tuple[str, str], ...] = (
    ("homogeneity", "Homogeneity"),
    ("linearity", "Linearity"),
    ("composition", "Composition"),
    ("robustness", "Robustness: noise in h vs in eps"),
    ("consistency", "Consistency across timesteps"),
    ("asymmetry", "Asymmetric vs symmetric step vs shifting eps"),
    ("interval", "Editing interval and quality boosting"),
)


@dataclass
class Section:
    """One experiment's outcome.

    Attributes:
        key: e.g. ``"linearity"`` (see :data:`SECTION_ORDER`); the plot is ``<key>.png``.
        claim: the paper's claim being measured, in one sentence.
        summary: one Markdown line with the headline numbers.
        data: every number (JSON-ready; per direction where it applies).
        status: ``"measured"`` or ``"skipped"`` (then ``reason`` says why; the plot says so too).
        notes: caveats worth reading next to the numbers.
    """

    key: str
    claim: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "measured"
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return dict(SECTION_ORDER)[self.key]

    @property
    def number(self) -> int:
        return [k for k, _ in SECTION_ORDER].index(self.key) + 1

    @property
    def plot_file(self) -> str:
        return f"{self.number}_{self.key}.png"

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "title": self.title, "claim": self.claim, "status": self.status,
                "reason": self.reason, "summary": self.summary, "notes": self.notes, "plot": self.plot_file,
                "data": self.data}
