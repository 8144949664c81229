#!/usr/bin/env python3
"""Every alert rule must point at its own section of docs/OPERATIONS.md.

An on-call person woken by an alert follows its `runbook` annotation; a link
to a heading that does not exist (renamed, never written) fails here, as does
an alert without one. Exits non-zero and names each problem.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def main() -> int:
    rules = (ROOT / "infra/prometheus/alerts.yml").read_text()
    docs = ROOT / "docs/OPERATIONS.md"
    known = anchors(docs.read_text())
    problems = []
    # One `- alert:` block at a time, up to the next one.
    blocks = re.split(r"\n\s*- alert:\s*", "\n" + rules)[1:]
    if not blocks:
        problems.append("no alert rules found in infra/prometheus/alerts.yml")
    for block in blocks:
        name = block.split()[0]
        m = re.search(r"runbook:\s*(\S+)", block)
        if not m:
            problems.append(f"{name}: no runbook annotation")
            continue
        path, _, anchor = m.group(1).partition("#")
        if (ROOT / path).resolve() != docs.resolve():
            problems.append(f"{name}: runbook {m.group(1)} is not in docs/OPERATIONS.md")
        elif anchor not in known:
            problems.append(f"{name}: docs/OPERATIONS.md has no section #{anchor}")
    for p in problems:
        print(f"runbooks: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"runbooks: all {len(blocks)} alerts explained in docs/OPERATIONS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
