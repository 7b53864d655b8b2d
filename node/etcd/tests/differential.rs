//! The differential test: the same seeded random sequence of Range, Put, DeleteRange, Txn
//! and Compact requests goes to a real etcd (one member, on 127.0.0.1, a temporary data
//! dir, killed at the end) and to a 3-node kvlab cluster; every answer must match field
//! by field (the top header's cluster_id, member_id and raft_term aside; revisions must
//! match), errors by gRPC code and message.
//!
//! It needs etcd: `$KVLAB_ETCD_BIN`, or `/usr/bin/etcd` (Debian's `etcd-server`).
//! Without one it prints `skipped: …` and passes — unless `KVLAB_REQUIRE_ETCD=1` (CI sets
//! it, as it installs etcd), which turns a missing etcd into a failure. Run it alone with
//! `cargo test -p kvlab-etcd --test differential -- --nocapture`. `KVLAB_DIFF_SEEDS`
//! (`1,2`) and `KVLAB_DIFF_REQUESTS` (per seed) change the run. A mismatch prints the
//! seed, the request number, the request and both answers.
//!
//! Where the two legitimately differ, the requests avoid it: no txn deletes a range
//! ending in `"\0"` (etcd 3.4 can crash on such a txn, see `Gen::delete`), no
//! `serializable` reads (a kvlab follower may lag), no values near the size limits
//! (kvlab's Raft entry limit is 64 KiB, etcd's request limit 1.5 MiB), and results
//! sorted by a target other than the key are compared as sets ordered by (target, key)
//! without a limit (etcd's sort is not stable beyond 12 results).

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{EtcdCluster, bounded, retry};
use kvlab_etcd::services::kv_client::KvClient;
use kvlab_node::etcd::pb::etcdserverpb as rpc;
use kvlab_node::etcd::pb::mvccpb::KeyValue;
use rand::RngExt;
use rpc::compare::TargetUnion;
use rpc::range_request::{SortOrder, SortTarget};
use rpc::request_op::Request;
use tonic::transport::Channel;

/// The whole test, etcd's start included.
const LIMIT: Duration = Duration::from_secs(600);
/// Default requests per seed.
const REQUESTS: usize = 2_000;
/// Default seeds.
const SEEDS: &[u64] = &[1, 2];
/// Keys drawn from.
const KEYS: &[&str] = &["a", "a1", "a2", "b", "b1", "c", "c1", "c2", "d", "e"];

/// etcd as a child process, killed on drop.
struct Etcd {
    child: Child,
    client_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

/// The environment variable that turns "no etcd" into a failure.
const REQUIRE_ENV: &str = "KVLAB_REQUIRE_ETCD";

/// The etcd binary, if there is one.
fn etcd_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KVLAB_ETCD_BIN") {
        return Some(PathBuf::from(p));
    }
    let debian = PathBuf::from("/usr/bin/etcd");
    debian.exists().then_some(debian)
}

fn start_etcd(bin: &std::path::Path) -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(bin)
        .args(["--name", "diff"])
        .arg("--data-dir")
        .arg(dir.path().join("etcd"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("diff={peer_url}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    Etcd {
        child,
        client_url,
        _dir: dir,
    }
}

/// An answer with what may differ between the two systems cleared.
#[derive(Debug, PartialEq)]
enum Answer {
    Ok(String),
    Err(i32, String),
}

fn clear_top(h: &mut Option<rpc::ResponseHeader>) {
    if let Some(h) = h {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

/// One request of the sequence.
#[derive(Clone, Debug)]
enum Req {
    Range(rpc::RangeRequest),
    Put(rpc::PutRequest),
    Delete(rpc::DeleteRangeRequest),
    Txn(rpc::TxnRequest),
    Compact(rpc::CompactionRequest),
}

fn canonical_sort(kvs: &mut [KeyValue], target: i32, order: i32) {
    let key = |kv: &KeyValue| -> (Vec<u8>, i64) {
        match SortTarget::try_from(target) {
            Ok(SortTarget::Version) => (Vec::new(), kv.version),
            Ok(SortTarget::Create) => (Vec::new(), kv.create_revision),
            Ok(SortTarget::Mod) => (Vec::new(), kv.mod_revision),
            Ok(SortTarget::Value) => (kv.value.clone(), 0),
            _ => (Vec::new(), 0),
        }
    };
    kvs.sort_by(|a, b| {
        let o = key(a).cmp(&key(b));
        let o = if order == SortOrder::Descend as i32 {
            o.reverse()
        } else {
            o
        };
        o.then_with(|| a.key.cmp(&b.key))
    });
}

fn normalize_range(r: &mut rpc::RangeResponse, req: &rpc::RangeRequest) {
    if req.sort_target != SortTarget::Key as i32 {
        canonical_sort(&mut r.kvs, req.sort_target, req.sort_order);
    }
}

fn normalize_txn(r: &mut rpc::TxnResponse, req: &rpc::TxnRequest) {
    let ops = if r.succeeded {
        &req.success
    } else {
        &req.failure
    };
    for (resp, op) in r.responses.iter_mut().zip(ops) {
        match (&mut resp.response, &op.request) {
            (
                Some(rpc::response_op::Response::ResponseRange(rr)),
                Some(Request::RequestRange(q)),
            ) => normalize_range(rr, q),
            (Some(rpc::response_op::Response::ResponseTxn(tr)), Some(Request::RequestTxn(q))) => {
                normalize_txn(tr, q)
            }
            _ => {}
        }
    }
}

async fn send(c: &mut KvClient<Channel>, req: &Req) -> Answer {
    let res = match req {
        Req::Range(r) => c.range(r.clone()).await.map(|x| {
            let mut x = x.into_inner();
            clear_top(&mut x.header);
            normalize_range(&mut x, r);
            format!("{x:?}")
        }),
        Req::Put(r) => c.put(r.clone()).await.map(|x| {
            let mut x = x.into_inner();
            clear_top(&mut x.header);
            format!("{x:?}")
        }),
        Req::Delete(r) => c.delete_range(r.clone()).await.map(|x| {
            let mut x = x.into_inner();
            clear_top(&mut x.header);
            format!("{x:?}")
        }),
        Req::Txn(r) => c.txn(r.clone()).await.map(|x| {
            let mut x = x.into_inner();
            clear_top(&mut x.header);
            normalize_txn(&mut x, r);
            format!("{x:?}")
        }),
        Req::Compact(r) => c.compact(*r).await.map(|x| {
            let mut x = x.into_inner();
            clear_top(&mut x.header);
            format!("{x:?}")
        }),
    };
    match res {
        Ok(s) => Answer::Ok(s),
        Err(st) => Answer::Err(st.code() as i32, st.message().to_string()),
    }
}

/// Draws requests; `rev` is the revision both stores are at (an estimate is enough: it
/// only steers revision reads and compactions towards interesting values).
struct Gen {
    rng: kvlab_types::Rng,
}

impl Gen {
    fn pick(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }
    fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100u32) < percent
    }
    fn key(&mut self) -> Vec<u8> {
        if self.chance(1) {
            return Vec::new(); // etcd: "key is not provided"
        }
        KEYS[self.pick(KEYS.len())].as_bytes().to_vec()
    }
    fn value(&mut self) -> Vec<u8> {
        let len = self.pick(6);
        (0..len).map(|_| b'a' + self.pick(4) as u8).collect()
    }
    /// A key and range end: one key, a prefix, everything from a key, an explicit end
    /// (possibly before the key: empty).
    fn span(&mut self) -> (Vec<u8>, Vec<u8>) {
        let key = self.key();
        let end = match self.pick(5) {
            0 | 1 => Vec::new(),
            2 => {
                let mut e = key.clone();
                if let Some(last) = e.last_mut() {
                    *last += 1;
                }
                e
            }
            3 => vec![0],
            _ => KEYS[self.pick(KEYS.len())].as_bytes().to_vec(),
        };
        if self.chance(3) {
            return (vec![0], vec![0]);
        }
        (key, end)
    }
    fn revision(&mut self, rev: i64) -> i64 {
        match self.pick(10) {
            0..=5 => 0,
            6 | 7 => self.rng.random_range(1..=rev.max(1)),
            8 => rev + 1 + self.pick(2) as i64,
            _ => (rev - self.pick(5) as i64).max(1),
        }
    }
    fn range(&mut self, rev: i64) -> rpc::RangeRequest {
        let (key, range_end) = self.span();
        let mut r = rpc::RangeRequest {
            key,
            range_end,
            limit: if self.chance(30) {
                self.pick(4) as i64
            } else {
                0
            },
            revision: self.revision(rev),
            keys_only: self.chance(15),
            count_only: self.chance(10),
            ..Default::default()
        };
        if self.chance(20) {
            r.sort_order = self.pick(3) as i32;
            r.sort_target = self.pick(5) as i32;
            if r.sort_target != SortTarget::Key as i32 {
                // Ties: compared as sets (see the module docs), so no cut by a limit.
                r.limit = 0;
            }
        }
        if self.chance(10) {
            let lo = self.rng.random_range(1..=rev.max(1));
            match self.pick(4) {
                0 => r.min_mod_revision = lo,
                1 => r.max_mod_revision = lo,
                2 => r.min_create_revision = lo,
                _ => r.max_create_revision = lo,
            }
        }
        r
    }
    fn put(&mut self) -> rpc::PutRequest {
        let mut p = rpc::PutRequest {
            key: self.key(),
            value: self.value(),
            prev_kv: self.chance(40),
            ..Default::default()
        };
        match self.pick(40) {
            0 | 1 => {
                p.ignore_value = true;
                if self.chance(80) {
                    p.value.clear();
                }
            }
            2 => p.ignore_lease = true,
            3 => p.lease = 1 + self.pick(3) as i64,
            _ => {}
        }
        p
    }
    fn delete(&mut self, in_txn: bool) -> rpc::DeleteRangeRequest {
        let (key, mut range_end) = self.span();
        if in_txn && range_end == [0] {
            // etcd 3.4's duplicate-key check misses a delete to "\0" (its interval ends
            // below its start), so a txn can delete a key and then put it with
            // ignore_value; etcd then panics ("unexpected error during txn") and exits.
            // kvlab refuses such a txn ("key not found"). Kept out of the comparison.
            range_end = b"z".to_vec();
        }
        rpc::DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.chance(50),
        }
    }
    fn compare(&mut self, rev: i64) -> rpc::Compare {
        // Version, create, mod, value, lease (every lease is 0 on both sides).
        let target = self.pick(5) as i32;
        let union = match target {
            0 => TargetUnion::Version(self.pick(4) as i64),
            1 => TargetUnion::CreateRevision(self.rng.random_range(0..=rev + 1)),
            2 => TargetUnion::ModRevision(self.rng.random_range(0..=rev + 1)),
            3 => TargetUnion::Value(self.value()),
            _ => TargetUnion::Lease(self.pick(2) as i64),
        };
        let (key, range_end) = if self.chance(15) {
            self.span()
        } else {
            (self.key(), Vec::new())
        };
        rpc::Compare {
            result: self.pick(4) as i32,
            target,
            key,
            range_end,
            target_union: Some(union),
        }
    }
    fn ops(&mut self, rev: i64, depth: u32) -> Vec<rpc::RequestOp> {
        let n = self.pick(4);
        (0..n)
            .map(|_| {
                let request = match self.pick(if depth < 2 { 8 } else { 7 }) {
                    0 | 1 => Request::RequestRange(self.range(rev)),
                    2..=4 => Request::RequestPut(self.put()),
                    5 | 6 => Request::RequestDeleteRange(self.delete(true)),
                    _ => Request::RequestTxn(self.txn(rev, depth + 1)),
                };
                rpc::RequestOp {
                    request: Some(request),
                }
            })
            .collect()
    }
    fn txn(&mut self, rev: i64, depth: u32) -> rpc::TxnRequest {
        let n = self.pick(3);
        rpc::TxnRequest {
            compare: (0..n).map(|_| self.compare(rev)).collect(),
            success: self.ops(rev, depth),
            failure: self.ops(rev, depth),
        }
    }
    fn next(&mut self, rev: i64) -> Req {
        match self.pick(100) {
            0..=29 => Req::Range(self.range(rev)),
            30..=54 => Req::Put(self.put()),
            55..=66 => Req::Delete(self.delete(false)),
            67..=94 => Req::Txn(self.txn(rev, 0)),
            _ => Req::Compact(rpc::CompactionRequest {
                revision: (rev - self.pick(8) as i64 + 2).max(0),
                physical: self.chance(50),
            }),
        }
    }
}

fn revision_of(a: &Answer) -> Option<i64> {
    let Answer::Ok(s) = a else { return None };
    // The top header comes first in every response's Debug output.
    let at = s.find("revision: ")? + "revision: ".len();
    s[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

async fn connect(url: &str) -> KvClient<Channel> {
    let url = url.to_string();
    retry(Duration::from_secs(20), "connect", || {
        let url = url.clone();
        async move {
            let ch = Channel::from_shared(url)
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut c = KvClient::new(ch);
            // Ready when a plain read answers (etcd elected itself, kvlab has a leader).
            c.range(rpc::RangeRequest {
                key: b"ready".to_vec(),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
            Ok::<_, String>(c)
        }
    })
    .await
}

/// Sends kvlab a request, retrying while the answer is a definite "unavailable" (no
/// leader yet, a leader change: nothing took effect).
async fn send_kvlab(c: &mut KvClient<Channel>, req: &Req) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = send(c, req).await;
        match &a {
            Answer::Err(code, msg)
                if *code == tonic::Code::Unavailable as i32
                    && msg.starts_with("etcdserver: no leader")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => return a,
        }
    }
}

/// How many requests of each kind were answered, and how many of those with an error.
#[derive(Debug, Default)]
struct Tally {
    /// (kind, answered, errors)
    by_kind: std::collections::BTreeMap<&'static str, (usize, usize)>,
}

impl Tally {
    fn add(&mut self, req: &Req, a: &Answer) {
        let kind = match req {
            Req::Range(_) => "range",
            Req::Put(_) => "put",
            Req::Delete(_) => "delete",
            Req::Txn(_) => "txn",
            Req::Compact(_) => "compact",
        };
        let e = self.by_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 += usize::from(matches!(a, Answer::Err(..)));
    }
}

async fn run_seed(
    bin: &std::path::Path,
    seed: u64,
    requests: usize,
) -> (usize, Vec<String>, Tally) {
    let etcd = start_etcd(bin);
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(3, dir.path()).await;
    let mut theirs = connect(&etcd.client_url).await;
    // Every request to one kvlab node (a follower forwards to the leader).
    let kvlab_url = cluster.endpoints[(seed as usize) % cluster.endpoints.len()].clone();
    let mut ours = connect(&kvlab_url).await;
    let mut gen_ = Gen {
        rng: kvlab_types::seeded_rng(seed),
    };
    let mut rev = 1;
    let mut mismatches = Vec::new();
    let mut tally = Tally::default();
    for i in 0..requests {
        let req = gen_.next(rev);
        let want = send(&mut theirs, &req).await;
        let got = send_kvlab(&mut ours, &req).await;
        tally.add(&req, &want);
        if want != got {
            mismatches.push(format!(
                "seed {seed}, request {i}: {req:?}\n  etcd:  {want:?}\n  kvlab: {got:?}"
            ));
            if mismatches.len() >= 5 {
                break;
            }
        }
        if let Some(r) = revision_of(&want) {
            rev = rev.max(r);
        }
    }
    // The request size limit, once per seed: both refuse a put over 1.5 MiB alike.
    let big = Req::Put(rpc::PutRequest {
        key: b"big".to_vec(),
        value: vec![b'x'; (3 << 19) + 16],
        ..Default::default()
    });
    let (want, got) = (
        send(&mut theirs, &big).await,
        send_kvlab(&mut ours, &big).await,
    );
    if want != got {
        mismatches.push(format!(
            "seed {seed}, oversized put\n  etcd:  {want:?}\n  kvlab: {got:?}"
        ));
    }
    drop(theirs);
    drop(etcd);
    cluster.shutdown().await;
    (requests + 1, mismatches, tally)
}

fn env_list(name: &str) -> Option<Vec<u64>> {
    let v = std::env::var(name).ok()?;
    Some(v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvlab_answers_like_etcd_for_a_random_sequence() {
    let Some(bin) = etcd_bin() else {
        assert!(
            std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
            "{REQUIRE_ENV}=1 but no etcd: set KVLAB_ETCD_BIN or `apt-get install etcd-server`"
        );
        println!(
            "skipped: no etcd (set KVLAB_ETCD_BIN or install Debian's etcd-server; {REQUIRE_ENV}=1 makes this a failure)"
        );
        return;
    };
    let seeds = env_list("KVLAB_DIFF_SEEDS").unwrap_or_else(|| SEEDS.to_vec());
    let requests = env_list("KVLAB_DIFF_REQUESTS")
        .and_then(|v| v.first().copied())
        .map_or(REQUESTS, |n| n as usize);
    bounded(LIMIT, "differential test", async {
        let mut total = 0;
        let mut all = Vec::new();
        for &seed in &seeds {
            let started = Instant::now();
            let (n, mismatches, tally) = run_seed(&bin, seed, requests).await;
            println!(
                "differential: seed {seed}: {n} requests, {} mismatches, {:.1} s; (answered, of which errors) by kind: {:?}",
                mismatches.len(),
                started.elapsed().as_secs_f64(),
                tally.by_kind,
            );
            // A sequence that mostly errs would compare little: most of every kind
            // but compactions must succeed on etcd.
            for (kind, (answered, errors)) in &tally.by_kind {
                assert!(
                    *kind == "compact" || errors * 2 < *answered,
                    "seed {seed}: {errors} of {answered} {kind} requests failed on etcd: the generator is off"
                );
            }
            total += n;
            all.extend(mismatches);
        }
        println!(
            "differential: {total} requests over seeds {seeds:?}: {} mismatches",
            all.len()
        );
        assert!(
            all.is_empty(),
            "kvlab and etcd answered differently (rerun one with KVLAB_DIFF_SEEDS=<seed>):\n{}",
            all.join("\n")
        );
    })
    .await;
}
