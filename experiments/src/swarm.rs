//! Swarm testing (`kvlab swarm`), as TigerBeetle's VOPR and FoundationDB's simulation do
//! it: every seed draws its own configuration — system, node count, fault kinds and their
//! timing, network latency and loss, fsync latency, workload, clock drift — from ranges
//! the swarm file gives, and runs it on the simulator.
//!
//! A swarm file is a spec (the base every draw is laid over, as a `[[variant]]` is) with a
//! `[swarm]` table of ranges ([`SwarmSpec`]):
//!
//! ```toml
//! name = "swarm"
//! system = "raft"
//! [swarm]
//! systems = ["raft", "single", "kvlab"]
//! nodes = [3, 7]
//! faults = ["partition-halves", "crash", "pause", "loss"]
//! duration_s = [3.0, 8.0]
//! ```
//!
//! Seed `s` draws with its own stream (`derive_seed(s, "swarm", 0)`), so the draw and
//! the run are both a function of the seed: a failure replays from the spec the run
//! directory keeps (`kvlab run DIR/spec.toml --seed s`). Runs go in parallel on every
//! core; only failing run directories are kept, with `swarm.json` (every run: seed, what
//! it drew, verdict, wall time) and the distribution of the drawn parameters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kvlab_types::{derive_seed, seeded_rng};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::error::ExperimentError;
use crate::reproduce::Reproduce;
use crate::run::{ReportPolicy, RunOptions, RunVerdict, run_experiment};
use crate::spec::{FaultKind, Spec, SystemKind};

/// The most runs one `kvlab swarm` may be asked for.
pub const MAX_SWARM_RUNS: u64 = 10_000_000;

/// The ranges every seed of a swarm draws from (`[swarm]`). A range `[lo, hi]` is drawn
/// uniformly, both ends included.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmSpec {
    /// Systems, one drawn per run.
    pub systems: Vec<SystemKind>,
    /// Cluster size.
    pub nodes: [u32; 2],
    /// Fault kinds: each run takes each with probability 1/2 (at least one, unless the
    /// list is empty).
    pub faults: Vec<FaultKind>,
    /// Time between fault starts (s).
    pub interval_s: [f64; 2],
    /// How long a fault lasts (s).
    pub fault_duration_s: [f64; 2],
    /// Network latency: uniform in `[latency_min_ms, drawn]`, the upper end drawn here.
    pub latency_max_ms: [f64; 2],
    /// Network latency floor (ms).
    pub latency_min_ms: f64,
    /// Background message loss.
    pub loss: [f64; 2],
    /// Constant fsync latency (ms).
    pub fsync_ms: [f64; 2],
    /// Probability that a crash tears the last unsynced write a file kept
    /// (`disk.tear_probability`).
    pub tear_probability: [f64; 2],
    /// Closed-loop clients.
    pub clients: [u32; 2],
    /// Keys.
    pub keys: [u32; 2],
    /// Weight of reads, writes and cas, each drawn in `[0, 1]` (at least one positive).
    pub mix: bool,
    /// `clock-drift` faults' bound (ppm).
    pub clock_drift_ppm_max: [i64; 2],
    /// The safety phase (simulated s).
    pub duration_s: [f64; 2],
    /// Draw `interval_s` and `fault_duration_s` log-uniformly, so that a range like
    /// `[0.01, 3]` gives bursts of faults 10 ms apart as often as faults seconds apart.
    pub log_timing: bool,
    /// Also draw Raft's own parameters, for `raft` and the composed node's groups alike:
    /// `election_ticks` in `[3, 10]` (shifted up so that the election timeout stays at
    /// least 3 round trips plus an fsync of the drawn network and disk), `pre_vote` and `check_quorum` each on or off, and
    /// `max_entries_per_msg` 1 or 256 (one entry per AppendEntries is the Figure 8
    /// setting). Bugs hide in settings a fixed configuration never visits.
    pub raft_params: bool,
    /// The share of `raft` runs that draw an election storm instead (0 to 1): three or
    /// five nodes, crashes of any node and of the leader and random partitions every
    /// 10–30 ms lasting 4 ms, a network that delays (1–8 ms), loses 5 % and reorders
    /// half the messages, election timeouts of 20–40 ms (below §5.6's bound on purpose:
    /// candidates collide), no PreVote or CheckQuorum, one entry per AppendEntries. It
    /// is the setting of Figure 8 (a leader that replicates an old term's entry and
    /// crashes before its own term's entry commits) and of lost votes; the runs keep
    /// their drawn clients, keys, mix and duration, and the table shows
    /// `profile = storm`.
    pub storm: f64,
}

impl Default for SwarmSpec {
    fn default() -> Self {
        SwarmSpec {
            systems: vec![SystemKind::Raft],
            nodes: [3, 5],
            faults: Vec::new(),
            interval_s: [1.0, 3.0],
            fault_duration_s: [0.5, 2.0],
            latency_max_ms: [1.0, 10.0],
            latency_min_ms: 0.5,
            loss: [0.0, 0.0],
            fsync_ms: [1.0, 1.0],
            tear_probability: [0.1, 0.1],
            clients: [4, 8],
            keys: [4, 16],
            mix: true,
            clock_drift_ppm_max: [0, 0],
            duration_s: [5.0, 5.0],
            log_timing: false,
            raft_params: false,
            storm: 0.0,
        }
    }
}

/// One drawn parameter, for the distribution table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Drawn {
    /// A number.
    Num(f64),
    /// A name (system) or a list of names (fault kinds).
    Names(Vec<String>),
}

/// A drawn run: its spec and what was drawn.
#[derive(Clone, Debug)]
pub struct Draw {
    /// The whole spec, validated.
    pub spec: Spec,
    /// Parameter → value, in a fixed order.
    pub params: BTreeMap<String, Drawn>,
}

fn invalid(file: &Path, field: &str, reason: impl Into<String>) -> ExperimentError {
    ExperimentError::SpecInvalid {
        file: file.to_path_buf(),
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl SwarmSpec {
    /// Checks that every range is ordered and sensible; errors name `swarm.<field>`.
    pub fn validate(&self, file: &Path) -> Result<(), ExperimentError> {
        let f = |name: &str, r: [f64; 2], lo: f64| {
            if !(r[0].is_finite() && r[1].is_finite() && lo <= r[0] && r[0] <= r[1]) {
                return Err(invalid(
                    file,
                    &format!("swarm.{name}"),
                    format!("must be [lo, hi] with {lo} <= lo <= hi, got {r:?}"),
                ));
            }
            Ok(())
        };
        let u = |name: &str, r: [u32; 2], lo: u32| f(name, [r[0] as f64, r[1] as f64], lo as f64);
        if self.systems.is_empty() {
            return Err(invalid(
                file,
                "swarm.systems",
                "must name at least one system",
            ));
        }
        u("nodes", self.nodes, 1)?;
        u("clients", self.clients, 1)?;
        u("keys", self.keys, 1)?;
        f("interval_s", self.interval_s, 0.01)?;
        f("fault_duration_s", self.fault_duration_s, 0.001)?;
        f("latency_max_ms", self.latency_max_ms, self.latency_min_ms)?;
        f("loss", self.loss, 0.0)?;
        if self.loss[1] >= 1.0 {
            return Err(invalid(file, "swarm.loss", "must stay below 1"));
        }
        f("fsync_ms", self.fsync_ms, 0.0)?;
        if !(0.0..=1.0).contains(&self.storm) {
            return Err(invalid(
                file,
                "swarm.storm",
                format!("must be in [0, 1], got {}", self.storm),
            ));
        }
        f("tear_probability", self.tear_probability, 0.0)?;
        if self.tear_probability[1] > 1.0 {
            return Err(invalid(
                file,
                "swarm.tear_probability",
                "is a probability: at most 1",
            ));
        }
        f("duration_s", self.duration_s, 0.1)?;
        let drift = [
            self.clock_drift_ppm_max[0] as f64,
            self.clock_drift_ppm_max[1] as f64,
        ];
        f("clock_drift_ppm_max", drift, 0.0)
    }
}

/// A swarm file: the base spec (as a table) and its ranges.
#[derive(Clone, Debug)]
pub struct Swarm {
    /// The file it came from.
    pub file: PathBuf,
    base: toml::Table,
    /// The ranges.
    pub ranges: SwarmSpec,
}

impl Swarm {
    /// Reads and checks a swarm file: its `[swarm]` ranges, and that the base with the
    /// ranges' lower ends is a valid spec.
    pub fn load(file: &Path) -> Result<Swarm, ExperimentError> {
        Swarm::load_with(file, &[])
    }

    /// [`Swarm::load`] from text.
    pub fn from_toml_str(text: &str, file: &Path) -> Result<Swarm, ExperimentError> {
        Swarm::from_toml_str_with(text, file, &[])
    }

    /// [`Swarm::load`] with `KEY=VALUE` overrides applied to the file first (`kvlab
    /// swarm --set`): `KEY` is a dotted path into the file (`raft.raft.pre_vote`,
    /// `swarm.systems`), `VALUE` a TOML value (`true`, `3`, `0.5`, `"text"`,
    /// `["raft", "kvlab"]`). The same swarm with one Raft bug switched on is
    /// `--set raft.raft.unsafe_skip_vote_persist=true`.
    pub fn load_with(file: &Path, sets: &[String]) -> Result<Swarm, ExperimentError> {
        let text = std::fs::read_to_string(file).map_err(|source| ExperimentError::SpecRead {
            file: file.to_path_buf(),
            source,
        })?;
        Swarm::from_toml_str_with(&text, file, sets)
    }

    /// [`Swarm::load_with`] from text.
    pub fn from_toml_str_with(
        text: &str,
        file: &Path,
        sets: &[String],
    ) -> Result<Swarm, ExperimentError> {
        let mut base: toml::Table =
            toml::from_str(text).map_err(|e| invalid(file, "(whole)", e.to_string()))?;
        for set in sets {
            apply_set(&mut base, set)?;
        }
        let ranges = match base.remove("swarm") {
            Some(toml::Value::Table(t)) => SwarmSpec::deserialize(toml::Value::Table(t))
                .map_err(|e| invalid(file, "swarm", e.to_string()))?,
            Some(_) => return Err(invalid(file, "swarm", "must be a table ([swarm])")),
            None => return Err(invalid(file, "swarm", "a swarm file needs a [swarm] table")),
        };
        if base.contains_key("variant") {
            return Err(invalid(file, "variant", "a swarm file has no [[variant]]s"));
        }
        ranges.validate(file)?;
        let swarm = Swarm {
            file: file.to_path_buf(),
            base,
            ranges,
        };
        swarm.draw(0)?;
        Ok(swarm)
    }

    /// The configuration of seed `seed`.
    pub fn draw(&self, seed: u64) -> Result<Draw, ExperimentError> {
        let (over, params) = self.ranges.overlay(seed);
        let mut merged = self.base.clone();
        crate::sweep::merge(&mut merged, over);
        let text =
            toml::to_string(&merged).map_err(|e| invalid(&self.file, "(whole)", e.to_string()))?;
        let spec = Spec::from_toml_str(&text, &self.file).map_err(|e| {
            invalid(
                &self.file,
                "swarm",
                format!("seed {seed} drew an invalid spec: {e}"),
            )
        })?;
        Ok(Draw { spec, params })
    }
}

/// Applies one `--set KEY=VALUE` to `table`, creating the tables on the way.
fn apply_set(table: &mut toml::Table, set: &str) -> Result<(), ExperimentError> {
    let bad = |reason: &str| ExperimentError::BadArgument {
        arg: format!("--set {set}"),
        reason: reason.into(),
    };
    let (key, value) = set
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE, e.g. raft.raft.pre_vote=false"))?;
    let parsed: toml::Table = toml::from_str(&format!("v = {}", value.trim()))
        .map_err(|_| bad("VALUE must be a TOML value: true, 3, 0.5, \"text\", [\"a\", \"b\"]"))?;
    let value = parsed.get("v").cloned().ok_or_else(|| bad("no value"))?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(bad("KEY must be a dotted path like raft.raft.pre_vote"));
    }
    let (last, parents) = path.split_last().ok_or_else(|| bad("empty KEY"))?;
    let mut at = table;
    for p in parents {
        let next = at
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = next
            .as_table_mut()
            .ok_or_else(|| bad(&format!("`{p}` is not a table")))?;
    }
    at.insert(last.to_string(), value);
    Ok(())
}

fn num(v: f64) -> toml::Value {
    toml::Value::Float(v)
}

fn int(v: i64) -> toml::Value {
    toml::Value::Integer(v)
}

fn table(entries: Vec<(&str, toml::Value)>) -> toml::Value {
    toml::Value::Table(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// The numbers a seed draws from the `[swarm]` ranges (RNG stream 0).
struct Scalars {
    duration: f64,
    interval: f64,
    fault_len: f64,
    latency_max: f64,
    loss: f64,
    fsync: f64,
    tear: f64,
    drift: f64,
    mix: Vec<f64>,
}

/// The cluster's shape a seed draws (RNG stream 1).
struct Shape {
    nodes: u32,
    clients: u32,
    keys: u32,
    system: SystemKind,
    faults: Vec<String>,
}

impl SwarmSpec {
    /// The overlay seed `seed` draws, and the drawn parameters.
    fn overlay(&self, seed: u64) -> (toml::Table, BTreeMap<String, Drawn>) {
        let mut p: BTreeMap<String, Drawn> = BTreeMap::new();
        let x = self.draw_scalars(seed, &mut p);
        let shape = self.draw_shape(seed, &mut p);
        let mut over = toml::Table::new();
        over.insert(
            "system".into(),
            toml::Value::String(shape.system.name().into()),
        );
        over.insert("nodes".into(), int(i64::from(shape.nodes)));
        over.insert("time".into(), table(vec![("duration_s", num(x.duration))]));
        over.insert("workload".into(), self.workload_table(&shape, &x.mix));
        // `replace-voter` on one Raft group swaps a spare learner in: keep one, and
        // start with it as a learner.
        let spare = shape.system == SystemKind::Raft
            && (shape.faults.iter()).any(|n| n == FaultKind::ReplaceVoter.spec_name());
        let faults = shape
            .faults
            .iter()
            .cloned()
            .map(toml::Value::String)
            .collect();
        over.insert(
            "nemesis".into(),
            table(vec![
                ("faults", toml::Value::Array(faults)),
                ("interval_s", num(x.interval)),
                ("fault_duration_s", num(x.fault_len.min(x.interval * 0.9))),
                ("clock_drift_ppm_max", int(x.drift as i64)),
                ("spare_learners", int(i64::from(spare))),
            ]),
        );
        let latency = table(vec![
            ("kind", toml::Value::String("uniform".into())),
            ("min_ms", num(self.latency_min_ms.min(x.latency_max))),
            ("max_ms", num(x.latency_max)),
        ]);
        over.insert(
            "network".into(),
            table(vec![
                ("latency", latency),
                ("loss_probability", num(x.loss)),
            ]),
        );
        if self.raft_params {
            // Raft's timing requirement (§5.6): broadcast time ≪ election timeout. The
            // drawn timeout stays at least 3 round trips plus an fsync, so that no draw
            // livelocks elections by itself (swarm seed 3223: 30 ms timeouts over 40 ms
            // round trips elected no leader for 4 s).
            let tick_ms = kvlab_node::raft_kv::RaftKvConfig::default()
                .tick_interval_ms
                .min(kvlab_node::composed::KvlabConfig::default().tick_interval_ms)
                .max(1) as f64;
            let min_ticks = (3.0 * (2.0 * x.latency_max + x.fsync) / tick_ms).ceil() as u32;
            self.draw_raft_params(seed, min_ticks, &mut over, &mut p);
        }
        let fsync = table(vec![
            ("kind", toml::Value::String("constant".into())),
            ("ms", num(x.fsync)),
        ]);
        over.insert(
            "disk".into(),
            table(vec![
                ("fsync_latency", fsync),
                ("tear_probability", num(x.tear)),
            ]),
        );
        let mut storm_rng = seeded_rng(derive_seed(seed, "swarm", 3));
        if shape.system == SystemKind::Raft && self.storm > 0.0 && storm_rng.random_bool(self.storm)
        {
            storm(&mut storm_rng, &mut over, &mut p);
            return (over, p);
        }
        if self.storm > 0.0 {
            p.insert("profile".into(), Drawn::Names(vec!["plain".into()]));
        }
        if spare {
            let raft = over
                .entry("raft")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(raft) = raft.as_table_mut() {
                raft.insert("initial_voters".into(), int(i64::from(shape.nodes) - 1));
            }
        }
        (over, p)
    }

    /// Durations, timing, network, disk, drift and mix, in the order they were always
    /// drawn (so that a seed keeps its draw).
    fn draw_scalars(&self, seed: u64, p: &mut BTreeMap<String, Drawn>) -> Scalars {
        let mut rng = seeded_rng(derive_seed(seed, "swarm", 0));
        let mut fr = |name: &str, r: [f64; 2], p: &mut BTreeMap<String, Drawn>| {
            let v = if r[0] < r[1] {
                rng.random_range(r[0]..=r[1])
            } else {
                r[0]
            };
            let v = (v * 1000.0).round() / 1000.0;
            p.insert(name.into(), Drawn::Num(v));
            v
        };
        let duration = fr("duration_s", self.duration_s, p);
        let (interval_r, fault_len_r) = if self.log_timing {
            (ln(self.interval_s), ln(self.fault_duration_s))
        } else {
            (self.interval_s, self.fault_duration_s)
        };
        let mut interval = fr("interval_s", interval_r, p);
        let mut fault_len = fr("fault_duration_s", fault_len_r, p);
        if self.log_timing {
            interval = round3(interval.exp());
            fault_len = round3(fault_len.exp());
            p.insert("interval_s".into(), Drawn::Num(interval));
            p.insert("fault_duration_s".into(), Drawn::Num(fault_len));
        }
        let latency_max = fr("latency_max_ms", self.latency_max_ms, p);
        let loss = fr("loss", self.loss, p);
        let fsync = fr("fsync_ms", self.fsync_ms, p);
        let tear = fr("tear_probability", self.tear_probability, p);
        let [lo, hi] = self.clock_drift_ppm_max;
        let drift = fr("clock_drift_ppm_max", [lo as f64, hi as f64], p);
        let mix = ["read", "write", "cas"]
            .iter()
            .map(|k| match self.mix {
                true => fr(&format!("mix_{k}"), [0.0, 1.0], p),
                false => 0.0,
            })
            .collect();
        Scalars {
            duration,
            interval,
            fault_len,
            latency_max,
            loss,
            fsync,
            tear,
            drift,
            mix,
        }
    }

    /// Nodes, clients, keys, the system and the fault kinds.
    fn draw_shape(&self, seed: u64, p: &mut BTreeMap<String, Drawn>) -> Shape {
        let mut rng = seeded_rng(derive_seed(seed, "swarm", 1));
        let mut ur = |name: &str, r: [u32; 2], p: &mut BTreeMap<String, Drawn>| {
            let v = rng.random_range(r[0]..=r[1]);
            p.insert(name.into(), Drawn::Num(f64::from(v)));
            v
        };
        let nodes = ur("nodes", self.nodes, p);
        let clients = ur("clients", self.clients, p);
        let keys = ur("keys", self.keys, p);
        let system = self.systems[rng.random_range(0..self.systems.len())];
        p.insert("system".into(), Drawn::Names(vec![system.name().into()]));
        let faults = self.draw_faults(&mut rng, nodes);
        p.insert("faults".into(), Drawn::Names(faults.clone()));
        Shape {
            nodes,
            clients,
            keys,
            system,
            faults,
        }
    }

    /// `[workload]`: the drawn clients, keys and (with `mix`) operation mix.
    fn workload_table(&self, shape: &Shape, mix: &[f64]) -> toml::Value {
        let mut workload = vec![
            ("clients", int(i64::from(shape.clients))),
            ("keys", int(i64::from(shape.keys))),
        ];
        if self.mix {
            let m = match mix.iter().all(|w| *w <= 0.0) {
                true => &[1.0, 0.0, 0.0][..],
                false => mix,
            };
            let mix = table(vec![
                ("read", num(m[0])),
                ("write", num(m[1])),
                ("cas", num(m[2])),
            ]);
            workload.push(("mix", mix));
        }
        table(workload)
    }
}

impl SwarmSpec {
    /// Each fault kind the drawn cluster can take (`ring` needs 4 nodes, …) with
    /// probability 1/2, at least one; their names.
    fn draw_faults(&self, rng: &mut kvlab_types::Rng, nodes: u32) -> Vec<String> {
        let eligible: Vec<FaultKind> = self
            .faults
            .iter()
            .copied()
            .filter(|f| f.min_nodes() <= nodes)
            .collect();
        let mut faults: Vec<FaultKind> = eligible
            .iter()
            .copied()
            .filter(|_| rng.random_bool(0.5))
            .collect();
        if faults.is_empty() && !eligible.is_empty() {
            faults.push(eligible[rng.random_range(0..eligible.len())]);
        }
        faults.iter().map(|f| fault_name(*f)).collect()
    }

    /// Raft's parameters for `[raft.raft]` and `[kvlab.raft]` (see
    /// [`SwarmSpec::raft_params`]), from their own RNG stream so that the other draws
    /// stay as they were.
    fn draw_raft_params(
        &self,
        seed: u64,
        min_ticks: u32,
        over: &mut toml::Table,
        p: &mut BTreeMap<String, Drawn>,
    ) {
        let mut rng = seeded_rng(derive_seed(seed, "swarm", 2));
        let election_ticks = rng.random_range(3..=10u32) + min_ticks.saturating_sub(3);
        let pre_vote = rng.random_bool(0.5);
        let check_quorum = rng.random_bool(0.5);
        let max_entries: i64 = if rng.random_bool(0.5) { 1 } else { 256 };
        p.insert(
            "raft_election_ticks".into(),
            Drawn::Num(f64::from(election_ticks)),
        );
        let on_off = |b: bool| Drawn::Names(vec![if b { "on" } else { "off" }.into()]);
        p.insert("raft_pre_vote".into(), on_off(pre_vote));
        p.insert("raft_check_quorum".into(), on_off(check_quorum));
        p.insert(
            "raft_max_entries_per_msg".into(),
            Drawn::Num(max_entries as f64),
        );
        let raft = || {
            table(vec![
                ("election_ticks", int(i64::from(election_ticks))),
                ("pre_vote", toml::Value::Boolean(pre_vote)),
                ("check_quorum", toml::Value::Boolean(check_quorum)),
                ("max_entries_per_msg", int(max_entries)),
            ])
        };
        over.insert("raft".into(), table(vec![("raft", raft())]));
        over.insert("kvlab".into(), table(vec![("raft", raft())]));
    }
}

/// Turns a drawn `raft` run into an election storm (see [`SwarmSpec::storm`]).
fn storm(rng: &mut kvlab_types::Rng, over: &mut toml::Table, p: &mut BTreeMap<String, Drawn>) {
    let nodes: u32 = if rng.random_bool(0.5) { 3 } else { 5 };
    let interval = round3(rng.random_range(0.01..=0.03));
    let election_ticks = rng.random_range(4..=8u32);
    let names = ["crash", "crash-leader", "partition-random"];
    p.insert("profile".into(), Drawn::Names(vec!["storm".into()]));
    p.insert("nodes".into(), Drawn::Num(f64::from(nodes)));
    p.insert("interval_s".into(), Drawn::Num(interval));
    p.insert("fault_duration_s".into(), Drawn::Num(0.004));
    p.insert(
        "faults".into(),
        Drawn::Names(names.map(String::from).to_vec()),
    );
    p.insert("latency_max_ms".into(), Drawn::Num(8.0));
    p.insert("loss".into(), Drawn::Num(0.05));
    p.insert(
        "raft_election_ticks".into(),
        Drawn::Num(f64::from(election_ticks)),
    );
    let off = || Drawn::Names(vec!["off".into()]);
    p.insert("raft_pre_vote".into(), off());
    p.insert("raft_check_quorum".into(), off());
    p.insert("raft_max_entries_per_msg".into(), Drawn::Num(1.0));
    over.insert("nodes".into(), int(i64::from(nodes)));
    let faults = names.map(|n| toml::Value::String(n.into())).to_vec();
    over.insert(
        "nemesis".into(),
        table(vec![
            ("faults", toml::Value::Array(faults)),
            ("interval_s", num(interval)),
            ("fault_duration_s", num(0.004)),
            ("overlap", toml::Value::Boolean(true)),
        ]),
    );
    let latency = table(vec![
        ("kind", toml::Value::String("uniform".into())),
        ("min_ms", num(1.0)),
        ("max_ms", num(8.0)),
    ]);
    over.insert(
        "network".into(),
        table(vec![
            ("latency", latency),
            ("loss_probability", num(0.05)),
            ("reorder_probability", num(0.5)),
            ("reorder_window_ms", num(20.0)),
        ]),
    );
    let raft = table(vec![
        ("election_ticks", int(i64::from(election_ticks))),
        ("heartbeat_ticks", int(1)),
        ("pre_vote", toml::Value::Boolean(false)),
        ("check_quorum", toml::Value::Boolean(false)),
        ("max_entries_per_msg", int(1)),
    ]);
    over.insert(
        "raft".into(),
        table(vec![
            ("tick_interval_ms", int(5)),
            ("snapshot_every_entries", int(0)),
            ("raft", raft),
        ]),
    );
}

fn ln(r: [f64; 2]) -> [f64; 2] {
    [r[0].ln(), r[1].ln()]
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn fault_name(f: FaultKind) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{f:?}"))
}

/// One run of a swarm, as `swarm.json` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwarmRow {
    /// The seed (it decides the draw and the run).
    pub seed: u64,
    /// `valid`, another verdict, or `error` (the run could not be carried out).
    pub verdict: String,
    /// Wall time of the run (s).
    pub wall_s: f64,
    /// Operations invoked, and of them `ok`.
    pub ops: [u64; 2],
    /// Faults injected.
    pub faults_injected: u64,
    /// Faults injected, by kind.
    #[serde(default)]
    pub faults_by_kind: BTreeMap<String, u64>,
    /// Nodes whose storage refused to recover (a `disk-corrupt` fault's damage found).
    #[serde(default)]
    pub refused_to_start: u64,
    /// What the seed drew.
    pub params: BTreeMap<String, Drawn>,
    /// The kept run directory (failures only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
    /// The first key found not linearizable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_key: Option<String>,
    /// Why the run could not be carried out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SwarmRow {
    /// Whether this run failed (any verdict but `valid` and `unknown`, or an error).
    pub fn failed(&self) -> bool {
        self.verdict != RunVerdict::Valid.name() && self.verdict != RunVerdict::Unknown.name()
    }

    /// The command that replays this run from its kept directory.
    pub fn replay(&self) -> Option<String> {
        let dir = self.run_dir.as_ref()?;
        Some(format!(
            "kvlab run {} --seed {}",
            dir.join("spec.toml").display(),
            self.seed
        ))
    }
}

/// How a swarm runs.
#[derive(Clone, Debug)]
pub struct SwarmOptions {
    /// The first seed; runs use `first_seed, first_seed + 1, …`.
    pub first_seed: u64,
    /// At most this many runs.
    pub runs: u64,
    /// Stop starting runs after this long.
    pub time_budget: Option<Duration>,
    /// Worker threads.
    pub threads: usize,
    /// Where failing runs and `swarm.json` go.
    pub out: PathBuf,
    /// Stop at the first failure (runs already started finish).
    pub stop_at_first_failure: bool,
}

/// What a swarm did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwarmReport {
    /// The swarm file.
    pub file: PathBuf,
    /// Runs done, by seed.
    pub rows: Vec<SwarmRow>,
    /// Failures among them.
    pub failures: u64,
    /// Wall time (s).
    pub wall_s: f64,
    /// Runs per wall second.
    pub runs_per_s: f64,
    /// Per drawn parameter: min / p50 / max / mean of numbers, or counts of names.
    pub distribution: BTreeMap<String, Distribution>,
}

/// The distribution of one drawn parameter over the runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Distribution {
    /// A number: `[min, p50, max, mean]`.
    Num {
        /// Smallest.
        min: f64,
        /// Median.
        p50: f64,
        /// Largest.
        max: f64,
        /// Mean.
        mean: f64,
    },
    /// Names: how many runs drew each.
    Counts(BTreeMap<String, u64>),
}

/// The distribution of every drawn parameter over `rows`.
pub fn distribution(rows: &[SwarmRow]) -> BTreeMap<String, Distribution> {
    let mut nums: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut names: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for r in rows {
        for (k, v) in &r.params {
            match v {
                Drawn::Num(x) => nums.entry(k).or_default().push(*x),
                Drawn::Names(ns) => {
                    let c = names.entry(k).or_default();
                    for n in ns {
                        *c.entry(n.clone()).or_default() += 1;
                    }
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (k, mut xs) in nums {
        xs.sort_by(f64::total_cmp);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let d = Distribution::Num {
            min: xs[0],
            p50: xs[xs.len() / 2],
            max: xs[xs.len() - 1],
            mean: (mean * 1000.0).round() / 1000.0,
        };
        out.insert(k.to_string(), d);
    }
    for (k, c) in names {
        out.insert(k.to_string(), Distribution::Counts(c));
    }
    out
}

/// Carries out one seed: draws, runs, keeps the directory only if the run failed.
fn one_run(swarm: &Swarm, seed: u64, out: &Path) -> SwarmRow {
    let begun = Instant::now();
    let run_dir = out.join("runs").join(format!("seed-{seed}"));
    let mut row = SwarmRow {
        seed,
        verdict: "error".into(),
        wall_s: 0.0,
        ops: [0, 0],
        faults_injected: 0,
        faults_by_kind: BTreeMap::new(),
        refused_to_start: 0,
        params: BTreeMap::new(),
        run_dir: Some(run_dir.clone()),
        failing_key: None,
        error: None,
    };
    let result = swarm.draw(seed).and_then(|draw| {
        row.params = draw.params;
        let opts = RunOptions {
            seed,
            run_dir: run_dir.clone(),
            reproduce: Reproduce::new(&run_dir.join("spec.toml"), &draw.spec, seed, None),
            report: ReportPolicy::OnFailure,
            progress: false,
        };
        run_experiment(&draw.spec, &opts)
    });
    match result {
        Ok(o) => {
            row.verdict = o.verdict.name().into();
            row.failing_key = o.failing_key;
            row.ops = [o.summary.ops.total, o.summary.ops.ok];
            row.faults_injected = o.summary.faults.injected;
            row.faults_by_kind = o.summary.faults.by_kind.clone();
            row.refused_to_start = o.summary.faults.refused_to_start;
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    row.wall_s = begun.elapsed().as_secs_f64();
    if !row.failed() {
        let _ = std::fs::remove_dir_all(&run_dir);
        row.run_dir = None;
    }
    row
}

/// Runs the swarm on `opts.threads` threads; calls `on_done` for every run as it ends
/// (in completion order); returns the report (rows by seed) after writing
/// `<out>/swarm.json`.
pub fn run_swarm(
    swarm: &Swarm,
    opts: &SwarmOptions,
    mut on_done: impl FnMut(&SwarmRow),
) -> Result<SwarmReport, ExperimentError> {
    if opts.runs == 0 || opts.runs > MAX_SWARM_RUNS {
        return Err(ExperimentError::BadArgument {
            arg: format!("--runs {}", opts.runs),
            reason: format!("must be in [1, {MAX_SWARM_RUNS}] (MAX_SWARM_RUNS)"),
        });
    }
    std::fs::create_dir_all(&opts.out).map_err(|source| ExperimentError::Io {
        path: opts.out.clone(),
        source,
    })?;
    let begun = Instant::now();
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    let mut rows = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..opts.threads.max(1) {
            let (tx, next, stop) = (tx.clone(), &next, &stop);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let out_of_time = opts.time_budget.is_some_and(|t| begun.elapsed() >= t);
                    if i >= opts.runs || out_of_time || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let row = one_run(swarm, opts.first_seed + i, &opts.out);
                    if tx.send(row).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for row in rx {
            if row.failed() && opts.stop_at_first_failure {
                stop.store(true, Ordering::Relaxed);
            }
            on_done(&row);
            rows.push(row);
        }
    });
    rows.sort_by_key(|r| r.seed);
    let wall_s = begun.elapsed().as_secs_f64();
    let report = SwarmReport {
        file: swarm.file.clone(),
        failures: rows.iter().filter(|r| r.failed()).count() as u64,
        runs_per_s: rows.len() as f64 / wall_s.max(1e-9),
        wall_s,
        distribution: distribution(&rows),
        rows,
    };
    let path = opts.out.join("swarm.json");
    let json = serde_json::to_string_pretty(&report).map_err(|e| ExperimentError::Encode {
        path: path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&path, json + "\n").map_err(|source| ExperimentError::Io { path, source })?;
    Ok(report)
}

/// The report as a person reads it: runs, failures, speed, and one line per drawn
/// parameter.
pub fn summary_table(r: &SwarmReport) -> String {
    let ops: u64 = r.rows.iter().map(|x| x.ops[0]).sum();
    let faults: u64 = r.rows.iter().map(|x| x.faults_injected).sum();
    let mut t = format!(
        "{} runs, {} failed, {:.1} s wall, {:.2} runs/s; {ops} operations, {faults} faults injected\n{:<22} {}\n",
        r.rows.len(),
        r.failures,
        r.wall_s,
        r.runs_per_s,
        "parameter",
        "drawn (min / p50 / max, mean; or runs per value)"
    );
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for row in &r.rows {
        for (k, n) in &row.faults_by_kind {
            *by_kind.entry(k.as_str()).or_insert(0) += n;
        }
    }
    let refused: u64 = r.rows.iter().map(|x| x.refused_to_start).sum();
    let injected: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    t.push_str(&format!(
        "{:<22} {}; nodes refused to start (damaged log): {refused}\n",
        "faults injected",
        injected.join(", ")
    ));
    for (k, d) in &r.distribution {
        let v = match d {
            Distribution::Num {
                min,
                p50,
                max,
                mean,
            } => format!("{min} / {p50} / {max}, mean {mean}"),
            Distribution::Counts(c) => c
                .iter()
                .map(|(n, x)| format!("{n} {x}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        t.push_str(&format!("{k:<22} {v}\n"));
    }
    t
}
