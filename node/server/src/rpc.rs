//! Shared plumbing of the client and admin endpoints: a JSON codec for tarpc's serde
//! transport (the admin endpoint speaks JSON so that fault rules, which are internally
//! tagged, round-trip and a person can read the traffic), framing, and an accept loop
//! that serves every connection concurrently and stops them all when dropped.

use futures::Future;
use kvlab_transport_tarpc::wire::{SerdeCodec, SerdeConnection, SerdeFormat, serde_connection};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The largest RPC frame either endpoint accepts, in bytes.
pub const MAX_RPC_FRAME_BYTES: usize = 16 << 20;
/// Requests one connection may have in flight at once; more wait in the connection.
pub const MAX_CONCURRENT_REQUESTS_PER_CONNECTION: usize = 1024;
/// Connections one endpoint serves at once; more are closed at accept.
pub const MAX_CONNECTIONS_PER_ENDPOINT: usize = 4096;

/// The JSON format for [`SerdeCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonFormat;

impl SerdeFormat for JsonFormat {
    const NAME: &'static str = "Json";
    type Error = serde_json::Error;

    fn to_bytes<T: Serialize>(item: &T) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(item)
    }

    fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A JSON codec for `tarpc::serde_transport`.
pub type Json<Item, SinkItem> = SerdeCodec<JsonFormat, Item, SinkItem>;

/// A JSON tarpc connection over TCP.
pub type JsonConnection<Item, SinkItem> = SerdeConnection<JsonFormat, Item, SinkItem>;

/// Wraps `stream` in length-delimited framing and the JSON codec.
pub fn json_connection<Item, SinkItem>(stream: TcpStream) -> JsonConnection<Item, SinkItem>
where
    Item: DeserializeOwned,
    SinkItem: Serialize,
{
    serde_connection::<JsonFormat, _, _>(stream, MAX_RPC_FRAME_BYTES)
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
