//! The node's etcd v3 API (`[etcd_api]`, served by kvlab-etcd): the [`Backend`] over a
//! [`NodeHandle`], and the listener bound with the node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use kvlab_etcd::{Backend, EtcdApiError, EtcdApiInfo, MemberInfo, MemberStatus};
use kvlab_types::{ClientRequest, ClientResponse, NodeId};
use tokio::net::TcpListener;

use crate::ServerError;
use crate::config::NodeConfig;
use crate::driver::NodeHandle;

impl Backend for NodeHandle {
    async fn execute(&self, req: ClientRequest) -> ClientResponse {
        NodeHandle::execute(self, req).await
    }

    async fn member_status(&self) -> Option<MemberStatus> {
        let s = self.status().await.ok()?;
        Some(MemberStatus {
            leader: s.protocol.leader,
            term: s.protocol.term.unwrap_or(0),
            commit_index: s.protocol.commit_index.unwrap_or(0),
            applied_index: s.protocol.applied_index.unwrap_or(0),
        })
    }
}

/// The etcd API's listener and what it reports, bound with the node.
#[derive(Debug)]
pub(crate) struct BoundEtcdApi {
    listener: TcpListener,
    addr: SocketAddr,
    info: Arc<Mutex<EtcdApiInfo>>,
}

impl BoundEtcdApi {
    pub(crate) fn new(
        config: &NodeConfig,
        peers: &BTreeMap<NodeId, SocketAddr>,
        listener: TcpListener,
        addr: SocketAddr,
    ) -> Result<BoundEtcdApi, ServerError> {
        let mut clients = config.etcd_members()?;
        clients.insert(config.node_id(), addr);
        let members: Vec<NodeId> = peers.keys().copied().collect();
        let info = EtcdApiInfo {
            node: config.node_id(),
            cluster_id: kvlab_etcd::cluster_id(&members),
            members: members
                .iter()
                .map(|id| MemberInfo {
                    id: *id,
                    peer_addr: peers.get(id).copied(),
                    client_addr: clients.get(id).copied(),
                })
                .collect(),
            request_timeout: std::time::Duration::from_millis(
                config.server.client_request_timeout_ms,
            ),
            max_request_bytes: kvlab_etcd::max_request_bytes(
                config
                    .raft
                    .as_ref()
                    .map_or(kvlab_raft::RaftConfig::default().max_entry_bytes, |r| {
                        r.raft.max_entry_bytes
                    }),
            ),
        };
        Ok(BoundEtcdApi {
            listener,
            addr,
            info: Arc::new(Mutex::new(info)),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn set_peer_addrs(&self, peers: &BTreeMap<NodeId, SocketAddr>) {
        if let Ok(mut info) = self.info.lock() {
            for m in &mut info.members {
                if let Some(a) = peers.get(&m.id) {
                    m.peer_addr = Some(*a);
                }
            }
        }
    }

    pub(crate) fn set_client_addrs(&self, clients: &BTreeMap<NodeId, SocketAddr>) {
        if let Ok(mut info) = self.info.lock() {
            for m in &mut info.members {
                if let Some(a) = clients.get(&m.id) {
                    m.client_addr = Some(*a);
                }
            }
        }
    }

    /// Serves until the node stops (the caller drops this future).
    pub(crate) async fn serve(self, handle: NodeHandle) -> Result<(), EtcdApiError> {
        let info = self
            .info
            .lock()
            .map(|i| i.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        kvlab_etcd::serve(self.listener, handle, info, std::future::pending()).await
    }
}
