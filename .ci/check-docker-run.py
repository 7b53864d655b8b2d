#!/usr/bin/env python3
"""Checks the run directory of configs/docker-faults.toml on the docker backend.

Usage: .ci/check-docker-run.py RUN_DIR

The partition (iptables rules in the containers) shows in the history: operations fail
or time out during its band, and writes are acknowledged after it heals; more than 10
writes were acknowledged before the leader's container was killed, and the checker
(which kvlab ran) found the history linearizable; nothing of the run is left on the
Docker daemon. Prints one line per check; exits 1 on the first that fails.
"""
import json
import subprocess
import sys
from pathlib import Path

run = Path(sys.argv[1])


def lines(name):
    return [json.loads(l) for l in (run / name).read_text().splitlines() if l.strip()]


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        sys.exit(1)


summary = json.loads((run / "summary.json").read_text())
nodes = json.loads((run / "nodes.json").read_text())
events = lines("events.jsonl")
history = lines("history.jsonl")
check(summary["backend"] == "docker", f"backend {summary['backend']}")
check(summary["verdict"] == "valid", f"verdict {summary['verdict']}")


def band(fault):
    start = next(e for e in events if e["kind"] == "fault_start" and e["fault"] == fault)
    end = next(e for e in events if e["kind"] == "fault_end" and e["fault_id"] == start["fault_id"])
    return start["time_ns"], end["time_ns"]


p0, p1 = band("partition_halves")
k0, _ = band("crash_leader")
band("pause")
cuts = [c for c in nodes["docker"]["link_cuts"] if c["rules"]]
check(len(cuts) > 0, f"{len(cuts)} iptables rule sets applied in container network namespaces, e.g. {cuts[0]['node']}: {cuts[0]['rules']}")
hurt = [e for e in history if e["type"] in ("fail", "info") and p0 <= e["time_ns"] <= p1 + 600_000_000]
check(len(hurt) > 0, f"{len(hurt)} fail/info operations completed during the partition band [{p0/1e9:.2f} s, {p1/1e9:.2f} s]")
after = [e for e in history if e["type"] == "ok" and e["f"] == "write" and e["time_ns"] > p1]
check(len(after) > 0, f"{len(after)} writes acknowledged after the partition healed")
before_kill = [e for e in history if e["type"] == "ok" and e["f"] == "write" and e["time_ns"] < k0]
check(len(before_kill) > 10, f"{len(before_kill)} writes acknowledged before the leader's container was killed at {k0/1e9:.2f} s; checker: {summary['checker']['verdict']}")
run_id = nodes["docker"]["run_id"]
left = []
for args in (["ps", "-aq"], ["network", "ls", "-q"], ["volume", "ls", "-q"]):
    out = subprocess.run(["docker", *args, "--filter", f"label=org.kvlab.run={run_id}"],
                         capture_output=True, text=True, check=True).stdout.split()
    left += out
check(not left, f"nothing of run {run_id} left on the daemon")
