//! What travels on a peer connection: the tarpc [`PeerService`], a serde codec for
//! tarpc's serde transport (postcard here; the server's admin endpoint reuses it with
//! JSON), and a stream wrapper that counts malformed input.
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

/// A serde data format that can carry tarpc's messages: one implementation per format,
/// so that the codec and the framing below are written once for all of them.
pub trait SerdeFormat {
    /// The format's name, for `Debug`.
    const NAME: &'static str;
    /// What the format reports when an item does not (de)serialize.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Serializes `item`.
    fn to_bytes<T: Serialize>(item: &T) -> Result<Vec<u8>, Self::Error>;

    /// Deserializes one item from exactly `bytes`.
    fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Self::Error>;
}

/// A codec for `tarpc::serde_transport` in the format `F` (tarpc ships bincode and JSON
/// ones; [`Postcard`] keeps one binary format across kvlab).
pub struct SerdeCodec<F, Item, SinkItem>(CodecTypes<F, Item, SinkItem>);

/// What a [`SerdeCodec`] is for, without holding any of it.
type CodecTypes<F, Item, SinkItem> = PhantomData<fn() -> (F, Item, SinkItem)>;

impl<F, Item, SinkItem> Default for SerdeCodec<F, Item, SinkItem> {
    fn default() -> Self {
        SerdeCodec(PhantomData)
    }
}

impl<F: SerdeFormat, Item, SinkItem> std::fmt::Debug for SerdeCodec<F, Item, SinkItem> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(F::NAME)
    }
}

impl<F: SerdeFormat, Item, SinkItem: Serialize> tarpc::tokio_serde::Serializer<SinkItem>
    for SerdeCodec<F, Item, SinkItem>
{
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> Result<Bytes, io::Error> {
        F::to_bytes(item)
            .map(Bytes::from)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }
}

impl<F: SerdeFormat, Item: DeserializeOwned, SinkItem> tarpc::tokio_serde::Deserializer<Item>
    for SerdeCodec<F, Item, SinkItem>
{
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<Item, io::Error> {
        F::from_bytes(src).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// The postcard format (what peers speak to each other).
#[derive(Clone, Copy, Debug, Default)]
pub struct PostcardFormat;

impl SerdeFormat for PostcardFormat {
    const NAME: &'static str = "Postcard";
    type Error = postcard::Error;

    fn to_bytes<T: Serialize>(item: &T) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(item)
    }

    fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// A postcard codec for `tarpc::serde_transport`.
pub type Postcard<Item, SinkItem> = SerdeCodec<PostcardFormat, Item, SinkItem>;

/// A tarpc transport over one TCP connection with the codec of format `F`.
pub type SerdeConnection<F, Item, SinkItem> =
    tarpc::serde_transport::Transport<TcpStream, Item, SinkItem, SerdeCodec<F, Item, SinkItem>>;

/// A tarpc transport over one TCP connection with the postcard codec.
pub type PeerConnection<Item, SinkItem> = SerdeConnection<PostcardFormat, Item, SinkItem>;

/// Wraps `stream` in length-delimited framing (frames up to `max_rpc_bytes`) and the
/// codec of format `F`.
pub fn serde_connection<F, Item, SinkItem>(
    stream: TcpStream,
    max_rpc_bytes: usize,
) -> SerdeConnection<F, Item, SinkItem>
where
    F: SerdeFormat,
    Item: DeserializeOwned,
    SinkItem: Serialize,
{
    let framed = Framed::new(
        stream,
        LengthDelimitedCodec::builder()
            .max_frame_length(max_rpc_bytes)
            .new_codec(),
    );
    tarpc::serde_transport::new(framed, SerdeCodec::default())
}

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
    serde_connection::<PostcardFormat, _, _>(stream, max_rpc_bytes)
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
            // The endpoint's buffer bound (see `guard`), counted there.
            | io::ErrorKind::OutOfMemory
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
