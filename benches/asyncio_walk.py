#!/usr/bin/env python3
"""The reference walk for Conductor's whole-process benchmark: the same DAG, walked by Python's
asyncio with graphlib, every task a zero-latency coroutine, one JSON line per finished task.

    python3 benches/asyncio_walk.py fan-out 20000
    python3 benches/asyncio_walk.py chain 20000

`fan-out`: src -> t0 .. tN-3 -> sink (everything in the middle at once); `chain`: t0 -> t1 ->
... -> tN-1. It is what a hand-written orchestrator without persistence, rules or retries costs.
"""
import asyncio
import graphlib
import json
import sys


def graph(shape, n):
    deps = {}
    if shape == "chain":
        deps["t0"] = []
        for i in range(1, n):
            deps[f"t{i}"] = [f"t{i - 1}"]
    else:
        deps["src"] = []
        middle = [f"t{i}" for i in range(n - 2)]
        for t in middle:
            deps[t] = ["src"]
        deps["sink"] = middle
    return deps


async def task(name):
    await asyncio.sleep(0)
    return {"task": name, "output": {}}


async def walk(deps, out):
    """Starts each task as soon as graphlib says it is ready, from the finishing task's
    callback: no polling, no waiting on sets of futures."""
    ts = graphlib.TopologicalSorter(deps)
    ts.prepare()
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    running = 0

    def start(name):
        nonlocal running
        running += 1
        loop.create_task(task(name)).add_done_callback(lambda _f, n=name: done(n))

    def done(name):
        nonlocal running
        running -= 1
        out.write(json.dumps({"event": "task_finished", "task": name, "status": "completed"}))
        out.write("\n")
        ts.done(name)
        for ready in ts.get_ready():
            start(ready)
        if running == 0 and not ts.is_active():
            finished.set_result(None)

    for ready in ts.get_ready():
        start(ready)
    await finished


def main():
    shape = sys.argv[1] if len(sys.argv) > 1 else "fan-out"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    asyncio.run(walk(graph(shape, n), sys.stdout))


if __name__ == "__main__":
    main()
