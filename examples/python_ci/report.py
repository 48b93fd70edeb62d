"""Writes the run's report: `report.py OUT STATUS TASKS_JSON`."""

import json
import sys

out, status, tasks = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
lines = [f"# CI report: {status}", ""]
for name, t in sorted(tasks.items()):
    if t["status"] in ("pending", "in_progress"):
        continue  # this report itself
    lines.append(f"- {name}: {t['status']}")
    if t["status"] == "failed":
        for line in (t.get("stderr") or "").splitlines()[-8:]:
            lines.append(f"    {line}")
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
print(json.dumps({"report": out, "status": status}))
