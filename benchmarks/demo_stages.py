"""Wall time by stage of a Snakemake run, from its log (``.snakemake/log/*.snakemake.log`` or the
captured output of ``snakemake --cores 2``).

    python benchmarks/demo_stages.py [LOG]        (default: the newest .snakemake/log/ file)

Per rule: number of jobs, the summed job time (start to ``Finished jobid``) and the rule's span
(first start to last finish); then the run's total span. With ``--cores 2`` two jobs overlap, so
summed job times exceed the span. Timestamps have one-second resolution.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
DONE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def parse(lines):
    stamp, pending, starts, rows = None, None, {}, []
    for line in lines:
        line = line.rstrip("\n")
        if m := STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := START.match(line):
            pending = (m.group(1), stamp)
        elif (m := JOBID.match(line)) and pending:
            starts[m.group(1)] = pending
            pending = None
        elif m := DONE.match(line):
            rule, began = starts.pop(m.group(1), (m.group(2), None))
            if began is not None:
                rows.append((rule, began, stamp))
    return rows


def main(argv):
    # the newest run that finished jobs (`snakemake --report` leaves a log of its own without any)
    logs = [Path(a) for a in argv] or sorted(Path(".snakemake/log").glob("*.snakemake.log"),
                                             key=lambda p: p.stat().st_mtime, reverse=True)
    for path in logs:
        rows = parse(path.read_text(errors="replace").splitlines())
        if rows:
            break
    else:
        sys.exit(f"{', '.join(map(str, logs)) or '.snakemake/log'}: no finished jobs found")
    print(f"{path}\n\n| rule | jobs | summed job s | span s |\n|---|---|---|---|")
    order = []
    for rule, *_ in sorted(rows, key=lambda r: r[1]):
        if rule not in order:
            order.append(rule)
    for rule in order:
        mine = [r for r in rows if r[0] == rule]
        summed = sum((end - start).total_seconds() for _, start, end in mine)
        span = (max(e for *_, e in mine) - min(s for _, s, _ in mine)).total_seconds()
        print(f"| {rule} | {len(mine)} | {summed:.0f} | {span:.0f} |")
    total = (max(e for *_, e in rows) - min(s for _, s, _ in rows)).total_seconds()
    print(f"\ntotal span: {total:.0f} s ({total / 60:.1f} min)")


if __name__ == "__main__":
    main(sys.argv[1:])
