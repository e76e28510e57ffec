"""The release qualification summary of a run: one static HTML page and its Markdown twin,
readable without an allure server or any network access.

    python -m tcmu_harness.summary RUN [--out DIR]
    python -m tcmu_harness.summary --shards RUN RUN ... --out DIR   (CI jobs' parts of one run)

RUN is a JUnit XML file or a run directory holding junit.xml; the pages are written as
summary.html and summary.md next to it (or into --out). They hold: the verdict (PASSED,
FAILED or INCOMPLETE for an interrupted run), what was tested on what (commit, kernel,
accelerator, QEMU, handlers), counts per suite module and handler, the command family x
handler matrix of the SPC/SBC suites, every failure with its evidence, the skip reasons,
and the run's timing.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import html
import sys
from pathlib import Path

from tcmu_harness import compare, coverage
from tcmu_harness.junit import Case, JunitError, Run, merge_shards, read_run

_EVIDENCE_LINES = 40  # of each failure's text


# --- a small document model, rendered twice ---------------------------------------------------


@dataclasses.dataclass
class Table:
    head: list[str]
    rows: list[list[str]]


@dataclasses.dataclass
class Section:
    title: str
    text: str = ""
    table: Table | None = None
    evidence: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # title, text


def verdict(run: Run) -> str:
    if not run.complete:
        return "INCOMPLETE"
    return "FAILED" if run.count("failed") or run.count("error") else "PASSED"


def _tally(outcomes: list[str]) -> str:
    counts = collections.Counter(outcomes)
    parts = [f"{counts[o]} {o}" for o in ("passed", "failed", "error", "skipped") if counts[o]]
    return ", ".join(parts) or "none"


def sections(run: Run) -> list[Section]:
    handlers = run.handler_ids
    columns = handlers or [""]
    out = []
    props = run.properties
    identity = [[name, props[key]] for name, key in (
        ("commit", "commit"), ("kernel", "kernel"), ("kernel package", "kernel_source"),
        ("accelerator", "accelerator"), ("QEMU", "qemu"), ("handlers", "handlers"),
        ("LUN", "lun"), ("pytest exit status", "exit_status"),
        ("VM boot error", "vm_boot_error")) if key in props]  # fmt: skip
    outcomes = _tally([c.outcome for c in run.cases])
    where = (f"{run.properties['shards']} shards (the slowest's time)"
             if "shards" in run.properties else str(run.path))
    totals = f"{len(run.cases)} tests: {outcomes}; {run.seconds:.0f} s of test time in {where}"
    if not run.complete:
        totals += (". The run did not finish (or its identity was not recorded): tests "
                   "that are not listed did not run, they did not pass.")
    out.append(Section(f"Verdict: {verdict(run)}", totals,
                       Table(["what", "value"], identity) if identity else None))

    per_module: dict[str, dict[str, list[Case]]] = collections.defaultdict(
        lambda: collections.defaultdict(list))
    for case in run.cases:
        per_module[case.module][case.handler(handlers)].append(case)
    rows = [[module, *(_tally([c.outcome for c in per[h]]) if per.get(h) else "-"
                      for h in columns)]
            for module, per in sorted(per_module.items())]  # fmt: skip
    out.append(Section("Results per suite module",
                       table=Table(["module", *(h or "result" for h in columns)], rows)))

    by_node: dict[str, dict[str, list[str]]] = collections.defaultdict(
        lambda: collections.defaultdict(list))
    for case in run.cases:
        by_node[case.node][case.handler(handlers)].append(case.outcome)
    matrix = []
    for family in coverage.scan():
        cells = []
        for h in columns:
            outcomes = [o for t in family.tests for o in by_node.get(t.node, {}).get(h, [])]
            cells.append(_tally(outcomes) if outcomes else "not run")
        matrix.append([family.title, str(len(family.tests)), *cells])
    if any(cell != "not run" for row in matrix for cell in row[2:]):
        out.append(Section("Commands x handlers (SPC/SBC suites)",
                           table=Table(["command family", "tests",
                                        *(h or "result" for h in columns)], matrix)))

    bad = [c for c in run.cases if c.outcome in ("failed", "error")]
    failures = Section(f"Failures ({len(bad)})", "" if bad else "None.")
    for case in bad:
        lines = case.detail.strip().splitlines()
        text = "\n".join(lines[-_EVIDENCE_LINES:]) or case.message
        failures.evidence.append((f"{case.outcome.upper()} {case.node_id}", text))
    out.append(failures)

    reasons = collections.Counter(c.message for c in run.cases if c.outcome == "skipped")
    if reasons:
        out.append(Section("Skip reasons", table=Table(
            ["tests", "reason"], [[str(n), r] for r, n in reasons.most_common()])))
    slowest = sorted(run.cases, key=lambda c: c.seconds, reverse=True)[:10]
    out.append(Section("Timing", f"{run.seconds:.1f} s of test time; slowest tests:",
                       Table(["seconds", "test"], [[f"{c.seconds:.1f}", c.node_id]
                                                   for c in slowest])))  # fmt: skip
    return out


# --- rendering --------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(run: Run) -> str:
    return render_markdown(sections(run))


def render_markdown(parts: list[Section]) -> str:
    lines = ["# tcmu-harness qualification summary", ""]
    for section in parts:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        if section.table:
            lines.append("| " + " | ".join(section.table.head) + " |")
            lines.append("|" + "---|" * len(section.table.head))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |"
                      for row in section.table.rows]  # fmt: skip
            lines.append("")
        for title, text in section.evidence:
            lines += [f"### {title}", "", "```", text.replace("```", "\'\'\'"), "```", ""]
    return "\n".join(lines)


_CSS = """
body { font: 14px/1.4 sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #eee; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
.PASSED { color: #060; } .FAILED { color: #a00; } .INCOMPLETE { color: #a60; }
"""


def html_page(run: Run) -> str:
    return render_html(sections(run), verdict(run))


def render_html(parts: list[Section], state: str) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>tcmu-harness summary: {e(state)}</title>",
           f"<style>{_CSS}</style></head><body>",
           "<h1>tcmu-harness qualification summary</h1>"]  # fmt: skip
    for i, section in enumerate(parts):
        klass = f' class="{state}"' if i == 0 else ""
        out.append(f"<h2{klass}>{e(section.title)}</h2>")
        if section.text:
            out.append(f"<p>{e(section.text)}</p>")
        if section.table:
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in section.table.head)
                       + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                    for row in section.table.rows]  # fmt: skip
            out.append("</table>")
        for title, text in section.evidence:
            out.append(f"<h3>{e(title)}</h3><pre>{e(text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --- several runs (a kernel matrix) -------------------------------------------------------


def label(run: Run) -> str:
    """What tells runs of a matrix apart: the kernel, else the run directory's name."""
    return run.properties.get("kernel") or run.path.parent.name


def combined_verdict(runs: list[Run]) -> str:
    states = [verdict(r) for r in runs]
    return next((s for s in ("INCOMPLETE", "FAILED") if s in states), "PASSED")


def matrix_sections(runs: list[Run]) -> list[Section]:
    labels = [label(r) for r in runs]
    overview = [[lab, r.properties.get("handlers", "-"), verdict(r),
                 _tally([c.outcome for c in r.cases]), str(r.path)]
                for lab, r in zip(labels, runs, strict=True)]  # fmt: skip
    out = [Section(f"Verdict: {combined_verdict(runs)}", f"{len(runs)} runs",
                   Table(["run", "handlers", "verdict", "tests", "JUnit"], overview))]
    modules = sorted({c.module for r in runs for c in r.cases})
    rows = []
    for module in modules:
        cells = [_tally([c.outcome for c in r.cases if c.module == module]) for r in runs]
        rows.append([module, *cells])
    out.append(Section("Results per suite module and run", table=Table(["module", *labels],
                                                                       rows)))
    base = runs[0]
    for lab, other in zip(labels[1:], runs[1:], strict=True):
        changed = compare.changes(base, other)
        out.append(Section(f"Changes from {labels[0]} to {lab} ({len(changed)})",
                           "" if changed else "None: every test ended the same way.",
                           Table(["test", labels[0], lab],
                                 [[c.node_id, c.before, c.after] for c in changed])
                           if changed else None))
    for lab, run in zip(labels, runs, strict=True):
        for section in sections(run):
            if section.title.startswith("Failures") and section.evidence:
                section.title = f"{lab}: {section.title}"
                out.append(section)
    return out


def write(run: Run, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, page = out_dir / "summary.md", out_dir / "summary.html"
    md.write_text(markdown(run))
    page.write_text(html_page(run))
    return md, page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcmu_harness.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                        help="JUnit XML, or a run directory with junit.xml; several make "
                        "one matrix page (the first is the baseline)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where summary.html/.md go (default: next to the first JUnit)")
    parser.add_argument("--shards", action="store_true",
                        help="the RUNs are shards of one run (CI jobs that each ran part of "
                        "it): one summary of all their tests")
    args = parser.parse_args(argv)
    try:
        runs = [read_run(path) for path in args.runs]
        if args.shards:
            runs = [merge_shards(runs)]
    except JunitError as exc:
        print(f"summary: {exc}", file=sys.stderr)
        return 4
    out_dir = args.out or runs[0].path.parent
    if len(runs) == 1:
        md, page = write(runs[0], out_dir)
        state = verdict(runs[0])
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        parts, state = matrix_sections(runs), combined_verdict(runs)
        md, page = out_dir / "summary.md", out_dir / "summary.html"
        md.write_text(render_markdown(parts))
        page.write_text(render_html(parts, state))
    print(f"summary: {state}: {page} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
