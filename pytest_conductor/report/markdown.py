"""The run as a Markdown page: the job summary of a CI run (``GITHUB_STEP_SUMMARY``) or
the file of ``--conductor-summary-md``.

What a reviewer wants from a pull request's checks page at a glance: the verdict, one
table row per node (outcome, duration, why it failed or was blocked), the chain behind
each blocked node, the critical path, and the DAG as a Mermaid block coloured by outcome
(GitHub and GitLab render it). The picture is :mod:`.graph_file`'s Mermaid, not a second
drawing of the graph.

Pure Python: no pytest import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pytest_conductor.plan.durations import format_duration
from pytest_conductor.plan.reader import Plan
from pytest_conductor.report.events import first_reason
from pytest_conductor.report.graph_file import node_states, to_mermaid
from pytest_conductor.report.summary import (
    RunFacts,
    blocking_chain,
    count_line,
    critical_line,
    format_chain,
    measured_critical_path,
)
from pytest_conductor.report.verdict import Verdict

__all__ = ["REASON_CHARS", "render_markdown", "table_cell"]

#: A reason longer than this is cut: the table is read at a glance, the log has the rest.
REASON_CHARS = 200

# Each outcome with a sign and its word: the sign for a glance, the word for readers
# (and screen readers) that do not see it.
_OUTCOME = {
    "passed": "✅ passed",
    "failed": "❌ failed",
    "blocked": "⛔ blocked",
    "not run": "⏸️ not run",
}


# Backslash-escaped in text: emphasis, code, links, tables (GFM escapes any of them).
_MARKUP = re.compile(r"([\\`*_\[\]~|])")


def table_cell(text: str, limit: int | None = None) -> str:
    """``text`` as Markdown text that fits in one table cell: one line, markup and HTML
    inert, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    if limit is not None and len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKUP.sub(r"\\\1", flat)


def _code(text: str) -> str:
    """``text`` as a code span in a table cell: literal, except that a pipe would still
    end the cell (GFM reads ``\\|`` there as a pipe)."""
    flat = " ".join(text.split()).replace("`", "'").replace("|", "\\|")
    return f"`{flat}`"


def _status(facts: RunFacts, task: str) -> str:
    outcome = facts.outcomes.get(task)
    if outcome is None or outcome.status not in ("passed", "failed", "blocked"):
        return "not run"
    return outcome.status


def _reason(facts: RunFacts, task: str, errors: Mapping[str, str]) -> str:
    outcome = facts.outcomes.get(task)
    status = _status(facts, task)
    if status == "passed":
        return ""
    if status == "failed":
        if task in errors:
            return first_reason(errors[task])
        return outcome.reason if outcome is not None and outcome.reason else "failed"
    return outcome.reason if outcome is not None else ""


def _duration(facts: RunFacts, task: str) -> str:
    seconds = facts.durations.get(task)
    if seconds is None or _status(facts, task) not in ("passed", "failed"):
        return "—"
    return "<1ms" if seconds < 0.0005 else format_duration(seconds)


def render_markdown(
    plan: Plan,
    facts: RunFacts,
    verdict: Verdict,
    errors: Mapping[str, str] | None = None,
) -> str:
    """The whole page; ``errors`` holds each failed node's error text (its first line
    that says why goes into the table)."""
    errors = errors or {}
    sign = "✅" if verdict.passed else "❌"
    lines = [
        f"## {sign} Conductor track {_code(facts.track)}: {verdict.verdict}",
        "",
        table_cell(verdict.summary),
        "",
        f"**{count_line(facts)}**, {verdict.files_changed} files changed",
        "",
    ]
    if facts.selected:
        lines += ["| node | name | outcome | duration | reason |", "|---|---|---|---|---|"]
        for task in facts.selected:
            cells = (
                _code(task),
                table_cell(facts.names.get(task, "")),
                _OUTCOME[_status(facts, task)],
                _duration(facts, task),
                table_cell(_reason(facts, task, errors), REASON_CHARS),
            )
            lines.append(f"| {' | '.join(cells)} |")
        lines.append("")
    blocked = [t for t in facts.selected if _status(facts, t) == "blocked"]
    if blocked:
        lines += ["### Blocked chains", ""]
        for task in blocked:
            chain = format_chain(blocking_chain(task, facts.deps, facts.outcomes), facts.outcomes)
            lines.append(f"- {_code(chain)}")
        lines.append("")
    critical = critical_line(facts)
    if critical is not None:
        # The heading says what it is; the line keeps its terminal wording after it.
        lines += ["### Critical path", "", _code(critical.removeprefix("critical path ")), ""]
    measured = measured_critical_path(facts)  # as the terminal summary's line says
    path = measured[0] if measured is not None else []
    statuses = {t: o.status for t, o in facts.outcomes.items()}
    states = node_states(plan.ids, facts.selected, statuses, path)
    lines += ["### DAG", "", "```mermaid", to_mermaid(plan, states, path).rstrip("\n"), "```"]
    return "\n".join(lines) + "\n"
