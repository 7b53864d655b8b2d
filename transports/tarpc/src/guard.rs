//! Guarded listening endpoints: what keeps a TCP port that anyone on the network can
//! reach from exhausting the node. Used by the peer port here and by the server's client
//! and admin endpoints, each with its own [`Endpoint`] (its own cap, its own budget, its
//! own accept loop, so a flood on one port never starves another).
//!
//! - **A cap on connections** (`max_connections`). At the cap a new connection is not
//!   refused: the connection idle the longest is closed to make room (counted as
//!   `evicted_at_cap`). Idle flooders therefore cannot lock out a real client, and a busy
//!   peer link is the last to go.
//! - **An idle timeout** (`idle_timeout_ms`). A connection on which no complete request
//!   frame arrived and no response left for that long is closed (`closed_idle`). Bytes
//!   of an unfinished frame do not count as activity, so trickling one byte at a time
//!   does not keep a connection alive.
//! - **A bound on buffered bytes.** One connection buffers at most one frame of
//!   `max_request_frame_bytes` (a length prefix announcing more is refused before
//!   anything is read: `closed_oversize_frame`). All connections of the endpoint together
//!   buffer at most `max_buffered_bytes_total` beyond the first
//!   [`UNCHARGED_BYTES_PER_CONNECTION`] of each (so small requests are never refused for
//!   want of budget); the connection whose bytes would exceed it is closed
//!   (`closed_buffer_limit`). A frame being assembled counts. So an endpoint holds at most
//!   `max_buffered_bytes_total + max_connections × UNCHARGED_BYTES_PER_CONNECTION` of
//!   unparsed input.
//! - **Accept errors back off.** When `accept` fails (out of file descriptors) the loop
//!   waits [`ACCEPT_ERROR_BACKOFF_MS`] instead of spinning (`accept_errors`).
//! - **Deadlines are clamped** ([`ServerTransport`]): a request's deadline is read as a
//!   duration from the client and clamped to [`MAX_REQUEST_DEADLINE_MS`] before any
//!   `Instant + Duration` (`deadlines_clamped`); tarpc alone panics on `u64::MAX`
//!   seconds.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Sink, Stream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tarpc::tokio_util::codec::{Decoder, Encoder, Framed, LengthDelimitedCodec};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::wire::SerdeFormat;

/// Bytes of each connection's buffer not charged against `max_buffered_bytes_total`:
/// enough for any ordinary request, so a full budget never refuses a small one.
pub const UNCHARGED_BYTES_PER_CONNECTION: usize = 16 << 10;
/// Wait after a failed `accept` (typically: out of file descriptors) before the next.
pub const ACCEPT_ERROR_BACKOFF_MS: u64 = 50;
/// The longest deadline a client may ask of one request: 10 minutes. Longer ones are
/// clamped to it.
pub const MAX_REQUEST_DEADLINE_MS: u64 = 600_000;
/// The largest `max_connections` any endpoint accepts.
pub const MAX_CONNECTIONS_LIMIT: usize = 65_536;
/// The shortest `idle_timeout_ms` accepted.
pub const MIN_IDLE_TIMEOUT_MS: u64 = 100;
/// The longest `idle_timeout_ms` accepted: one day.
pub const MAX_IDLE_TIMEOUT_MS: u64 = 86_400_000;
/// The largest `max_buffered_bytes_total` accepted: 4 GiB.
pub const MAX_BUFFERED_BYTES_LIMIT: usize = 4 << 30;

/// The limits of one endpoint. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once; at the cap the one idle longest is closed.
    pub max_connections: usize,
    /// A connection without a complete request or a response for this long is closed.
    pub idle_timeout_ms: u64,
    /// The largest frame read from a connection (a request).
    pub max_request_frame_bytes: usize,
    /// The largest frame written to a connection (a response).
    pub max_response_frame_bytes: usize,
    /// Bytes all connections may buffer together beyond their uncharged allowance.
    pub max_buffered_bytes_total: usize,
}

impl ConnectionLimits {
    /// Checks every field; the error names the field (without a prefix) and the reason.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return Err((
                "max_connections",
                format!(
                    "{} is outside [1, {MAX_CONNECTIONS_LIMIT}]",
                    self.max_connections
                ),
            ));
        }
        if !(MIN_IDLE_TIMEOUT_MS..=MAX_IDLE_TIMEOUT_MS).contains(&self.idle_timeout_ms) {
            return Err((
                "idle_timeout_ms",
                format!(
                    "{} is outside [{MIN_IDLE_TIMEOUT_MS}, {MAX_IDLE_TIMEOUT_MS}]",
                    self.idle_timeout_ms
                ),
            ));
        }
        if !(self.max_request_frame_bytes..=MAX_BUFFERED_BYTES_LIMIT)
            .contains(&self.max_buffered_bytes_total)
        {
            return Err((
                "max_buffered_bytes",
                format!(
                    "{} is outside [the largest request frame = {}, {MAX_BUFFERED_BYTES_LIMIT}]",
                    self.max_buffered_bytes_total, self.max_request_frame_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// What one endpoint's guard did, for `status()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections closed to make room at `max_connections`.
    pub evicted_at_cap: u64,
    /// Connections closed by the idle timeout.
    pub closed_idle: u64,
    /// Connections closed because their buffered bytes would exceed the endpoint's total.
    pub closed_buffer_limit: u64,
    /// Connections closed because a length prefix announced a frame over the limit.
    pub closed_oversize_frame: u64,
    /// Connections closed because a request did not decode.
    pub closed_bad_request: u64,
    /// `accept` calls that failed (each followed by a back-off).
    pub accept_errors: u64,
    /// Request deadlines clamped to `MAX_REQUEST_DEADLINE_MS`.
    pub deadlines_clamped: u64,
    /// Bytes buffered now, charged against the total (beyond each connection's
    /// uncharged allowance).
    pub buffered_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    evicted_at_cap: AtomicU64,
    closed_idle: AtomicU64,
    closed_buffer_limit: AtomicU64,
    closed_oversize_frame: AtomicU64,
    closed_bad_request: AtomicU64,
    accept_errors: AtomicU64,
    deadlines_clamped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One listening endpoint's limits and live counters, shared by its connections.
#[derive(Debug)]
pub struct Endpoint {
    name: &'static str,
    limits: ConnectionLimits,
    counters: Counters,
    buffered: AtomicUsize,
    base: Instant,
}

impl Endpoint {
    /// An endpoint called `name` (for logs) with `limits` (validated by the caller).
    pub fn new(name: &'static str, limits: ConnectionLimits) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            name,
            limits,
            counters: Counters::default(),
            buffered: AtomicUsize::new(0),
            base: Instant::now(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// The counters now.
    pub fn stats(&self) -> ConnectionStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnectionStats {
            accepted: l(&c.accepted),
            open: l(&c.open),
            evicted_at_cap: l(&c.evicted_at_cap),
            closed_idle: l(&c.closed_idle),
            closed_buffer_limit: l(&c.closed_buffer_limit),
            closed_oversize_frame: l(&c.closed_oversize_frame),
            closed_bad_request: l(&c.closed_bad_request),
            accept_errors: l(&c.accept_errors),
            deadlines_clamped: l(&c.deadlines_clamped),
            buffered_bytes: self.buffered.load(Ordering::Relaxed) as u64,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One connection's last activity (a complete request read or a response written), in
/// milliseconds since its endpoint started.
#[derive(Debug)]
struct Activity {
    last_ms: AtomicU64,
}

/// Length-delimited framing that charges what it buffers to its endpoint and records
/// activity. Its errors close the connection.
#[derive(Debug)]
pub struct GuardedCodec {
    read: LengthDelimitedCodec,
    write: LengthDelimitedCodec,
    endpoint: Arc<Endpoint>,
    activity: Arc<Activity>,
    charged: usize,
}

impl GuardedCodec {
    fn new(endpoint: Arc<Endpoint>, activity: Arc<Activity>) -> Self {
        let limits = endpoint.limits;
        GuardedCodec {
            read: LengthDelimitedCodec::builder()
                .max_frame_length(limits.max_request_frame_bytes)
                .new_codec(),
            write: LengthDelimitedCodec::builder()
                .max_frame_length(limits.max_response_frame_bytes)
                .new_codec(),
            endpoint,
            activity,
            charged: 0,
        }
    }

    fn touch(&self) {
        self.activity
            .last_ms
            .store(self.endpoint.now_ms(), Ordering::Relaxed);
    }

    /// Charges the bytes held in `src` beyond the allowance; an error if the endpoint's
    /// total would go over its bound.
    fn recharge(&mut self, held: usize) -> Result<(), io::Error> {
        let held = held.saturating_sub(UNCHARGED_BYTES_PER_CONNECTION);
        if held <= self.charged {
            self.endpoint
                .buffered
                .fetch_sub(self.charged - held, Ordering::AcqRel);
            self.charged = held;
            return Ok(());
        }
        let add = held - self.charged;
        let total = self.endpoint.buffered.fetch_add(add, Ordering::AcqRel) + add;
        self.charged = held;
        if total > self.endpoint.limits.max_buffered_bytes_total {
            bump(&self.endpoint.counters.closed_buffer_limit);
            tracing::warn!(
                endpoint = self.endpoint.name,
                total,
                "buffered bytes over the endpoint's bound; connection closed"
            );
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "the {} endpoint's connections buffer more than max_buffered_bytes = {}",
                    self.endpoint.name, self.endpoint.limits.max_buffered_bytes_total
                ),
            ));
        }
        Ok(())
    }
}

impl Drop for GuardedCodec {
    fn drop(&mut self) {
        self.endpoint
            .buffered
            .fetch_sub(self.charged, Ordering::AcqRel);
    }
}

impl Decoder for GuardedCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, io::Error> {
        let frame = match self.read.decode(src) {
            Ok(f) => f,
            Err(e) => {
                // LengthDelimitedCodec's only error: a prefix announcing too much.
                bump(&self.endpoint.counters.closed_oversize_frame);
                return Err(e);
            }
        };
        if frame.is_some() {
            self.touch();
        }
        self.recharge(src.len())?;
        Ok(frame)
    }
}

impl Encoder<Bytes> for GuardedCodec {
    type Error = io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), io::Error> {
        self.touch();
        self.write.encode(item, dst)
    }
}

/// A guarded TCP connection, framed.
pub type GuardedFramed = Framed<TcpStream, GuardedCodec>;

/// The server side of a tarpc connection over a [`GuardedFramed`] in format `F`: reads
/// `ClientMessage<Req>` with the deadline clamped, writes `Response<Resp>`.
pub struct ServerTransport<F, Req, Resp> {
    inner: GuardedFramed,
    endpoint: Arc<Endpoint>,
    _types: Types<F, Req, Resp>,
}

/// What a [`ServerTransport`] reads and writes, without holding any of it.
type Types<F, Req, Resp> = PhantomData<fn() -> (F, Req, Resp)>;

impl<F, Req, Resp> std::fmt::Debug for ServerTransport<F, Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTransport")
            .field("endpoint", &self.endpoint.name)
            .finish_non_exhaustive()
    }
}

impl<F, Req, Resp> ServerTransport<F, Req, Resp> {
    /// Wraps a connection the guarded accept loop handed over.
    pub fn new(inner: GuardedFramed) -> Self {
        let endpoint = inner.codec().endpoint.clone();
        ServerTransport {
            inner,
            endpoint,
            _types: PhantomData,
        }
    }
}

/// A mirror of `tarpc::ClientMessage` whose deadline is read as the duration it is on the
/// wire, so that it can be clamped before it becomes an `Instant`. Field and variant
/// order and names are tarpc 0.38's (a test checks both formats round-trip).
#[derive(Deserialize)]
enum WireClientMessage<T> {
    Request(WireRequest<T>),
    Cancel {
        #[serde(default)]
        trace_context: tarpc::trace::Context,
        request_id: u64,
    },
}

#[derive(Deserialize)]
struct WireRequest<T> {
    context: WireContext,
    id: u64,
    message: T,
}

#[derive(Deserialize)]
struct WireContext {
    #[serde(default = "default_deadline")]
    deadline: Duration,
    trace_context: tarpc::trace::Context,
}

/// tarpc's default when a request names no deadline.
fn default_deadline() -> Duration {
    Duration::from_secs(10)
}

/// Turns a mirrored message into tarpc's, clamping the deadline; returns whether it was
/// clamped.
fn into_client_message<T>(m: WireClientMessage<T>) -> (tarpc::ClientMessage<T>, bool) {
    match m {
        WireClientMessage::Request(r) => {
            let max = Duration::from_millis(MAX_REQUEST_DEADLINE_MS);
            let clamped = r.context.deadline > max;
            let mut context = tarpc::context::current();
            context.deadline = Instant::now().into_std() + r.context.deadline.min(max);
            context.trace_context = r.context.trace_context;
            (
                tarpc::ClientMessage::Request(tarpc::Request {
                    context,
                    id: r.id,
                    message: r.message,
                }),
                clamped,
            )
        }
        WireClientMessage::Cancel {
            trace_context,
            request_id,
        } => (
            tarpc::ClientMessage::Cancel {
                trace_context,
                request_id,
            },
            false,
        ),
    }
}

impl<F: SerdeFormat, Req: DeserializeOwned, Resp> Stream for ServerTransport<F, Req, Resp> {
    type Item = io::Result<tarpc::ClientMessage<Req>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let frame = match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        match F::from_bytes::<WireClientMessage<Req>>(&frame) {
            Ok(m) => {
                let (m, clamped) = into_client_message(m);
                if clamped {
                    bump(&self.endpoint.counters.deadlines_clamped);
                }
                Poll::Ready(Some(Ok(m)))
            }
            Err(e) => {
                bump(&self.endpoint.counters.closed_bad_request);
                Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, e))))
            }
        }
    }
}

impl<F: SerdeFormat, Req, Resp: Serialize> Sink<tarpc::Response<Resp>>
    for ServerTransport<F, Req, Resp>
{
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: tarpc::Response<Resp>) -> io::Result<()> {
        let bytes =
            F::to_bytes(&item).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Pin::new(&mut self.inner).start_send(Bytes::from(bytes))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Waits until `activity` has been still for `timeout`.
async fn idle_for(endpoint: &Endpoint, activity: &Activity, timeout_ms: u64) {
    loop {
        let last = activity.last_ms.load(Ordering::Relaxed);
        let due = endpoint.base + Duration::from_millis(last.saturating_add(timeout_ms));
        tokio::time::sleep_until(due).await;
        if activity.last_ms.load(Ordering::Relaxed) == last {
            return;
        }
    }
}

/// Accepts connections on `listener` under `endpoint`'s limits and runs `serve` for each
/// (framed), concurrently, until dropped; dropping it closes the listener and every
/// connection. See the [module docs](self).
pub async fn serve_guarded<S, Fut>(listener: TcpListener, endpoint: Arc<Endpoint>, mut serve: S)
where
    S: FnMut(GuardedFramed) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limits = endpoint.limits;
    let mut tasks = JoinSet::new();
    let mut live: HashMap<tokio::task::Id, (Arc<Activity>, AbortHandle)> = HashMap::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        bump(&endpoint.counters.accept_errors);
                        tracing::warn!(endpoint = endpoint.name, error = %e, "accept failed; backing off");
                        tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                        continue;
                    }
                };
                bump(&endpoint.counters.accepted);
                if live.len() >= limits.max_connections {
                    let idlest = live
                        .iter()
                        .min_by_key(|(_, (a, _))| a.last_ms.load(Ordering::Relaxed))
                        .map(|(id, _)| *id);
                    if let Some((_, abort)) = idlest.and_then(|id| live.remove(&id)) {
                        abort.abort();
                        bump(&endpoint.counters.evicted_at_cap);
                    }
                }
                let _ = stream.set_nodelay(true);
                let activity = Arc::new(Activity { last_ms: AtomicU64::new(endpoint.now_ms()) });
                let framed = Framed::new(stream, GuardedCodec::new(endpoint.clone(), activity.clone()));
                let conn = serve(framed);
                let watch_endpoint = endpoint.clone();
                let watch_activity = activity.clone();
                let handle = tasks.spawn(async move {
                    tokio::select! {
                        biased;
                        _ = conn => {}
                        _ = idle_for(&watch_endpoint, &watch_activity, limits.idle_timeout_ms) => {
                            bump(&watch_endpoint.counters.closed_idle);
                        }
                    }
                });
                live.insert(handle.id(), (activity, handle));
                endpoint.counters.open.store(live.len() as u64, Ordering::Relaxed);
            }
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                live.remove(&id);
                endpoint.counters.open.store(live.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PostcardFormat;

    /// The mirror reads what tarpc writes, in both formats kvlab uses.
    #[test]
    fn the_client_message_mirror_matches_tarpc_and_clamps_the_deadline() {
        let mut ctx = tarpc::context::current();
        ctx.deadline = std::time::Instant::now() + Duration::from_secs(5);
        let msg: tarpc::ClientMessage<String> = tarpc::ClientMessage::Request(tarpc::Request {
            context: ctx,
            id: 42,
            message: "hello".into(),
        });
        let postcard_bytes = postcard::to_allocvec(&msg).unwrap();
        let json_bytes = serde_json::to_vec(&msg).unwrap();
        for m in [
            PostcardFormat::from_bytes::<WireClientMessage<String>>(&postcard_bytes).unwrap(),
            serde_json::from_slice::<WireClientMessage<String>>(&json_bytes).unwrap(),
        ] {
            let (back, clamped) = into_client_message(m);
            assert!(!clamped);
            match back {
                tarpc::ClientMessage::Request(r) => {
                    assert_eq!((r.id, r.message.as_str()), (42, "hello"));
                    assert_eq!(r.context.trace_context, ctx.trace_context);
                    let left = r.context.deadline - std::time::Instant::now();
                    assert!(left <= Duration::from_secs(5) && left > Duration::from_secs(4));
                }
                other => panic!("{other:?}"),
            }
        }
        let cancel: tarpc::ClientMessage<String> = tarpc::ClientMessage::Cancel {
            trace_context: ctx.trace_context,
            request_id: 9,
        };
        let m = PostcardFormat::from_bytes::<WireClientMessage<String>>(
            &postcard::to_allocvec(&cancel).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            into_client_message(m).0,
            tarpc::ClientMessage::Cancel { request_id: 9, .. }
        ));
        // A deadline of u64::MAX seconds, as a hostile client writes it.
        let mut hostile = postcard::to_allocvec(&0u32).unwrap(); // variant Request
        hostile.extend(postcard::to_allocvec(&Duration::new(u64::MAX, 999_999_999)).unwrap());
        hostile.extend(postcard::to_allocvec(&ctx.trace_context).unwrap());
        hostile.extend(postcard::to_allocvec(&7u64).unwrap());
        hostile.extend(postcard::to_allocvec(&"x".to_string()).unwrap());
        let m = PostcardFormat::from_bytes::<WireClientMessage<String>>(&hostile).unwrap();
        let (back, clamped) = into_client_message(m);
        assert!(clamped);
        match back {
            tarpc::ClientMessage::Request(r) => {
                let left = r.context.deadline - std::time::Instant::now();
                assert!(left <= Duration::from_millis(MAX_REQUEST_DEADLINE_MS));
            }
            other => panic!("{other:?}"),
        }
    }
}
