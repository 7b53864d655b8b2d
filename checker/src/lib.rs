//! # kvlab-checker
//!
//! Reads histories of client operations and decides whether they are linearizable.
//!
//! **Must never depend on:** any other kvlab crate but none at all at the moment — the
//! checker reads histories, never nodes, so a simulated run, a real run and a Jepsen
//! history are checked by the same code. No tokio, no network.

pub mod history;
