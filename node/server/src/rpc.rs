//! Shared plumbing of the client and admin endpoints: a JSON codec for tarpc's serde
//! transport (the admin endpoint speaks JSON so that fault rules, which are internally
//! tagged, round-trip and a person can read the traffic), framing, and the guarded accept
//! loop ([`kvlab_transport_tarpc::guard`]): each endpoint has its own connection cap
//! (idlest evicted at the cap), idle timeout, buffered-byte bound and clamped request
//! deadlines, configured in [`crate::ServerOptions`] and reported in `status()`.

use kvlab_transport_tarpc::wire::{SerdeCodec, SerdeConnection, SerdeFormat, serde_connection};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

/// The largest RPC frame a client of either endpoint reads (a response), in bytes; the
/// endpoints write no larger ones. What the endpoints read is bounded by
/// `server.client_max_request_bytes` and `server.admin_max_request_bytes`.
pub const MAX_RPC_FRAME_BYTES: usize = 16 << 20;
/// Requests one connection may have in flight at once; more wait in the connection.
pub const MAX_CONCURRENT_REQUESTS_PER_CONNECTION: usize = 1024;

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
