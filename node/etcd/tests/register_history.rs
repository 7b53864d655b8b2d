//! A Jepsen-style register workload through the etcd API: concurrent `etcd-client`
//! clients read (linearizable get), write (put) and compare-and-set (a txn comparing the
//! value, then putting) a few keys on a 3-node kvlab cluster, each client on its own
//! node; the history, in kvlab's JSONL format, must be linearizable under the
//! `cas-register` model (kvlab-checker, the code behind `kvlab check`).
//!
//! The second test crashes the leader's process (like `kill -9`) while the clients run:
//! its clients' writes end `info`, the others go on once a new leader is elected.
//!
//! `KVLAB_ETCD_HISTORY_OUT=FILE` (`KVLAB_ETCD_CRASH_HISTORY_OUT=FILE` for the second)
//! keeps the history, e.g. for `kvlab check FILE --model cas-register`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{EtcdCluster, bounded, retry};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use kvlab_checker::{CheckOptions, EventType, HistoryEvent, ModelKind, OpFn, Verdict};
use rand::RngExt;
use serde_json::{Value as J, json};

const CLIENTS: u64 = 6;
const OPS_PER_CLIENT: u64 = 120;
const KEYS: &[&str] = &["r0", "r1", "r2"];
const LIMIT: Duration = Duration::from_secs(180);

/// The history being recorded: a line's position is its real-time order.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<HistoryEvent>>>,
    start: Arc<Mutex<Option<Instant>>>,
}

impl Recorder {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        process: u64,
        kind: EventType,
        f: OpFn,
        key: &str,
        value: J,
        node: u32,
        error: Option<String>,
    ) {
        let start = *self.start.lock().unwrap().get_or_insert_with(Instant::now);
        let mut events = self.events.lock().unwrap();
        let index = events.len() as u64;
        events.push(HistoryEvent {
            index,
            time_ns: start.elapsed().as_nanos() as u64,
            process,
            kind,
            f,
            key: Some(key.to_string()),
            value,
            node: Some(node),
            error,
        });
    }
}

fn parse(v: &[u8]) -> J {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .map_or(J::Null, |i| json!(i))
}

async fn client_loop(c: u64, mut client: Client, node: u32, rec: Recorder) {
    let mut rng = kvlab_types::seeded_rng(c);
    let mut process = c;
    for n in 0..OPS_PER_CLIENT {
        let key = KEYS[rng.random_range(0..KEYS.len())];
        let fresh = (c * 100_000 + n + 1) as i64;
        match rng.random_range(0..3u32) {
            0 => {
                rec.push(
                    process,
                    EventType::Invoke,
                    OpFn::Read,
                    key,
                    J::Null,
                    node,
                    None,
                );
                match client.get(key, None).await {
                    Ok(r) => {
                        let v = r.kvs().first().map_or(J::Null, |kv| parse(kv.value()));
                        rec.push(process, EventType::Ok, OpFn::Read, key, v, node, None);
                    }
                    Err(e) => {
                        // A read has no effect: failing it is always safe.
                        let e = Some(e.to_string());
                        rec.push(process, EventType::Fail, OpFn::Read, key, J::Null, node, e);
                    }
                }
            }
            1 => {
                let v = json!(fresh);
                rec.push(
                    process,
                    EventType::Invoke,
                    OpFn::Write,
                    key,
                    v.clone(),
                    node,
                    None,
                );
                match client.put(key, fresh.to_string(), None).await {
                    Ok(_) => rec.push(process, EventType::Ok, OpFn::Write, key, v, node, None),
                    Err(e) => {
                        let e = Some(e.to_string());
                        rec.push(process, EventType::Info, OpFn::Write, key, v, node, e);
                        process += CLIENTS;
                    }
                }
            }
            _ => {
                // cas from a recent value (or from absent) to a fresh one.
                let old: Option<i64> = match rng.random_range(0..4u32) {
                    0 => None,
                    _ => Some(
                        (rng.random_range(0..CLIENTS) * 100_000 + rng.random_range(1..=n + 1))
                            as i64,
                    ),
                };
                let v = json!([old, fresh]);
                rec.push(
                    process,
                    EventType::Invoke,
                    OpFn::Cas,
                    key,
                    v.clone(),
                    node,
                    None,
                );
                let cmp = match old {
                    None => Compare::version(key, CompareOp::Equal, 0),
                    Some(o) => Compare::value(key, CompareOp::Equal, o.to_string()),
                };
                let txn =
                    Txn::new()
                        .when([cmp])
                        .and_then([TxnOp::put(key, fresh.to_string(), None)]);
                match client.txn(txn).await {
                    Ok(r) if r.succeeded() => {
                        rec.push(process, EventType::Ok, OpFn::Cas, key, v, node, None)
                    }
                    Ok(_) => rec.push(process, EventType::Fail, OpFn::Cas, key, v, node, None),
                    Err(e) => {
                        let e = Some(e.to_string());
                        rec.push(process, EventType::Info, OpFn::Cas, key, v, node, e);
                        process += CLIENTS;
                    }
                }
            }
        }
    }
}

/// Runs the workload (crashing the leader's process a moment after it starts, when
/// `crash_leader`), checks the history and returns the verdict line.
async fn run_and_check(crash_leader: bool, out_env: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = EtcdCluster::start(3, dir.path()).await;
    let rec = Recorder::default();
    bounded(LIMIT, "register workload", async {
        // Wait for a leader before the clock starts.
        let mut first = Client::connect([cluster.endpoints[0].as_str()], None)
            .await
            .unwrap();
        retry(Duration::from_secs(20), "a leader", || {
            let mut c = first.clone();
            async move { c.get("r0", None).await }
        })
        .await;
        first.put("warmup", "1", None).await.unwrap();
        let leader = first.status().await.unwrap().leader();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let node = (c % 3) as u32;
            let ep = cluster.endpoints[node as usize].clone();
            let client = Client::connect([ep.as_str()], None).await.unwrap();
            tasks.push(tokio::spawn(client_loop(c, client, node + 1, rec.clone())));
        }
        if crash_leader {
            // Member ids are node ids, and the cluster's nodes are in id order.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let at = cluster
                .nodes
                .iter()
                .position(|n| u64::from(n.id().0) == leader)
                .expect("the leader is a member");
            cluster.nodes.remove(at).crash().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
    cluster.shutdown().await;
    let events = rec.events.lock().unwrap().clone();
    if let Some(path) = std::env::var_os(out_env) {
        let mut out = std::fs::File::create(&path).unwrap();
        kvlab_checker::write_jsonl(&mut out, &events).unwrap();
    }
    let oks = events.iter().filter(|e| e.kind == EventType::Ok).count();
    assert!(
        oks as u64 > CLIENTS * OPS_PER_CLIENT / 3,
        "only {oks} operations succeeded"
    );
    let opts = CheckOptions {
        model: ModelKind::CasRegister,
        timeout: Some(Duration::from_secs(120)),
    };
    let report = kvlab_checker::check(&events, &opts).expect("a well-formed history");
    println!(
        "register history{}: {} operations ({} ok, {} fail, {} info): {}",
        if crash_leader {
            " with a leader crash"
        } else {
            ""
        },
        report.operations,
        report.operations_ok,
        report.operations_fail,
        report.operations_info,
        report.verdict
    );
    assert_eq!(report.verdict, Verdict::Valid, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_history_through_the_etcd_api_is_linearizable() {
    run_and_check(false, "KVLAB_ETCD_HISTORY_OUT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_history_across_a_leader_crash_is_linearizable() {
    run_and_check(true, "KVLAB_ETCD_CRASH_HISTORY_OUT").await;
}
