//! Test support shared by the transports that bind sockets (UDP, tarpc): build a
//! connected loopback cluster (also what their contract harnesses build), and check how `bind` refuses a bad configuration or a
//! taken port. Each transport implements [`WireTransport`] in its own tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use kvlab_types::NodeId;

use super::TestMsg;
use crate::{FaultRules, Transport, TransportConfig, TransportError};

/// A transport bound to a socket address with a peer table of addresses.
pub trait WireTransport: Transport<Msg = TestMsg> + Sized {
    /// The implementation's own configuration.
    type Config: Copy + Send;

    /// Binds node `id` at `addr` with the peer table `peers` (the implementation's `bind`).
    fn bind(
        id: NodeId,
        addr: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
        config: Self::Config,
        faults: FaultRules,
    ) -> impl Future<Output = Result<Self, TransportError>> + Send;

    /// The implementation's default configuration with the shared `limits`.
    fn config_with_limits(limits: TransportConfig) -> Self::Config;

    /// The address the transport is bound to.
    fn local_addr(&self) -> SocketAddr;

    /// Replaces the peer table.
    fn set_peers(&self, peers: BTreeMap<NodeId, SocketAddr>);
}

/// Implements [`WireTransport`] for `$transport<TestMsg>` with config `$config` by
/// calling the transport's inherent `bind`, `local_addr` and `set_peers` (which share
/// these signatures), so each transport's tests state it in one line.
#[macro_export]
macro_rules! impl_wire_transport {
    ($transport:ident, $config:ident) => {
        impl $crate::contract::wire::WireTransport for $transport<$crate::contract::TestMsg> {
            type Config = $config;

            async fn bind(
                id: ::kvlab_types::NodeId,
                addr: ::std::net::SocketAddr,
                peers: ::std::collections::BTreeMap<::kvlab_types::NodeId, ::std::net::SocketAddr>,
                config: $config,
                faults: $crate::FaultRules,
            ) -> ::std::result::Result<Self, $crate::TransportError> {
                $transport::bind(id, addr, peers, config, faults).await
            }

            fn config_with_limits(limits: $crate::TransportConfig) -> $config {
                $config {
                    transport: limits,
                    ..::std::default::Default::default()
                }
            }

            fn local_addr(&self) -> ::std::net::SocketAddr {
                $transport::local_addr(self)
            }

            fn set_peers(
                &self,
                peers: ::std::collections::BTreeMap<::kvlab_types::NodeId, ::std::net::SocketAddr>,
            ) {
                $transport::set_peers(self, peers);
            }
        }
    };
}

/// `127.0.0.1` with port 0: the OS picks a free port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Binds nodes `NodeId(1)..=NodeId(n)` on loopback with `config` (node `i` with fault
/// rules seeded `i`) and gives every node the full peer table.
pub async fn cluster<T: WireTransport>(n: usize, config: T::Config) -> Vec<T> {
    let mut ts = Vec::new();
    for i in 1..=n as u32 {
        let t = T::bind(
            NodeId(i),
            loopback(),
            BTreeMap::new(),
            config,
            FaultRules::new(u64::from(i)),
        )
        .await
        .unwrap();
        ts.push(t);
    }
    let table: BTreeMap<NodeId, SocketAddr> =
        ts.iter().map(|t| (t.local_id(), t.local_addr())).collect();
    for t in &ts {
        t.set_peers(table.clone());
    }
    ts
}

/// [`cluster`] with the implementation's default configuration around `limits`: what a
/// contract [`Harness`](super::Harness) builds.
pub async fn cluster_with_limits<T: WireTransport>(n: usize, limits: TransportConfig) -> Vec<T> {
    cluster(n, T::config_with_limits(limits)).await
}

/// Panics unless binding with each config is refused with an error that names its field.
pub async fn assert_invalid_configs_name_their_field<T: WireTransport>(
    cases: impl IntoIterator<Item = (T::Config, &'static str)>,
) {
    for (config, field) in cases {
        let err = T::bind(
            NodeId(1),
            loopback(),
            BTreeMap::new(),
            config,
            FaultRules::new(1),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("a config with a bad `{field}` was accepted"));
        assert!(err.to_string().contains(field), "{err}");
    }
}

/// Panics unless binding `taken` (an address some socket holds) is a
/// [`TransportError::Bind`] that names the address.
pub async fn assert_taken_port_is_a_bind_error<T: WireTransport>(
    taken: SocketAddr,
    config: T::Config,
) {
    let err = T::bind(
        NodeId(1),
        taken,
        BTreeMap::new(),
        config,
        FaultRules::new(1),
    )
    .await
    .err()
    .expect("binding a taken port succeeded");
    assert!(matches!(err, TransportError::Bind { .. }), "{err}");
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
}
