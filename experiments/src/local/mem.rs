//! Every node a task of this process over the in-process network
//! ([`kvlab_server::LocalCluster`]), in real time, with on-disk storage under the run
//! directory. A crash aborts the node's task (unsynced appends are lost), a pause stops
//! its driver until resumed, network faults are the transports' fault rules.

use std::path::Path;
use std::time::Duration;

use kvlab_server::{LocalCluster, LocalClusterConfig, NodeStatus};
use kvlab_transport::FaultRule;
use kvlab_types::{ClientRequest, ClientResponse, NodeId};
use tokio::sync::mpsc;

use super::{server_options, system_config};
use crate::error::ExperimentError;
use crate::spec::Spec;

/// The in-process cluster of a `--transport mem` run.
#[derive(Debug)]
pub struct MemCluster {
    cluster: LocalCluster,
    stop_timeout: Duration,
}

impl MemCluster {
    /// Starts `spec.nodes` nodes as tasks of `rt`, their data under `nodes_dir/n<i>`.
    pub fn start(
        rt: &tokio::runtime::Handle,
        spec: &Spec,
        seed: u64,
        nodes_dir: &Path,
    ) -> Result<MemCluster, ExperimentError> {
        let mut config = LocalClusterConfig::new(spec.nodes, system_config(spec)?, nodes_dir, seed);
        config.storage = spec.local.storage.clone();
        config.server = server_options(spec);
        let cluster = rt
            .block_on(LocalCluster::start(config))
            .map_err(|e| ExperimentError::Backend(format!("cannot start the mem cluster: {e}")))?;
        Ok(MemCluster {
            cluster,
            stop_timeout: Duration::from_secs_f64(spec.local.stop_timeout_s),
        })
    }

    /// Executes `req` on `id` from a task; the answer goes to `tx`.
    pub(crate) fn submit(
        &self,
        rt: &tokio::runtime::Handle,
        id: NodeId,
        req: ClientRequest,
        tx: mpsc::Sender<ClientResponse>,
    ) {
        let client = self.cluster.client(id);
        rt.spawn(async move {
            let resp = match client {
                Ok(c) => c.execute(req).await,
                Err(e) => ClientResponse {
                    id: req.id,
                    result: Err(kvlab_types::ClientError::Unavailable {
                        reason: e.to_string(),
                        hint: None,
                    }),
                },
            };
            let _ = tx.send(resp).await;
        });
    }

    /// Aborts the node's task.
    pub(crate) fn crash(&mut self, rt: &tokio::runtime::Handle, id: NodeId) -> Result<(), String> {
        rt.block_on(self.cluster.crash(id))
            .map_err(|e| e.to_string())
    }

    /// Starts the node again from its data directory.
    pub(crate) fn restart(
        &mut self,
        rt: &tokio::runtime::Handle,
        id: NodeId,
    ) -> Result<(), String> {
        rt.block_on(self.cluster.restart(id))
            .map_err(|e| e.to_string())
    }

    /// Stops the node's driver until [`MemCluster::resume`].
    pub(crate) fn pause(&mut self, rt: &tokio::runtime::Handle, id: NodeId) -> Result<(), String> {
        rt.block_on(self.cluster.pause(id))
            .map_err(|e| e.to_string())
    }

    /// Resumes a paused node.
    pub(crate) fn resume(&mut self, rt: &tokio::runtime::Handle, id: NodeId) -> Result<(), String> {
        rt.block_on(self.cluster.resume(id))
            .map_err(|e| e.to_string())
    }

    /// Replaces the node's fault rules.
    pub(crate) fn set_rules(&mut self, id: NodeId, rules: Vec<FaultRule>) -> Result<(), String> {
        self.cluster
            .set_fault_rules(id, rules)
            .map_err(|e| e.to_string())
    }

    /// The node's status, if it answers within `timeout`.
    pub(crate) fn status(
        &self,
        rt: &tokio::runtime::Handle,
        id: NodeId,
        timeout: Duration,
    ) -> Option<NodeStatus> {
        rt.block_on(async { tokio::time::timeout(timeout, self.cluster.status(id)).await })
            .ok()?
            .ok()
    }

    /// The file the node of `id` logs its protocol events to.
    pub(crate) fn events_file(&self, id: NodeId) -> std::path::PathBuf {
        self.cluster
            .data_dir(id)
            .join(kvlab_server::EVENTS_FILE_NAME)
    }

    /// Stops every node gracefully (bounded by the stop timeout; what is left dies with
    /// the runtime).
    pub(crate) fn shutdown(self, rt: &tokio::runtime::Handle) -> Vec<String> {
        let cluster = self.cluster;
        // A paused node stops on shutdown too: its driver waits for resume or shutdown.
        match rt
            .block_on(async { tokio::time::timeout(self.stop_timeout, cluster.shutdown()).await })
        {
            Ok(Ok(())) => Vec::new(),
            Ok(Err(e)) => vec![format!("mem cluster shutdown: {e}")],
            Err(_) => vec![format!(
                "mem cluster did not stop within {} s",
                self.stop_timeout.as_secs_f64()
            )],
        }
    }
}
