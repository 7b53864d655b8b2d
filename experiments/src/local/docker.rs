//! `backend = "docker"`: one container per node on a private bridge network, driven from
//! this machine through the `docker` command line — one more way to run the nodes of
//! [`super::LocalCluster`], which keeps the fault-rule bookkeeping, the event tails, the
//! view and the heal.
//!
//! What a run creates, all labelled `org.kvlab.run=<run id>` (and `org.kvlab.owner`, the
//! process that created it):
//!
//! - a bridge network `kvlab-<id>` with its own /24 subnet and no masquerading (the
//!   containers reach nothing beyond it);
//! - per node a named volume `kvlab-<id>-n<i>` mounted at `/data` (the write-ahead log,
//!   snapshots and `events.jsonl`) and a container `kvlab-<id>-n<i>` of the node image
//!   (`FROM scratch`, the static `kvlab-node`, running as uid 65532, no capabilities) at a
//!   fixed address of the subnet, its node config mounted read-only from the run
//!   directory (mode 0600, owned by the node's uid). Every node's config names every
//!   node's address, joiners' included.
//!
//! A joiner (`system = "kvlab"`, a node outside `kvlab.initial_members`,
//! [`Spec::absent_nodes`]) gets its volume and its container at start, created but not
//! started (`docker create`); the `join` fault starts it (`docker start`, as a restart),
//! at its own address, which its peers' configs already name.
//!
//! The runner reaches a node only through ports published on 127.0.0.1 (client and
//! admin), so this machine sends traffic to nothing but loopback and the containers it
//! created; peers talk to each other on the private network. The nodes' events are read
//! from the volumes' mount points on the host, so [`super::events::EventTail`] works
//! unchanged.
//!
//! The nemesis maps onto real container faults:
//!
//! - crash: `docker kill -s KILL`, restart: `docker start` of the same container, on the
//!   same volume and address (a new network namespace: the link cuts are set again);
//! - pause / resume: `docker pause` / `docker unpause` (the cgroup freezer);
//! - partitions and one-way cuts (`drop_to` / `drop_from` from [`super::transport_rules`]):
//!   iptables rules inside the container's network namespace, entered from the host with
//!   `nsenter -t <pid> -n iptables-restore` (the image has no shell and no iptables);
//! - loss and delay: the nodes' own fault rules through the admin endpoint, as for node
//!   processes (the kernel here has no netem).
//!
//! Everything a run created is removed by [`DockerCluster::shutdown`], on drop (a failed
//! or panicking run), and on ctrl-c or SIGTERM (a handler installed with the first
//! run). A run killed hard leaves its objects labelled with an owner that no longer
//! exists: the next docker run, or `kvlab docker clean`, removes them
//! ([`clean_orphans`]). Objects of runs whose owner still lives are never touched, so
//! two runs on one daemon do not disturb each other. Every `docker`, `nsenter` and
//! `iptables-restore` call is bounded in time ([`run_bounded`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use kvlab_server::{AdminClient, KvClient, KvClientOptions, NodeConfig, NodeStatus, TransportKind};
use kvlab_transport::FaultRule;
use kvlab_types::{ClientRequest, ClientResponse, NodeId};
use serde::Serialize;
use tokio::sync::mpsc;

use super::procs::{
    NodeSetup, READY_POLL_MS, client_options, node_config, pick_ports, probe_ready, run_token,
    set_rules_via, status_via, submit_to,
};
use super::{RunClock, TransportChoice};
use crate::error::ExperimentError;
use crate::spec::Spec;

/// The label every object of a run carries: `org.kvlab.run=<run id>`.
pub const LABEL_RUN: &str = "org.kvlab.run";
/// The label naming the process that created an object: `<boot id>/<pid>/<start time>`.
pub const LABEL_OWNER: &str = "org.kvlab.owner";
/// The label naming the node of a container or volume (`n1`, …).
pub const LABEL_NODE: &str = "org.kvlab.node";
/// Environment variable naming the node image (overrides `[docker] image`).
pub const IMAGE_ENV: &str = "KVLAB_DOCKER_IMAGE";
/// The peer port inside a container (udp or tcp, as the transport needs).
pub const PEER_PORT: u16 = 7000;
/// The client endpoint's port inside a container.
pub const CLIENT_PORT: u16 = 7100;
/// The admin endpoint's port inside a container.
pub const ADMIN_PORT: u16 = 7200;
/// Where the node config is mounted (read-only) in a container.
pub const CONFIG_IN_CONTAINER: &str = "/etc/kvlab/node.toml";
/// The data directory in a container: a named volume.
pub const DATA_IN_CONTAINER: &str = "/data";
/// The user the image's node runs as; the node config is handed to it.
pub const NODE_UID: u32 = 65532;
/// Subnets tried for a run's network before giving up (each a /24 in 172.29.0.0/16,
/// starting at one drawn from the run id; a subnet another network holds is skipped).
pub const SUBNET_ATTEMPTS: u32 = 24;
/// The first host address of a node in its /24: node `i` is at `.<NODE_HOST_BASE + i>`.
pub const NODE_HOST_BASE: u8 = 10;
/// Most bytes kept of what one command prints on each of stdout and stderr.
pub const MAX_COMMAND_OUTPUT_BYTES: u64 = 4 << 20;
/// How often a bounded command is checked for having exited.
pub const COMMAND_POLL_MS: u64 = 5;

/// Runs `program args` with `stdin` (if any), bounded by `timeout`: its stdout on exit
/// status 0; otherwise, or if it takes longer (then it is killed), an error quoting the
/// command and its stderr.
pub fn run_bounded(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<String, String> {
    run_capture(program, args, stdin, timeout).map(|(out, _)| out)
}

/// [`run_bounded`], returning stdout and stderr.
fn run_capture(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<(String, String), String> {
    let shown = || {
        let mut s = program.to_string();
        for a in args.iter().take(8) {
            s.push(' ');
            s.push_str(a);
        }
        if args.len() > 8 {
            s.push_str(" …");
        }
        s
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", shown()))?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(MAX_COMMAND_OUTPUT_BYTES).read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(bytes);
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(COMMAND_POLL_MS));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    match status {
        Some(s) if s.success() => Ok((stdout, stderr)),
        Some(s) => Err(format!("`{}` failed ({s}): {}", shown(), stderr.trim())),
        None => Err(format!(
            "`{}` did not finish within {} s: killed",
            shown(),
            timeout.as_secs_f64()
        )),
    }
}

/// `docker args…`, bounded by `timeout`.
pub fn docker(args: &[&str], timeout: Duration) -> Result<String, String> {
    run_bounded("docker", args, None, timeout)
}

/// The Docker daemon's version, or why there is none to talk to.
pub fn daemon_version(timeout: Duration) -> Result<String, String> {
    docker(&["version", "--format", "{{.Server.Version}}"], timeout).map(|s| s.trim().to_string())
}

/// Whether `image` exists in the daemon.
pub fn image_exists(image: &str, timeout: Duration) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", image], timeout).is_ok()
}

/// Whether `program` is an executable in `PATH`.
fn in_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(program);
            p.is_file()
                && std::fs::metadata(&p)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
                    .unwrap_or(false)
        })
    })
}

// ---------------------------------------------------------------------------------------
// Owners, runs and cleanup

/// `<boot id>/<pid>/<start time>` of the process `pid` (its start time in clock ticks
/// since boot, from `/proc/<pid>/stat`), or `None` if it does not exist.
fn owner_of(pid: u32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count fields after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{}/{pid}/{start}", boot.trim()))
}

/// The owner label of this process.
pub fn this_owner() -> String {
    owner_of(std::process::id()).unwrap_or_else(|| format!("unknown/{}/0", std::process::id()))
}

/// Whether the process an owner label names still runs (same boot, same pid, same start
/// time: a reused pid is a different process).
pub fn owner_alive(owner: &str) -> bool {
    let Some(pid) = owner.split('/').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    owner_of(pid).as_deref() == Some(owner)
}

/// The runs of this process whose objects exist now: the ctrl-c handler removes them.
static LIVE_RUNS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static SIGNAL_HANDLER: Once = Once::new();

fn live_runs() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    LIVE_RUNS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Installs (once per process) a handler of ctrl-c and SIGTERM that removes every
/// docker object of the live runs and exits (130 or 143). The signals are registered
/// before this returns, so nothing created afterwards escapes it.
fn install_signal_handler() {
    SIGNAL_HANDLER.call_once(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            eprintln!("warning: no ctrl-c handler for the docker backend (no runtime)");
            return;
        };
        use tokio::signal::unix::{SignalKind, signal};
        let streams = {
            let _guard = rt.enter();
            (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            )
        };
        let (Ok(mut int), Ok(mut term)) = streams else {
            eprintln!("warning: no ctrl-c handler for the docker backend");
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("kvlab-docker-signals".into())
            .spawn(move || {
                let code = rt.block_on(async {
                    tokio::select! {
                        _ = int.recv() => 130,
                        _ = term.recv() => 143,
                    }
                });
                let runs: Vec<String> = live_runs().iter().cloned().collect();
                if !runs.is_empty() {
                    eprintln!(
                        "\ninterrupted: removing the containers, network and volumes of docker run {}",
                        runs.join(", ")
                    );
                }
                for id in runs {
                    for w in remove_run_objects(&id, Duration::from_secs(30)) {
                        eprintln!("warning: {w}");
                    }
                }
                std::process::exit(code);
            });
        if let Err(e) = spawned {
            eprintln!("warning: no ctrl-c handler for the docker backend: {e}");
        }
    });
}

/// Ids of the objects of one kind (`container`, `network`, `volume`) matching `filter`.
fn list_ids(kind: &str, filter: &str, timeout: Duration) -> Result<Vec<String>, String> {
    let args: Vec<&str> = match kind {
        "container" => vec!["ps", "-aq", "--no-trunc", "--filter", filter],
        "network" => vec!["network", "ls", "-q", "--no-trunc", "--filter", filter],
        _ => vec!["volume", "ls", "-q", "--filter", filter],
    };
    Ok(docker(&args, timeout)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Removes objects by id: containers (with their anonymous volumes) first, then networks
/// and volumes. Returns what went wrong.
fn remove_ids(kind: &str, ids: &[String], timeout: Duration) -> Vec<String> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args: Vec<&str> = match kind {
        "container" => vec!["rm", "-f", "-v"],
        "network" => vec!["network", "rm"],
        _ => vec!["volume", "rm", "-f"],
    };
    args.extend(ids.iter().map(String::as_str));
    match docker(&args, timeout) {
        Ok(_) => Vec::new(),
        Err(e) => vec![e],
    }
}

/// Removes every container, network and volume labelled with run `id`; returns what
/// went wrong (empty when everything is gone).
pub fn remove_run_objects(id: &str, timeout: Duration) -> Vec<String> {
    let filter = format!("label={LABEL_RUN}={id}");
    let mut warnings = Vec::new();
    for kind in ["container", "network", "volume"] {
        match list_ids(kind, &filter, timeout) {
            Ok(ids) => warnings.extend(remove_ids(kind, &ids, timeout)),
            Err(e) => warnings.push(e),
        }
    }
    warnings
}

/// What [`clean_orphans`] found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CleanReport {
    /// Removed objects, as `kind name (run id)`.
    pub removed: Vec<String>,
    /// Labelled objects left alone because the run that owns them still runs.
    pub kept_live: Vec<String>,
    /// What went wrong.
    pub warnings: Vec<String>,
}

/// Removes the kvlab objects (containers, networks, volumes labelled `org.kvlab.run`)
/// whose owner process is gone — a run killed hard — or, with `all`, every kvlab object
/// on the daemon, live runs' included.
pub fn clean_orphans(all: bool, timeout: Duration) -> CleanReport {
    let mut report = CleanReport::default();
    for kind in ["container", "network", "volume"] {
        let format = format!(
            "{{{{.{}}}}}\t{{{{.Label \"{LABEL_RUN}\"}}}}\t{{{{.Label \"{LABEL_OWNER}\"}}}}",
            if kind == "container" { "Names" } else { "Name" }
        );
        let args: Vec<&str> = match kind {
            "container" => vec![
                "ps",
                "-a",
                "--filter",
                "label=org.kvlab.run",
                "--format",
                &format,
            ],
            "network" => vec![
                "network",
                "ls",
                "--filter",
                "label=org.kvlab.run",
                "--format",
                &format,
            ],
            _ => vec![
                "volume",
                "ls",
                "--filter",
                "label=org.kvlab.run",
                "--format",
                &format,
            ],
        };
        let listed = match docker(&args, timeout) {
            Ok(s) => s,
            Err(e) => {
                report.warnings.push(e);
                continue;
            }
        };
        let mut doomed = Vec::new();
        for line in listed.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.split('\t');
            let name = parts.next().unwrap_or("").trim().to_string();
            let run = parts.next().unwrap_or("").trim().to_string();
            let owner = parts.next().unwrap_or("").trim().to_string();
            let shown = format!("{kind} {name} (run {run})");
            if all || !owner_alive(&owner) {
                doomed.push(name);
                report.removed.push(shown);
            } else {
                report.kept_live.push(shown);
            }
        }
        report.warnings.extend(remove_ids(kind, &doomed, timeout));
    }
    report
}

/// The docker objects of one run: a label, a name prefix, and removal of whatever
/// remains when it is dropped. Registered with the ctrl-c handler while it lives.
#[derive(Debug)]
pub struct DockerRun {
    id: String,
    owner: String,
    timeout: Duration,
    removed: bool,
}

impl DockerRun {
    /// A new run id (unique on this machine: pid and wall clock), registered with the
    /// ctrl-c handler (installed now if it is not yet).
    pub fn new(timeout: Duration) -> DockerRun {
        install_signal_handler();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let id = format!(
            "{:08x}",
            kvlab_types::derive_seed(nanos, "docker-run", u64::from(std::process::id()))
                & 0xffff_ffff
        );
        live_runs().insert(id.clone());
        DockerRun {
            id,
            owner: this_owner(),
            timeout,
            removed: false,
        }
    }

    /// The run id (the value of `org.kvlab.run`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name of the run's object `suffix` (`kvlab-<id>` or `kvlab-<id>-<suffix>`).
    fn name(&self, suffix: &str) -> String {
        if suffix.is_empty() {
            format!("kvlab-{}", self.id)
        } else {
            format!("kvlab-{}-{suffix}", self.id)
        }
    }

    /// `--label` arguments every object of the run carries.
    fn labels(&self) -> Vec<String> {
        vec![
            "--label".into(),
            format!("{LABEL_RUN}={}", self.id),
            "--label".into(),
            format!("{LABEL_OWNER}={}", self.owner),
        ]
    }

    /// Removes everything of the run; returns what went wrong.
    pub fn remove_all(&mut self) -> Vec<String> {
        let warnings = remove_run_objects(&self.id, self.timeout);
        if warnings.is_empty() {
            self.removed = true;
            live_runs().remove(&self.id);
        }
        warnings
    }
}

impl Drop for DockerRun {
    fn drop(&mut self) {
        if !self.removed {
            for w in self.remove_all() {
                eprintln!("warning: docker cleanup of run {}: {w}", self.id);
            }
            live_runs().remove(&self.id);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The cluster

/// One node's container and everything needed to reach, fault and restart it.
#[derive(Debug)]
struct DockerNode {
    config: NodeConfig,
    container: String,
    ip: Ipv4Addr,
    host_client: SocketAddr,
    host_admin: SocketAddr,
    dir: PathBuf,
    events_path: PathBuf,
    /// The pid (on the host) of the node in the running container: its network
    /// namespace is where the link cuts go. `None` while it is down.
    pid: Option<u32>,
    /// The link cuts set in the current network namespace.
    cuts: Vec<FaultRule>,
    /// Whether the container was ever started (a joiner's is only created until it
    /// joins).
    ever_started: bool,
    /// The run's clock when the container was first started (`docker run`), if it was
    /// started with the cluster: the node's own event times count from about then.
    booted_ns: Option<u64>,
    client: Option<Arc<KvClient>>,
    admin: Option<Arc<AdminClient>>,
}

/// One setting of a node's link cuts, for `nodes.json`.
#[derive(Clone, Debug, Serialize)]
pub struct CutRecord {
    /// Milliseconds since the cluster started.
    pub at_ms: u64,
    /// The node whose network namespace got them.
    pub node: String,
    /// The iptables rules now in force there (empty: none).
    pub rules: Vec<String>,
}

/// Every container of a docker run. See the [module docs](self).
#[derive(Debug)]
pub struct DockerCluster {
    run: DockerRun,
    image: String,
    network: String,
    subnet: String,
    nodes: BTreeMap<NodeId, DockerNode>,
    token: String,
    startup_timeout: Duration,
    stop_timeout: Duration,
    command_timeout: Duration,
    client_options: KvClientOptions,
    started: Instant,
    starts: u64,
    cut_log: Vec<CutRecord>,
}

/// The /24 subnet number `attempt` for run `id`.
fn subnet_for(id: &str, attempt: u32) -> (String, [u8; 3]) {
    let h = kvlab_types::derive_seed(u64::from_str_radix(id, 16).unwrap_or(0), "subnet", 0);
    let third = ((h % 200) as u32 + attempt) % 200 + 20;
    let prefix = [172, 29, third as u8];
    (
        format!("{}.{}.{}.0/24", prefix[0], prefix[1], prefix[2]),
        prefix,
    )
}

/// Checks what a Docker run needs before it creates anything: a daemon, the node image
/// (returned: `$KVLAB_NODE_IMAGE` or `docker.image`) and, for faults, `nsenter` and
/// `iptables-restore`.
fn check_prerequisites(spec: &Spec, command_timeout: Duration) -> Result<String, ExperimentError> {
    daemon_version(command_timeout)
        .map_err(|e| ExperimentError::Backend(format!("no Docker daemon to talk to: {e}")))?;
    let image = std::env::var(IMAGE_ENV).unwrap_or_else(|_| spec.docker.image.clone());
    if !image_exists(&image, command_timeout) {
        return Err(ExperimentError::Backend(format!(
            "the node image {image} is not there: build it with kind-cluster/build-image.sh"
        )));
    }
    if !spec.nemesis.faults.is_empty() {
        for tool in ["nsenter", "iptables-restore"] {
            if !in_path(tool) {
                return Err(ExperimentError::Backend(format!(
                    "`{tool}` is not installed: the docker backend cuts links with iptables inside the containers (apt-get install iptables util-linux)"
                )));
            }
        }
    }
    Ok(image)
}

/// Creates the run's bridge network on a free /24 of 172.29.0.0/16; returns its name,
/// its CIDR and its first three octets.
fn create_network(
    run: &DockerRun,
    command_timeout: Duration,
) -> Result<(String, String, [u8; 3]), ExperimentError> {
    let network = run.name("");
    let mut subnet = None;
    for attempt in 0..SUBNET_ATTEMPTS {
        let (cidr, prefix) = subnet_for(run.id(), attempt);
        let gateway = format!("{}.{}.{}.1", prefix[0], prefix[1], prefix[2]);
        let mut args: Vec<String> = vec![
            "network".into(),
            "create".into(),
            "--driver".into(),
            "bridge".into(),
            "--subnet".into(),
            cidr.clone(),
            "--gateway".into(),
            gateway,
            "-o".into(),
            "com.docker.network.bridge.enable_ip_masquerade=false".into(),
        ];
        args.extend(run.labels());
        args.push(network.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match docker(&args, command_timeout) {
            Ok(_) => {
                subnet = Some((cidr, prefix));
                break;
            }
            Err(e) if e.contains("overlap") => continue,
            Err(e) => {
                return Err(ExperimentError::Backend(format!(
                    "cannot create the network: {e}"
                )));
            }
        }
    }
    let Some((subnet, prefix)) = subnet else {
        return Err(ExperimentError::Backend(format!(
            "no free /24 in 172.29.0.0/16 for the network after {SUBNET_ATTEMPTS} attempts"
        )));
    };
    Ok((network, subnet, prefix))
}

impl DockerCluster {
    /// Checks that the daemon, the image and (when the nemesis cuts links) `nsenter` and
    /// `iptables-restore` are there; removes what runs killed hard left behind; creates
    /// the network, one volume and one container per node (a joiner's created, not
    /// started); waits (bounded by `local.startup_timeout_s`) until each started one
    /// answers its admin endpoint.
    pub fn start(
        rt: &tokio::runtime::Handle,
        spec: &Spec,
        seed: u64,
        transport: TransportChoice,
        nodes_dir: &Path,
        clock: &RunClock,
    ) -> Result<DockerCluster, ExperimentError> {
        let backend = |m: String| ExperimentError::Backend(m);
        let command_timeout = Duration::from_secs_f64(spec.docker.command_timeout_s);
        let transport = match transport {
            TransportChoice::Udp => TransportKind::Udp,
            TransportChoice::Tarpc => TransportKind::Tarpc,
            TransportChoice::Mem => {
                return Err(backend(
                    "the mem transport runs in one process, not in containers".into(),
                ));
            }
        };
        let image = check_prerequisites(spec, command_timeout)?;
        let orphans = clean_orphans(false, command_timeout);
        if !orphans.removed.is_empty() {
            eprintln!(
                "removed {} docker object(s) left by runs that were killed: {}",
                orphans.removed.len(),
                orphans.removed.join(", ")
            );
        }
        let run = DockerRun::new(command_timeout);
        let (network, subnet, prefix) = create_network(&run, command_timeout)?;
        let ip_of = |id: NodeId| {
            Ipv4Addr::new(
                prefix[0],
                prefix[1],
                prefix[2],
                NODE_HOST_BASE.saturating_add(id.0 as u8),
            )
        };
        let at = |ip: Ipv4Addr, port: u16| SocketAddr::V4(SocketAddrV4::new(ip, port));
        let ids: Vec<NodeId> = (1..=spec.nodes).map(NodeId).collect();
        let peers: BTreeMap<String, SocketAddr> = ids
            .iter()
            .map(|&id| (id.0.to_string(), at(ip_of(id), PEER_PORT)))
            .collect();
        // Joiners (`kvlab` nodes outside the initial members) are started by `join`.
        let absent: BTreeSet<NodeId> = spec.absent_nodes().into_iter().collect();
        let host_ports = pick_ports(ids.len(), false)?;
        let token = run_token(seed);
        let cluster_secret = kvlab_server::generate_cluster_secret(seed);
        let mut cluster = DockerCluster {
            run,
            image,
            network,
            subnet,
            nodes: BTreeMap::new(),
            token: token.clone(),
            startup_timeout: Duration::from_secs_f64(spec.local.startup_timeout_s),
            stop_timeout: Duration::from_secs_f64(spec.local.stop_timeout_s),
            command_timeout,
            client_options: client_options(spec.workload.timeout_ms),
            started: Instant::now(),
            starts: 0,
            cut_log: Vec::new(),
        };
        for (&id, &(_, client_port, admin_port)) in ids.iter().zip(&host_ports) {
            let ip = ip_of(id);
            let config = node_config(
                spec,
                NodeSetup {
                    id,
                    transport,
                    listen: at(ip, PEER_PORT),
                    client: at(ip, CLIENT_PORT),
                    admin: at(ip, ADMIN_PORT),
                    admin_beyond_loopback: true,
                    token: token.clone(),
                    cluster_secret: cluster_secret.clone(),
                    peers: peers.clone(),
                    data_dir: PathBuf::from(DATA_IN_CONTAINER),
                    seed,
                },
            )?;
            let host_client = SocketAddr::from(([127, 0, 0, 1], client_port));
            let host_admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
            let start_now = !absent.contains(&id);
            cluster.create_node(
                spec,
                id,
                ip,
                config,
                (host_client, host_admin),
                nodes_dir,
                start_now.then_some(clock),
            )?;
        }
        for &id in ids.iter().filter(|id| !absent.contains(id)) {
            cluster.wait_ready(rt, id).map_err(backend)?;
        }
        Ok(cluster)
    }

    /// The run id (the value of the `org.kvlab.run` label of everything it created).
    pub fn run_id(&self) -> &str {
        self.run.id()
    }

    /// Writes the node's config (0600, owned by the node's uid), creates its volume and
    /// its container, and starts the container if `start_now` holds the run's clock (a
    /// joiner's waits for [`DockerCluster::restart`]). `host` is the node's (client,
    /// admin) endpoint as published on 127.0.0.1.
    #[allow(clippy::too_many_arguments)]
    fn create_node(
        &mut self,
        spec: &Spec,
        id: NodeId,
        ip: Ipv4Addr,
        config: NodeConfig,
        host: (SocketAddr, SocketAddr),
        nodes_dir: &Path,
        start_now: Option<&RunClock>,
    ) -> Result<(), ExperimentError> {
        let (host_client, host_admin) = host;
        let backend = |m: String| ExperimentError::Backend(m);
        let t = self.command_timeout;
        let name = format!("n{}", id.0);
        let dir = std::path::absolute(nodes_dir.join(&name))
            .map_err(|e| ExperimentError::io(nodes_dir.join(&name), e))?;
        std::fs::create_dir_all(&dir).map_err(|e| ExperimentError::io(&dir, e))?;
        let config_path = dir.join("node.toml");
        config
            .write_private(&config_path)
            .map_err(|e| backend(e.to_string()))?;
        std::os::unix::fs::chown(&config_path, Some(NODE_UID), Some(NODE_UID)).map_err(|e| {
            backend(format!(
                "cannot hand {} to the node's uid {NODE_UID} (the docker backend writes private node configs as root): {e}",
                config_path.display()
            ))
        })?;
        let volume = self.run.name(&name);
        let mut args: Vec<String> = vec!["volume".into(), "create".into()];
        args.extend(self.run.labels());
        args.extend([
            "--label".into(),
            format!("{LABEL_NODE}={name}"),
            volume.clone(),
        ]);
        let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args_ref, t)
            .map_err(|e| backend(format!("cannot create the volume of {id}: {e}")))?;
        let mountpoint = docker(
            &["volume", "inspect", "--format", "{{.Mountpoint}}", &volume],
            t,
        )
        .map_err(|e| backend(format!("cannot find the volume of {id}: {e}")))?;
        let events_path = PathBuf::from(mountpoint.trim()).join(kvlab_server::EVENTS_FILE_NAME);
        let container = self.run.name(&name);
        // `docker run --detach` creates and starts; `docker create` only creates.
        let mut args: Vec<String> = if start_now.is_some() {
            vec!["run".into(), "--detach".into()]
        } else {
            vec!["create".into()]
        };
        args.extend([
            "--name".into(),
            container.clone(),
            "--hostname".into(),
            name.clone(),
            "--network".into(),
            self.network.clone(),
            "--ip".into(),
            ip.to_string(),
            "--volume".into(),
            format!("{volume}:{DATA_IN_CONTAINER}"),
            "--volume".into(),
            format!("{}:{CONFIG_IN_CONTAINER}:ro", config_path.display()),
            "--publish".into(),
            format!("{host_client}:{CLIENT_PORT}/tcp"),
            "--publish".into(),
            format!("{host_admin}:{ADMIN_PORT}/tcp"),
            "--cap-drop".into(),
            "ALL".into(),
            "--security-opt".into(),
            "no-new-privileges".into(),
            "--log-opt".into(),
            "max-size=20m".into(),
            "--env".into(),
            format!(
                "RUST_LOG={}",
                std::env::var("KVLAB_NODE_LOG").unwrap_or_else(|_| "info".into())
            ),
        ]);
        if spec.docker.memory_mb > 0 {
            args.extend(["--memory".into(), format!("{}m", spec.docker.memory_mb)]);
        }
        args.extend(self.run.labels());
        args.extend([
            "--label".into(),
            format!("{LABEL_NODE}={name}"),
            self.image.clone(),
            "--config".into(),
            CONFIG_IN_CONTAINER.into(),
        ]);
        let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
        // Containers start one after the other, each taking a good part of a second:
        // each node's events are timed from its own start, not the cluster's.
        let booted_ns = start_now.map(|clock| clock.now().as_nanos());
        docker(&args_ref, t).map_err(|e| {
            let what = if start_now.is_some() {
                "start"
            } else {
                "create"
            };
            backend(format!("cannot {what} the container of {id}: {e}"))
        })?;
        if start_now.is_some() {
            self.starts += 1;
        }
        self.nodes.insert(
            id,
            DockerNode {
                config,
                container,
                ip,
                host_client,
                host_admin,
                dir,
                events_path,
                pid: None,
                cuts: Vec::new(),
                ever_started: start_now.is_some(),
                booted_ns,
                client: None,
                admin: None,
            },
        );
        Ok(())
    }

    fn node(&self, id: NodeId) -> Result<&DockerNode, String> {
        self.nodes
            .get(&id)
            .ok_or_else(|| format!("{id} is not a node of this cluster"))
    }

    fn node_mut(&mut self, id: NodeId) -> Result<&mut DockerNode, String> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| format!("{id} is not a node of this cluster"))
    }

    /// `running`, `paused`, `exited`, … and the host pid of the container of `id`.
    fn state(&self, id: NodeId) -> Result<(String, u32), String> {
        let c = &self.node(id)?.container;
        let out = docker(
            &["inspect", "--format", "{{.State.Status}} {{.State.Pid}}", c],
            self.command_timeout,
        )?;
        let mut parts = out.split_whitespace();
        let status = parts.next().unwrap_or("unknown").to_string();
        let pid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Ok((status, pid))
    }

    /// The container's last log lines, for errors.
    fn log_tail(&self, id: NodeId) -> String {
        let Ok(n) = self.node(id) else {
            return String::new();
        };
        match run_bounded_both(
            &["logs", "--tail", "30", &n.container],
            self.command_timeout,
        ) {
            Ok(s) => s,
            Err(e) => format!("(no log: {e})"),
        }
    }

    /// Waits until `id` answers its admin endpoint (bounded by the startup timeout);
    /// fails at once, quoting its log, if the container stopped.
    fn wait_ready(&mut self, rt: &tokio::runtime::Handle, id: NodeId) -> Result<(), String> {
        let deadline = Instant::now() + self.startup_timeout;
        let token = self.token.clone();
        let options = self.client_options;
        let mut checked = Instant::now();
        loop {
            let (admin_addr, client_addr, client) = {
                let n = self.node(id)?;
                (n.host_admin, n.host_client, n.client.clone())
            };
            if let Some((admin, client)) =
                probe_ready(rt, admin_addr, client_addr, &token, options, client)?
            {
                let (_, pid) = self.state(id)?;
                let n = self.node_mut(id)?;
                n.admin = Some(admin);
                n.client = Some(client);
                n.pid = (pid > 0).then_some(pid);
                return Ok(());
            }
            if checked.elapsed() >= Duration::from_millis(500) {
                checked = Instant::now();
                let (status, _) = self.state(id)?;
                if status != "running" {
                    return Err(format!(
                        "the container of {id} is {status} during startup; its log ends with:\n{}",
                        self.log_tail(id)
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{id} did not answer its admin endpoint {admin_addr} within {} s; its log ends with:\n{}",
                    self.startup_timeout.as_secs_f64(),
                    self.log_tail(id)
                ));
            }
            std::thread::sleep(Duration::from_millis(READY_POLL_MS));
        }
    }

    /// Sends `req` to `id` from a task; the answer goes to `tx`.
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

    /// `docker kill -s KILL`, then waits (bounded) until the container has stopped. A
    /// joiner's container never started has nothing to kill.
    pub(crate) fn crash(&mut self, id: NodeId) -> Result<(), String> {
        let t = self.command_timeout;
        let n = self.node_mut(id)?;
        n.admin = None;
        n.pid = None;
        // The network namespace dies with the container: so do its link cuts.
        n.cuts.clear();
        if !n.ever_started {
            return Ok(());
        }
        let c = n.container.clone();
        if let Err(e) = docker(&["kill", "--signal", "KILL", &c], t)
            && !e.contains("is not running")
        {
            return Err(e);
        }
        docker(&["wait", &c], t).map(|_| ())
    }

    /// Starts the container of `id` again (killing it first if it runs), on the same
    /// volume and address, and waits until it answers. A joiner's container starts here
    /// for the first time.
    pub(crate) fn restart(
        &mut self,
        rt: &tokio::runtime::Handle,
        id: NodeId,
    ) -> Result<(), String> {
        self.crash(id)?;
        let c = self.node(id)?.container.clone();
        docker(&["start", &c], self.command_timeout)?;
        self.node_mut(id)?.ever_started = true;
        self.starts += 1;
        self.wait_ready(rt, id)
    }

    /// `docker pause`: every process of the container frozen.
    pub(crate) fn pause(&mut self, id: NodeId) -> Result<(), String> {
        let c = self.node(id)?.container.clone();
        docker(&["pause", &c], self.command_timeout).map(|_| ())
    }

    /// `docker unpause`.
    pub(crate) fn resume(&mut self, id: NodeId) -> Result<(), String> {
        let c = self.node(id)?.container.clone();
        docker(&["unpause", &c], self.command_timeout).map(|_| ())
    }

    /// Replaces the fault rules of `id`: link cuts become iptables rules in its network
    /// namespace (set only when they changed), the rest (loss, delay) goes to its admin
    /// endpoint.
    pub(crate) fn set_rules(
        &mut self,
        rt: &tokio::runtime::Handle,
        id: NodeId,
        rules: Vec<FaultRule>,
    ) -> Result<(), String> {
        let (cuts, others): (Vec<FaultRule>, Vec<FaultRule>) = rules
            .into_iter()
            .partition(|r| matches!(r, FaultRule::DropTo { .. } | FaultRule::DropFrom { .. }));
        if self.node(id)?.cuts != cuts {
            self.apply_cuts(id, &cuts)?;
        }
        set_rules_via(rt, self.node(id)?.admin.clone(), id, others)
    }

    /// The `iptables-restore` input that makes `cuts` the whole filter table of a
    /// container's network namespace.
    fn iptables_rules(&self, cuts: &[FaultRule]) -> Result<Vec<String>, String> {
        let ip = |peer: NodeId| self.node(peer).map(|n| n.ip);
        cuts.iter()
            .map(|r| match r {
                FaultRule::DropTo { peer } => Ok(format!("-A OUTPUT -d {}/32 -j DROP", ip(*peer)?)),
                FaultRule::DropFrom { peer } => {
                    Ok(format!("-A INPUT -s {}/32 -j DROP", ip(*peer)?))
                }
                other => Err(format!("{other} is not a link cut")),
            })
            .collect()
    }

    /// Sets the link cuts of `id` in its network namespace, atomically replacing the
    /// filter table there (the container's own namespace: nothing else is in it).
    fn apply_cuts(&mut self, id: NodeId, cuts: &[FaultRule]) -> Result<(), String> {
        let pid = match self.node(id)?.pid {
            Some(p) => p,
            None => {
                let (status, pid) = self.state(id)?;
                if status != "running" || pid == 0 {
                    return Err(format!(
                        "the container of {id} is {status}: no network namespace"
                    ));
                }
                pid
            }
        };
        let rules = self.iptables_rules(cuts)?;
        let mut script = String::from(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
        );
        for r in &rules {
            script.push_str(r);
            script.push('\n');
        }
        script.push_str("COMMIT\n");
        let target = pid.to_string();
        run_bounded(
            "nsenter",
            &["--target", &target, "--net", "iptables-restore"],
            Some(script.as_bytes()),
            self.command_timeout,
        )
        .map_err(|e| format!("link cuts of {id}: {e}"))?;
        let at_ms = self.started.elapsed().as_millis() as u64;
        self.cut_log.push(CutRecord {
            at_ms,
            node: id.to_string(),
            rules,
        });
        let n = self.node_mut(id)?;
        n.pid = Some(pid);
        n.cuts = cuts.to_vec();
        Ok(())
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

    /// The run's clock when the container of `id` was started with the cluster (its
    /// first `docker run`), if it was.
    pub(crate) fn booted_ns(&self, id: NodeId) -> Option<u64> {
        self.nodes.get(&id).and_then(|n| n.booted_ns)
    }

    /// The node's `events.jsonl`, in its volume as the host sees it.
    pub(crate) fn events_file(&self, id: NodeId) -> PathBuf {
        self.nodes
            .get(&id)
            .map(|n| n.events_path.clone())
            .unwrap_or_default()
    }

    /// What `nodes.json` records of the run: its id, network, containers and every
    /// setting of link cuts.
    pub(crate) fn describe(&self) -> serde_json::Value {
        let containers: BTreeMap<String, serde_json::Value> = self
            .nodes
            .iter()
            .map(|(id, n)| {
                (
                    id.to_string(),
                    serde_json::json!({
                        "container": n.container,
                        "ip": n.ip.to_string(),
                        "client": n.host_client.to_string(),
                        "admin": n.host_admin.to_string(),
                        "peer": n.config.listen.to_string(),
                        "started": n.ever_started,
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "run_id": self.run.id(),
            "image": self.image,
            "network": self.network,
            "subnet": self.subnet,
            "containers": containers,
            "container_starts": self.starts,
            "link_cuts": self.cut_log,
        })
    }

    /// Stops every container gracefully (`docker stop`: SIGTERM, then SIGKILL after the
    /// stop timeout), keeps each node's log and events in the run directory
    /// (`nodes/n<i>/node.log`, `events.jsonl`), and removes every object of the run.
    /// Returns what did not go as planned.
    pub(crate) fn shutdown(mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        let t = self.command_timeout;
        let names: Vec<String> = self.nodes.values().map(|n| n.container.clone()).collect();
        for n in self.nodes.values_mut() {
            n.client = None;
            n.admin = None;
        }
        let mut states = BTreeMap::new();
        for (&id, n) in &self.nodes {
            if let Ok(s) = docker(
                &["inspect", "--format", "{{.State.Status}}", &n.container],
                t,
            ) {
                states.insert(id, s.trim().to_string());
            }
        }
        for (id, state) in &states {
            if state == "paused"
                && let Err(e) = self.resume(*id)
            {
                warnings.push(format!("unpause {id}: {e}"));
            }
        }
        let stop_s = self.stop_timeout.as_secs().max(1).to_string();
        let mut args = vec!["stop", "--time", &stop_s];
        args.extend(names.iter().map(String::as_str));
        if let Err(e) = docker(&args, t + self.stop_timeout) {
            warnings.push(e);
        }
        for (&id, n) in &self.nodes {
            let was_running = states
                .get(&id)
                .is_some_and(|s| s == "running" || s == "paused");
            if was_running
                && let Ok(code) = docker(
                    &["inspect", "--format", "{{.State.ExitCode}}", &n.container],
                    t,
                )
                && code.trim() != "0"
            {
                warnings.push(format!(
                    "{id} exited with status {} on docker stop (137: killed after {} s)",
                    code.trim(),
                    self.stop_timeout.as_secs_f64()
                ));
            }
            match run_bounded_both(&["logs", &n.container], t) {
                Ok(log) => {
                    let path = n.dir.join("node.log");
                    if let Err(e) = std::fs::write(&path, log) {
                        warnings.push(format!("{}: {e}", path.display()));
                    }
                }
                Err(e) => warnings.push(format!("logs of {id}: {e}")),
            }
            if n.events_path.is_file() {
                let to = n.dir.join(kvlab_server::EVENTS_FILE_NAME);
                if let Err(e) = std::fs::copy(&n.events_path, &to) {
                    warnings.push(format!("{}: {e}", to.display()));
                }
            }
        }
        warnings.extend(self.run.remove_all());
        warnings
    }
}

/// `docker args…` with stdout and stderr together (for `docker logs`, which writes the
/// container's stdout and stderr to its own).
fn run_bounded_both(args: &[&str], timeout: Duration) -> Result<String, String> {
    run_capture("docker", args, None, timeout).map(|(out, err)| out + &err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_a_live_owner_and_a_made_up_one_is_not() {
        let me = this_owner();
        assert!(owner_alive(&me), "{me}");
        let parts: Vec<&str> = me.split('/').collect();
        assert_eq!(parts.len(), 3);
        // Same pid, another start time: a reused pid is another process.
        let reused = format!("{}/{}/1", parts[0], parts[1]);
        assert!(!owner_alive(&reused));
        assert!(!owner_alive(""));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn subnets_are_24s_in_the_private_range_and_attempts_move_on() {
        let (a, pa) = subnet_for("00c0ffee", 0);
        let (b, _) = subnet_for("00c0ffee", 1);
        assert_ne!(a, b);
        assert!(a.starts_with("172.29.") && a.ends_with(".0/24"), "{a}");
        assert!((20..220).contains(&pa[2]));
    }

    #[test]
    fn a_bounded_command_is_killed_at_its_deadline_and_its_error_quoted() {
        let t0 = Instant::now();
        let e = run_bounded("sleep", &["5"], None, Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        let out = run_bounded("cat", &[], Some(b"hello"), Duration::from_secs(5)).unwrap();
        assert_eq!(out, "hello");
        let e = run_bounded(
            "sh",
            &["-c", "echo oops >&2; exit 3"],
            None,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.contains("oops"), "{e}");
    }
}
