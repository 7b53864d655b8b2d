//! [`Spec::validate`], one function per section: every value's range and the
//! consistency between values. The first offending field is named by its dotted path.

use kvlab_node::SystemKind;

use super::backend::{BackendKind, DockerSpec, KindSpec, LocalSpec, TransportChoice};
use super::{
    FieldError, KeyDistribution, LoadMode, MAX_CLIENTS, MAX_CLOCK_DRIFT_PPM, MAX_CLOCK_JUMP_MS,
    MAX_KEYS, MAX_NODES, MAX_PHASE_S, MAX_RATE_PER_S, MAX_SEED, MAX_SWIM_NODES, NemesisSpec,
    ScheduledFault, Spec, WorkloadSpec,
};
use crate::spec::FaultKind;

/// Most nodes a local run may start: each is a process (or a task) with its own sockets
/// and files on a machine shared with everything else.
pub const MAX_LOCAL_NODES: u32 = 16;
/// Longest startup or stop bound a spec may ask for.
pub const MAX_LOCAL_TIMEOUT_S: f64 = 600.0;

fn invalid(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A phase length or offset in seconds: finite, non-negative (positive unless
/// `allow_zero`), at most [`MAX_PHASE_S`].
pub(crate) fn check_seconds(field: &str, v: f64, allow_zero: bool) -> Result<(), FieldError> {
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) {
        return Err(invalid(
            field,
            format!(
                "must be a finite number of seconds {} 0, got {v}",
                if allow_zero { ">=" } else { ">" }
            ),
        ));
    }
    if v > MAX_PHASE_S {
        return Err(invalid(
            field,
            format!("must be at most {MAX_PHASE_S} s (MAX_PHASE_S), got {v}"),
        ));
    }
    Ok(())
}

fn check_probability(field: &str, v: f64) -> Result<(), FieldError> {
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(invalid(field, format!("must be in [0, 1], got {v}")));
    }
    Ok(())
}

impl Spec {
    /// Checks every section; the error names the first offending field and why.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.validate_identity()?;
        check_seconds("time.duration_s", self.time.duration_s, false)?;
        check_seconds("time.liveness_s", self.time.liveness_s, false)?;
        self.workload.validate()?;
        if !self.workload.kind.is_kv() && self.system != SystemKind::Kvlab {
            return Err(invalid(
                "workload.kind",
                format!(
                    "transactions need system = \"kvlab\" (the only system that serves them), the spec has \"{}\"",
                    self.system.name()
                ),
            ));
        }
        self.validate_partitions_per_txn()?;
        self.nemesis.validate(self.nodes)?;
        self.validate_spares()?;
        self.validate_schedule()?;
        self.validate_txn_faults()?;
        if !self.check.timeout_s.is_finite() || self.check.timeout_s <= 0.0 {
            return Err(invalid(
                "check.timeout_s",
                format!("must be a finite number > 0, got {}", self.check.timeout_s),
            ));
        }
        self.validate_systems()?;
        if self.sim.max_events == 0 {
            return Err(invalid("sim.max_events", "must be > 0"));
        }
        self.validate_backend()?;
        self.sim_config().validate().map_err(|e| match e {
            kvlab_sim::SimError::InvalidConfig { field, reason } => FieldError { field, reason },
            other => invalid("network", other.to_string()),
        })
    }

    /// `workload.partitions_per_txn = N` needs transactions on `system = "kvlab"` and
    /// keys that fall in at least `N` vnodes.
    fn validate_partitions_per_txn(&self) -> Result<(), FieldError> {
        let super::PartitionsPerTxn::Exactly(n) = self.workload.partitions_per_txn else {
            return Ok(());
        };
        let field = "workload.partitions_per_txn";
        if self.workload.kind.is_kv() {
            return Err(invalid(field, "needs a transactional workload.kind"));
        }
        let vnodes = self.key_partitions().map_err(|e| invalid(field, e))?;
        let distinct = vnodes
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if distinct < n as usize {
            return Err(invalid(
                field,
                format!(
                    "the {} keys fall in {distinct} vnodes, fewer than {n}: raise workload.keys",
                    self.workload.keys
                ),
            ));
        }
        Ok(())
    }

    /// The vnode of each key index of the workload (`system = "kvlab"`'s ring layout).
    pub fn key_partitions(&self) -> Result<Vec<u32>, String> {
        let layout = self.kvlab.layout().map_err(|e| format!("the ring: {e}"))?;
        Ok((0..self.workload.keys)
            .map(|i| layout.vnode_of(&super::key_name(i)).0)
            .collect())
    }

    /// `nemesis.spare_learners` is the raft membership reconciler's, and `replace-voter`
    /// on `raft` needs a spare to swap in.
    fn validate_spares(&self) -> Result<(), FieldError> {
        let n = &self.nemesis;
        if n.spare_learners > 0 && self.system != SystemKind::Raft {
            return Err(invalid(
                "nemesis.spare_learners",
                "only `system = \"raft\"` keeps spare learners (its membership reconciler)",
            ));
        }
        let replaces = n
            .faults
            .iter()
            .chain(n.schedule.iter().map(|f| &f.kind))
            .any(|f| *f == FaultKind::ReplaceVoter);
        if replaces && self.system == SystemKind::Raft && n.spare_learners == 0 {
            return Err(invalid(
                "nemesis.spare_learners",
                "`replace-voter` swaps a spare learner in for a voter: set it to 1 or more",
            ));
        }
        Ok(())
    }

    /// `kill-gateway` and `partition-home-group` aim at transactions, which only the
    /// composed node runs; a schedule entry's `point` is `kill-gateway`'s alone.
    fn validate_txn_faults(&self) -> Result<(), FieldError> {
        let n = &self.nemesis;
        let txn_fault =
            |f: &FaultKind| matches!(f, FaultKind::KillGateway | FaultKind::PartitionHomeGroup);
        let kinds = n.faults.iter().chain(n.schedule.iter().map(|f| &f.kind));
        if let Some(f) = kinds.into_iter().find(|f| txn_fault(f))
            && self.system != SystemKind::Kvlab
        {
            return Err(invalid(
                "nemesis.faults",
                format!(
                    "`{}` aims at a transaction's coordinator or home group: it needs system = \"kvlab\", the spec has \"{}\"",
                    f.spec_name(),
                    self.system.name()
                ),
            ));
        }
        for (i, f) in n.schedule.iter().enumerate() {
            if f.point.is_some() && f.kind != FaultKind::KillGateway {
                return Err(invalid(
                    &format!("nemesis.schedule[{i}].point"),
                    format!(
                        "only `kill-gateway` takes a 2PC point, this entry is `{}`",
                        f.kind.spec_name()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The name, the seed and the cluster size.
    fn validate_identity(&self) -> Result<(), FieldError> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !self.name.starts_with('.');
        if !name_ok {
            return Err(invalid(
                "name",
                format!(
                    "must be a non-empty directory name of letters, digits, '-', '_' or '.', got {:?}",
                    self.name
                ),
            ));
        }
        if self.seed > MAX_SEED {
            return Err(invalid(
                "seed",
                format!("must be at most {MAX_SEED} (MAX_SEED), got {}", self.seed),
            ));
        }
        let (max_nodes, max_name) = if self.system == SystemKind::Swim {
            (MAX_SWIM_NODES, "MAX_SWIM_NODES")
        } else {
            (MAX_NODES, "MAX_NODES")
        };
        if self.nodes == 0 || self.nodes > max_nodes {
            return Err(invalid(
                "nodes",
                format!(
                    "must be in 1..={max_nodes} ({max_name}), got {}",
                    self.nodes
                ),
            ));
        }
        Ok(())
    }

    /// The tables of the systems (each checked, whichever system runs: a typo in an
    /// unused table is still a typo).
    /// What `[[nemesis.schedule]]` entries need from the rest of the spec: a time inside
    /// the safety phase, and joins and drains only on a ring whose joiners exist.
    fn validate_schedule(&self) -> Result<(), FieldError> {
        let absent = self.absent_nodes();
        let mut joins = 0;
        for (i, f) in self.nemesis.schedule.iter().enumerate() {
            let field = |name: &str| format!("nemesis.schedule[{i}].{name}");
            if f.at_s >= self.time.duration_s {
                return Err(invalid(
                    &field("at_s"),
                    format!(
                        "must be before the end of the safety phase (time.duration_s = {}), got {}",
                        self.time.duration_s, f.at_s
                    ),
                ));
            }
            if matches!(f.kind, FaultKind::Join | FaultKind::Drain)
                && self.system != SystemKind::Kvlab
            {
                return Err(invalid(
                    &field("kind"),
                    format!(
                        "`{}` needs system = \"kvlab\" (a ring that moves replicas), the spec has \"{}\"",
                        f.kind.spec_name(),
                        self.system.name()
                    ),
                ));
            }
            if f.kind != FaultKind::Join {
                continue;
            }
            joins += 1;
            if let Some(&t) = f
                .targets
                .iter()
                .find(|&&t| !absent.contains(&kvlab_types::NodeId(t)))
            {
                return Err(invalid(
                    &field("targets"),
                    format!(
                        "node {t} boots with the cluster, so it cannot join; joiners are the nodes outside kvlab.initial_members: {absent:?}"
                    ),
                ));
            }
        }
        if joins > absent.len() {
            return Err(invalid(
                "nemesis.schedule",
                format!(
                    "{joins} `join` faults but only {} node(s) outside kvlab.initial_members",
                    absent.len()
                ),
            ));
        }
        Ok(())
    }

    fn validate_systems(&self) -> Result<(), FieldError> {
        for (field, node) in [
            ("single.holder", self.single.holder),
            ("async_primary.primary", self.async_primary.primary),
        ] {
            if let Some(n) = node
                && (n.0 == 0 || n.0 > self.nodes)
            {
                return Err(invalid(
                    field,
                    format!("must be a node id in 1..={}, got {}", self.nodes, n.0),
                ));
            }
        }
        if let Err(kvlab_swim::SwimError::InvalidConfig { field, reason }) = self.swim.validate() {
            return Err(invalid(&format!("swim.{field}"), reason));
        }
        if let Some(bad) = self
            .swim
            .seeds
            .iter()
            .find(|s| s.0 == 0 || s.0 > self.nodes)
        {
            return Err(invalid(
                "swim.seeds",
                format!("must be node ids in 1..={}, got {}", self.nodes, bad.0),
            ));
        }
        self.swim_experiment.validate(self.nodes)?;
        if let Err(e) = self.raft.validate() {
            return Err(match e {
                kvlab_node::raft_kv::RaftKvError::InvalidConfig { field, reason } => {
                    invalid(&format!("raft.{field}"), reason)
                }
                other => invalid("raft", other.to_string()),
            });
        }
        Ok(())
    }

    /// What the real backends (`local`, `docker`, `kind`) need of a spec (the
    /// `[local]`, `[docker]` and `[kind]` tables are checked for every backend).
    fn validate_backend(&self) -> Result<(), FieldError> {
        self.local.validate()?;
        self.docker.validate()?;
        self.kind.validate()?;
        if !self.backend.is_real() {
            return Ok(());
        }
        let backend = self.backend.name();
        if self.backend == BackendKind::Kind {
            return Err(invalid(
                "backend",
                "running an experiment on kind is not built yet: `kvlab kind render SPEC` writes its manifests (kind-cluster/README.md), and backend = \"docker\" runs the same image here",
            ));
        }
        if self.system == SystemKind::Swim {
            return Err(invalid(
                "backend",
                "system = \"swim\" runs on the simulator only",
            ));
        }
        if self.nodes > MAX_LOCAL_NODES {
            return Err(invalid(
                "nodes",
                format!(
                    "backend = \"{backend}\" starts at most {MAX_LOCAL_NODES} nodes (MAX_LOCAL_NODES), got {}",
                    self.nodes
                ),
            ));
        }
        if self.backend != BackendKind::Local && self.transport == TransportChoice::Mem {
            return Err(invalid(
                "transport",
                format!(
                    "backend = \"{backend}\" runs one node per container: use udp or tarpc (mem exists only inside one process)"
                ),
            ));
        }
        let scheduled = self.nemesis.schedule.iter().map(|s| &s.kind);
        for f in self.nemesis.faults.iter().chain(scheduled) {
            if let Some(why) = f.unsupported_on_real_nodes() {
                return Err(invalid(
                    "nemesis.faults",
                    format!(
                        "`{}` is not supported with backend = \"{backend}\": {why}",
                        f.spec_name()
                    ),
                ));
            }
        }
        if self.server_request_timeout_ms() > kvlab_server::MAX_CLIENT_REQUEST_TIMEOUT_MS {
            return Err(invalid(
                "workload.timeout_ms",
                format!(
                    "too large for a node's client request timeout (at most {} ms)",
                    kvlab_server::MAX_CLIENT_REQUEST_TIMEOUT_MS
                ),
            ));
        }
        Ok(())
    }

    /// A real node answers a client `Indeterminate` after this long: a little after the
    /// workload's own timeout, so the workload's timeout is the one that counts.
    pub fn server_request_timeout_ms(&self) -> u64 {
        self.workload.timeout_ms.saturating_add(500)
    }
}

impl LocalSpec {
    /// Checks the `[local]` table.
    pub fn validate(&self) -> Result<(), FieldError> {
        for (field, v) in [
            ("local.startup_timeout_s", self.startup_timeout_s),
            ("local.stop_timeout_s", self.stop_timeout_s),
        ] {
            if !v.is_finite() || v <= 0.0 || v > MAX_LOCAL_TIMEOUT_S {
                return Err(invalid(
                    field,
                    format!(
                        "must be in (0, {MAX_LOCAL_TIMEOUT_S}] s (MAX_LOCAL_TIMEOUT_S), got {v}"
                    ),
                ));
            }
        }
        if let Err(e) = self.storage.validate() {
            return Err(invalid(&format!("local.storage.{}", e.field), e.reason));
        }
        if !(1..=kvlab_server::MAX_WORKERS).contains(&self.workers) {
            return Err(invalid(
                "local.workers",
                format!(
                    "must be in [1, {}] (MAX_WORKERS), got {}",
                    kvlab_server::MAX_WORKERS,
                    self.workers
                ),
            ));
        }
        Ok(())
    }
}

impl DockerSpec {
    /// Checks the `[docker]` table.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !valid_image_name(&self.image) {
            return Err(invalid(
                "docker.image",
                format!(
                    "must be an image name such as kvlab-node:latest, got {:?}",
                    self.image
                ),
            ));
        }
        let t = self.command_timeout_s;
        if !t.is_finite() || t <= 0.0 || t > MAX_LOCAL_TIMEOUT_S {
            return Err(invalid(
                "docker.command_timeout_s",
                format!("must be in (0, {MAX_LOCAL_TIMEOUT_S}] s (MAX_LOCAL_TIMEOUT_S), got {t}"),
            ));
        }
        if self.memory_mb != 0 && self.memory_mb < MIN_CONTAINER_MEMORY_MB {
            return Err(invalid(
                "docker.memory_mb",
                format!(
                    "must be 0 (no limit) or at least {MIN_CONTAINER_MEMORY_MB} MiB (MIN_CONTAINER_MEMORY_MB), got {}",
                    self.memory_mb
                ),
            ));
        }
        Ok(())
    }
}

impl KindSpec {
    /// Checks the `[kind]` table.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !valid_image_name(&self.image) {
            return Err(invalid(
                "kind.image",
                format!(
                    "must be an image name such as kvlab-node:latest, got {:?}",
                    self.image
                ),
            ));
        }
        let ns = &self.namespace;
        let dns_label = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !dns_label {
            return Err(invalid(
                "kind.namespace",
                format!("must be a DNS label (a-z, 0-9, '-', at most 63), got {ns:?}"),
            ));
        }
        let octets: Vec<&str> = self.service_ip_prefix.split('.').collect();
        if octets.len() != 3 || octets.iter().any(|o| o.parse::<u8>().is_err()) {
            return Err(invalid(
                "kind.service_ip_prefix",
                format!(
                    "must be three octets such as \"10.96.77\", got {:?}",
                    self.service_ip_prefix
                ),
            ));
        }
        for (field, v) in [
            ("kind.cpu_millis", self.cpu_millis),
            ("kind.memory_mb", self.memory_mb),
            ("kind.storage_mb", self.storage_mb),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be > 0"));
            }
        }
        Ok(())
    }
}

/// The smallest memory limit a node container may have.
pub const MIN_CONTAINER_MEMORY_MB: u64 = 32;

/// A Docker image reference: `name[:tag]` of lower-case letters, digits and `._-/:`
/// (no spaces, no option-like leading `-`).
fn valid_image_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:@".contains(c))
}

impl FaultKind {
    /// Why the fault has no meaning on real processes (yet), if it has none.
    pub fn unsupported_on_real_nodes(self) -> Option<&'static str> {
        match self {
            FaultKind::ClockDrift | FaultKind::IsolateSlowLeader => {
                Some("a real process's clock cannot be skewed from outside")
            }
            FaultKind::Duplicate => Some("the transports' fault rules cannot duplicate messages"),
            FaultKind::Membership | FaultKind::ReplaceVoter => {
                Some("the admin endpoint takes no membership commands yet")
            }
            FaultKind::DiskFsyncError | FaultKind::DiskCorrupt => {
                Some("a real node's disk is real: disk faults exist only in the simulator")
            }
            FaultKind::ClockJump => Some("a real process's clock cannot be stepped from outside"),
            FaultKind::KillGateway => Some(
                "the 2PC point is seen in node events, which real nodes report late (tailed from their event files): the crash would miss it",
            ),
            _ => None,
        }
    }
}

impl WorkloadSpec {
    /// Checks the `[workload]` table.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return Err(invalid(
                "workload.clients",
                format!(
                    "must be in 1..={MAX_CLIENTS} (MAX_CLIENTS), got {}",
                    self.clients
                ),
            ));
        }
        if self.keys == 0 || self.keys > MAX_KEYS {
            return Err(invalid(
                "workload.keys",
                format!("must be in 1..={MAX_KEYS} (MAX_KEYS), got {}", self.keys),
            ));
        }
        if self.mode == LoadMode::Open
            && (!self.rate_per_s.is_finite()
                || self.rate_per_s <= 0.0
                || self.rate_per_s > MAX_RATE_PER_S)
        {
            return Err(invalid(
                "workload.rate_per_s",
                format!(
                    "must be in (0, {MAX_RATE_PER_S}] (MAX_RATE_PER_S) in open mode, got {}",
                    self.rate_per_s
                ),
            ));
        }
        if self.key_distribution == KeyDistribution::Zipfian
            && (!self.zipf_exponent.is_finite() || self.zipf_exponent < 0.0)
        {
            return Err(invalid(
                "workload.zipf_exponent",
                format!(
                    "must be a finite number >= 0 (0 is uniform), got {}",
                    self.zipf_exponent
                ),
            ));
        }
        for (name, v) in [
            ("workload.mix.read", self.mix.read),
            ("workload.mix.write", self.mix.write),
            ("workload.mix.cas", self.mix.cas),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid(
                    name,
                    format!("must be a finite weight >= 0, got {v}"),
                ));
            }
        }
        if self.mix.read + self.mix.write + self.mix.cas <= 0.0 {
            return Err(invalid(
                "workload.mix",
                "the weights of read, write and cas must sum to more than 0",
            ));
        }
        if self.timeout_ms == 0 {
            return Err(invalid("workload.timeout_ms", "must be > 0"));
        }
        if self.txn_ops_min == 0
            || self.txn_ops_min > self.txn_ops_max
            || self.txn_ops_max > super::MAX_TXN_OPS
        {
            return Err(invalid(
                "workload.txn_ops_min",
                format!(
                    "need 1 <= txn_ops_min <= txn_ops_max <= {} (MAX_TXN_OPS), got {}..{}",
                    super::MAX_TXN_OPS,
                    self.txn_ops_min,
                    self.txn_ops_max
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.txn_read_fraction) {
            return Err(invalid(
                "workload.txn_read_fraction",
                format!("must be in [0, 1], got {}", self.txn_read_fraction),
            ));
        }
        if let super::PartitionsPerTxn::Exactly(n) = self.partitions_per_txn
            && (n == 0 || n > self.txn_ops_min)
        {
            return Err(invalid(
                "workload.partitions_per_txn",
                format!(
                    "must be \"any\" or in 1..=txn_ops_min ({}): a transaction touches at most one partition per micro-op, got {n}",
                    self.txn_ops_min
                ),
            ));
        }
        Ok(())
    }
}

impl ScheduledFault {
    /// Checks one `[[nemesis.schedule]]` entry (`at` names it) in a cluster of `nodes`.
    pub fn validate(&self, at: &str, nodes: u32) -> Result<(), FieldError> {
        check_seconds(&format!("{at}.at_s"), self.at_s, true)?;
        if let Some(d) = self.duration_s {
            if self.kind.is_permanent() {
                return Err(invalid(
                    &format!("{at}.duration_s"),
                    format!(
                        "`{}` is permanent: it takes no duration",
                        self.kind.spec_name()
                    ),
                ));
            }
            check_seconds(&format!("{at}.duration_s"), d, false)?;
        }
        if self.targets.is_empty() {
            return Ok(());
        }
        let field = format!("{at}.targets");
        let n = self.targets.len() as u32;
        let Some(counts) = self.kind.target_counts(nodes) else {
            return Err(invalid(
                &field,
                format!(
                    "`{}` picks its own nodes: leave targets out",
                    self.kind.spec_name()
                ),
            ));
        };
        if !counts.contains(&n) {
            return Err(invalid(
                &field,
                format!(
                    "`{}` takes {}..={} target(s), got {n}",
                    self.kind.spec_name(),
                    counts.start(),
                    counts.end()
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for &t in &self.targets {
            if t == 0 || t > nodes {
                return Err(invalid(
                    &field,
                    format!("must name nodes in 1..={nodes}, got {t}"),
                ));
            }
            if !seen.insert(t) {
                return Err(invalid(&field, format!("names node {t} twice")));
            }
        }
        Ok(())
    }
}

impl NemesisSpec {
    /// Checks the `[nemesis]` table for a cluster of `nodes`.
    pub fn validate(&self, nodes: u32) -> Result<(), FieldError> {
        check_seconds("nemesis.start_after_s", self.start_after_s, true)?;
        if !self.faults.is_empty() {
            check_seconds("nemesis.interval_s", self.interval_s, false)?;
            check_seconds("nemesis.fault_duration_s", self.fault_duration_s, false)?;
            if !self.overlap && self.fault_duration_s >= self.interval_s {
                return Err(invalid(
                    "nemesis.fault_duration_s",
                    format!(
                        "must be shorter than nemesis.interval_s ({}) unless nemesis.overlap = true, got {}",
                        self.interval_s, self.fault_duration_s
                    ),
                ));
            }
        }
        if let Some(f) = self.faults.iter().find(|f| f.is_permanent()) {
            return Err(invalid(
                "nemesis.faults",
                format!(
                    "`{}` is permanent: put it at a chosen time in a [[nemesis.schedule]] entry",
                    f.spec_name()
                ),
            ));
        }
        for (i, f) in self.schedule.iter().enumerate() {
            f.validate(&format!("nemesis.schedule[{i}]"), nodes)?;
        }
        let kinds = self
            .faults
            .iter()
            .chain(self.schedule.iter().map(|f| &f.kind));
        if let Some(f) = kinds.into_iter().find(|f| nodes < f.min_nodes()) {
            return Err(invalid(
                "nemesis.faults",
                format!(
                    "`{}` needs at least {} nodes, the spec has {nodes}",
                    f.spec_name(),
                    f.min_nodes(),
                ),
            ));
        }
        check_probability("nemesis.loss_probability", self.loss_probability)?;
        check_probability("nemesis.duplicate_probability", self.duplicate_probability)?;
        if !self.reorder_window_ms.is_finite()
            || self.reorder_window_ms < 0.0
            || self.reorder_window_ms > kvlab_sim::MAX_LATENCY_MS
        {
            return Err(invalid(
                "nemesis.reorder_window_ms",
                format!(
                    "must be in [0, {}] (MAX_LATENCY_MS), got {}",
                    kvlab_sim::MAX_LATENCY_MS,
                    self.reorder_window_ms
                ),
            ));
        }
        if self.clock_drift_ppm_max < 0 || self.clock_drift_ppm_max > MAX_CLOCK_DRIFT_PPM {
            return Err(invalid(
                "nemesis.clock_drift_ppm_max",
                format!(
                    "must be in 0..={MAX_CLOCK_DRIFT_PPM} (MAX_CLOCK_DRIFT_PPM), got {}",
                    self.clock_drift_ppm_max
                ),
            ));
        }
        if self.spare_learners >= nodes {
            return Err(invalid(
                "nemesis.spare_learners",
                format!(
                    "must leave at least one voter: below nodes ({nodes}), got {}",
                    self.spare_learners
                ),
            ));
        }
        if !(1.0..=MAX_CLOCK_JUMP_MS).contains(&self.clock_jump_ms_max) {
            return Err(invalid(
                "nemesis.clock_jump_ms_max",
                format!(
                    "must be in [1, {MAX_CLOCK_JUMP_MS}] (MAX_CLOCK_JUMP_MS), got {}",
                    self.clock_jump_ms_max
                ),
            ));
        }
        Ok(())
    }
}
