//! Property tests over many seeds on the simulated disk: random appends, syncs, clean
//! closes, per-group snapshots of 2–3 groups sharing one log, power loss at any step,
//! and recovery, which must never lose a synced record nor refuse what a crash did.
//! Every failure prints its seed and the command that replays it alone
//! (`KVLAB_STORAGE_SEED=<seed>`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{FailAfter, for_seeds, opts};
use kvlab_storage::{CrashOptions, FsyncPolicy, Lsn, NodeStorage, SimFs, StorageOptions, Wal};
use kvlab_types::{GroupId, Recovery, Rng, seeded_rng};
use rand::RngExt;

const SEEDS_WAL: u64 = 400;
const SEEDS_NODE: u64 = 600;
const ROUNDS: usize = 6;

/// A payload unique across the whole run (so a stale record can never pass for a new
/// one), of random length, sometimes empty.
fn unique_payload(rng: &mut Rng, counter: &mut u64) -> Vec<u8> {
    *counter += 1;
    let len = match rng.random_range(0..10u8) {
        0 => 0,
        1 => rng.random_range(500..3000),
        _ => rng.random_range(8..200),
    };
    let mut p = counter.to_le_bytes().to_vec();
    p.resize(len.max(8), (*counter % 251) as u8);
    if len == 0 { Vec::new() } else { p }
}

/// Options with a random segment size and a random bound on the unsynced tail (small
/// bounds make the log sync by itself and the crash tear within the bound).
fn random_options(rng: &mut Rng, policy: FsyncPolicy, segment_sizes: [u64; 3]) -> StorageOptions {
    StorageOptions {
        max_unsynced_bytes: [4096, 16384, 1 << 20][rng.random_range(0..3usize)],
        ..opts(policy, segment_sizes[rng.random_range(0..3usize)])
    }
}

fn crash_options(rng: &mut Rng) -> CrashOptions {
    CrashOptions {
        tear_probability: [0.0, 0.5, 1.0][rng.random_range(0..3usize)],
    }
}

/// One seed of the log-only property: returns a transcript (for the determinism test).
fn wal_seed(seed: u64, policy: FsyncPolicy) -> Result<String, String> {
    let mut rng = seeded_rng(seed);
    let fs = SimFs::new();
    let dir = Path::new("/node");
    let o = random_options(&mut rng, policy, [4096, 16384, 1 << 20]);
    let mut appended: Vec<Vec<u8>> = Vec::new();
    let mut durable = 0usize;
    let mut counter = 0u64;
    let mut transcript = String::new();
    let mut closed = false;
    for round in 0..ROUNDS {
        let (mut wal, rec) = Wal::open(fs.clone(), dir, &o)
            .map_err(|e| format!("round {round}: open refused: {e}"))?;
        if rec.clean_shutdown != closed {
            return Err(format!(
                "round {round}: clean shutdown {}, but the log was {}closed",
                rec.clean_shutdown,
                if closed { "" } else { "not " }
            ));
        }
        let got: Vec<&Vec<u8>> = rec.records.iter().map(|(_, p)| p).collect();
        for (i, (lsn, _)) in rec.records.iter().enumerate() {
            if *lsn != Lsn(i as u64 + 1) {
                return Err(format!("round {round}: record {i} has lsn {lsn}"));
            }
        }
        if got.len() < durable {
            return Err(format!(
                "round {round}: recovered {} records but {durable} were synced",
                got.len()
            ));
        }
        if got.len() > appended.len() || got.iter().zip(&appended).any(|(a, b)| *a != b) {
            return Err(format!(
                "round {round}: recovered {} records that are not a prefix of the {} appended",
                got.len(),
                appended.len()
            ));
        }
        transcript += &format!("{}/{};", got.len(), appended.len());
        appended.truncate(got.len());
        durable = got.len();

        for _ in 0..rng.random_range(1..120) {
            if rng.random_bool(0.8) {
                let p = unique_payload(&mut rng, &mut counter);
                wal.append(&p).map_err(|e| format!("append: {e}"))?;
                appended.push(p);
                if policy == FsyncPolicy::Always {
                    durable = appended.len();
                }
            } else {
                wal.sync().map_err(|e| format!("sync: {e}"))?;
                if policy != FsyncPolicy::Never {
                    durable = appended.len();
                }
            }
        }
        if policy == FsyncPolicy::Never {
            durable = 0;
        }
        closed = rng.random_bool(0.2);
        if closed {
            wal.close().map_err(|e| format!("close: {e}"))?;
            durable = appended.len();
        }
        let crash = crash_options(&mut rng);
        fs.crash(&mut rng, &crash);
    }
    Ok(transcript)
}

#[test]
fn synced_records_survive_crashes_and_recovery_is_a_prefix_with_fsync_always() {
    for_seeds("crash_property", 0..SEEDS_WAL, |seed| {
        wal_seed(seed, FsyncPolicy::Always).map(drop)
    });
}

#[test]
fn synced_records_survive_crashes_and_recovery_is_a_prefix_with_group_commit() {
    for_seeds("crash_property", 0..SEEDS_WAL, |seed| {
        wal_seed(seed, FsyncPolicy::Batch).map(drop)
    });
}

#[test]
fn crash_outcomes_are_deterministic_for_a_seed() {
    for seed in 0..20 {
        assert_eq!(
            wal_seed(seed, FsyncPolicy::Batch),
            wal_seed(seed, FsyncPolicy::Batch),
            "seed {seed}"
        );
    }
}

/// With `never`, recovery still yields a prefix of what was appended, never garbage,
/// as long as no segment is rolled (see `FsyncPolicy::Never`).
#[test]
fn fsync_never_still_recovers_a_prefix_within_one_segment() {
    for_seeds("crash_property", 0..100, |seed| {
        let mut rng = seeded_rng(seed);
        let fs = SimFs::new();
        let dir = Path::new("/node");
        let o = opts(FsyncPolicy::Never, 1 << 30);
        let mut appended = Vec::new();
        let mut counter = 0;
        for _ in 0..ROUNDS {
            let (mut wal, rec) = Wal::open(fs.clone(), dir, &o).map_err(|e| e.to_string())?;
            let got: Vec<Vec<u8>> = rec.records.into_iter().map(|(_, p)| p).collect();
            if got.len() > appended.len() || got[..] != appended[..got.len()] {
                return Err("not a prefix".into());
            }
            appended.truncate(got.len());
            for _ in 0..rng.random_range(1..60) {
                let p = unique_payload(&mut rng, &mut counter);
                wal.append(&p).map_err(|e| e.to_string())?;
                appended.push(p);
                if rng.random_bool(0.2) {
                    wal.sync().map_err(|e| e.to_string())?;
                }
            }
            let crash = crash_options(&mut rng);
            fs.crash(&mut rng, &crash);
        }
        Ok(())
    });
}

/// What the test knows about one group's durable state.
#[derive(Debug, Default, Clone)]
struct GroupModel {
    /// The group's logical record sequence (snapshot-covered records included), as
    /// appended.
    appended: Vec<Vec<u8>>,
    /// At least this many leading logical records are durable.
    durable: usize,
    /// Logical records the last completed snapshot covers.
    snapshot: Option<usize>,
    /// A snapshot that was being saved when power failed.
    snapshot_in_flight: Option<usize>,
}

/// What the test knows about the node's durable state: each group's, and the order in
/// which records of all groups entered the one shared log.
#[derive(Debug, Default)]
struct Model {
    groups: BTreeMap<GroupId, GroupModel>,
    /// Every record still in the model, in log order: (group, index in its sequence).
    order: Vec<(GroupId, usize)>,
    /// Opens attempted since the last clean close (`None`: not closed). An interrupted
    /// close counts as one open: it may or may not have recorded the end.
    opens_since_close: Option<u32>,
}

fn snapshot_data(group: GroupId, covered: usize, counter: u64) -> Vec<u8> {
    let mut d = (covered as u64).to_le_bytes().to_vec();
    d.extend_from_slice(b"snap");
    d.extend_from_slice(&group.0.to_le_bytes());
    d.extend_from_slice(&counter.to_le_bytes());
    d
}

/// The logical records a group's snapshot covers, checking that it is the group's.
fn snapshot_covers(group: GroupId, d: &[u8]) -> Result<usize, String> {
    let mut k = [0u8; 8];
    if d.len() != 28 || &d[8..12] != b"snap" {
        return Err(format!(
            "group {group}: snapshot is garbage ({} bytes)",
            d.len()
        ));
    }
    k.copy_from_slice(&d[12..20]);
    if u64::from_le_bytes(k) != group.0 {
        return Err(format!(
            "group {group}: recovered group {}'s snapshot",
            u64::from_le_bytes(k)
        ));
    }
    k.copy_from_slice(&d[..8]);
    Ok(u64::from_le_bytes(k) as usize)
}

impl Model {
    fn new(groups: &[GroupId]) -> Self {
        Model {
            groups: groups.iter().map(|g| (*g, GroupModel::default())).collect(),
            ..Model::default()
        }
    }

    fn persisted(&mut self, group: GroupId, record: Vec<u8>) {
        let g = self.groups.get_mut(&group).expect("a modelled group");
        self.order.push((group, g.appended.len()));
        g.appended.push(record);
    }

    /// Every record appended so far is durable.
    fn all_durable(&mut self) {
        for g in self.groups.values_mut() {
            g.durable = g.appended.len();
        }
    }

    /// Checks a recovery against what must have survived, then adopts it: per group,
    /// its snapshot (the last saved, or the one in flight) and exactly the records
    /// after it, at least every durable one; over all groups, a prefix of the log (no
    /// record survives that was appended after one that was lost).
    fn check_and_adopt(&mut self, rec: &Recovery) -> Result<(), String> {
        if let Some(g) = rec.groups.keys().find(|g| !self.groups.contains_key(g)) {
            return Err(format!(
                "recovered group {g}, which never persisted anything"
            ));
        }
        // Per group: (first logical record not covered by the snapshot, end of what
        // survived).
        let mut kept = BTreeMap::new();
        for (&id, g) in &self.groups {
            let r = rec.group(id);
            let covered = r
                .snapshot
                .as_deref()
                .map(|d| snapshot_covers(id, d))
                .transpose()?;
            if covered != g.snapshot && (covered.is_none() || covered != g.snapshot_in_flight) {
                return Err(format!(
                    "group {id}: snapshot covers {covered:?}; expected {:?} (or in flight {:?})",
                    g.snapshot, g.snapshot_in_flight
                ));
            }
            let base = covered.unwrap_or(0);
            let total = base + r.records.len();
            if total < g.durable {
                return Err(format!(
                    "group {id}: recovered {total} logical records, {} were durable",
                    g.durable
                ));
            }
            if total > g.appended.len() || r.records[..] != g.appended[base..total] {
                return Err(format!(
                    "group {id}: records after the snapshot (logical {base}..{total}) are not \
                     what was appended ({})",
                    g.appended.len()
                ));
            }
            kept.insert(id, (base, total, covered));
        }
        let mut first_lost = None;
        for (pos, (id, i)) in self.order.iter().enumerate() {
            let (base, total, _) = kept[id];
            if *i >= total {
                first_lost.get_or_insert(pos);
            } else if *i >= base
                && let Some(lost) = first_lost
            {
                return Err(format!(
                    "group {id}'s record {i} (log position {pos}) survived, but the record at \
                     log position {lost} was lost: not a prefix of the log"
                ));
            }
        }
        self.order.retain(|(id, i)| *i < kept[id].1);
        for (id, (_, total, covered)) in kept {
            let g = self.groups.get_mut(&id).expect("a modelled group");
            g.appended.truncate(total);
            g.durable = total;
            g.snapshot = covered;
            g.snapshot_in_flight = None;
        }
        Ok(())
    }
}

/// How often the interesting situations happened, so the test can prove it reached them.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    torn_tails_cut: u64,
    wal_skips: u64,
    temp_snapshots_removed: u64,
    opens_interrupted: u64,
    operations_interrupted: u64,
    snapshots_recovered: u64,
    clean_shutdowns_verified: u64,
    leftover_segments_removed: u64,
    trailers_repaired: u64,
    records_of_other_groups_kept_across_a_skip: u64,
}

fn node_seed(seed: u64, cov: &mut Coverage) -> Result<(), String> {
    let mut rng = seeded_rng(seed);
    let fs = SimFs::new();
    let dir = Path::new("/node");
    let policy = if rng.random_bool(0.5) {
        FsyncPolicy::Always
    } else {
        FsyncPolicy::Batch
    };
    let o = random_options(&mut rng, policy, [4096, 8192, 1 << 20]);
    let groups: Vec<GroupId> = (0..rng.random_range(2..=3u64)).map(GroupId).collect();
    let mut m = Model::new(&groups);
    let mut counter = 0u64;
    for round in 0..ROUNDS {
        // Power fails after `budget` mutating calls (or not at all), possibly in the
        // middle of recovery, a segment roll, a snapshot, a prefix truncation or a close.
        let budget = match rng.random_range(0..10u8) {
            0..3 => i64::MAX,
            3..5 => rng.random_range(0..12),
            _ => rng.random_range(0..400),
        };
        let faulty = FailAfter::new(fs.clone(), budget);
        let ctx = |what: String| format!("round {round} ({policy}, budget {budget}): {what}");
        let after_close = m.opens_since_close;
        if let Some(n) = &mut m.opens_since_close {
            *n += 1;
        }
        match NodeStorage::open(faulty.clone(), dir, &o) {
            Err(e) if !faulty.tripped() => return Err(ctx(format!("open refused: {e}"))),
            Err(_) => cov.opens_interrupted += 1,
            Ok((mut st, rec)) => {
                let report = st.recovery_report().clone();
                let skipped_with_others = report.wal_skipped_to_snapshot
                    && rec
                        .groups
                        .values()
                        .filter(|g| !g.records.is_empty())
                        .count()
                        > 0;
                m.check_and_adopt(&rec).map_err(ctx)?;
                if !report.damage_truncated.is_empty() {
                    return Err(ctx(format!("strict recovery cut damage: {:?}", report)));
                }
                if report.clean_shutdown != (after_close == Some(0))
                    && !(report.clean_shutdown && after_close.is_some())
                {
                    return Err(ctx(format!(
                        "clean shutdown reported {}, but {} open(s) since a clean close ({after_close:?})",
                        report.clean_shutdown,
                        after_close.map_or(-1, i64::from)
                    )));
                }
                m.opens_since_close = None;
                cov.torn_tails_cut += u64::from(report.torn_tail.is_some());
                cov.wal_skips += u64::from(report.wal_skipped_to_snapshot);
                cov.records_of_other_groups_kept_across_a_skip += u64::from(skipped_with_others);
                cov.temp_snapshots_removed += u64::from(report.removed_leftover_temp_snapshot);
                cov.clean_shutdowns_verified += u64::from(report.clean_shutdown);
                cov.leftover_segments_removed += report.leftover_segments_removed as u64;
                cov.trailers_repaired += report.trailers_repaired as u64;
                cov.snapshots_recovered +=
                    rec.groups.values().filter(|g| g.snapshot.is_some()).count() as u64;
                let mut closed = false;
                for _ in 0..rng.random_range(1..100) {
                    let roll = rng.random_range(0..100u8);
                    let group = groups[rng.random_range(0..groups.len())];
                    let result = if roll < 65 {
                        let p = unique_payload(&mut rng, &mut counter);
                        // Even a failed append may have reached the disk.
                        m.persisted(group, p.clone());
                        st.persist(group, &p).map(|_| {
                            if policy == FsyncPolicy::Always {
                                m.all_durable();
                            }
                        })
                    } else if roll < 90 {
                        st.sync().map(|()| m.all_durable())
                    } else if roll < 99 {
                        let g = m.groups.get_mut(&group).expect("a modelled group");
                        let covered = g.appended.len();
                        counter += 1;
                        g.snapshot_in_flight = Some(covered);
                        st.save_snapshot(group, &snapshot_data(group, covered, counter))
                            .map(|()| {
                                g.snapshot = Some(covered);
                                g.snapshot_in_flight = None;
                                g.durable = g.durable.max(covered);
                            })
                    } else {
                        closed = true;
                        st.close().map(|()| {
                            m.all_durable();
                            m.opens_since_close = Some(0);
                        })
                    };
                    if let Err(e) = result {
                        if !faulty.tripped() {
                            return Err(ctx(format!("operation failed: {e}")));
                        }
                        if closed {
                            m.opens_since_close = Some(1);
                        }
                        cov.operations_interrupted += 1;
                        break;
                    }
                    if closed {
                        break;
                    }
                }
                // A graceful stop now and then (the server closes on shutdown).
                if !closed && !faulty.tripped() && rng.random_bool(0.2) {
                    match st.close() {
                        Ok(()) => {
                            m.all_durable();
                            m.opens_since_close = Some(0);
                        }
                        Err(e) if !faulty.tripped() => {
                            return Err(ctx(format!("close failed: {e}")));
                        }
                        Err(_) => {
                            m.opens_since_close = Some(1);
                            cov.operations_interrupted += 1;
                        }
                    }
                }
            }
        }
        let crash = crash_options(&mut rng);
        fs.crash(&mut rng, &crash);
    }
    let (_, rec) =
        NodeStorage::open(fs.clone(), dir, &o).map_err(|e| format!("final open: {e}"))?;
    m.check_and_adopt(&rec).map_err(|e| format!("final: {e}"))
}

#[test]
fn node_storage_recovers_each_groups_snapshot_and_durable_records_after_power_loss_at_any_step() {
    let total = std::cell::Cell::new(Coverage::default());
    let started = std::time::Instant::now();
    for_seeds("crash_property", 0..SEEDS_NODE, |seed| {
        let mut cov = total.get();
        let r = node_seed(seed, &mut cov);
        total.set(cov);
        r
    });
    // Unless a single seed was replayed, every situation must have been reached.
    let cov = total.get();
    if std::env::var("KVLAB_STORAGE_SEED").is_err() {
        let reached = [
            cov.torn_tails_cut,
            cov.wal_skips,
            cov.temp_snapshots_removed,
            cov.opens_interrupted,
            cov.operations_interrupted,
            cov.snapshots_recovered,
            cov.clean_shutdowns_verified,
            cov.leftover_segments_removed,
            cov.trailers_repaired,
            cov.records_of_other_groups_kept_across_a_skip,
        ];
        assert!(
            reached.iter().all(|&n| n > 0),
            "some situations never happened: {cov:?}"
        );
    }
    println!("{SEEDS_NODE} seeds in {:.2?}: {cov:?}", started.elapsed());
}
