//! The admin endpoint: a tarpc [`AdminService`] over TCP speaking JSON, bound to loopback
//! by default. Every call carries the token from the node configuration; a wrong token is
//! refused with [`AdminError::BadToken`] and changes nothing.
//!
//! It reports the node's status (protocol role and leader, transport and storage
//! counters), sets and clears the transport's fault rules — so a partition between
//! processes is made the same way as in one process — and stops the node gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvlab_transport::FaultRule;
use serde::{Deserialize, Serialize};
use tarpc::client::RpcError;
use tokio::net::{TcpListener, TcpStream};

use crate::driver::{ConnectionsStatus, NodeHandle, NodeStatus};
use crate::rpc::{JsonFormat, MAX_CONCURRENT_REQUESTS_PER_CONNECTION, json_connection};
use futures::StreamExt;
use kvlab_transport_tarpc::guard::{Endpoint, ServerTransport};
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

/// The guarded endpoints whose counters `status()` reports.
#[derive(Clone, Debug, Default)]
pub struct EndpointCounters {
    /// The tarpc peer port, if the node has one.
    pub peer: Option<Arc<Endpoint>>,
    /// The client endpoint.
    pub client: Option<Arc<Endpoint>>,
    /// The admin endpoint.
    pub admin: Option<Arc<Endpoint>>,
}

impl EndpointCounters {
    fn snapshot(&self) -> ConnectionsStatus {
        ConnectionsStatus {
            peer: self.peer.as_ref().map(|e| e.stats()),
            client: self.client.as_ref().map(|e| e.stats()),
            admin: self.admin.as_ref().map(|e| e.stats()),
        }
    }
}

#[derive(Clone, Debug)]
struct AdminServer {
    handle: NodeHandle,
    token: std::sync::Arc<str>,
    endpoints: EndpointCounters,
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
        let mut status = self
            .handle
            .status()
            .await
            .map_err(|e| AdminError::Unavailable {
                reason: e.to_string(),
            })?;
        status.connections = self.endpoints.snapshot();
        Ok(status)
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

/// Serves the admin endpoint on `listener` until dropped, under the limits of
/// `endpoints.admin` (its own cap and accept loop, so no other port's flood starves it);
/// calls must carry `token`; `status()` reports the counters of every endpoint in
/// `endpoints`.
pub async fn serve_admin_endpoint(
    listener: TcpListener,
    handle: NodeHandle,
    token: String,
    endpoints: EndpointCounters,
) {
    let endpoint = endpoints.admin.clone().unwrap_or_else(|| {
        Endpoint::new(
            "admin",
            crate::config::ServerOptions::default().admin_limits(),
        )
    });
    let server = AdminServer {
        handle,
        token: token.into(),
        endpoints,
    };
    kvlab_transport_tarpc::guard::serve_guarded(listener, endpoint, move |framed| {
        BaseChannel::with_defaults(ServerTransport::<JsonFormat, _, _>::new(framed))
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

/// A client of one node's admin endpoint, holding the token. Its calls are idempotent,
/// so when the connection turns out to be gone (the node closes idle admin connections
/// after `server.admin_idle_timeout_ms`) it reconnects and retries once.
#[derive(Debug)]
pub struct AdminClient {
    addr: SocketAddr,
    token: String,
    connect_timeout: Duration,
    client: tokio::sync::Mutex<AdminServiceClient>,
}

async fn open_admin(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<AdminServiceClient, AdminClientError> {
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
    Ok(AdminServiceClient::new(tarpc::client::Config::default(), json_connection(stream)).spawn())
}

impl AdminClient {
    /// Connects to the admin endpoint at `addr` (within `connect_timeout`); every call
    /// will carry `token`.
    pub async fn connect(
        addr: SocketAddr,
        token: impl Into<String>,
        connect_timeout: Duration,
    ) -> Result<AdminClient, AdminClientError> {
        let client = open_admin(addr, connect_timeout).await?;
        Ok(AdminClient {
            addr,
            token: token.into(),
            connect_timeout,
            client: tokio::sync::Mutex::new(client),
        })
    }

    /// Runs one call on the current connection; if the connection is gone, reconnects
    /// and runs it once more.
    async fn call<R, F, Fut>(&self, f: F) -> Result<R, AdminClientError>
    where
        F: Fn(AdminServiceClient, tarpc::context::Context, String) -> Fut,
        Fut: std::future::Future<Output = Result<Result<R, AdminError>, RpcError>>,
    {
        let client = self.client.lock().await.clone();
        let r = f(client, Self::context(), self.token.clone()).await;
        let r = match r {
            Err(RpcError::Shutdown | RpcError::Channel(_) | RpcError::Send(_)) => {
                let fresh = open_admin(self.addr, self.connect_timeout).await?;
                *self.client.lock().await = fresh.clone();
                f(fresh, Self::context(), self.token.clone()).await
            }
            other => other,
        };
        self.finish(r)
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
        self.call(|c, ctx, token| async move { c.status(ctx, token).await })
            .await
    }

    /// Replaces the node's fault rules.
    pub async fn set_fault_rules(&self, rules: Vec<FaultRule>) -> Result<(), AdminClientError> {
        self.call(|c, ctx, token| {
            let rules = rules.clone();
            async move { c.set_fault_rules(ctx, token, rules).await }
        })
        .await
    }

    /// Removes every fault rule of the node.
    pub async fn clear_fault_rules(&self) -> Result<(), AdminClientError> {
        self.call(|c, ctx, token| async move { c.clear_fault_rules(ctx, token).await })
            .await
    }

    /// Asks the node to stop gracefully.
    pub async fn shutdown(&self) -> Result<(), AdminClientError> {
        self.call(|c, ctx, token| async move { c.shutdown(ctx, token).await })
            .await
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
