//! # kvlab-server
//!
//! (being written)

mod config;
mod driver;
mod error;
mod inspect;

pub use config::*;
pub use driver::*;
pub use error::ServerError;
pub use inspect::*;
mod admin;
mod client;
mod rpc;
pub use admin::*;
pub use client::*;
pub use rpc::{
    MAX_CONCURRENT_REQUESTS_PER_CONNECTION, MAX_CONNECTIONS_PER_ENDPOINT, MAX_RPC_FRAME_BYTES,
};
mod node;
pub use node::{
    AnyTransport, BoundNode, EVENTS_FILE_NAME, RunningNode, SHUTDOWN_DRAIN_MS, ShutdownFuture,
    run_node,
};
