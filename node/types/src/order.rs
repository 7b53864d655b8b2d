//! [`StepOrder`]: the ordering contract of one protocol step's effects, in one place.
//! Every executor — the simulator, the async server, the protocol crates' test harnesses
//! — classifies each effect with it and so honours the same rule:
//!
//! - `Persist`, `SaveSnapshot`, timers and events run at once, in order;
//! - `Sync` issues a sync; every later `Send` and `Reply` **of the step** waits until that
//!   sync is durable ([`Disposition::HoldForSync`]);
//! - a `Send` or `Reply` after a `Persist` with no `Sync` between them is a protocol bug
//!   (the message could promise state a crash loses): [`StepOrder::classify`] panics,
//!   unless the protocol declares itself deliberately unsafe
//!   ([`crate::Protocol::SENDS_UNSYNCED_STATE`], only the `async-primary` baseline does).
//!
//! An executor may hold more than this asks (the server's group commit holds every send
//! while any sync is due); it may never hold less.

use crate::{Effect, NodeId};

/// What an executor must do with one effect of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Carry it out now.
    Run,
    /// A `Sync`: start making everything persisted so far durable.
    IssueSync,
    /// A `Send` or `Reply` after a `Sync` of the step: carry it out only once that sync
    /// completed.
    HoldForSync,
}

/// Classifies the effects of one step, in order (make a new one per step).
#[derive(Clone, Copy, Debug)]
pub struct StepOrder {
    node: NodeId,
    after_sync: bool,
    unsynced_persist: bool,
    allow_unsynced_sends: bool,
}

impl StepOrder {
    /// A step of `node`; `allow_unsynced_sends` is the protocol's
    /// [`crate::Protocol::SENDS_UNSYNCED_STATE`].
    pub fn new(node: NodeId, allow_unsynced_sends: bool) -> Self {
        StepOrder {
            node,
            after_sync: false,
            unsynced_persist: false,
            allow_unsynced_sends,
        }
    }

    /// What to do with the step's next effect.
    ///
    /// # Panics
    ///
    /// On a `Send` or `Reply` that follows a `Persist` of the same step with no `Sync`
    /// between them, for a protocol that did not declare it may do so: a broken
    /// durability contract is a bug, stopped where it happens.
    pub fn classify<M>(&mut self, effect: &Effect<M>) -> Disposition {
        match effect {
            Effect::Persist { .. } => {
                self.unsynced_persist = true;
                Disposition::Run
            }
            Effect::Sync => {
                self.after_sync = true;
                self.unsynced_persist = false;
                Disposition::IssueSync
            }
            Effect::Send { .. } | Effect::Reply(_) => {
                if self.after_sync {
                    return Disposition::HoldForSync;
                }
                assert!(
                    !self.unsynced_persist || self.allow_unsynced_sends,
                    "durability contract broken by {}: a Send or Reply follows a Persist of \
                     the same step with no Sync between them",
                    self.node
                );
                Disposition::Run
            }
            Effect::SaveSnapshot { .. }
            | Effect::SetTimer { .. }
            | Effect::CancelTimer { .. }
            | Effect::Event(_)
            | Effect::Scope(_) => Disposition::Run,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GroupId;

    fn persist() -> Effect<u8> {
        Effect::Persist {
            group: GroupId::DEFAULT,
            record: vec![1],
        }
    }
    fn send() -> Effect<u8> {
        Effect::Send {
            to: NodeId(2),
            msg: 7,
        }
    }

    #[test]
    fn sends_after_a_sync_wait_for_it() {
        let mut o = StepOrder::new(NodeId(1), false);
        assert_eq!(o.classify(&send()), Disposition::Run);
        assert_eq!(o.classify(&persist()), Disposition::Run);
        assert_eq!(o.classify(&Effect::<u8>::Sync), Disposition::IssueSync);
        assert_eq!(o.classify(&send()), Disposition::HoldForSync);
        assert_eq!(o.classify(&persist()), Disposition::Run);
        assert_eq!(o.classify(&send()), Disposition::HoldForSync);
    }

    #[test]
    #[should_panic(expected = "durability contract broken by n1")]
    fn a_send_after_an_unsynced_persist_panics() {
        let mut o = StepOrder::new(NodeId(1), false);
        o.classify(&persist());
        o.classify(&send());
    }

    #[test]
    fn a_deliberately_unsafe_protocol_may_send_unsynced_state() {
        let mut o = StepOrder::new(NodeId(1), true);
        o.classify(&persist());
        assert_eq!(o.classify(&send()), Disposition::Run);
    }
}
