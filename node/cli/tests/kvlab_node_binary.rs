//! The `kvlab-node` binary as a container or the local backend starts it: both spellings
//! of the node command serve clients and stop on SIGTERM, and bad input exits 2.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_kvlab-node");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kvlab-node client ADDR ARGS...`: the exit status and the printed answer.
fn client(addr: &str, args: &[&str]) -> (i32, String) {
    let o = Command::new(EXE)
        .arg("client")
        .arg(addr)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
    )
}

/// Starts `kvlab-node ARGS...`, waits until its client endpoint takes a write.
fn start_node(args: &[&str], config: &Path, addr: &str) -> Child {
    let child = Command::new(EXE)
        .args(args)
        .arg(config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // A one-node Raft group elects itself within a few election timeouts.
    while client(addr, &["write", "ready", "1"]).0 != 0 {
        assert!(Instant::now() < deadline, "the node never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn sigterm_and_wait(mut child: Child) -> ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    child.wait().unwrap()
}

#[test]
fn both_spellings_of_the_node_command_serve_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, cl, admin) = (free_port(), free_port(), free_port());
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "id = 1\nsystem = \"raft\"\ntransport = \"udp\"\ncluster_secret = \"00112233445566778899aabbccddeeff\"\nlisten = \"127.0.0.1:{peer}\"\n\
             client = \"127.0.0.1:{cl}\"\ndata_dir = \"{}\"\n[admin]\naddr = \"127.0.0.1:{admin}\"\ntoken = \"t\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{cl}");
    // The short form, as a container's entry point would start it.
    let node = start_node(&["--config"], &config, &addr);
    assert_eq!(client(&addr, &["write", "k", "5"]), (0, "ok".into()));
    assert!(
        sigterm_and_wait(node).success(),
        "SIGTERM is a graceful stop"
    );
    // The form `kvlab run --backend local` uses, with KVLAB_NODE_EXE naming kvlab-node.
    let node = start_node(&["node", "--exit-with-parent", "--config"], &config, &addr);
    assert_eq!(client(&addr, &["read", "k"]), (0, "5".into()), "recovered");
    assert!(sigterm_and_wait(node).success());
}

#[test]
fn bad_input_exits_2() {
    let status = |args: &[&str]| {
        Command::new(EXE)
            .args(args)
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(status(&["--config", "/nonexistent/node.toml"]), Some(2));
    assert_eq!(
        status(&["node", "--config", "/nonexistent/node.toml"]),
        Some(2)
    );
    assert_eq!(status(&[]), Some(2), "nothing to do");
    assert_eq!(status(&["client", "127.0.0.1:1", "get", "k"]), Some(2));
}
