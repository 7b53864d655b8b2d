//! Shared plumbing of the client and admin endpoints: a JSON codec for tarpc's serde
//! transport (the admin endpoint speaks JSON so that fault rules, which are internally
//! tagged, round-trip and a person can read the traffic), framing, and an accept loop
//! that serves every connection concurrently and stops them all when dropped.

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::Future;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The largest RPC frame either endpoint accepts, in bytes.
pub const MAX_RPC_FRAME_BYTES: usize = 16 << 20;
/// Requests one connection may have in flight at once; more wait in the connection.
pub const MAX_CONCURRENT_REQUESTS_PER_CONNECTION: usize = 1024;
/// Connections one endpoint serves at once; more are closed at accept.
pub const MAX_CONNECTIONS_PER_ENDPOINT: usize = 4096;

/// A JSON codec for `tarpc::serde_transport`.
pub struct Json<Item, SinkItem>(PhantomData<fn() -> (Item, SinkItem)>);

impl<Item, SinkItem> Default for Json<Item, SinkItem> {
    fn default() -> Self {
        Json(PhantomData)
    }
}

impl<Item, SinkItem> std::fmt::Debug for Json<Item, SinkItem> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Json")
    }
}

impl<Item, SinkItem: Serialize> tarpc::tokio_serde::Serializer<SinkItem> for Json<Item, SinkItem> {
    type Error = io::Error;
    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> Result<Bytes, io::Error> {
        serde_json::to_vec(item)
            .map(Bytes::from)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }
}

impl<Item: DeserializeOwned, SinkItem> tarpc::tokio_serde::Deserializer<Item>
    for Json<Item, SinkItem>
{
    type Error = io::Error;
    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<Item, io::Error> {
        serde_json::from_slice(src).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// A JSON tarpc connection over TCP.
pub type JsonConnection<Item, SinkItem> =
    tarpc::serde_transport::Transport<TcpStream, Item, SinkItem, Json<Item, SinkItem>>;

/// Wraps `stream` in length-delimited framing and the JSON codec.
pub fn json_connection<Item, SinkItem>(stream: TcpStream) -> JsonConnection<Item, SinkItem>
where
    Item: DeserializeOwned,
    SinkItem: Serialize,
{
    let framed = Framed::new(
        stream,
        LengthDelimitedCodec::builder()
            .max_frame_length(MAX_RPC_FRAME_BYTES)
            .new_codec(),
    );
    tarpc::serde_transport::new(framed, Json::default())
}

/// Accepts connections and runs `serve_connection` for each, concurrently, until
/// dropped; dropping it closes the listener and every connection.
pub async fn accept_loop<F, Fut>(listener: TcpListener, mut serve_connection: F)
where
    F: FnMut(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                if connections.len() >= MAX_CONNECTIONS_PER_ENDPOINT {
                    tracing::warn!(%peer, "MAX_CONNECTIONS_PER_ENDPOINT reached; connection refused");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                connections.spawn(serve_connection(stream));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
