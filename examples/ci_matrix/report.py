"""Writes the matrix's report: `report.py OUT RESULTS_JSON`.

RESULTS_JSON is `tasks.test.results`: one entry per shard, in the matrix's order, each with its
key, status, attempts, output (exit code, stdout, stderr) and error."""

import json
import re
import sys

out, results = sys.argv[1], json.loads(sys.argv[2])
lines = ["# Test matrix", "", "| shard | status | tests |", "|---|---|---|"]
total = 0
failed = []
for r in results:
    stderr = (r.get("output") or {}).get("stderr") or ""
    ran = re.search(r"Ran (\d+) tests?", stderr)
    n = int(ran.group(1)) if ran else 0
    total += n
    lines.append(f"| {r['key']} | {r['status']} | {n} |")
    if r["status"] != "completed":
        failed.append(r["key"])
lines += ["", f"{len(results)} shards, {total} tests, {len(failed)} failed shards"]
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
print(json.dumps({"report": out, "shards": len(results), "tests": total, "failed": failed}))
