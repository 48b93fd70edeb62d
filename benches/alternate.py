#!/usr/bin/env python3
"""Times whole commands in turn, round after round, and prints each one's minimum and median
wall time: the way to compare two builds on a noisy machine (one run of each says nothing).

    python3 benches/alternate.py 11 \\
        "/tmp/old run --json fan-out.cond :: /tmp/new run --json fan-out.cond"

Commands are separated by `::`; leading NAME=VALUE words set environment variables for that
command. A `.conductor` folder in the current directory is deleted before every run, so each
starts from a fresh default store.
"""
import os
import shutil
import statistics
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    variants = [v.strip() for v in " ".join(sys.argv[2:]).split("::")]
    times = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            words = v.split()
            env = dict(os.environ)
            while words and "=" in words[0] and not words[0].startswith("-"):
                key, value = words.pop(0).split("=", 1)
                env[key] = value
            if os.path.isdir(".conductor"):
                shutil.rmtree(".conductor")
            begun = time.perf_counter()
            subprocess.run(words, stdout=subprocess.DEVNULL, env=env, check=True)
            times[v].append((time.perf_counter() - begun) * 1e3)
    for v, t in times.items():
        print(f"min {min(t):8.1f} ms  median {statistics.median(t):8.1f} ms  {v}")


if __name__ == "__main__":
    main()
