//! What travels on a peer connection: the tarpc [`PeerService`], a postcard codec for
//! tarpc's serde transport, and a stream wrapper that counts malformed input.
//!
//! One RPC, `deliver(frames)`, carries a batch of kvlab frames (see
//! [`kvlab_transport::codec`]) concatenated; frames are self-delimiting, so the batch
//! needs no further structure. Carrying encoded frames (rather than typed envelopes)
//! keeps the service independent of the message type and sends every message through the
//! same versioned, checksummed codec as UDP.

use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{Sink, Stream};
use kvlab_transport::{DropReason, StatsCounters};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio::net::TcpStream;

/// Bytes allowed on top of a batch in one length-delimited RPC frame (tarpc's request
/// header, context and ids).
pub const RPC_OVERHEAD_BYTES: usize = 1024;

/// The service every node serves to its peers.
#[tarpc::service]
pub trait PeerService {
    /// Delivers a batch of concatenated kvlab frames from one peer. Returns when the
    /// batch has been decoded and queued (or counted as dropped) by the receiver, which
    /// is what lets the sender count the messages as sent.
    async fn deliver(frames: Vec<u8>);
}

/// A postcard codec for `tarpc::serde_transport` (tarpc ships bincode and JSON ones;
/// postcard keeps one binary format across kvlab).
pub struct Postcard<Item, SinkItem>(PhantomData<fn() -> (Item, SinkItem)>);

impl<Item, SinkItem> Default for Postcard<Item, SinkItem> {
    fn default() -> Self {
        Postcard(PhantomData)
    }
}

impl<Item, SinkItem> std::fmt::Debug for Postcard<Item, SinkItem> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Postcard")
    }
}

impl<Item, SinkItem: Serialize> tarpc::tokio_serde::Serializer<SinkItem>
    for Postcard<Item, SinkItem>
{
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> Result<Bytes, io::Error> {
        postcard::to_allocvec(item)
            .map(Bytes::from)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }
}

impl<Item: DeserializeOwned, SinkItem> tarpc::tokio_serde::Deserializer<Item>
    for Postcard<Item, SinkItem>
{
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<Item, io::Error> {
        postcard::from_bytes(src).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// A tarpc transport over one TCP connection with the postcard codec.
pub type PeerConnection<Item, SinkItem> =
    tarpc::serde_transport::Transport<TcpStream, Item, SinkItem, Postcard<Item, SinkItem>>;

/// Wraps `stream` in length-delimited framing (frames up to `max_rpc_bytes`) and the
/// postcard codec.
pub fn frame_connection<Item, SinkItem>(
    stream: TcpStream,
    max_rpc_bytes: usize,
) -> PeerConnection<Item, SinkItem>
where
    Item: DeserializeOwned,
    SinkItem: Serialize,
{
    let framed = Framed::new(
        stream,
        LengthDelimitedCodec::builder()
            .max_frame_length(max_rpc_bytes)
            .new_codec(),
    );
    tarpc::serde_transport::new(framed, Postcard::default())
}

/// Connects a [`PeerServiceClient`] to `addr` (Nagle off: messages are latency-bound).
pub async fn connect(addr: SocketAddr, max_rpc_bytes: usize) -> io::Result<PeerServiceClient> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let conn = frame_connection(stream, max_rpc_bytes);
    Ok(PeerServiceClient::new(tarpc::client::Config::default(), conn).spawn())
}

/// A server-side connection that counts every malformed input (bad length prefix,
/// undecodable request, a stream cut mid-frame) as a [`DropReason::DecodeError`]. tarpc
/// would otherwise only log it.
#[derive(Debug)]
pub struct CountingConnection<T> {
    inner: T,
    stats: Arc<StatsCounters>,
}

impl<T> CountingConnection<T> {
    /// Wraps `inner`, counting into `stats`.
    pub fn new(inner: T, stats: Arc<StatsCounters>) -> Self {
        CountingConnection { inner, stats }
    }
}

/// Whether a stream error means the peer sent bytes that are not a valid request (as
/// opposed to the connection going away).
fn is_malformed_input(e: &io::Error) -> bool {
    let kind = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<io::Error>())
        .map_or(e.kind(), |inner| inner.kind());
    !matches!(
        kind,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::TimedOut
            | io::ErrorKind::NotConnected
    )
}

impl<T, I> Stream for CountingConnection<T>
where
    T: Stream<Item = io::Result<I>> + Unpin,
{
    type Item = io::Result<I>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Err(e))) = &item
            && is_malformed_input(e)
        {
            self.stats.record_drop(DropReason::DecodeError, 1);
        }
        item
    }
}

impl<T, S> Sink<S> for CountingConnection<T>
where
    T: Sink<S> + Unpin,
{
    type Error = T::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: S) -> Result<(), Self::Error> {
        Pin::new(&mut self.inner).start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
