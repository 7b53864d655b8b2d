//! One `kvlab node` process per node on 127.0.0.1: configs written into the run
//! directory, processes started from the running executable, readiness through the admin
//! endpoint, `SIGKILL` / `SIGSTOP` / `SIGCONT` for the nemesis, `SIGTERM` at the end.
//!
//! [`ProcessCluster`] owns every child it starts; dropping it kills and reaps whatever
//! still runs, so no node outlives a run that failed or panicked.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvlab_server::{
    AdminClient, AdminConfig, KvClient, KvClientOptions, NodeConfig, NodeStatus, SystemConfig,
    TransportKind,
};
use kvlab_transport::FaultRule;
use kvlab_types::{ClientError, ClientRequest, ClientResponse, NodeId};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use super::{NODE_EXE_ENV, SET_RULES_TIMEOUT_MS, TransportChoice, server_options, system_config};
use crate::error::ExperimentError;
use crate::spec::Spec;

/// How long one readiness probe waits for a connection to the admin endpoint.
pub const READY_PROBE_MS: u64 = 200;
/// Pause between two readiness probes.
pub const READY_POLL_MS: u64 = 25;
/// Pause between two checks whether a stopping process has exited.
pub const STOP_POLL_MS: u64 = 20;
/// The last bytes of a node's log quoted in an error about it.
pub const LOG_TAIL_BYTES: u64 = 2_000;

/// One node process and everything needed to start it again.
#[derive(Debug)]
struct ProcNode {
    config: NodeConfig,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    client: Option<Arc<KvClient>>,
    admin: Option<Arc<AdminClient>>,
}

/// Every node process of a local run. See the [module docs](self).
#[derive(Debug)]
pub struct ProcessCluster {
    exe: PathBuf,
    nodes: BTreeMap<NodeId, ProcNode>,
    token: String,
    startup_timeout: Duration,
    stop_timeout: Duration,
    client_options: KvClientOptions,
    pids: Vec<u32>,
}

/// Free loopback ports for `count` nodes, (peer, client, admin) each, the peer port a
/// UDP one with `udp_peers`; all distinct (see [`pick_free`]).
pub(crate) fn pick_ports(
    count: usize,
    udp_peers: bool,
) -> Result<Vec<(u16, u16, u16)>, ExperimentError> {
    let per_node = if udp_peers { 2 } else { 3 };
    let (tcp, udp) = pick_free(count * per_node, if udp_peers { count } else { 0 })?;
    Ok(node_ports(
        count,
        &mut tcp.into_iter(),
        udp_peers.then_some(udp),
    ))
}

/// (peer, client, admin) for `count` nodes, taken in order from `tcp`; the peer ports
/// from `udp` instead when given (one per node).
pub(crate) fn node_ports(
    count: usize,
    tcp: &mut impl Iterator<Item = u16>,
    udp: Option<Vec<u16>>,
) -> Vec<(u16, u16, u16)> {
    let mut next = || tcp.next().unwrap_or_default();
    (0..count)
        .map(|i| {
            let peer = match &udp {
                Some(udp) => udp.get(i).copied().unwrap_or_default(),
                None => next(),
            };
            (peer, next(), next())
        })
        .collect()
}

/// `tcp` TCP and `udp` UDP free loopback ports, all held until every one is picked (so
/// none is handed out twice), then released for the servers to bind. Whatever needs
/// ports at the same time must take them from one call.
pub(crate) fn pick_free(tcp: usize, udp: usize) -> Result<(Vec<u16>, Vec<u16>), ExperimentError> {
    let err = |e: std::io::Error| ExperimentError::Backend(format!("cannot pick a free port: {e}"));
    let mut held_tcp = Vec::with_capacity(tcp);
    let mut held_udp = Vec::with_capacity(udp);
    let mut tcp_ports = Vec::with_capacity(tcp);
    let mut udp_ports = Vec::with_capacity(udp);
    for _ in 0..tcp {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
        tcp_ports.push(l.local_addr().map_err(err)?.port());
        held_tcp.push(l);
    }
    for _ in 0..udp {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(err)?;
        udp_ports.push(s.local_addr().map_err(err)?.port());
        held_udp.push(s);
    }
    Ok((tcp_ports, udp_ports))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl ProcessCluster {
    /// Writes one node config per node under `nodes_dir/n<i>/`, starts every node
    /// process, and waits (bounded by `local.startup_timeout_s`) until each answers its
    /// admin endpoint; then connects a client to each.
    pub fn start(
        rt: &tokio::runtime::Handle,
        spec: &Spec,
        seed: u64,
        transport: TransportChoice,
        nodes_dir: &Path,
    ) -> Result<ProcessCluster, ExperimentError> {
        let exe = match std::env::var_os(NODE_EXE_ENV) {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe().map_err(|e| {
                ExperimentError::Backend(format!("cannot find the kvlab executable: {e}"))
            })?,
        };
        let transport = match transport {
            TransportChoice::Udp => TransportKind::Udp,
            TransportChoice::Tarpc => TransportKind::Tarpc,
            TransportChoice::Mem => {
                return Err(ExperimentError::Backend(
                    "the mem transport runs in process, not as node processes".into(),
                ));
            }
        };
        let ports = pick_ports(spec.nodes as usize, transport == TransportKind::Udp)?;
        let peers: BTreeMap<String, SocketAddr> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| ((i + 1).to_string(), loopback(p.0)))
            .collect();
        // A token per run: nothing else on the machine can drive these nodes.
        let token = run_token(seed);
        // A cluster secret per run keys every peer frame; like the token, it is written
        // only into the node configs, which are private (mode 0600).
        let cluster_secret = kvlab_server::generate_cluster_secret(seed);
        let mut nodes = BTreeMap::new();
        for (i, (peer, client, admin)) in ports.iter().copied().enumerate() {
            let id = NodeId(i as u32 + 1);
            let dir = nodes_dir.join(format!("n{}", id.0));
            std::fs::create_dir_all(&dir).map_err(|e| ExperimentError::io(&dir, e))?;
            let data_dir = std::path::absolute(dir.join("data"))
                .map_err(|e| ExperimentError::io(dir.join("data"), e))?;
            let config = node_config(
                spec,
                NodeSetup {
                    id,
                    transport,
                    listen: loopback(peer),
                    client: loopback(client),
                    admin: loopback(admin),
                    admin_beyond_loopback: false,
                    token: token.clone(),
                    cluster_secret: cluster_secret.clone(),
                    peers: peers.clone(),
                    data_dir,
                    seed,
                },
            )?;
            let config_path = dir.join("node.toml");
            config
                .write_private(&config_path)
                .map_err(|e| ExperimentError::Backend(e.to_string()))?;
            nodes.insert(
                id,
                ProcNode {
                    config,
                    config_path,
                    log_path: dir.join("node.log"),
                    child: None,
                    client: None,
                    admin: None,
                },
            );
        }
        let timeout_ms = spec.workload.timeout_ms;
        let mut cluster = ProcessCluster {
            exe,
            nodes,
            token,
            startup_timeout: Duration::from_secs_f64(spec.local.startup_timeout_s),
            stop_timeout: Duration::from_secs_f64(spec.local.stop_timeout_s),
            client_options: client_options(timeout_ms),
            pids: Vec::new(),
        };
        // Joiners (`kvlab` nodes outside the initial members) are started by `join`.
        let absent = spec.absent_nodes();
        let ids: Vec<NodeId> = cluster
            .nodes
            .keys()
            .copied()
            .filter(|n| !absent.contains(n))
            .collect();
        for &id in &ids {
            cluster.spawn(id).map_err(ExperimentError::Backend)?;
        }
        for &id in &ids {
            cluster
                .wait_ready(rt, id)
                .map_err(ExperimentError::Backend)?;
        }
        Ok(cluster)
    }

    /// Every process id started so far, in order (restarts included).
    pub fn pids(&self) -> Vec<u32> {
        self.pids.clone()
    }

    fn node(&self, id: NodeId) -> Result<&ProcNode, String> {
        self.nodes
            .get(&id)
            .ok_or_else(|| format!("{id} is not a node of this cluster"))
    }

    fn node_mut(&mut self, id: NodeId) -> Result<&mut ProcNode, String> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| format!("{id} is not a node of this cluster"))
    }

    /// Starts the process of `id` (its log appended to `node.log`).
    fn spawn(&mut self, id: NodeId) -> Result<(), String> {
        let exe = self.exe.clone();
        let n = self.node_mut(id)?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&n.log_path)
            .map_err(|e| format!("{}: {e}", n.log_path.display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", n.log_path.display()))?;
        let child = Command::new(&exe)
            .arg("node")
            .arg("--config")
            .arg(&n.config_path)
            .arg("--exit-with-parent")
            .env(
                "RUST_LOG",
                std::env::var("KVLAB_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start {} for {id}: {e}", exe.display()))?;
        self.pids.push(child.id());
        let n = self.node_mut(id)?;
        n.child = Some(child);
        n.admin = None;
        Ok(())
    }

    /// Waits until `id` answers its admin endpoint (bounded by the startup timeout);
    /// fails at once, quoting its log, if the process exits.
    fn wait_ready(&mut self, rt: &tokio::runtime::Handle, id: NodeId) -> Result<(), String> {
        let deadline = Instant::now() + self.startup_timeout;
        let token = self.token.clone();
        let options = self.client_options;
        loop {
            let n = self.node_mut(id)?;
            if let Some(child) = n.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                n.child = None;
                return Err(format!(
                    "node {id} exited during startup ({status}); its log ends with:\n{}",
                    log_tail(&n.log_path)
                ));
            }
            let admin_addr = n.config.admin.addr;
            let client_addr = n.config.client;
            if let Some((admin, client)) = probe_ready(
                rt,
                admin_addr,
                client_addr,
                &token,
                options,
                n.client.clone(),
            )? {
                n.admin = Some(admin);
                n.client = Some(client);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {id} did not answer its admin endpoint {admin_addr} within {} s; its log ends with:\n{}",
                    self.startup_timeout.as_secs_f64(),
                    log_tail(&self.node(id)?.log_path)
                ));
            }
            std::thread::sleep(Duration::from_millis(READY_POLL_MS));
        }
    }

    /// Sends `req` to `id` from a task; the answer goes to `tx`. A node never reached is
    /// `Unavailable` (surely not applied); a request lost on the way is `Indeterminate`.
    pub(crate) fn submit(
        &self,
        rt: &tokio::runtime::Handle,
        id: NodeId,
        req: ClientRequest,
        tx: mpsc::Sender<ClientResponse>,
    ) {
        let client = self.nodes.get(&id).and_then(|n| n.client.clone());
        submit_to(rt, client, id, req, tx);
    }

    /// `kill -9` and reap: nothing is synced, the node's sockets close.
    pub(crate) fn crash(&mut self, id: NodeId) -> Result<(), String> {
        let n = self.node_mut(id)?;
        n.admin = None;
        if let Some(mut child) = n.child.take() {
            let _ = child.kill();
            child.wait().map_err(|e| format!("cannot reap {id}: {e}"))?;
        }
        Ok(())
    }

    /// Starts `id` again from its data directory (killing it first if it runs) and waits
    /// until it answers.
    pub(crate) fn restart(
        &mut self,
        rt: &tokio::runtime::Handle,
        id: NodeId,
    ) -> Result<(), String> {
        self.crash(id)?;
        self.spawn(id)?;
        self.wait_ready(rt, id)
    }

    /// Sends `signal` to the process of `id`.
    pub(crate) fn signal(&mut self, id: NodeId, signal: Signal) -> Result<(), String> {
        let n = self.node(id)?;
        let child = n
            .child
            .as_ref()
            .ok_or_else(|| format!("{id} is not running"))?;
        let pid = nix::unistd::Pid::from_raw(
            i32::try_from(child.id()).map_err(|_| format!("pid of {id} out of range"))?,
        );
        nix::sys::signal::kill(pid, signal).map_err(|e| format!("{signal} to {id}: {e}"))
    }

    /// Replaces the fault rules of `id` through its admin endpoint.
    pub(crate) fn set_rules(
        &mut self,
        rt: &tokio::runtime::Handle,
        id: NodeId,
        rules: Vec<FaultRule>,
    ) -> Result<(), String> {
        set_rules_via(rt, self.node(id)?.admin.clone(), id, rules)
    }

    /// The status of `id`, if it answers within `timeout`.
    pub(crate) fn status(
        &self,
        rt: &tokio::runtime::Handle,
        id: NodeId,
        timeout: Duration,
    ) -> Option<NodeStatus> {
        status_via(rt, self.nodes.get(&id)?.admin.clone()?, timeout)
    }

    /// The file the node of `id` logs its protocol events to.
    pub(crate) fn events_file(&self, id: NodeId) -> PathBuf {
        self.nodes
            .get(&id)
            .map(|n| n.config.data_dir.join(kvlab_server::EVENTS_FILE_NAME))
            .unwrap_or_default()
    }

    /// Stops every process gracefully (`SIGCONT`, then `SIGTERM`, bounded by the stop
    /// timeout), then kills what is left. Returns what did not go as planned.
    pub(crate) fn shutdown(mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (id, n) in &mut self.nodes {
            n.client = None;
            n.admin = None;
            if let Some(child) = &n.child
                && let Ok(raw) = i32::try_from(child.id())
            {
                let pid = nix::unistd::Pid::from_raw(raw);
                let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
                if let Err(e) = nix::sys::signal::kill(pid, Signal::SIGTERM) {
                    warnings.push(format!("SIGTERM to {id}: {e}"));
                }
            }
        }
        let deadline = Instant::now() + self.stop_timeout;
        for (id, n) in &mut self.nodes {
            let Some(mut child) = n.child.take() else {
                continue;
            };
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            warnings.push(format!("{id} exited with {status}"));
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(STOP_POLL_MS));
                    }
                    _ => {
                        warnings.push(format!(
                            "{id} did not stop within {} s of SIGTERM: killed",
                            self.stop_timeout.as_secs_f64()
                        ));
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        warnings
    }
}

impl Drop for ProcessCluster {
    /// Whatever still runs is killed and reaped: a failed or panicking run leaves no
    /// node behind.
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The end of a node's log, for errors.
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return format!("({} unreadable)", path.display());
    };
    let start = bytes.len().saturating_sub(LOG_TAIL_BYTES as usize);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// A token per run for the nodes' admin endpoints: nothing else on the machine can
/// drive them.
pub(crate) fn run_token(seed: u64) -> String {
    format!(
        "kvlab-{:016x}",
        kvlab_types::derive_seed(
            seed ^ u64::from(std::process::id()),
            "admin-token",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        )
    )
}

/// The client options of the runner's connections to real nodes, from the workload's
/// timeout: one attempt, so every recorded completion is this attempt's.
pub(crate) fn client_options(timeout_ms: u64) -> KvClientOptions {
    KvClientOptions {
        connect_timeout_ms: timeout_ms.clamp(1, 1_000),
        request_timeout_ms: timeout_ms.saturating_add(1_000),
        max_attempts: 1,
        retry_backoff_ms: 0,
    }
}

/// Where one node listens and what it shares with the others: the input of
/// [`node_config`].
#[derive(Clone, Debug)]
pub(crate) struct NodeSetup {
    pub(crate) id: NodeId,
    pub(crate) transport: TransportKind,
    pub(crate) listen: SocketAddr,
    pub(crate) client: SocketAddr,
    pub(crate) admin: SocketAddr,
    /// The admin endpoint listens beyond loopback (in a container, for the host).
    pub(crate) admin_beyond_loopback: bool,
    pub(crate) token: String,
    pub(crate) cluster_secret: kvlab_transport::ClusterSecret,
    pub(crate) peers: BTreeMap<String, SocketAddr>,
    pub(crate) data_dir: PathBuf,
    /// The run seed.
    pub(crate) seed: u64,
}

/// The node config of one node of a real run of `spec`, validated: the system and its
/// table, storage and server options from the spec, addresses from `setup`.
pub(crate) fn node_config(spec: &Spec, setup: NodeSetup) -> Result<NodeConfig, ExperimentError> {
    let system = system_config(spec)?;
    let id = setup.id;
    let mut config = NodeConfig {
        id: id.0,
        system: system.kind(),
        transport: setup.transport,
        listen: setup.listen,
        client: setup.client,
        admin: AdminConfig {
            addr: setup.admin,
            token: setup.token,
            allow_non_loopback: setup.admin_beyond_loopback,
        },
        cluster_secret: setup.cluster_secret,
        peers: setup.peers,
        data_dir: setup.data_dir,
        seed: setup.seed,
        storage: spec.local.storage.clone(),
        server: server_options(spec),
        udp: None,
        tarpc: None,
        raft: None,
        single: None,
        async_primary: None,
        kvlab: None,
        etcd_api: None,
    };
    match system {
        SystemConfig::Raft(c) => config.raft = Some(c),
        SystemConfig::Single(c) => config.single = Some(c),
        SystemConfig::AsyncPrimary(c) => config.async_primary = Some(c),
        SystemConfig::Kvlab(c) => config.kvlab = Some(*c),
    }
    config.validate().map_err(|e| {
        ExperimentError::Backend(format!("the node config of {id} is invalid: {e}"))
    })?;
    Ok(config)
}

/// A ready node's admin connection and client.
pub(crate) type Connections = (Arc<AdminClient>, Arc<KvClient>);

/// One readiness probe: connects to the admin endpoint and asks for the status
/// (bounded); once it answers, returns the admin connection and a client of the node
/// (`client` if the node had one: it reconnects by itself after a restart). `Ok(None)`:
/// not ready yet.
pub(crate) fn probe_ready(
    rt: &tokio::runtime::Handle,
    admin_addr: SocketAddr,
    client_addr: SocketAddr,
    token: &str,
    options: KvClientOptions,
    client: Option<Arc<KvClient>>,
) -> Result<Option<Connections>, String> {
    let probe = rt.block_on(async {
        let admin = AdminClient::connect(
            admin_addr,
            token.to_string(),
            Duration::from_millis(READY_PROBE_MS),
        )
        .await
        .ok()?;
        tokio::time::timeout(Duration::from_millis(READY_PROBE_MS * 5), admin.status())
            .await
            .ok()?
            .ok()?;
        Some(admin)
    });
    let Some(admin) = probe else {
        return Ok(None);
    };
    let client = match client {
        Some(c) => c,
        // One client per node for the whole run.
        None => Arc::new(
            rt.block_on(KvClient::connect(client_addr, options))
                .map_err(|e| format!("client of {client_addr}: {e}"))?,
        ),
    };
    Ok(Some((Arc::new(admin), client)))
}

/// Sends `req` through `client` from a task; the answer goes to `tx`. A node never
/// reached is `Unavailable` (surely not applied); a request lost on the way is
/// `Indeterminate`.
pub(crate) fn submit_to(
    rt: &tokio::runtime::Handle,
    client: Option<Arc<KvClient>>,
    id: NodeId,
    req: ClientRequest,
    tx: mpsc::Sender<ClientResponse>,
) {
    rt.spawn(async move {
        let rid = req.id;
        let resp = match client {
            None => ClientResponse {
                id: rid,
                result: Err(ClientError::Unavailable {
                    reason: format!("no client of {id}"),
                    hint: None,
                }),
            },
            Some(c) => match c.execute(req).await {
                Ok(r) => r,
                Err(e) if e.surely_not_sent() => ClientResponse {
                    id: rid,
                    result: Err(ClientError::Unavailable {
                        reason: e.to_string(),
                        hint: None,
                    }),
                },
                Err(e) => ClientResponse {
                    id: rid,
                    result: Err(ClientError::Indeterminate {
                        reason: e.to_string(),
                    }),
                },
            },
        };
        let _ = tx.send(resp).await;
    });
}

/// Replaces the fault rules of `id` through its admin connection (bounded).
pub(crate) fn set_rules_via(
    rt: &tokio::runtime::Handle,
    admin: Option<Arc<AdminClient>>,
    id: NodeId,
    rules: Vec<FaultRule>,
) -> Result<(), String> {
    let admin = admin.ok_or_else(|| format!("no admin connection to {id}"))?;
    rt.block_on(async {
        tokio::time::timeout(
            Duration::from_millis(SET_RULES_TIMEOUT_MS),
            admin.set_fault_rules(rules),
        )
        .await
    })
    .map_err(|_| format!("{id} did not take its fault rules within {SET_RULES_TIMEOUT_MS} ms"))?
    .map_err(|e| e.to_string())
}

/// The status through `admin`, if it answers within `timeout`.
pub(crate) fn status_via(
    rt: &tokio::runtime::Handle,
    admin: Arc<AdminClient>,
    timeout: Duration,
) -> Option<NodeStatus> {
    rt.block_on(async { tokio::time::timeout(timeout, admin.status()).await })
        .ok()?
        .ok()
}
