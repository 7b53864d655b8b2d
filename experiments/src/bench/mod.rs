//! `kvlab bench`: etcd 3.4 and kvlab's `raft` system side by side on loopback, driven by
//! the same etcd-API client.
//!
//! Both clusters run as local processes for the whole bench (etcd members under
//! `timeout`, fsync on, temporary data dirs; `kvlab node` processes with `[etcd_api]`,
//! fsync on). Each cell — an operation (`put`, linearizable `get`, CAS-shaped `txn`) at
//! a client count — runs a warm-up, then a bounded measured window, against one system,
//! then the same cell against the other; the order flips every round, so a neighbour's
//! compile hits both. During a cell (every `--compact-every-s`) and between cells each
//! system compacts its keyspace to its current revision, so no system carries the
//! history of a whole run (kvlab's Raft snapshot holds the keyspace's history since the
//! last compaction; etcd's database keeps it until compacted). Each kvlab node runs with
//! the settings of [`procs`]: a snapshot every 10,000 entries and loopback-sized UDP
//! datagrams. Beside ops/s and latencies, each cell records the members' CPU time per
//! request, which a busy machine changes far less than it changes ops/s. The result: one
//! table (median ops/s, p50, p99 and CPU per request per system, and the
//! kvlab/etcd ratios of every round as min / median / max), `bench.json` and
//! `bench.{png,svg}` in the output directory. Everything started is stopped at the end,
//! on an error and on ctrl-c (and, if the bench is killed hard, the kernel kills the
//! kvlab nodes and `timeout` ends the etcd members).

pub mod load;
pub mod procs;
mod summary;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kvlab_etcd::services::kv_client::KvClient;
use kvlab_etcd::services::maintenance_client::MaintenanceClient;
use kvlab_node::etcd::pb::etcdserverpb as rpc;
use kvlab_server::TransportKind;
use tonic::transport::Channel;

pub use load::OpKind;
pub use procs::System;
pub use summary::{BenchReport, CellResult, Row, Spread, WindowCpu, render_table};

use load::{LoadSpec, connect, run_load};
use procs::Servers;

/// Where the clients send their requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Every client to the current leader (found through `Maintenance.Status`).
    Leader,
    /// Clients spread over every member (followers forward to the leader).
    All,
}

impl Target {
    /// Parses `leader` or `all`.
    pub fn parse(s: &str) -> Result<Target, String> {
        match s {
            "leader" => Ok(Target::Leader),
            "all" => Ok(Target::All),
            _ => Err(format!("unknown target {s:?} (leader | all)")),
        }
    }
}

/// Everything a bench run needs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchOptions {
    /// Where bench.json and the plots go.
    pub out: PathBuf,
    /// Rounds (each runs every cell on both systems, alternating which goes first).
    pub rounds: usize,
    /// Client counts.
    pub clients: Vec<usize>,
    /// Operations.
    pub ops: Vec<OpKind>,
    /// The measured window of one cell.
    pub measure: Duration,
    /// The warm-up before it.
    pub warmup: Duration,
    /// gRPC connections per cell (`None`: one per 8 clients, at most 32).
    pub conns: Option<usize>,
    /// Keys of the put/get key space.
    pub keys: u64,
    /// Bytes per value written.
    pub value_bytes: usize,
    /// Members of each cluster.
    pub members: usize,
    /// Where clients send.
    pub target: Target,
    /// How often the keyspace is compacted during a cell (zero: only between cells).
    pub compact_every: Duration,
    /// The kvlab nodes' peer transport.
    #[serde(skip)]
    pub transport: TransportKind,
    /// The etcd binary.
    pub etcd_bin: PathBuf,
    /// The executable that runs `node --config …` (kvlab or kvlab-node).
    pub kvlab_exe: PathBuf,
    /// One request's bound.
    pub request_timeout: Duration,
    /// The bound on a cluster's start (a leader elected, a first write answered).
    pub startup_timeout: Duration,
    /// Seeds the clients' key and value draws.
    pub seed: u64,
}

impl BenchOptions {
    /// The connections of a cell with `clients` clients.
    pub fn conns_for(&self, clients: usize) -> usize {
        self.conns
            .unwrap_or(clients.div_ceil(8).min(32))
            .clamp(1, clients.max(1))
    }

    /// An upper bound on the whole bench's length: each server's lifetime bound.
    pub fn lifetime(&self) -> Duration {
        let cells = (self.rounds * self.clients.len() * self.ops.len() * 2) as u32;
        (self.measure + self.warmup + Duration::from_secs(5)) * cells
            + self.startup_timeout * 2
            + Duration::from_secs(120)
    }

    /// Refuses options that cannot run.
    pub fn validate(&self) -> Result<(), String> {
        if self.rounds == 0 || self.clients.is_empty() || self.ops.is_empty() {
            return Err("--rounds, --clients and --ops need at least one value".into());
        }
        if self.clients.iter().any(|&c| c == 0 || c > MAX_CLIENTS) {
            return Err(format!("--clients: each count must be 1..={MAX_CLIENTS}"));
        }
        if self.measure.is_zero() || self.measure > MAX_CELL {
            return Err(format!(
                "--duration-s must be positive and at most {MAX_CELL:?}"
            ));
        }
        if self.members == 0 || self.members > 7 {
            return Err("--members must be 1..=7".into());
        }
        if self.value_bytes > MAX_VALUE_BYTES {
            return Err(format!("--value-bytes must be at most {MAX_VALUE_BYTES}"));
        }
        Ok(())
    }
}

/// The most clients of one cell (kvlab's etcd endpoint holds 256 requests per node).
pub const MAX_CLIENTS: usize = 1_024;
/// The longest measured window of one cell.
pub const MAX_CELL: Duration = Duration::from_secs(600);
/// The largest value written (well under kvlab's 64 KiB Raft entry limit).
pub const MAX_VALUE_BYTES: usize = 32 << 10;

/// Finds the leader's endpoint: the member whose `Maintenance.Status` names itself.
async fn leader_endpoint(servers: &Servers, timeout: Duration) -> Result<String, String> {
    let mut last = String::from("no member answered");
    for ep in &servers.endpoints {
        let ch = match connect(ep, 1, timeout).await {
            Ok(mut c) => c.remove(0),
            Err(e) => {
                last = e;
                continue;
            }
        };
        match MaintenanceClient::new(ch)
            .status(rpc::StatusRequest {})
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                let me = r.header.map_or(0, |h| h.member_id);
                if r.leader != 0 && r.leader == me {
                    return Ok(ep.clone());
                }
                last = format!("{ep} follows {:x}", r.leader);
            }
            Err(e) => last = format!("{ep}: {e}"),
        }
    }
    Err(last)
}

/// Waits (bounded) until `servers` has a leader that answers a write and a read.
async fn wait_ready(servers: &mut Servers, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let step = Duration::from_secs(2);
    loop {
        servers.check_alive()?;
        let attempt = async {
            let ep = leader_endpoint(servers, step).await?;
            let mut kv = KvClient::new(connect(&ep, 1, step).await?.remove(0));
            let put = rpc::PutRequest {
                key: b"bench/ready".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            };
            kv.put(put).await.map_err(|e| e.to_string())?;
            let get = rpc::RangeRequest {
                key: b"bench/ready".to_vec(),
                ..Default::default()
            };
            kv.range(get).await.map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        };
        let err = match tokio::time::timeout(step * 2, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "no answer".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "{} not ready within {limit:?}: {err}",
                servers.system.name()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Compacts the keyspace to its current revision (outside any measured window), so
/// neither system carries the history of earlier cells.
async fn compact(channel: Channel) -> Result<(), String> {
    let mut kv = KvClient::new(channel);
    let range = rpc::RangeRequest {
        key: b"bench/ready".to_vec(),
        ..Default::default()
    };
    let rev = kv
        .range(range)
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .header
        .map_or(0, |h| h.revision);
    if rev > 1 {
        let req = rpc::CompactionRequest {
            revision: rev,
            physical: true,
        };
        kv.compact(req).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Compacts every `every` while a cell runs (as etcd's `--auto-compaction-retention`
/// would): neither system's history grows with the cell's length. Runs until aborted.
async fn compact_every(channel: Channel, every: Duration) {
    if every.is_zero() {
        return;
    }
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = compact(channel.clone()).await {
            tracing::warn!("compaction during a cell failed: {e}");
        }
    }
}

/// One cell on one system: connect, load (compacting every `compact_every`), compact.
async fn run_cell(
    opts: &BenchOptions,
    servers: &mut Servers,
    op: OpKind,
    clients: usize,
    round: usize,
) -> Result<CellResult, String> {
    servers.check_alive()?;
    let timeout = opts.request_timeout;
    let conns = opts.conns_for(clients);
    let channels = match opts.target {
        Target::Leader => {
            let ep = leader_endpoint(servers, timeout).await?;
            connect(&ep, conns, timeout).await?
        }
        Target::All => {
            let mut chans = Vec::with_capacity(conns);
            for j in 0..conns.max(servers.endpoints.len().min(clients)) {
                let ep = &servers.endpoints[j % servers.endpoints.len()];
                chans.extend(connect(ep, 1, timeout).await?);
            }
            chans
        }
    };
    let spec = LoadSpec {
        op,
        clients,
        conns,
        warmup: opts.warmup,
        measure: opts.measure,
        request_timeout: timeout,
        keys: opts.keys,
        value_bytes: opts.value_bytes,
        tag: format!("r{round}c{clients}"),
    };
    let seed = kvlab_types::derive_seed(opts.seed, op.name(), (round * 100_000 + clients) as u64);
    let compactor = tokio::spawn(compact_every(channels[0].clone(), opts.compact_every));
    let (r, cpu) = tokio::join!(
        run_load(&spec, &channels, seed),
        window_cpu(servers, opts.warmup, opts.measure)
    );
    compactor.abort();
    let r = r?;
    if let Err(e) = compact(channels[0].clone()).await {
        tracing::warn!(
            "{}: compaction after a cell failed: {e}",
            servers.system.name()
        );
    }
    Ok(CellResult::new(servers.system, op, clients, round, &r, cpu))
}

/// The CPU time `servers` and the bench's own clients use in the measured window: from
/// `warmup` after now, for `measure` (the window [`run_load`] measures, started at the
/// same moment).
async fn window_cpu(servers: &mut Servers, warmup: Duration, measure: Duration) -> WindowCpu {
    let from = tokio::time::Instant::now() + warmup;
    tokio::time::sleep_until(from).await;
    let (servers_before, client_before) = (servers.cpu_ticks(), procs::own_cpu_ticks());
    tokio::time::sleep_until(from + measure).await;
    let ticks = |used: u64| Duration::from_millis(used * 1000 / procs::CLOCK_TICKS_PER_S);
    WindowCpu {
        servers: ticks(servers.cpu_ticks().saturating_sub(servers_before)),
        client: ticks(procs::own_cpu_ticks().saturating_sub(client_before)),
    }
}

/// Runs every round and cell, alternating which system goes first.
async fn run_rounds(
    opts: &BenchOptions,
    kvlab: &mut Servers,
    etcd: &mut Servers,
) -> Result<Vec<CellResult>, String> {
    wait_ready(etcd, opts.startup_timeout).await?;
    wait_ready(kvlab, opts.startup_timeout).await?;
    let mut cells = Vec::new();
    for round in 0..opts.rounds {
        for &op in &opts.ops {
            for &clients in &opts.clients {
                for first_kvlab in [round % 2 == 0, round % 2 == 1] {
                    let servers = if first_kvlab { &mut *kvlab } else { &mut *etcd };
                    let cell = run_cell(opts, servers, op, clients, round).await?;
                    eprintln!("  {}", cell.line());
                    cells.push(cell);
                }
            }
        }
    }
    Ok(cells)
}

/// Copies the servers' logs (`*.log` under `work`, one level of directories deep) to
/// `out/logs` before the temporary directory goes; returns where they went.
fn save_logs(work: &std::path::Path, out: &std::path::Path) -> String {
    let dest = out.join("logs");
    if std::fs::create_dir_all(&dest).is_err() {
        return format!("lost: cannot create {}", dest.display());
    }
    let mut dirs = vec![(work.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() && prefix.is_empty() {
                dirs.push((p, format!("{name}-")));
            } else if name.ends_with(".log") {
                let _ = std::fs::copy(&p, dest.join(format!("{prefix}{name}")));
            }
        }
    }
    dest.display().to_string()
}

/// Runs the bench: starts both clusters, every round, stops both (also on error and
/// ctrl-c), writes `bench.json` and the plot, and returns the report.
pub fn run_bench(opts: &BenchOptions) -> Result<BenchReport, String> {
    opts.validate()?;
    std::fs::create_dir_all(&opts.out).map_err(|e| format!("{}: {e}", opts.out.display()))?;
    let work = tempfile::Builder::new()
        .prefix("kvlab-bench-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    // Spawned from this thread, which lives as long as the bench: the kvlab nodes' parent
    // death signal fires only when the bench ends.
    let ports = procs::BenchPorts::pick(opts.members, opts.transport == TransportKind::Udp)?;
    let mut etcd = procs::start_etcd(&opts.etcd_bin, &ports, work.path(), opts.lifetime())?;
    let mut kvlab = procs::start_kvlab(&opts.kvlab_exe, &ports, work.path(), opts.transport)?;
    eprintln!(
        "etcd at {}; kvlab at {}",
        etcd.endpoints.join(","),
        kvlab.endpoints.join(",")
    );
    let started = Instant::now();
    let result = rt.block_on(async {
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => Err("interrupted (ctrl-c)".to_string()),
            r = run_rounds(opts, &mut kvlab, &mut etcd) => r,
        }
    });
    for w in kvlab.stop().into_iter().chain(etcd.stop()) {
        eprintln!("warning: {w}");
    }
    drop(rt);
    let cells = result.map_err(|e| {
        format!(
            "{e} (the servers' logs: {})",
            save_logs(work.path(), &opts.out)
        )
    })?;
    let report = BenchReport::new(opts, cells, started.elapsed());
    report.write(&opts.out)?;
    Ok(report)
}
