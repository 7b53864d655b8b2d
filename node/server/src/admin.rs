//! The admin endpoint: a tarpc [`AdminService`] over TCP speaking JSON, bound to loopback
//! by default. Every call carries the token from the node configuration; a wrong token is
//! refused with [`AdminError::BadToken`] and changes nothing.
//!
//! It reports the node's status (protocol role and leader, transport and storage
//! counters), sets and clears the transport's fault rules — so a partition between
//! processes is made the same way as in one process — and stops the node gracefully.

use std::net::SocketAddr;
use std::time::Duration;

use kvlab_transport::FaultRule;
use serde::{Deserialize, Serialize};
use tarpc::client::RpcError;
use tokio::net::{TcpListener, TcpStream};

use crate::driver::{NodeHandle, NodeStatus};
use crate::rpc::{MAX_CONCURRENT_REQUESTS_PER_CONNECTION, accept_loop, json_connection};
use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};

/// Why the node refused an admin call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AdminError {
    /// The call's token is not the node's admin token.
    #[error("wrong admin token")]
    BadToken,
    /// The fault rules were refused (none changed).
    #[error("invalid fault rules: {reason}")]
    InvalidFaultRules {
        /// Why.
        reason: String,
    },
    /// The node is not running any more.
    #[error("node unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// The service a node's admin endpoint serves. Every call carries the admin token.
#[tarpc::service]
pub trait AdminService {
    /// The node's status.
    async fn status(token: String) -> Result<NodeStatus, AdminError>;
    /// Replaces the transport's fault rules (validated first; on error none change).
    async fn set_fault_rules(token: String, rules: Vec<FaultRule>) -> Result<(), AdminError>;
    /// Removes every fault rule.
    async fn clear_fault_rules(token: String) -> Result<(), AdminError>;
    /// Stops the node gracefully (the store is synced, sockets are closed).
    async fn shutdown(token: String) -> Result<(), AdminError>;
}

/// Compares tokens in time independent of where they first differ.
fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, y) in b.iter().enumerate() {
        let x = a.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[derive(Clone, Debug)]
struct AdminServer {
    handle: NodeHandle,
    token: std::sync::Arc<str>,
}

impl AdminServer {
    fn check(&self, token: &str) -> Result<(), AdminError> {
        if token_matches(token, &self.token) {
            Ok(())
        } else {
            tracing::warn!(node = %self.handle.id(), "admin call with a wrong token refused");
            Err(AdminError::BadToken)
        }
    }
}

impl AdminService for AdminServer {
    async fn status(
        self,
        _: tarpc::context::Context,
        token: String,
    ) -> Result<NodeStatus, AdminError> {
        self.check(&token)?;
        self.handle
            .status()
            .await
            .map_err(|e| AdminError::Unavailable {
                reason: e.to_string(),
            })
    }

    async fn set_fault_rules(
        self,
        _: tarpc::context::Context,
        token: String,
        rules: Vec<FaultRule>,
    ) -> Result<(), AdminError> {
        self.check(&token)?;
        let shown: Vec<String> = rules.iter().map(ToString::to_string).collect();
        self.handle
            .fault_rules()
            .set(rules)
            .map_err(|e| AdminError::InvalidFaultRules {
                reason: e.to_string(),
            })?;
        tracing::info!(node = %self.handle.id(), rules = ?shown, "fault rules set");
        Ok(())
    }

    async fn clear_fault_rules(
        self,
        _: tarpc::context::Context,
        token: String,
    ) -> Result<(), AdminError> {
        self.check(&token)?;
        self.handle.fault_rules().clear();
        tracing::info!(node = %self.handle.id(), "fault rules cleared");
        Ok(())
    }

    async fn shutdown(self, _: tarpc::context::Context, token: String) -> Result<(), AdminError> {
        self.check(&token)?;
        tracing::info!(node = %self.handle.id(), "shutdown requested by the admin endpoint");
        self.handle.shutdown();
        Ok(())
    }
}

/// Serves the admin endpoint on `listener` until dropped; calls must carry `token`.
pub async fn serve_admin_endpoint(listener: TcpListener, handle: NodeHandle, token: String) {
    let server = AdminServer {
        handle,
        token: token.into(),
    };
    accept_loop(listener, move |stream| {
        BaseChannel::with_defaults(json_connection(stream))
            .execute(server.clone().serve())
            .for_each_concurrent(MAX_CONCURRENT_REQUESTS_PER_CONNECTION, |respond| respond)
    })
    .await;
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// No connection to the admin endpoint.
    #[error("cannot connect to the admin endpoint {addr}: {reason}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The RPC failed (deadline, connection lost).
    #[error("admin call to {addr} failed: {source}")]
    Rpc {
        /// The endpoint.
        addr: SocketAddr,
        /// tarpc's error.
        source: RpcError,
    },
    /// The node refused the call.
    #[error("admin call to {addr} refused: {source}")]
    Refused {
        /// The endpoint.
        addr: SocketAddr,
        /// The node's reason.
        source: AdminError,
    },
}

/// Deadline of one admin call.
pub const ADMIN_CALL_TIMEOUT_MS: u64 = 5_000;

/// A client of one node's admin endpoint, holding the token.
#[derive(Debug)]
pub struct AdminClient {
    addr: SocketAddr,
    token: String,
    client: AdminServiceClient,
}

impl AdminClient {
    /// Connects to the admin endpoint at `addr` (within `connect_timeout`); every call
    /// will carry `token`.
    pub async fn connect(
        addr: SocketAddr,
        token: impl Into<String>,
        connect_timeout: Duration,
    ) -> Result<AdminClient, AdminClientError> {
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| AdminClientError::Connect {
                addr,
                reason: format!("no connection within {} ms", connect_timeout.as_millis()),
            })?
            .map_err(|e| AdminClientError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let client =
            AdminServiceClient::new(tarpc::client::Config::default(), json_connection(stream))
                .spawn();
        Ok(AdminClient {
            addr,
            token: token.into(),
            client,
        })
    }

    fn context() -> tarpc::context::Context {
        let mut ctx = tarpc::context::current();
        ctx.deadline = std::time::Instant::now() + Duration::from_millis(ADMIN_CALL_TIMEOUT_MS);
        ctx
    }

    fn finish<R>(&self, r: Result<Result<R, AdminError>, RpcError>) -> Result<R, AdminClientError> {
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(AdminClientError::Refused {
                addr: self.addr,
                source,
            }),
            Err(source) => Err(AdminClientError::Rpc {
                addr: self.addr,
                source,
            }),
        }
    }

    /// The node's status.
    pub async fn status(&self) -> Result<NodeStatus, AdminClientError> {
        let r = self
            .client
            .status(Self::context(), self.token.clone())
            .await;
        self.finish(r)
    }

    /// Replaces the node's fault rules.
    pub async fn set_fault_rules(&self, rules: Vec<FaultRule>) -> Result<(), AdminClientError> {
        let r = self
            .client
            .set_fault_rules(Self::context(), self.token.clone(), rules)
            .await;
        self.finish(r)
    }

    /// Removes every fault rule of the node.
    pub async fn clear_fault_rules(&self) -> Result<(), AdminClientError> {
        let r = self
            .client
            .clear_fault_rules(Self::context(), self.token.clone())
            .await;
        self.finish(r)
    }

    /// Asks the node to stop gracefully.
    pub async fn shutdown(&self) -> Result<(), AdminClientError> {
        let r = self
            .client
            .shutdown(Self::context(), self.token.clone())
            .await;
        self.finish(r)
    }
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secreT", "secret"));
        assert!(!token_matches("secret-longer", "secret"));
        assert!(!token_matches("sec", "secret"));
        assert!(!token_matches("", "secret"));
    }
}
