//! The two clusters of a bench as local processes on 127.0.0.1: etcd members (Debian's
//! `etcd`, fsync on, each under `timeout` so none outlives its bound even if the bench is
//! killed hard) and `kvlab node` processes of the `raft` system with the etcd API on
//! (`--exit-with-parent`: the kernel kills them with the bench). Both stop on drop.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvlab_server::{
    AdminConfig, EtcdApiConfig, NodeConfig, ServerOptions, SystemKind, TransportKind,
};
use nix::sys::signal::Signal;

use crate::local::procs::{node_ports, pick_free};

/// Pause between two checks whether a stopping process has exited.
const STOP_POLL_MS: u64 = 20;
/// A member that ignores SIGTERM this long is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One server process (for etcd: the `timeout` wrapping it, and the member itself).
#[derive(Debug)]
struct Proc {
    name: String,
    child: Child,
    /// The process to SIGKILL when SIGTERM is not enough (etcd under `timeout`).
    inner_pid: Option<u32>,
}

/// Which system a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// kvlab's `raft` system with the etcd API.
    Kvlab,
    /// etcd 3.4.
    Etcd,
}

impl System {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            System::Kvlab => "kvlab",
            System::Etcd => "etcd",
        }
    }
}

/// A running cluster's processes and client endpoints.
#[derive(Debug)]
pub struct Servers {
    /// The system.
    pub system: System,
    /// `http://127.0.0.1:PORT` per member, in member order.
    pub endpoints: Vec<String>,
    procs: Vec<Proc>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn log_file(path: &Path) -> Result<(File, File), String> {
    let f = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let g = f
        .try_clone()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((f, g))
}

/// The first child of `pid` (the program `timeout` runs), from `/proc`.
fn first_child(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Clock ticks a second in `/proc/PID/stat` (`USER_HZ`, 100 on Linux).
pub const CLOCK_TICKS_PER_S: u64 = 100;

/// `utime + stime` of `pid` from `/proc/PID/stat`: the process's CPU time, all threads.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields after
    // it start past the last ')'. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time this process (the bench: its clients and its compactor) has used so far, in
/// clock ticks; zero if `/proc/self/stat` cannot be read.
pub fn own_cpu_ticks() -> u64 {
    proc_cpu_ticks(std::process::id()).unwrap_or(0)
}

/// The loopback ports of one bench, all picked at once so that no two servers get the
/// same one: etcd's (peer, client) per member, kvlab's (peer, client, admin) and etcd
/// API port per node.
#[derive(Debug)]
pub struct BenchPorts {
    etcd: Vec<(u16, u16)>,
    kvlab: Vec<(u16, u16, u16)>,
    kvlab_etcd_api: Vec<u16>,
}

impl BenchPorts {
    /// Picks the ports of `members`-member clusters; kvlab's peers on UDP ports with
    /// `udp_peers`.
    pub fn pick(members: usize, udp_peers: bool) -> Result<BenchPorts, String> {
        let kvlab_tcp = if udp_peers { 3 } else { 4 };
        let (tcp, udp) = pick_free(
            members * (2 + kvlab_tcp),
            if udp_peers { members } else { 0 },
        )
        .map_err(|e| e.to_string())?;
        let mut tcp = tcp.into_iter();
        let mut next = || tcp.next().unwrap_or_default();
        let etcd = (0..members).map(|_| (next(), next())).collect();
        let kvlab_etcd_api = (0..members).map(|_| next()).collect();
        let kvlab = node_ports(members, &mut tcp, udp_peers.then_some(udp));
        Ok(BenchPorts {
            etcd,
            kvlab,
            kvlab_etcd_api,
        })
    }
}

/// Starts `members` etcd members on `ports` under `dir`, each under `timeout LIFETIME`.
pub fn start_etcd(
    bin: &Path,
    ports: &BenchPorts,
    dir: &Path,
    lifetime: Duration,
) -> Result<Servers, String> {
    let ports = &ports.etcd;
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("e{}=http://{}", i + 1, loopback(p.0)))
        .collect();
    let token = format!("kvlab-bench-{}", std::process::id());
    let mut servers = Servers {
        system: System::Etcd,
        endpoints: Vec::new(),
        procs: Vec::new(),
    };
    for (i, (peer, client)) in ports.iter().copied().enumerate() {
        let name = format!("e{}", i + 1);
        let client_url = format!("http://{}", loopback(client));
        let peer_url = format!("http://{}", loopback(peer));
        let (out, err) = log_file(&dir.join(format!("{name}.log")))?;
        let child = Command::new("timeout")
            .args(["--kill-after=5", &format!("{}s", lifetime.as_secs().max(1))])
            .arg(bin)
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(dir.join(&name))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            .args(["--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start timeout {}: {e}", bin.display()))?;
        servers.procs.push(Proc {
            name,
            child,
            inner_pid: None,
        });
        servers.endpoints.push(client_url);
    }
    Ok(servers)
}

/// Entries between two snapshots of a bench node: 100,000, as the bench's etcd members
/// (etcd 3.4's `--snapshot-count` default), so that both compact their logs equally
/// often. The `raft` system's default, 1,000, suits simulations (it makes snapshots,
/// installs and restarts from them common) but re-serializes a 10,000-key keyspace
/// several times a second under load. A kvlab node encodes and saves a snapshot inside
/// its driver's step, holding every request meanwhile (etcd does it beside its apply
/// loop): at 10,000 entries that alone doubled the p99 of puts at 64 and 256 clients
/// (14.1 against 8.0 ms, 43.5 against 17.9 ms, measured).
pub const BENCH_SNAPSHOT_EVERY_ENTRIES: u64 = 100_000;

/// The UDP transport of a bench node: every peer is on loopback, whose MTU is 64 KiB, so
/// a datagram may be as large as UDP allows instead of an Ethernet-sized 1,400 bytes (an
/// AppendEntries of a few dozen puts then takes one `sendto`, not dozens).
fn loopback_udp() -> kvlab_transport_udp::UdpConfig {
    kvlab_transport_udp::UdpConfig {
        max_datagram_bytes: kvlab_transport_udp::MAX_DATAGRAM_BYTES_LIMIT,
        ..Default::default()
    }
}

fn kvlab_config(
    id: u32,
    ports: &[(u16, u16, u16)],
    etcd_ports: &[u16],
    transport: TransportKind,
    data_dir: PathBuf,
    token: &str,
    secret: &kvlab_server::ClusterSecret,
) -> Result<NodeConfig, String> {
    let (peer, client, admin) = ports[id as usize - 1];
    let members: BTreeMap<String, SocketAddr> = etcd_ports
        .iter()
        .enumerate()
        .filter(|(i, _)| *i + 1 != id as usize)
        .map(|(i, p)| ((i + 1).to_string(), loopback(*p)))
        .collect();
    Ok(NodeConfig {
        id,
        system: SystemKind::Raft,
        transport,
        listen: loopback(peer),
        client: loopback(client),
        admin: AdminConfig {
            addr: loopback(admin),
            token: token.to_string(),
            allow_non_loopback: false,
        },
        cluster_secret: secret.clone(),
        peers: ports
            .iter()
            .enumerate()
            .map(|(i, p)| ((i + 1).to_string(), loopback(p.0)))
            .collect(),
        data_dir,
        seed: 1,
        storage: Default::default(),
        server: ServerOptions::default(),
        udp: (transport == TransportKind::Udp).then(loopback_udp),
        tarpc: None,
        raft: Some(kvlab_node::raft_kv::RaftKvConfig {
            snapshot_every_entries: BENCH_SNAPSHOT_EVERY_ENTRIES,
            ..kvlab_node::raft_kv::RaftKvConfig::default()
        }),
        single: None,
        async_primary: None,
        kvlab: None,
        etcd_api: Some(EtcdApiConfig {
            listen: loopback(etcd_ports[id as usize - 1]),
            allow_non_loopback: false,
            members,
        }),
    })
}

/// Starts `members` kvlab nodes (`exe node --config … --exit-with-parent`) under `dir`.
pub fn start_kvlab(
    exe: &Path,
    ports: &BenchPorts,
    dir: &Path,
    transport: TransportKind,
) -> Result<Servers, String> {
    let members = ports.kvlab.len();
    let etcd_ports = &ports.kvlab_etcd_api;
    let ports = &ports.kvlab;
    let token = crate::local::procs::run_token(1);
    let secret = kvlab_server::generate_cluster_secret(1);
    let mut servers = Servers {
        system: System::Kvlab,
        endpoints: Vec::new(),
        procs: Vec::new(),
    };
    for id in 1..=members as u32 {
        let node_dir = dir.join(format!("n{id}"));
        std::fs::create_dir_all(&node_dir).map_err(|e| format!("{}: {e}", node_dir.display()))?;
        let config = kvlab_config(
            id,
            ports,
            etcd_ports,
            transport,
            node_dir.join("data"),
            &token,
            &secret,
        )?;
        let config_path = node_dir.join("node.toml");
        config
            .write_private(&config_path)
            .map_err(|e| e.to_string())?;
        let (out, err) = log_file(&node_dir.join("node.log"))?;
        let child = Command::new(exe)
            .arg("node")
            .arg("--config")
            .arg(&config_path)
            .arg("--exit-with-parent")
            .env(
                "RUST_LOG",
                std::env::var("KVLAB_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        servers.procs.push(Proc {
            name: format!("n{id}"),
            child,
            inner_pid: None,
        });
        servers
            .endpoints
            .push(format!("http://{}", loopback(etcd_ports[id as usize - 1])));
    }
    Ok(servers)
}

impl Servers {
    /// Fails if a process has exited (a member that cannot start, a port taken).
    pub fn check_alive(&mut self) -> Result<(), String> {
        for p in &mut self.procs {
            if p.inner_pid.is_none() {
                p.inner_pid = first_child(p.child.id());
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!(
                    "{} {} exited ({status})",
                    self.system.name(),
                    p.name
                ));
            }
        }
        Ok(())
    }

    /// CPU time (user + system, every thread) the members have used so far, in clock
    /// ticks (`/proc/PID/stat`'s `utime + stime`, [`CLOCK_TICKS_PER_S`] a second). A member
    /// whose `/proc` entry cannot be read counts as zero.
    pub fn cpu_ticks(&mut self) -> u64 {
        self.procs
            .iter_mut()
            .map(|p| {
                if p.inner_pid.is_none() {
                    p.inner_pid = first_child(p.child.id());
                }
                proc_cpu_ticks(p.inner_pid.unwrap_or(p.child.id())).unwrap_or(0)
            })
            .sum()
    }

    /// Stops every process: SIGTERM, up to [`STOP_TIMEOUT`] to exit, then SIGKILL (to
    /// the wrapped member too). Returns what did not go as planned. Idempotent.
    pub fn stop(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        for p in &mut self.procs {
            if p.inner_pid.is_none() {
                p.inner_pid = first_child(p.child.id());
            }
            if let Ok(raw) = i32::try_from(p.child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for p in self.procs.drain(..) {
            let Proc {
                name,
                mut child,
                inner_pid,
            } = p;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(STOP_POLL_MS));
                    }
                    _ => {
                        warnings.push(format!(
                            "{name} did not stop within {STOP_TIMEOUT:?}: killed"
                        ));
                        kill_hard(inner_pid);
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

fn kill_hard(pid: Option<u32>) {
    if let Some(raw) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), Signal::SIGKILL);
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for w in self.stop() {
            tracing::warn!("{w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bench_node_config_is_valid_over_either_transport() {
        let ports = [(7001, 7002, 7003), (7011, 7012, 7013), (7021, 7022, 7023)];
        let etcd_ports = [7004, 7014, 7024];
        let secret = kvlab_server::generate_cluster_secret(1);
        for transport in [TransportKind::Udp, TransportKind::Tarpc] {
            for id in 1..=3 {
                let config = kvlab_config(
                    id,
                    &ports,
                    &etcd_ports,
                    transport,
                    PathBuf::from("/tmp/x"),
                    "token",
                    &secret,
                )
                .expect("a config");
                assert_eq!(config.udp.is_some(), transport == TransportKind::Udp);
                config
                    .validate()
                    .unwrap_or_else(|e| panic!("{transport:?} n{id}: {e}"));
            }
        }
    }
}
