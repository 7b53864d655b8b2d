//! `kvlab-node`: one kvlab node with a real transport and on-disk storage, and a
//! one-request client — the binary of a container image. See the crate docs of
//! `kvlab_node_cli` for the command line.
//!
//! Exit status: `node` — 0 stopped on request, 1 stopped by a failure, 2 bad input;
//! `client` — 0 ok, 1 failed, 3 indeterminate, 2 bad input.

/// mimalloc instead of glibc's malloc: with glibc, malloc and free took about 10 % of a
/// node's CPU under a write load (`perf`, 64 clients), the allocator being shared by
/// the runtime, the codec and the state machine.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser as _;
use kvlab_node_cli::NodeCli;

fn main() -> ExitCode {
    let Some(command) = NodeCli::parse().command() else {
        eprintln!("error: nothing to do; see kvlab-node --help");
        return ExitCode::from(2);
    };
    match kvlab_node_cli::run(command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
