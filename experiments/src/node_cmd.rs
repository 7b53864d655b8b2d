//! `kvlab node --config NODE.toml` (one node with a real transport and on-disk storage,
//! until SIGTERM or ctrl-c) and `kvlab client ADDR read|write|cas|delete KEY [VALUE...]`
//! (one request to a node's client endpoint).

use std::net::SocketAddr;
use std::path::Path;

use kvlab_server::{KvClient, KvClientOptions};
use kvlab_types::{ClientError, ClientRequest, KvOp, OpOutput, RequestId, Value};

use crate::error::ExperimentError;

/// Worker threads of a node process's runtime: the driver is one task, the endpoints
/// and transport a few more; two threads keep a node from hogging a shared machine.
pub const NODE_WORKER_THREADS: usize = 2;

/// Completes on ctrl-c or SIGTERM (whichever comes first).
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only ctrl-c stops the node");
            let _ = ctrl_c.await;
        }
    }
    tracing::info!("termination signal: stopping gracefully");
}

/// Runs one node until SIGTERM, ctrl-c or an admin `shutdown`. With `exit_with_parent`
/// the kernel kills the node when the thread that started it ends (a runner that dies
/// without cleaning up leaves no node behind). Errors in the config are bad input (exit
/// 2); a node that stops by a failure is exit 1.
pub fn run_node_command(config: &Path, exit_with_parent: bool) -> Result<u8, ExperimentError> {
    if exit_with_parent {
        // The parent may have died before this line: then there is no one to serve.
        let parent = nix::unistd::getppid();
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| {
            ExperimentError::Backend(format!("cannot ask to die with the parent: {e}"))
        })?;
        if parent.as_raw() == 1 || nix::unistd::getppid() != parent {
            return Ok(1);
        }
    }
    let config = kvlab_server::load_node_config(config).map_err(|e| match e {
        kvlab_server::ServerError::ReadConfig { .. }
        | kvlab_server::ServerError::ParseConfig { .. }
        | kvlab_server::ServerError::InvalidConfig { .. } => ExperimentError::BadArgument {
            arg: "--config".into(),
            reason: e.to_string(),
        },
        other => ExperimentError::Backend(other.to_string()),
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(NODE_WORKER_THREADS)
        .enable_all()
        .build()
        .map_err(|e| ExperimentError::Backend(format!("cannot start the tokio runtime: {e}")))?;
    let id = config.id;
    match rt.block_on(kvlab_server::run_node(config, termination())) {
        Ok(()) => Ok(0),
        Err(e) => {
            tracing::error!(node = id, error = %e, "node stopped by a failure");
            eprintln!("error: node {id}: {e}");
            Ok(1)
        }
    }
}

/// What `kvlab client` asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientCommand {
    /// The node's client endpoint.
    pub addr: SocketAddr,
    /// The operation.
    pub op: KvOp,
}

fn parse_value(arg: &str, s: &str) -> Result<Value, ExperimentError> {
    s.parse().map_err(|_| ExperimentError::BadArgument {
        arg: format!("{arg} {s}"),
        reason: "must be an integer".into(),
    })
}

impl ClientCommand {
    /// Parses `read KEY`, `write KEY VALUE`, `cas KEY EXPECTED NEW` (EXPECTED `none` for
    /// an absent key) or `delete KEY`.
    pub fn parse(addr: SocketAddr, op: &str, args: &[String]) -> Result<Self, ExperimentError> {
        let bad = |reason: &str| ExperimentError::BadArgument {
            arg: format!("{op} {}", args.join(" ")),
            reason: reason.into(),
        };
        let op = match (op, args) {
            ("read", [key]) => KvOp::Read { key: key.clone() },
            ("delete", [key]) => KvOp::Delete { key: key.clone() },
            ("write", [key, v]) => KvOp::Write {
                key: key.clone(),
                value: parse_value("write", v)?,
            },
            ("cas", [key, expected, new]) => KvOp::Cas {
                key: key.clone(),
                expected: match expected.as_str() {
                    "none" | "nil" | "null" => None,
                    v => Some(parse_value("cas", v)?),
                },
                new: parse_value("cas", new)?,
            },
            ("read" | "delete", _) => return Err(bad("expected: KEY")),
            ("write", _) => return Err(bad("expected: KEY VALUE")),
            ("cas", _) => return Err(bad("expected: KEY EXPECTED NEW (EXPECTED may be none)")),
            _ => return Err(bad("the operation is read, write, cas or delete")),
        };
        Ok(ClientCommand { addr, op })
    }
}

/// Sends one request (with retries that reuse its id) and prints the answer. Exit 0 ok,
/// 1 a definite failure (it did not happen), 3 indeterminate (it may have happened).
pub fn run_client_command(cmd: &ClientCommand) -> Result<u8, ExperimentError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ExperimentError::Backend(format!("cannot start the tokio runtime: {e}")))?;
    // A client id unlikely to collide with another client's session on the node.
    let client = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    let req = ClientRequest {
        id: RequestId { client, seq: 1 },
        op: cmd.op.clone(),
    };
    let resp = rt.block_on(async {
        let kv = KvClient::connect(cmd.addr, KvClientOptions::default()).await?;
        Ok::<_, kvlab_server::KvClientError>(kv.execute_with_retries(req).await)
    });
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            println!("fail: {e}");
            return Ok(1);
        }
    };
    Ok(match resp.result {
        Ok(OpOutput::Read(Some(v))) => {
            println!("{v}");
            0
        }
        Ok(OpOutput::Read(None)) => {
            println!("none");
            0
        }
        Ok(OpOutput::Done) => {
            println!("ok");
            0
        }
        Err(e @ ClientError::Indeterminate { .. }) => {
            println!("info: {e}");
            3
        }
        Err(e) => {
            println!("fail: {e}");
            1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn client_operations_parse_and_bad_ones_are_named() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let c = ClientCommand::parse(addr, "cas", &args(&["k", "none", "3"])).unwrap();
        assert_eq!(
            c.op,
            KvOp::Cas {
                key: "k".into(),
                expected: None,
                new: 3
            }
        );
        let c = ClientCommand::parse(addr, "write", &args(&["k", "-4"])).unwrap();
        assert_eq!(
            c.op,
            KvOp::Write {
                key: "k".into(),
                value: -4
            }
        );
        for (op, a) in [
            ("write", vec!["k"]),
            ("write", vec!["k", "x"]),
            ("get", vec!["k"]),
            ("read", vec![]),
        ] {
            let e = ClientCommand::parse(addr, op, &args(&a)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
        }
    }
}
