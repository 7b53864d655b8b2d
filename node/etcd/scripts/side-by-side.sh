#!/usr/bin/env bash
# etcdctl against a 3-node kvlab cluster (configs/nodes/etcd/*.toml) and against a
# 3-member etcd 3.4 (Debian's etcd-server), the same commands, outputs side by side.
# Needs etcd and etcdctl on PATH and a built kvlab-node (KVLAB_NODE_EXE, default
# target/debug/kvlab-node). Everything runs on 127.0.0.1, each process under `timeout`,
# and everything it started is stopped at the end (by pid).
set -euo pipefail
cd "$(dirname "$0")/../../.."
node_exe=$(realpath "${KVLAB_NODE_EXE:-target/debug/kvlab-node}")
work=$(mktemp -d)
pids=()
cleanup() {
    # SIGTERM to each `timeout`, which passes it on to its server; then up to 10 s for
    # them to exit, then SIGKILL to the servers themselves (children of the timeouts).
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 1 20); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.5
    done
    for p in "${pids[@]}"; do
        pkill -9 -P "$p" 2>/dev/null || true
        kill -9 "$p" 2>/dev/null || true
    done
    [ -n "${KEEP_WORK:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
for i in 1 2 3; do
    cp "configs/nodes/etcd/n$i.toml" "$work/"
    (cd "$work" && exec timeout 300 "$node_exe" --config "n$i.toml" >"kv$i.log" 2>&1) &
    pids+=($!)
done
cluster="e1=http://127.0.0.1:2391,e2=http://127.0.0.1:2392,e3=http://127.0.0.1:2393"
for i in 1 2 3; do
    timeout 300 etcd --name "e$i" --data-dir "$work/etcd$i" \
        --listen-client-urls "http://127.0.0.1:238$i" --advertise-client-urls "http://127.0.0.1:238$i" \
        --listen-peer-urls "http://127.0.0.1:239$i" --initial-advertise-peer-urls "http://127.0.0.1:239$i" \
        --initial-cluster "$cluster" --log-level error >"$work/etcd$i.log" 2>&1 &
    pids+=($!)
done
export ETCDCTL_API=3
# Both clusters answer before the session starts (bounded: 30 s).
for ep in 127.0.0.1:23791 127.0.0.1:2381; do
    for _ in $(seq 1 60); do
        timeout 2 etcdctl --endpoints="$ep" get ready >/dev/null 2>&1 && break
        sleep 0.5
    done
done
session() {
    local ep=$1
    run() { echo "\$ etcdctl $*"; timeout 10 etcdctl --endpoints="$ep" "$@" 2>&1 | grep -v '"level":"warn"' || true; }
    run put k1 v1
    run put k2 v2 --prev-kv
    run put k1 v1b --prev-kv
    run get k --prefix
    run get k1 -w json
    run get k --prefix --rev=2
    run get "" --from-key --keys-only --limit=1
    echo '$ etcdctl txn   (value("k1") = "v1b" → put k1 v3, else put k1 v4)'
    printf 'value("k1") = "v1b"\n\nput k1 v3\n\nput k1 v4\n\n' | timeout 10 etcdctl --endpoints="$ep" txn 2>&1 || true
    echo '$ etcdctl txn   (mod("k2") > "100" → get k2, else del k2)'
    printf 'mod("k2") > "100"\n\nget k2\n\ndel k2\n\n' | timeout 10 etcdctl --endpoints="$ep" txn 2>&1 || true
    run del k --prefix --prev-kv
    run compact 3
    run get k1 --rev=2
    run compact 99
    run endpoint status -w table
    run member list -w table
}
session 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 >"$work/kvlab.out"
session 127.0.0.1:2381,127.0.0.1:2382,127.0.0.1:2383 >"$work/etcd.out"
paste -d'|' <(cut -c1-70 "$work/kvlab.out" | awk '{printf "%-70s\n", $0}') <(cut -c1-70 "$work/etcd.out")
echo
echo "lines that differ (kvlab < > etcd):"
diff "$work/kvlab.out" "$work/etcd.out" || true
