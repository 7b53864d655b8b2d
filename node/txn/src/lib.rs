//! # kvlab-txn
//!
//! One-shot distributed transactions as a **sans-IO protocol**: strict two-phase
//! locking inside two-phase commit, with the decision taken by a compare-and-set on a
//! *transaction record* in one group, the **home** (design note wave2 §3.3,
//! `txn.protocol = "2pl-2pc"`).
//!
//! **Must never depend on:** kvlab-raft, kvlab-ring, kvlab-swim, kvlab-node, tokio, the
//! filesystem, the network or a clock. It knows groups only as [`GroupId`]s and keys
//! only through a `group_of` function and the [`TxnStore`] trait; the composed node
//! (kvlab-node) brings Raft, the ring and routing. Time always comes in as an argument.
//!
//! ## The pieces, and who runs them
//!
//! | piece | runs on | replicated? | module |
//! |---|---|---|---|
//! | [`ParticipantState`] (locks, prepared and waiting txns, records, finished markers) | every replica of every group, inside its state machine | yes: changed only by [`ParticipantState::apply`] on committed entries; serde for snapshots | [`participant`] |
//! | [`LeaderPrecheck`] (PREPAREs proposed but not applied) | a group's leader | no: rebuilt empty at every leader change | [`locks`] |
//! | [`Coordinator`] (one per transaction) | the gateway that took the client's request | no: lost with the gateway | [`coordinator`] |
//! | [`Resolver`] and [`home_resolve`] | a group's leader | no | [`resolver`] |
//!
//! A transaction is identified by [`TxnId`] `{node, boot_epoch, seq}` (the gateway,
//! its persisted boot counter, a counter), never by a clock; answers about it go to
//! `txn.node`. It is a list of [`MicroOp`]s (read, append, write) known in full at
//! invoke. Values are [`TxnValue`]s: a register or a list.
//!
//! ## The protocol, step by step
//!
//! 1. **Route.** [`Coordinator::start`] splits the micro-ops by group. The **home** is
//!    the first key's group. If only one group is touched (and `txn.one_pc`), it sends
//!    one [`TxnEntry::Execute1Pc`]: at apply the group checks the locks (NO_WAIT),
//!    evaluates the ops in order, applies the writes and records a finished marker with
//!    the results, all in one entry. No record, no second round.
//! 2. **PREPARE.** Otherwise it sends a [`TxnEntry::Prepare`] to every group; only the
//!    home's copy lists the participants. The group's leader:
//!    * stamps it with its clock ([`TxnEntry::stamp`]: the home's `Pending` record
//!      expires at `proposed_at + txn_ttl_ms`, the same on every replica);
//!    * pre-checks it ([`LeaderPrecheck::check`]) against the applied locks *and* the
//!      PREPAREs it proposed but has not applied. On a conflict it answers
//!      `Vote::No` **without writing to Raft** (NO_WAIT; under wait-die only when an
//!      older transaction holds the key);
//!    * otherwise proposes it. At **apply** — the authoritative check — the state
//!      machine checks the locks again, takes shared locks on keys only read and
//!      exclusive locks on keys written, evaluates the ops in order (a read sees the
//!      transaction's own earlier writes), buffers the writes, and at the home creates
//!      `Pending`. It votes YES with the read results, or NO. A duplicate PREPARE gets
//!      the recorded vote; one that arrives after the transaction finished here is
//!      refused by the **finished marker**; at the home, one that finds `Aborted` is
//!      refused.
//! 3. **Decide.** All YES: the coordinator sends [`TxnEntry::Commit`] to the home. Its
//!    apply is the CAS `Pending → Committed` ([`record::cas_commit`]) and, in the same
//!    entry, the home's own writes and lock releases. Only once that entry has applied
//!    does the client get **ok** ([`TxnOutcome::Committed`]). Then the Commit goes to
//!    every other participant, resent every `decision_retry_ms` until each answers;
//!    each applies its writes, releases its locks and writes its finished marker in
//!    one entry.
//! 4. **Abort.** Any NO, or a missing vote after `prepare_timeout_ms`: the coordinator
//!    sends [`TxnEntry::Abort`] to the home: `Pending → Aborted`, or *create* `Aborted`
//!    if the home never prepared ([`record::cas_abort`]). The client gets **fail**
//!    ([`TxnOutcome::Aborted`]) only once the home answered `Aborted`; whatever the
//!    coordinator cannot learn is **info** ([`TxnOutcome::Unknown`]). A 1PC refused by
//!    a leader's pre-check is settled the same way: an Abort in its one group (whose
//!    finished marker plays the record) tells whether a copy applied after all.
//! 5. **Coordinator crash.** A participant leader that holds a prepared transaction for
//!    longer than `resolve_after_ms` asks the home ([`Resolver::poll`]). The home
//!    answers from its record ([`home_resolve`]): decided → the decision; `Pending`
//!    not yet expired → retry later; expired, or **no record at all** → it proposes
//!    `Abort` (create-if-absent) and answers what the log decided. The participant
//!    applies the decision through its own log ([`Resolver::on_decision`]).
//! 6. **Participant crash or leader change.** Locks, prepared writes, records and
//!    markers are replicated state, so a new leader has them. A PREPARE proposed but
//!    never applied produced no vote: the coordinator times out and aborts. The new
//!    leader's [`LeaderPrecheck`] starts empty, which is safe because apply decides.
//!
//! ```
//! use std::collections::BTreeMap;
//! use kvlab_txn::*;
//! use kvlab_types::{GroupId, Key, NodeId, Time};
//!
//! let cfg = TxnConfig::default();
//! let group_of = |k: &Key| GroupId(if k.as_str() < "m" { 1 } else { 2 });
//! let mut groups: BTreeMap<GroupId, (ParticipantState, BTreeMap<Key, TxnValue>)> =
//!     [1, 2].map(|g| (GroupId(g), (ParticipantState::new(GroupId(g)), BTreeMap::new()))).into();
//! let txn = TxnId { node: NodeId(1), boot_epoch: 1, seq: 1 };
//! let ops = vec![
//!     MicroOp::Append { key: "a".into(), value: 7 },  // group 1: the home
//!     MicroOp::Read { key: "z".into() },              // group 2
//! ];
//! let (mut coord, mut step) = Coordinator::start(txn, ops, &cfg, Time::ZERO, group_of).unwrap();
//! // A perfect network: deliver every request to its group's log and apply it at once.
//! while step.outcome.is_none() {
//!     let mut next = CoordStep::default();
//!     for req in step.send {
//!         let (state, store) = groups.get_mut(&req.group).unwrap();
//!         let applied = state.apply(&cfg, store, &req.entry);
//!         let s = coord.on_answer(req.group, &applied.answer, Time::ZERO);
//!         next.send.extend(s.send);
//!         next.outcome = next.outcome.or(s.outcome);
//!     }
//!     step = next;
//! }
//! assert_eq!(step.outcome.unwrap().history_type(), "ok");
//! assert_eq!(groups[&GroupId(1)].0.record(txn), Some(&TxnRecord::Committed));
//! ```
//!
//! ## How a node drives it (the composed node's side)
//!
//! Every message is a [`TxnMsg`]; check it with [`TxnMsg::validate`] on receipt.
//!
//! | when | who | call | then |
//! |---|---|---|---|
//! | client `txn` op | gateway | [`Coordinator::start`]`(id, ops, cfg, now, group_of)` | send each [`Request`] as `TxnMsg::Request` to the group's leader |
//! | `TxnMsg::Request` | group leader | [`LeaderPrecheck::admit`]`(&state, cfg, &mut entry, now)` | `Err(answer)`: send `TxnMsg::Answer` now, no log entry; `Ok`: propose `entry` |
//! | a txn entry applies | every replica | [`ParticipantState::apply`]`(cfg, &mut store, &entry)` | the leader: [`LeaderPrecheck::on_applied`], `Answer` to `txn.node` (the proposer's answer) and one `Answer` per [`Applied::woken`] |
//! | `TxnMsg::Answer` | gateway | [`Coordinator::on_answer`] | send its requests; reply to the client with its outcome (once); drop it when [`Coordinator::is_done`] |
//! | timer at [`Coordinator::next_wakeup`] | gateway | [`Coordinator::on_tick`] | as above; a request timeout: [`Coordinator::abandon`] |
//! | periodically | group leader | [`Resolver::poll`] | `AskHome` → `TxnMsg::Resolve`; `Propose` → propose |
//! | `TxnMsg::Resolve` | home leader | [`home_resolve`] | `Answer` → `TxnMsg::Resolved`; `Propose` → propose, `Resolved` once it applied |
//! | `TxnMsg::Resolved` | group leader | [`Resolver::on_decision`] | propose the entry it returns |
//! | leadership changes | group | `LeaderPrecheck::default()`, `Resolver::default()` | nothing else: the rest is replicated |
//! | plain read/write/cas | every replica, at apply | [`ParticipantState::plain_conflict`] | refuse the op if it conflicts with a held lock |
//!
//! The store is the group's key-value map, seen through [`TxnStore`]; the
//! [`ParticipantState`] goes into the group's snapshot next to it (serde).
//!
//! ## Why it is strictly serializable
//!
//! * Every transaction is strict 2PL: all of its locks are taken in PREPARE entries,
//!   and none is released before the decision is durable at the home (the home
//!   releases in the very entry that commits; the others later).
//! * So between the last PREPARE applied and the first release there is a **lock
//!   point** at which it holds every lock. Its reads were evaluated under those locks,
//!   and its writes become visible only after the lock point.
//! * Conflicting transactions are therefore ordered by lock point: conflict
//!   serializability. The home's Commit entry is after the lock point and before any
//!   release, so the order of home commits is a valid serial order (the model test
//!   replays committed transactions in exactly that order).
//! * The lock point lies between the client's invoke and its ok, so the order respects
//!   real time as well.
//! * Atomicity: exactly one of `Committed` and `Aborted` can ever be applied to the home
//!   record (a CAS in one Raft log), every participant obeys the record, and a
//!   participant never commits what it did not prepare, whoever asks (coordinator or
//!   resolver) and however messages are duplicated, delayed or reordered.
//! * No clock takes part in safety: `expires_at` only decides *when* a resolver may
//!   abort; the CAS decides *whether*.
//!
//! ## Conflicts
//!
//! NO_WAIT ([`ConflictPolicy::NoWait`], the default) never waits: no deadlock, no
//! detector; the abort rate is what experiments measure. Wait-die
//! ([`ConflictPolicy::WaitDie`]): a PREPARE that meets locks held only by *younger*
//! transactions (larger `(boot_epoch, seq, node)`) waits in a per-key queue of at most
//! `lock_wait_queue_max` ([`EntryAnswer::Waiting`]); the entry that releases the lock
//! decides its vote ([`Applied::woken`], sent to `txn.node`). Waits go only from old to
//! young, so there is no cycle.
//!
//! ## The broken variants ([`TxnBug`], design §3.5)
//!
//! | variant | the wrong thing | what breaks |
//! |---|---|---|
//! | `no-read-locks` | reads take and check no shared locks | write skew (G2-item), read skew (G-single) |
//! | `release-before-decision` | locks released when voting YES | the lock point is gone: G-single-realtime, G2-item |
//! | `writes-at-prepare` | buffered writes applied at PREPARE, kept on abort | aborted data visible: G1a |
//! | `commit-on-partial-votes` | commit once the home votes YES | NO voters commit nothing: partial-txn, lost-append |
//! | `no-decision-record` | no record; stale prepared txns aborted locally | a coordinator crash mid-commit: partial-txn |
//! | `resolver-commits-pending` | an expired `Pending` is committed by the home | unprepared participants: partial-txn |
//! | `no-finished-marker` | late duplicate PREPAREs accepted after finishing | appends applied twice: duplicate elements |
//!
//! ## Tests
//!
//! * `tests/scenarios.rs`: one scripted scenario per recovery case of §3.3 (coordinator
//!   dead before the decision, dead after the home's commit, late duplicate PREPARE,
//!   participant leader change, NO_WAIT without a log entry, wait-die, 1PC, prepare
//!   timeout, create-if-absent, bounds, snapshots).
//! * `tests/model.rs`: 600 seeded random runs of concurrent transactions through a
//!   deterministic harness (message loss, late duplicates, reordering, leader changes
//!   that lose unapplied entries, coordinator crashes; half the seeds with timeouts so
//!   short that resolvers race live coordinators), then a fault-free phase that must
//!   quiesce. Checked: `ok` ⇒ committed, `fail` ⇒ not, no txn committed at one group
//!   and aborted at another, no lock left, every commit point between invoke and ok,
//!   and a serial replay in commit order that reproduces every committed transaction's
//!   reads and the final state. Every variant of the table above is caught by it (a
//!   test asserts so and prints the first failing seed of each).
//! * `tests/hostile.rs`: random senseless entries under every variant: no panic, lock
//!   invariants and `records_max` hold.
//!
//! ## Bounds and hostile input
//!
//! `max_keys_per_txn` is checked by the coordinator ([`TxnError::TooManyKeys`]) and
//! again at apply ([`Refusal::TooManyKeys`]). A group remembers at most `records_max`
//! transactions (records, markers, prepared, waiting): no GC in wave 2 — reaching it is
//! the typed [`Refusal::RecordsFull`] / [`EntryAnswer::RecordsFull`], and capacity for a
//! prepared transaction's decision is reserved when it prepares. Wait queues are bounded
//! by `lock_wait_queue_max`, coordinator resends by `decision_retries_max`. No input
//! makes the crate panic: an append to a register is [`EvalError::AppendToRegister`].
//!
//! ## Not done in this crate (yet)
//!
//! * `read_only = "validate-release"` (Spanner-style unreplicated read locks): only
//!   `locking` is built.
//! * Garbage collection of records and finished markers (needs a proof that no
//!   duplicate PREPARE can still arrive).
//! * Wiring: done outside this crate, on top of this API — kvlab-node's
//!   `composed::txn` (gateway, leaders, resolvers) and `composed::txn_store` (the vnode
//!   state machine), the `txn` client operation in kvlab-types, and the
//!   `txn-list-append` workload in kvlab-experiments, whose `kill-gateway` and
//!   `partition-home-group` nemesis faults aim at the 2PC points the composed node's
//!   `txn_step` events report.

#![deny(missing_docs)]

pub mod bugs;
pub mod config;
pub mod coordinator;
pub mod locks;
pub mod msg;
pub mod ops;
pub mod participant;
pub mod record;
pub mod resolver;

pub use bugs::TxnBug;
pub use config::{ReadOnlyMode, TxnConfig, TxnConfigError};
pub use coordinator::{AbortReason, CoordStep, Coordinator, Request, TxnError, TxnOutcome};
pub use kvlab_types::{GroupId, Time};
pub use locks::{
    Conflict, ConflictPolicy, LeaderPrecheck, Lock, LockMode, LockTable, lock_requests,
};
pub use msg::{MAX_MICRO_OPS, TxnMsg, TxnMsgError};
pub use ops::{
    BufferedWrite, EvalError, MicroOp, OpResult, TxnId, TxnStore, TxnValue, evaluate, key_modes,
};
pub use participant::{
    Applied, EntryAnswer, Finished, ParticipantState, ParticipantStats, Prepare, PreparedTxn,
    Refusal, TxnEntry, Vote,
};
pub use record::{CasOutcome, Decision, TxnRecord};
pub use resolver::{HomeResolve, ResolveAction, Resolver, home_resolve};
