//! `rendezvous`: highest random weight (Thaler & Ravishankar 1998). Each vnode ranks the
//! active nodes by a fixed hash of (node, vnode) and takes the top ones. Stateless: the
//! target depends only on the member set (and on the frozen voters it must keep), so a
//! join moves a replica only where the new node ranks in a vnode's top RF.

use kvlab_types::NodeId;

use super::{StrategyError, StrategyInput, fill_ranked};
use crate::hash::{VnodeId, key_hash};
use crate::placement::Placement;

/// The rendezvous weight of `node` for `vnode`: a fixed hash of both ids.
pub(crate) fn weight(node: NodeId, vnode: VnodeId) -> u64 {
    let mut buf = [0u8; 18];
    buf[..10].copy_from_slice(b"kvlab-hrw\0");
    buf[10..14].copy_from_slice(&node.0.to_le_bytes());
    buf[14..].copy_from_slice(&vnode.0.to_le_bytes());
    key_hash(&buf)
}

pub(super) fn place(input: &StrategyInput<'_>) -> Result<Placement, StrategyError> {
    let active: Vec<NodeId> = input.active().into_iter().collect();
    let mut target = Placement::new(input.layout);
    for v in input.layout.vnodes() {
        let mut ranked: Vec<(u64, NodeId)> = active.iter().map(|n| (weight(*n, v), *n)).collect();
        // Highest weight first; equal weights (practically impossible) by node id.
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let set = fill_ranked(input, v, ranked.into_iter().map(|(_, n)| n), active.len())?;
        target.insert(v, set)?;
    }
    Ok(target)
}
