//! The load of one bench cell: `clients` tasks, each looping one kind of etcd request
//! against one endpoint until the cell's deadline, every latency in a bounded histogram.
//!
//! The client is kvlab-etcd's tonic client generated from etcd's `.proto` files: the
//! very same code drives etcd and kvlab, so the two are measured through one client.

use std::time::{Duration, Instant};

use kvlab_etcd::services::kv_client::KvClient;
use kvlab_node::etcd::pb::etcdserverpb as rpc;
use rand::RngExt;
use rpc::compare::{CompareResult, CompareTarget, TargetUnion};
use rpc::request_op::Request;
use rpc::response_op::Response;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

/// Histogram buckets below this many microseconds are exact (one per µs).
const EXACT_US: u64 = 128;
/// Sub-buckets per power of two above [`EXACT_US`] (a relative error under 1/64).
const SUB_BUCKETS: u64 = 64;
/// Buckets in all: exact ones plus 64 per power of two from 2^7 to 2^63.
const BUCKETS: usize = (EXACT_US + 57 * SUB_BUCKETS) as usize;

/// What one cell's requests do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// `Put` of a random key of the key space.
    Put,
    /// Linearizable `Range` of one random key.
    Get,
    /// A compare-and-swap txn on the client's own key: `value == last → put new`,
    /// else `get` (the answer tells the client the current value).
    Cas,
}

impl OpKind {
    /// Every kind, in the order the bench runs them.
    pub const ALL: [OpKind; 3] = [OpKind::Put, OpKind::Get, OpKind::Cas];

    /// The name in tables, JSON and the command line.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::Cas => "cas",
        }
    }

    /// Parses a name of [`OpKind::name`].
    pub fn parse(s: &str) -> Result<OpKind, String> {
        OpKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown op {s:?} (put | get | cas)"))
    }
}

/// Latencies in microseconds, log-linear buckets: bounded memory whatever the count.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < EXACT_US {
        return us as usize;
    }
    let msb = 63 - u64::from(us.leading_zeros());
    let top = us >> (msb - 6);
    (EXACT_US + (msb - 7) * SUB_BUCKETS + (top - SUB_BUCKETS)) as usize
}

fn bucket_floor(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT_US {
        return i;
    }
    let rest = i - EXACT_US;
    let msb = rest / SUB_BUCKETS + 7;
    (SUB_BUCKETS + rest % SUB_BUCKETS) << (msb - 6)
}

impl Histogram {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us).min(BUCKETS - 1)] += 1;
        self.total += 1;
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) in milliseconds (the floor of its bucket), 0 if empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_floor(i) as f64 / 1_000.0;
            }
        }
        bucket_floor(BUCKETS - 1) as f64 / 1_000.0
    }
}

/// What one cell's load asks for.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// The request kind.
    pub op: OpKind,
    /// Concurrent clients (each one request at a time).
    pub clients: usize,
    /// gRPC connections the clients share (round robin).
    pub conns: usize,
    /// Requests before `measure` are sent but not counted.
    pub warmup: Duration,
    /// How long requests are counted.
    pub measure: Duration,
    /// One request's bound; a request past it counts as an error.
    pub request_timeout: Duration,
    /// Keys of the put/get key space.
    pub keys: u64,
    /// Bytes of each value written.
    pub value_bytes: usize,
    /// A tag that keeps each cell's CAS keys apart.
    pub tag: String,
}

/// What one cell's load measured.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    /// Successful requests in the measured window.
    pub ok: u64,
    /// Failed or timed-out requests in the measured window.
    pub errors: u64,
    /// CAS txns whose compare failed (a lost race or a retried write), counted in `ok`.
    pub cas_failed: u64,
    /// Latencies of the successful requests in the measured window.
    pub latency: Histogram,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// The measured window's real length.
    pub elapsed: Duration,
}

/// Connects `conns` channels to `endpoint` (`http://127.0.0.1:PORT`).
pub async fn connect(
    endpoint: &str,
    conns: usize,
    timeout: Duration,
) -> Result<Vec<Channel>, String> {
    let mut out = Vec::with_capacity(conns);
    for _ in 0..conns.max(1) {
        let ch = Channel::from_shared(endpoint.to_string())
            .map_err(|e| format!("{endpoint}: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
        out.push(ch);
    }
    Ok(out)
}

fn value(len: usize, rng: &mut kvlab_types::Rng) -> Vec<u8> {
    (0..len).map(|_| b'a' + rng.random_range(0..26u8)).collect()
}

/// One client's state between requests.
struct Client {
    kv: KvClient<Channel>,
    op: OpKind,
    keys: u64,
    value_bytes: usize,
    cas_key: Vec<u8>,
    cas_last: Vec<u8>,
    rng: kvlab_types::Rng,
}

/// What one request ended as.
enum Outcome {
    Ok,
    CasFailed,
}

impl Client {
    fn key(&mut self) -> Vec<u8> {
        format!("bench/k{:08}", self.rng.random_range(0..self.keys)).into_bytes()
    }

    async fn once(&mut self) -> Result<Outcome, tonic::Status> {
        match self.op {
            OpKind::Put => {
                let req = rpc::PutRequest {
                    key: self.key(),
                    value: value(self.value_bytes, &mut self.rng),
                    ..Default::default()
                };
                self.kv.put(req).await?;
                Ok(Outcome::Ok)
            }
            OpKind::Get => {
                let req = rpc::RangeRequest {
                    key: self.key(),
                    ..Default::default()
                };
                self.kv.range(req).await?;
                Ok(Outcome::Ok)
            }
            OpKind::Cas => self.cas().await,
        }
    }

    async fn cas(&mut self) -> Result<Outcome, tonic::Status> {
        let new = value(self.value_bytes, &mut self.rng);
        let req = rpc::TxnRequest {
            compare: vec![rpc::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: self.cas_key.clone(),
                target_union: Some(TargetUnion::Value(self.cas_last.clone())),
                ..Default::default()
            }],
            success: vec![rpc::RequestOp {
                request: Some(Request::RequestPut(rpc::PutRequest {
                    key: self.cas_key.clone(),
                    value: new.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![rpc::RequestOp {
                request: Some(Request::RequestRange(rpc::RangeRequest {
                    key: self.cas_key.clone(),
                    ..Default::default()
                })),
            }],
        };
        let resp = self.kv.txn(req).await?.into_inner();
        if resp.succeeded {
            self.cas_last = new;
            return Ok(Outcome::Ok);
        }
        // The compare failed: learn the current value from the failure branch's range.
        if let Some(Response::ResponseRange(r)) =
            resp.responses.into_iter().next().and_then(|r| r.response)
        {
            self.cas_last = r
                .kvs
                .into_iter()
                .next()
                .map(|kv| kv.value)
                .unwrap_or_default();
        }
        Ok(Outcome::CasFailed)
    }
}

/// Runs one client until `end`; counts only what starts at or after `measure_from`.
async fn client_loop(
    mut c: Client,
    measure_from: Instant,
    end: Instant,
    request_timeout: Duration,
) -> LoadResult {
    let mut r = LoadResult::default();
    loop {
        let start = Instant::now();
        if start >= end {
            return r;
        }
        let res = tokio::time::timeout(request_timeout, c.once()).await;
        let counted = start >= measure_from;
        match res {
            Ok(Ok(outcome)) if counted => {
                r.ok += 1;
                r.cas_failed += u64::from(matches!(outcome, Outcome::CasFailed));
                r.latency.record(start.elapsed());
            }
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                r.errors += u64::from(counted);
                r.first_error
                    .get_or_insert_with(|| format!("{}: {}", status.code(), status.message()));
                // A refused request answers at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                r.errors += u64::from(counted);
                r.first_error
                    .get_or_insert_with(|| format!("no answer within {request_timeout:?}"));
            }
        }
    }
}

/// Runs one cell's load against `channels` (one endpoint) and merges the clients'
/// results.
pub async fn run_load(
    spec: &LoadSpec,
    channels: &[Channel],
    seed: u64,
) -> Result<LoadResult, String> {
    if channels.is_empty() {
        return Err("no connection to load".into());
    }
    let begin = Instant::now();
    let measure_from = begin + spec.warmup;
    let end = measure_from + spec.measure;
    let mut tasks = Vec::with_capacity(spec.clients);
    for i in 0..spec.clients {
        let client = Client {
            kv: KvClient::new(channels[i % channels.len()].clone())
                .max_decoding_message_size(kvlab_etcd::MAX_GRPC_MESSAGE_BYTES),
            op: spec.op,
            keys: spec.keys.max(1),
            value_bytes: spec.value_bytes,
            cas_key: format!("bench/cas/{}/{i}", spec.tag).into_bytes(),
            cas_last: Vec::new(),
            rng: kvlab_types::seeded_rng(kvlab_types::derive_seed(seed, "bench-client", i as u64)),
        };
        tasks.push(tokio::spawn(client_loop(
            client,
            measure_from,
            end,
            spec.request_timeout,
        )));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        let r = t.await.map_err(|e| format!("a bench client failed: {e}"))?;
        total.ok += r.ok;
        total.errors += r.errors;
        total.cas_failed += r.cas_failed;
        total.latency.merge(&r.latency);
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    total.elapsed = spec.measure;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotone_and_close_to_their_values() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            127,
            128,
            129,
            200,
            1_000,
            4_095,
            4_096,
            1 << 20,
            u64::MAX / 3,
        ] {
            let b = bucket_of(us);
            assert!(b >= last, "bucket of {us} went back");
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= us, "{us}: floor {floor}");
            assert!(
                (us - floor) as f64 <= us as f64 / 64.0 + 1.0,
                "{us}: floor {floor}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_known_spread() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        let p50 = h.quantile_ms(0.5);
        let p99 = h.quantile_ms(0.99);
        assert!((49.0..=50.0).contains(&p50), "p50 {p50}");
        assert!((97.5..=99.0).contains(&p99), "p99 {p99}");
        assert_eq!(Histogram::default().quantile_ms(0.5), 0.0);
    }
}
