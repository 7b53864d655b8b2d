//! # kvlab-node-cli
//!
//! One node of a real cluster, as a command: `node --config NODE.toml` runs one node
//! ([`kvlab_server::run_node`]) over a real transport with on-disk storage until
//! SIGTERM, ctrl-c or an admin `shutdown`; `client ADDR read|write|cas|delete KEY
//! [VALUE...]` sends one request to a node's client endpoint. One implementation, two
//! entry points: the `kvlab` binary has them as `kvlab node` and `kvlab client` (it takes
//! [`NodeArgs`] and [`ClientArgs`] into its own command line), and this crate's small
//! `kvlab-node` binary — the one that goes into a container image — has them too.
//!
//! `kvlab-node` accepts the node command with or without its name, so that
//! `KVLAB_NODE_EXE` (the executable the local backend starts nodes with) may name either
//! binary: `kvlab-node node --config NODE.toml --exit-with-parent` (the form the
//! local backend uses with `kvlab` too) and `kvlab-node --config NODE.toml` (the
//! short form for a container's entry point) are the same command.
//!
//! **Must never depend on:** plotters or anything else that draws, the checker, the
//! simulator, the report or the experiments crate. Only what a node process needs:
//! kvlab-server (and through it the node, storage and transports), tokio, clap, tracing.
//! `experiments/tests/architecture.rs` proves it from `cargo metadata`.
//!
//! ```
//! use clap::Parser as _;
//! use kvlab_node_cli::{ClientCommand, Command, NodeCli};
//! use kvlab_types::KvOp;
//!
//! // The two spellings of the node command are one command.
//! let short = NodeCli::try_parse_from(["kvlab-node", "--config", "n1.toml"])?.command();
//! let long = NodeCli::try_parse_from(["kvlab-node", "node", "--config", "n1.toml"])?.command();
//! assert_eq!(short, long);
//! assert!(matches!(short, Some(Command::Node(a)) if a.config.ends_with("n1.toml")));
//!
//! // A client request, parsed as `kvlab client` parses it.
//! let c = ClientCommand::parse("127.0.0.1:7101".parse()?, "write", &["k".into(), "5".into()])?;
//! assert_eq!(c.op, KvOp::Write { key: "k".into(), value: 5 });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use kvlab_server::{KvClient, KvClientOptions};
use kvlab_types::{
    ClientError, ClientRequest, KvOp, OpOutput, RequestId, TxnMicroOp, TxnMicroResult,
    TxnReadValue, TxnTiming, Value,
};

/// Why a node or client command could not run. A node that starts and then stops by a
/// failure is not an error: it is exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum NodeCliError {
    /// A command-line argument or the node's config file is malformed (exit 2).
    #[error("bad argument `{arg}`: {reason}")]
    BadArgument {
        /// The argument as given.
        arg: String,
        /// Why it is refused.
        reason: String,
    },
    /// The process could not set itself up (runtime, parent-death signal) (exit 1).
    #[error("{0}")]
    Startup(String),
}

impl NodeCliError {
    /// The exit status: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            NodeCliError::BadArgument { .. } => 2,
            NodeCliError::Startup(_) => 1,
        }
    }
}

/// `node`: run one node.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct NodeArgs {
    /// The node's configuration (TOML: id, listen addresses, peers, data dir, transport).
    #[arg(long, value_name = "NODE.toml")]
    pub config: PathBuf,
    /// Die with the thread that started this process (used by `kvlab run --backend
    /// local`, so a runner that dies leaves no node behind).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

/// `client`: one request to a node's client endpoint.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ClientArgs {
    /// The node's client endpoint, e.g. 127.0.0.1:7101.
    pub addr: SocketAddr,
    /// read | write | cas | delete | txn.
    pub op: String,
    /// KEY, then VALUE for write, EXPECTED NEW for cas (EXPECTED `none` for an absent key);
    /// for txn, its micro-ops in order: `r:KEY`, `append:KEY=INT`, `w:KEY=INT`.
    #[arg(allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// A command of `kvlab-node` (and of `kvlab`, which has the same two).
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Run one node with a real transport and on-disk storage until SIGTERM or ctrl-c.
    Node(NodeArgs),
    /// Send one request to a node's client endpoint and print the answer (exit 0 ok,
    /// 1 failed, 3 indeterminate, 2 bad input).
    Client(ClientArgs),
}

/// The command line of the `kvlab-node` binary: `node --config NODE.toml`, the same
/// without the word `node`, or `client ADDR OP ARGS...`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "kvlab-node",
    version,
    about = "One kvlab node with a real transport and on-disk storage (and a one-request client)",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct NodeCli {
    #[command(subcommand)]
    subcommand: Option<Command>,
    /// The node's configuration (TOML); the same as `kvlab-node node --config`.
    #[arg(long, value_name = "NODE.toml", required = true)]
    config: Option<PathBuf>,
    /// Die with the thread that started this process.
    #[arg(long, hide = true)]
    exit_with_parent: bool,
}

impl NodeCli {
    /// The command asked for (`None` only if clap let an empty command line through,
    /// which `required = true` on `--config` prevents).
    pub fn command(self) -> Option<Command> {
        match (self.subcommand, self.config) {
            (Some(c), _) => Some(c),
            (None, Some(config)) => Some(Command::Node(NodeArgs {
                config,
                exit_with_parent: self.exit_with_parent,
            })),
            (None, None) => None,
        }
    }
}

/// Runs a command; returns its exit status. Both binaries call this.
pub fn run(command: Command) -> Result<u8, NodeCliError> {
    match command {
        Command::Node(a) => {
            init_node_tracing();
            run_node_command(&a.config, a.exit_with_parent)
        }
        Command::Client(a) => {
            ClientCommand::parse(a.addr, &a.op, &a.args).and_then(|c| run_client_command(&c))
        }
    }
}

/// A node logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_node_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

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
pub fn run_node_command(
    config: &std::path::Path,
    exit_with_parent: bool,
) -> Result<u8, NodeCliError> {
    if exit_with_parent {
        // The parent may have died before this line: then there is no one to serve.
        let parent = nix::unistd::getppid();
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| {
            NodeCliError::Startup(format!("cannot ask to die with the parent: {e}"))
        })?;
        if parent.as_raw() == 1 || nix::unistd::getppid() != parent {
            return Ok(1);
        }
    }
    let config = kvlab_server::load_node_config(config).map_err(|e| match e {
        kvlab_server::ServerError::ReadConfig { .. }
        | kvlab_server::ServerError::ParseConfig { .. }
        | kvlab_server::ServerError::InvalidConfig { .. } => NodeCliError::BadArgument {
            arg: "--config".into(),
            reason: e.to_string(),
        },
        other => NodeCliError::Startup(other.to_string()),
    })?;
    let rt = match config.server.runtime_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut multi = tokio::runtime::Builder::new_multi_thread();
            multi.worker_threads(n);
            multi
        }
    }
    .enable_all()
    .build()
    .map_err(|e| NodeCliError::Startup(format!("cannot start the tokio runtime: {e}")))?;
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

fn parse_value(arg: &str, s: &str) -> Result<Value, NodeCliError> {
    s.parse().map_err(|_| NodeCliError::BadArgument {
        arg: format!("{arg} {s}"),
        reason: "must be an integer".into(),
    })
}

const TXN_USAGE: &str = "expected micro-ops in order: r:KEY (read), append:KEY=INT (append to a list), w:KEY=INT (write)";

/// One micro-op of `kvlab client ADDR txn ...`: `r:KEY`, `append:KEY=INT` or
/// `w:KEY=INT` (`read:` and `write:` also do).
pub fn parse_micro_op(s: &str) -> Result<TxnMicroOp, NodeCliError> {
    let bad = |reason: &str| NodeCliError::BadArgument {
        arg: format!("txn {s}"),
        reason: reason.into(),
    };
    let (f, rest) = s.split_once(':').ok_or_else(|| bad(TXN_USAGE))?;
    let key_value = || {
        let (key, v) = rest
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=INT after append: or w:"))?;
        if key.is_empty() {
            return Err(bad("the key is empty"));
        }
        Ok((key.to_string(), parse_value(&format!("txn {s}"), v)?))
    };
    match f {
        "r" | "read" if !rest.is_empty() && !rest.contains('=') => Ok(TxnMicroOp::Read {
            key: rest.to_string(),
        }),
        "r" | "read" => Err(bad("expected r:KEY (a key, no value)")),
        "append" => key_value().map(|(key, value)| TxnMicroOp::Append { key, value }),
        "w" | "write" => key_value().map(|(key, value)| TxnMicroOp::Write { key, value }),
        _ => Err(bad(TXN_USAGE)),
    }
}

/// Prints a committed transaction: one line per micro-op (`r KEY VALUE`, with `[..]`
/// for a list and `none` for absent; `append KEY V`; `w KEY V`), then its phases.
fn print_committed(ops: &[TxnMicroOp], results: &[TxnMicroResult], timing: &TxnTiming) {
    println!("committed");
    for (op, r) in ops.iter().zip(results) {
        match (op, r) {
            (TxnMicroOp::Read { key }, TxnMicroResult::Read(v)) => {
                let v = match v {
                    None => "none".to_string(),
                    Some(TxnReadValue::Register(x)) => x.to_string(),
                    Some(TxnReadValue::List(l)) => format!("{l:?}"),
                };
                println!("r {key} {v}");
            }
            (TxnMicroOp::Append { key, value }, _) => println!("append {key} {value}"),
            (TxnMicroOp::Write { key, value }, _) => println!("w {key} {value}"),
            (op, r) => println!("{op:?} {r:?}"),
        }
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "groups {} prepare {:.3} ms decide {:.3} ms",
        timing.groups,
        ms(timing.prepare_ns),
        ms(timing.decide_ns)
    );
}

impl ClientCommand {
    /// Parses `read KEY`, `write KEY VALUE`, `cas KEY EXPECTED NEW` (EXPECTED `none` for
    /// an absent key), `delete KEY`, or `txn MICRO-OP...` (see [`parse_micro_op`]).
    pub fn parse(addr: SocketAddr, op: &str, args: &[String]) -> Result<Self, NodeCliError> {
        let bad = |reason: &str| NodeCliError::BadArgument {
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
            ("txn", []) => return Err(bad(TXN_USAGE)),
            ("txn", ops) if ops.len() > kvlab_types::MAX_TXN_MICRO_OPS => {
                return Err(bad(&format!(
                    "{} micro-ops, at most {} (MAX_TXN_MICRO_OPS)",
                    ops.len(),
                    kvlab_types::MAX_TXN_MICRO_OPS
                )));
            }
            ("txn", ops) => KvOp::Txn {
                ops: ops
                    .iter()
                    .map(|o| parse_micro_op(o))
                    .collect::<Result<_, _>>()?,
            },
            _ => return Err(bad("the operation is read, write, cas, delete or txn")),
        };
        Ok(ClientCommand { addr, op })
    }
}

/// Sends one request (with retries that reuse its id) and prints the answer. Exit 0 ok,
/// 1 a definite failure (it did not happen), 3 indeterminate (it may have happened).
pub fn run_client_command(cmd: &ClientCommand) -> Result<u8, NodeCliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NodeCliError::Startup(format!("cannot start the tokio runtime: {e}")))?;
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
        // The CLI never sends an etcd request; use etcdctl against `[etcd_api]`.
        Ok(OpOutput::Etcd(bytes)) => {
            println!(
                "fail: an etcd answer ({} bytes) to a kvlab request",
                bytes.len()
            );
            1
        }
        Ok(OpOutput::Txn { results, timing }) => {
            let ops = match &cmd.op {
                KvOp::Txn { ops } => ops.as_slice(),
                _ => &[],
            };
            print_committed(ops, &results, &timing);
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

    #[test]
    fn a_txn_parses_its_micro_ops_in_order_and_bad_ones_name_the_op() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let c = ClientCommand::parse(addr, "txn", &args(&["r:x", "append:y=3", "w:z=-5"])).unwrap();
        assert_eq!(
            c.op,
            KvOp::Txn {
                ops: vec![
                    TxnMicroOp::Read { key: "x".into() },
                    TxnMicroOp::Append {
                        key: "y".into(),
                        value: 3
                    },
                    TxnMicroOp::Write {
                        key: "z".into(),
                        value: -5
                    },
                ]
            }
        );
        for (bad, says) in [
            ("x", "r:KEY"),
            ("r:", "r:KEY"),
            ("r:x=1", "no value"),
            ("append:y", "KEY=INT"),
            ("append:=3", "key is empty"),
            ("w:z=five", "integer"),
            ("incr:x=1", "r:KEY"),
        ] {
            let e = ClientCommand::parse(addr, "txn", &args(&["r:a", bad])).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(
                e.to_string().contains(bad) && e.to_string().contains(says),
                "{bad}: {e}"
            );
        }
        let e = ClientCommand::parse(addr, "txn", &[]).unwrap_err();
        assert!(e.to_string().contains("micro-ops"), "{e}");
        let many = vec!["r:k".to_string(); kvlab_types::MAX_TXN_MICRO_OPS + 1];
        let e = ClientCommand::parse(addr, "txn", &many).unwrap_err();
        assert!(e.to_string().contains("MAX_TXN_MICRO_OPS"), "{e}");
    }

    fn parse(argv: &[&str]) -> Result<Option<Command>, clap::Error> {
        use clap::Parser as _;
        NodeCli::try_parse_from(argv).map(NodeCli::command)
    }

    #[test]
    fn node_command_parses_with_or_without_its_name() {
        let expected = Some(Command::Node(NodeArgs {
            config: "n1.toml".into(),
            exit_with_parent: true,
        }));
        // The form the local backend uses for `kvlab` and for `kvlab-node` alike.
        assert_eq!(
            parse(&[
                "kvlab-node",
                "node",
                "--config",
                "n1.toml",
                "--exit-with-parent"
            ])
            .unwrap(),
            expected
        );
        assert_eq!(
            parse(&["kvlab-node", "--config", "n1.toml", "--exit-with-parent"]).unwrap(),
            expected
        );
        assert_eq!(
            parse(&["kvlab-node", "--exit-with-parent", "--config", "n1.toml"]).unwrap(),
            expected
        );
    }

    #[test]
    fn client_command_parses_and_an_empty_command_line_is_refused() {
        assert_eq!(
            parse(&["kvlab-node", "client", "127.0.0.1:7101", "write", "k", "-4"]).unwrap(),
            Some(Command::Client(ClientArgs {
                addr: "127.0.0.1:7101".parse().unwrap(),
                op: "write".into(),
                args: vec!["k".into(), "-4".into()],
            }))
        );
        assert!(parse(&["kvlab-node"]).is_err());
        // A subcommand and the short form's flag are not mixed.
        assert!(
            parse(&[
                "kvlab-node",
                "--config",
                "a.toml",
                "client",
                "127.0.0.1:1",
                "read",
                "k"
            ])
            .is_err()
        );
    }
}
