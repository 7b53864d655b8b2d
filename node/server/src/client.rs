//! The client endpoint: a tarpc [`KvService`] over TCP (postcard frames, like the peer
//! transport) that hands each request to the node and answers with its response, and
//! [`KvClient`], the client a workload and `kvlab client` use.
//!
//! Outcomes keep their meaning end to end: `Unavailable` means the request surely did not
//! take effect; `Indeterminate` (a server-side timeout, a lost connection, a client-side
//! deadline) means it may have. A retry reuses the request's [`RequestId`](kvlab_types::RequestId), so a system
//! with a session table applies it at most once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvlab_types::{ClientError, ClientRequest, ClientResponse};
use serde::{Deserialize, Serialize};
use tarpc::client::RpcError;
use tokio::net::{TcpListener, TcpStream};

use crate::driver::NodeHandle;
use crate::rpc::{MAX_CONCURRENT_REQUESTS_PER_CONNECTION, MAX_RPC_FRAME_BYTES};
use futures::StreamExt;
use kvlab_transport_tarpc::guard::{Endpoint, MAX_REQUEST_DEADLINE_MS, ServerTransport};
use kvlab_transport_tarpc::wire::PostcardFormat;
use tarpc::server::{BaseChannel, Channel};

/// The most attempts [`KvClientOptions::max_attempts`] may ask for.
pub const MAX_CLIENT_ATTEMPTS: u32 = 100;
/// A [`KvClient`] whose connection has been unused this long opens a new one before its
/// next request, so that the node's idle timeout (`server.client_idle_timeout_ms`, by
/// default 60 s) never closes a connection under a request — which would leave its
/// outcome unknown.
pub const KV_CLIENT_RECONNECT_AFTER_IDLE_MS: u64 = 5_000;

/// The service a node's client endpoint serves.
#[tarpc::service]
pub trait KvService {
    /// Executes one request. The answer arrives within the node's
    /// `server.client_request_timeout_ms`, as `Indeterminate` if the node did not decide
    /// in time.
    async fn execute(req: ClientRequest) -> ClientResponse;
}

/// The server half: every request goes through the node's [`NodeHandle`].
#[derive(Clone, Debug)]
struct KvServer {
    handle: NodeHandle,
}

impl KvService for KvServer {
    async fn execute(self, _: tarpc::context::Context, req: ClientRequest) -> ClientResponse {
        self.handle.execute(req).await
    }
}

/// Serves the client endpoint on `listener` for the node behind `handle` until dropped,
/// under the limits and counters of `endpoint` (see [`kvlab_transport_tarpc::guard`]).
pub async fn serve_client_endpoint(
    listener: TcpListener,
    handle: NodeHandle,
    endpoint: Arc<Endpoint>,
) {
    let server = KvServer { handle };
    kvlab_transport_tarpc::guard::serve_guarded(listener, endpoint, move |framed| {
        let conn = ServerTransport::<PostcardFormat, _, _>::new(framed);
        BaseChannel::with_defaults(conn)
            .execute(server.clone().serve())
            .for_each_concurrent(MAX_CONCURRENT_REQUESTS_PER_CONNECTION, |respond| respond)
    })
    .await;
}

/// Why a [`KvClient`] could not get an answer from the node at all.
#[derive(Debug, thiserror::Error)]
pub enum KvClientError {
    /// The TCP connection could not be made (the request was not sent).
    #[error("cannot connect to the client endpoint {addr}: {source}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The connection was not made within the connect timeout (the request was not
    /// sent).
    #[error("no connection to the client endpoint {addr} within {timeout_ms} ms")]
    ConnectTimeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The RPC failed after it may have been sent (deadline, connection lost): the
    /// request may or may not have taken effect.
    #[error("request to {addr} failed: {source}")]
    Rpc {
        /// The endpoint.
        addr: SocketAddr,
        /// tarpc's error.
        source: RpcError,
    },
    /// The options are out of range.
    #[error("invalid client option `{field}`: {reason}")]
    InvalidOptions {
        /// The option.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl KvClientError {
    /// Whether the request surely never reached the node.
    pub fn surely_not_sent(&self) -> bool {
        matches!(
            self,
            KvClientError::Connect { .. }
                | KvClientError::ConnectTimeout { .. }
                | KvClientError::InvalidOptions { .. }
        )
    }
}

/// How a [`KvClient`] connects, waits and retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvClientOptions {
    /// Bound on one connection attempt.
    pub connect_timeout_ms: u64,
    /// Deadline of one request (keep it above the node's client request timeout, so the
    /// node's own `Indeterminate` arrives first).
    pub request_timeout_ms: u64,
    /// Attempts of [`KvClient::execute_with_retries`] at most (1 = no retry).
    pub max_attempts: u32,
    /// Wait between two attempts.
    pub retry_backoff_ms: u64,
}

impl Default for KvClientOptions {
    fn default() -> Self {
        KvClientOptions {
            connect_timeout_ms: 1_000,
            request_timeout_ms: 5_000,
            max_attempts: 3,
            retry_backoff_ms: 50,
        }
    }
}

impl KvClientOptions {
    /// Checks every field, naming the one out of range.
    pub fn validate(&self) -> Result<(), KvClientError> {
        let bad = |field, reason: String| Err(KvClientError::InvalidOptions { field, reason });
        if self.connect_timeout_ms == 0 {
            return bad("connect_timeout_ms", "must be positive".into());
        }
        if !(1..=MAX_REQUEST_DEADLINE_MS).contains(&self.request_timeout_ms) {
            return bad(
                "request_timeout_ms",
                format!(
                    "{} is outside [1, MAX_REQUEST_DEADLINE_MS = {MAX_REQUEST_DEADLINE_MS}]",
                    self.request_timeout_ms
                ),
            );
        }
        if self.connect_timeout_ms > MAX_REQUEST_DEADLINE_MS {
            return bad(
                "connect_timeout_ms",
                format!("longer than MAX_REQUEST_DEADLINE_MS = {MAX_REQUEST_DEADLINE_MS}"),
            );
        }
        if self.retry_backoff_ms > MAX_REQUEST_DEADLINE_MS {
            return bad(
                "retry_backoff_ms",
                format!("longer than MAX_REQUEST_DEADLINE_MS = {MAX_REQUEST_DEADLINE_MS}"),
            );
        }
        if !(1..=MAX_CLIENT_ATTEMPTS).contains(&self.max_attempts) {
            return bad(
                "max_attempts",
                format!(
                    "{} is outside [1, {MAX_CLIENT_ATTEMPTS}]",
                    self.max_attempts
                ),
            );
        }
        Ok(())
    }
}

/// A client of one node's client endpoint. Cheap to share (`&self` methods; many
/// requests may be in flight on its one connection). It reconnects on the next request
/// after the connection was lost.
#[derive(Debug)]
pub struct KvClient {
    addr: SocketAddr,
    options: KvClientOptions,
    /// The connection and when it was last used.
    conn: tokio::sync::Mutex<Option<(KvServiceClient, tokio::time::Instant)>>,
}

async fn open(
    addr: SocketAddr,
    options: &KvClientOptions,
) -> Result<KvServiceClient, KvClientError> {
    let connected = tokio::time::timeout(
        Duration::from_millis(options.connect_timeout_ms),
        TcpStream::connect(addr),
    )
    .await
    .map_err(|_| KvClientError::ConnectTimeout {
        addr,
        timeout_ms: options.connect_timeout_ms,
    })?;
    let stream = connected.map_err(|source| KvClientError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let conn = kvlab_transport_tarpc::wire::frame_connection(stream, MAX_RPC_FRAME_BYTES);
    let mut config = tarpc::client::Config::default();
    config.max_in_flight_requests = MAX_CONCURRENT_REQUESTS_PER_CONNECTION;
    Ok(KvServiceClient::new(config, conn).spawn())
}

impl KvClient {
    /// Connects to the client endpoint at `addr`.
    pub async fn connect(
        addr: SocketAddr,
        options: KvClientOptions,
    ) -> Result<KvClient, KvClientError> {
        options.validate()?;
        let client = open(addr, &options).await?;
        Ok(KvClient {
            addr,
            options,
            conn: tokio::sync::Mutex::new(Some((client, tokio::time::Instant::now()))),
        })
    }

    /// The endpoint this client talks to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One attempt: sends `req` and returns the node's response. An error means no
    /// response arrived; [`KvClientError::surely_not_sent`] tells whether the request may
    /// have taken effect.
    pub async fn execute(&self, req: ClientRequest) -> Result<ClientResponse, KvClientError> {
        let client = {
            let mut conn = self.conn.lock().await;
            let now = tokio::time::Instant::now();
            let fresh = Duration::from_millis(KV_CLIENT_RECONNECT_AFTER_IDLE_MS);
            match conn.as_mut() {
                Some((c, used)) if now.duration_since(*used) < fresh => {
                    *used = now;
                    c.clone()
                }
                _ => {
                    // None yet, or idle long enough that the node may close it.
                    let c = open(self.addr, &self.options).await?;
                    *conn = Some((c.clone(), now));
                    c
                }
            }
        };
        let mut ctx = tarpc::context::current();
        ctx.deadline =
            std::time::Instant::now() + Duration::from_millis(self.options.request_timeout_ms);
        match client.execute(ctx, req).await {
            Ok(resp) => Ok(resp),
            Err(source) => {
                if matches!(
                    source,
                    RpcError::Shutdown | RpcError::Channel(_) | RpcError::Send(_)
                ) {
                    // The connection is gone: open a new one on the next request.
                    *self.conn.lock().await = None;
                }
                Err(KvClientError::Rpc {
                    addr: self.addr,
                    source,
                })
            }
        }
    }

    /// Executes `req` with up to `max_attempts` attempts, always with the same
    /// [`kvlab_types::RequestId`]: it retries after a failed connection, a failed RPC and
    /// an `Unavailable` answer, and returns the first other answer. When attempts run out
    /// the outcome is `Indeterminate` if any attempt may have reached the node, and the
    /// last `Unavailable` otherwise.
    pub async fn execute_with_retries(&self, req: ClientRequest) -> ClientResponse {
        let id = req.id;
        let mut maybe_applied: Option<String> = None;
        let mut last = ClientResponse {
            id,
            result: Err(ClientError::Unavailable {
                reason: "no attempt made".into(),
                hint: None,
            }),
        };
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(self.options.retry_backoff_ms)).await;
            }
            match self.execute(req.clone()).await {
                Ok(resp) => match &resp.result {
                    Err(ClientError::Unavailable { .. }) => last = resp,
                    Err(ClientError::Indeterminate { reason }) => {
                        maybe_applied = Some(reason.clone());
                        last = resp;
                    }
                    _ => return resp,
                },
                Err(e) => {
                    if !e.surely_not_sent() {
                        maybe_applied = Some(e.to_string());
                    }
                    last = ClientResponse {
                        id,
                        result: Err(ClientError::Unavailable {
                            reason: e.to_string(),
                            hint: None,
                        }),
                    };
                }
            }
        }
        match maybe_applied {
            Some(reason) => ClientResponse {
                id,
                result: Err(ClientError::Indeterminate {
                    reason: format!(
                        "{} attempts without a definite answer; one may have taken effect: {reason}",
                        self.options.max_attempts
                    ),
                }),
            },
            None => last,
        }
    }
}
