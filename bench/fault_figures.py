"""Write the fault suite's figures into docs/reliability.md (``make fault-figures``).

``make fault-figures`` runs ``tests/fault`` several times in a row with
``SHEQU_FAULT_FIGURES`` naming a JSON-lines file; each run appends one line
(tests/fault/conftest.py). This turns those lines into the generated table of
docs/reliability.md, so the page shows the runs as they came out, failures
included.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "bench" / "results" / "fault-runs.jsonl"
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- fault-suite:begin -->", "<!-- fault-suite:end -->"


def table(runs: list[dict[str, Any]]) -> str:
    passed = sum(1 for run in runs if run["passed"])
    lines = [
        BEGIN,
        f"Last `make fault-figures` ({runs[-1]['finished_at']}, {runs[-1]['machine']}): "
        f"{len(runs)} runs of the suite in a row, {passed} passed.",
        "",
        "| run | case | outcome | reports | effects checked | restarts | missing | duplicated"
        " | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    failures = []
    for number, run in enumerate(runs, start=1):
        for case, figures in sorted(run["cases"].items()):
            # A case that failed before reconciling has no counts.
            counts = " | ".join(
                str(figures.get(key, "—"))
                for key in ("reports", "effects_checked", "restarts", "missing", "duplicated")
            )
            lines.append(
                f"| {number} | `{case}` | {figures.get('outcome', 'not run')} | {counts} | "
                f"{figures.get('seconds', '')} |"
            )
            if "failure" in figures:
                failures.append(f"- run {number}, `{case}`: {figures['failure']}")
    if failures:
        lines += ["", "Failures, as pytest reported them:", "", *failures]
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    if not RUNS.exists():
        print(f"no runs recorded in {RUNS.relative_to(ROOT)}", file=sys.stderr)
        return 1
    runs = [json.loads(line) for line in RUNS.read_text(encoding="utf-8").splitlines() if line]
    text = DOC.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"{DOC.relative_to(ROOT)} has no {BEGIN} … {END} section", file=sys.stderr)
        return 1
    text = text[: text.index(BEGIN)] + table(runs) + text[text.index(END) + len(END) :]
    DOC.write_text(text, encoding="utf-8")
    print(table(runs))
    return 0 if all(run["passed"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
