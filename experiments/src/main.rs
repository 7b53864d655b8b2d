//! `kvlab`: run experiments (on the deterministic simulator or on real nodes), check
//! histories, draw plots.
//!
//! Exit status: `run` — 0 every check passed, 1 a check failed (linearizability or
//! liveness), 3 the checker ran out of budget (and nothing failed), 2 bad input;
//! `check` — 0 valid, 1 invalid, 3 unknown, 2 bad input; `plot` — 0, or 2 bad input.

/// mimalloc instead of glibc's malloc: with glibc, malloc and free took about 10 % of a
/// node's CPU under a write load (`perf`, 64 clients), the allocator being shared by
/// the runtime, the codec and the state machine.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kvlab_checker::{HistoryFormat, Verdict};
use kvlab_experiments::ExperimentError;
use kvlab_experiments::check_cmd::{
    CheckModel, PROGRESS_DELAY, ProgressDisplay, ProgressMode, check_txn_file, hint_txn_history,
    parse_check_model, parse_format, parse_progress, read_for_check,
};
use kvlab_experiments::pool::{Job, run_jobs, threads_for};
use kvlab_experiments::reproduce::Reproduce;
use kvlab_experiments::run::{
    ReportPolicy, RunOptions, RunOutcome, RunVerdict, parse_seed_range, run_experiment,
    seed_run_dir,
};
use kvlab_experiments::spec::{BackendKind, FieldError, Spec, TransportChoice};
use kvlab_experiments::sweep::Variant;

/// Prints a line to stdout. A closed pipe (`kvlab check … | head`) is not worth a
/// panic: the output is dropped and the exit status still tells the verdict.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Like [`say!`] without the newline.
macro_rules! say_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// The default budget of `kvlab check`, in seconds: long enough for any history a run
/// writes, short enough that a pathological one answers "unknown" instead of hanging.
const DEFAULT_CHECK_TIMEOUT_S: f64 = 60.0;

/// A testbed for distributed key-value systems.
#[derive(Debug, Parser)]
#[command(name = "kvlab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an experiment (on the simulator, or on real nodes with --backend local) and
    /// check it.
    Run(RunArgs),
    /// Swarm testing: every seed draws its own configuration from a swarm file's
    /// `[swarm]` ranges and runs it on the simulator; failing runs are kept.
    Swarm(SwarmArgs),
    /// Shrink a failing simulated run: its faults as an explicit schedule, reduced by
    /// delta debugging while the run still fails the same way; writes the smallest spec.
    Shrink(ShrinkArgs),
    /// Check one history: linearizability per key, or transaction isolation.
    Check(CheckArgs),
    /// (Re)draw the plots and report of run directories; several give a comparison.
    Plot(PlotArgs),
    /// `node` and `client`: kvlab-node-cli's, the same code as the `kvlab-node` binary.
    #[command(flatten)]
    Node(kvlab_node_cli::Command),
    /// The docker backend's objects: `kvlab docker clean` removes what runs killed hard
    /// left behind.
    #[command(subcommand)]
    Docker(DockerCommand),
    /// Kubernetes (kind): `kvlab kind render SPEC` writes the manifests of a spec.
    #[command(subcommand)]
    Kind(KindCommand),
    /// The placement ring: `kvlab ring moves` prints what each strategy's plan moves on
    /// a join, against the optimum.
    #[command(subcommand)]
    Ring(RingCommand),
    /// etcd 3.4 and a kvlab `raft` cluster side by side on loopback, driven by the same
    /// etcd-API client: puts, linearizable gets and CAS txns at several client counts;
    /// a table, bench.json and a plot.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Rounds; each runs every cell on both systems, alternating which goes first, and
    /// the table shows the ratios' min/median/max over them.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Concurrent client counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64, 256])]
    clients: Vec<usize>,
    /// Operations, comma-separated: put | get (linearizable) | cas (a txn).
    #[arg(long, value_delimiter = ',', default_values_t = ["put".to_string(), "get".to_string(), "cas".to_string()])]
    ops: Vec<String>,
    /// Measured seconds per cell and system.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Warm-up seconds before each measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup_s: f64,
    /// gRPC connections per cell (default: one per 8 clients, at most 32).
    #[arg(long)]
    conns: Option<usize>,
    /// Where clients send: leader | all (spread over the members).
    #[arg(long, default_value = "leader", value_parser = kvlab_experiments::bench::Target::parse)]
    target: kvlab_experiments::bench::Target,
    /// Compact both keyspaces this often during a cell (0: only between cells).
    #[arg(long, default_value_t = 1.0)]
    compact_every_s: f64,
    /// Keys of the put/get key space.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 128)]
    value_bytes: usize,
    /// Members of each cluster.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// The kvlab nodes' peer transport: udp | tarpc.
    #[arg(long, default_value = "udp", value_parser = TransportChoice::parse)]
    transport: TransportChoice,
    /// The etcd binary (default $KVLAB_ETCD_BIN, else etcd on PATH).
    #[arg(long, value_name = "FILE")]
    etcd: Option<PathBuf>,
    /// Where bench.json, table.txt and bench.{png,svg} go (default results/bench/<time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seeds the clients' keys and values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, clap::Args)]
struct SwarmArgs {
    /// The swarm file: a spec with a `[swarm]` table of ranges (configs/swarm.toml).
    swarm: PathBuf,
    /// Runs at most (seeds first-seed, first-seed + 1, …).
    #[arg(long, default_value_t = 100)]
    runs: u64,
    /// Start no run after this many seconds.
    #[arg(long, value_name = "S")]
    time: Option<f64>,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Stop at the first failing run.
    #[arg(long)]
    stop_at_first_failure: bool,
    /// Where failing runs and swarm.json go (default results/<name>-swarm).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Worker threads (default: every core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Override a field of the swarm file, KEY=VALUE with a dotted KEY and a TOML
    /// VALUE; repeatable. E.g. `--set raft.raft.unsafe_skip_vote_persist=true
    /// --set 'swarm.systems=["raft"]'` runs the swarm with a Raft bug switched on.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ShrinkArgs {
    /// The failing run's directory (it has spec.toml, meta.json, summary.json and
    /// events.jsonl).
    run_dir: PathBuf,
    /// Where to write the shrunk spec (default RUN_DIR/shrunk.toml).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum RingCommand {
    /// What each placement strategy moves when nodes join, per vnode count, against the
    /// optimum RF·D·j/(N+j) (the planner's numbers, data spread evenly; measured runs of
    /// the same grid: configs/ring-moves.toml).
    Moves(RingMovesArgs),
}

#[derive(Debug, clap::Args)]
struct RingMovesArgs {
    /// Vnode counts P (powers of two), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64, 256])]
    vnodes: Vec<u32>,
    /// Nodes before the join.
    #[arg(long, default_value_t = 5)]
    before: u32,
    /// Node counts after the join, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [6, 8])]
    after: Vec<u32>,
    /// Replication factor.
    #[arg(long, default_value_t = 3)]
    rf: usize,
    /// Also write moves.json and the plot moves.{png,svg} here.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Run directories of `kvlab run configs/ring-moves.toml` (searched below DIR): their
    /// measured ratios go next to the planner's, in the table and the plot.
    #[arg(long, value_name = "DIR")]
    measured: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DockerCommand {
    /// Remove the containers, networks and volumes (labelled org.kvlab.run) of docker
    /// runs whose kvlab process is gone; runs still going are left alone unless --all.
    Clean {
        /// Remove every kvlab object on the daemon, those of runs still going too.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KindCommand {
    /// Write the Kubernetes manifests of a spec: a StatefulSet with a headless Service,
    /// a Service per node, the node configs (a Secret: they hold the cluster secret and
    /// the admin token), the spec (a ConfigMap), a PodDisruptionBudget.
    Render(KindRenderArgs),
}

#[derive(Debug, clap::Args)]
struct KindRenderArgs {
    /// The experiment spec (TOML).
    spec: PathBuf,
    /// The directory the manifests go to (created if missing).
    #[arg(long, value_name = "DIR", default_value = "kind-cluster/rendered")]
    out: PathBuf,
    /// The transport of the nodes (overrides the spec's): udp | tarpc.
    #[arg(long, value_parser = TransportChoice::parse)]
    transport: Option<TransportChoice>,
    /// Write a fixed, public cluster secret and admin token instead of fresh random
    /// ones (for manifests committed as examples; never for a cluster anyone else
    /// reaches).
    #[arg(long)]
    demo_secrets: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The experiment spec (TOML).
    spec: PathBuf,
    /// Run with this seed instead of the spec's.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run every seed of an inclusive range `A..B` in parallel, one run directory each
    /// (plots and report only for the first seed and for seeds that did not pass).
    #[arg(long, value_name = "A..B")]
    seeds: Option<String>,
    /// The run directory (one seed), or the parent of the `seed-N` directories
    /// (`--seeds`). Default: `results/<name>/seed-<N>`.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// For a spec with `[[variant]]`s: run only the variant with this label.
    #[arg(long, value_name = "LABEL")]
    variant: Option<String>,
    /// Where the nodes run (overrides the spec's `backend`): sim | local | docker
    /// (kind: see `kvlab kind render`).
    #[arg(long, value_parser = BackendKind::parse)]
    backend: Option<BackendKind>,
    /// The transport of real nodes (overrides the spec's `transport`): mem | udp |
    /// tarpc (docker: udp | tarpc).
    #[arg(long, value_parser = TransportChoice::parse)]
    transport: Option<TransportChoice>,
}

/// Lays `--backend` / `--transport` over a spec and validates the result.
fn apply_overrides(spec: &mut Spec, a: &RunArgs) -> Result<(), ExperimentError> {
    if let Some(b) = a.backend {
        spec.backend = b;
    }
    if let Some(t) = a.transport {
        spec.transport = t;
    }
    spec.validate().map_err(
        |FieldError { field, reason }| ExperimentError::SpecInvalid {
            file: a.spec.clone(),
            field,
            reason,
        },
    )
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The history file.
    history: PathBuf,
    /// The consistency model: register, cas-register, kv, multi-register (linearizability
    /// per key); or strict-serializable, serializable, snapshot-isolation, read-committed
    /// (transaction isolation, Elle-style; `txn` = strict-serializable).
    #[arg(long, value_parser = parse_check_model, default_value = "kv")]
    model: CheckModel,
    /// The history's format: auto, jsonl, edn, jepsen-log, porcupine-kv.
    #[arg(long, value_parser = parse_format, default_value = "auto")]
    format: HistoryFormat,
    /// Budget of the search in seconds; when it runs out the answer is "unknown".
    #[arg(long, value_name = "S", default_value_t = DEFAULT_CHECK_TIMEOUT_S)]
    timeout_s: f64,
    /// Write porcupine's HTML visualization of the first invalid key here.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
    /// The engine: `race` (the reads-from engine first — it decides registers whose
    /// written values are unique in O(n log n) —, then kvlab's search and porcupine-rs in a
    /// race; the first definite answer wins), `kvlab`, `porcupine` or `reads-from`.
    #[arg(long, value_parser = parse_engine, default_value = "race")]
    engine: kvlab_checker::Engine,
    /// Memory budget of the search in MiB; when it runs out the answer is "unknown".
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    memory_limit_mb: u64,
    /// Keep searching every key after one is found invalid (to name them all).
    #[arg(long)]
    all_keys: bool,
    /// Also write the history as Jepsen EDN here (for Knossos, Elle or porcupine).
    #[arg(long, value_name = "FILE")]
    export_edn: Option<PathBuf>,
    /// The longest line the history may have, in bytes (under EDN also the most one op
    /// may span); a longer one is an error naming its line, found without reading it whole.
    #[arg(long, value_name = "BYTES", default_value_t = kvlab_checker::MAX_HISTORY_LINE_BYTES)]
    max_line_bytes: usize,
    /// A progress line on stderr (operations read, keys decided, elapsed) once the check
    /// takes more than a second: `auto` when stderr is a terminal, `always`, `never`.
    #[arg(long, value_name = "WHEN", value_parser = parse_progress, default_value = "auto")]
    progress: ProgressMode,
    /// How long the check runs before the progress line appears, in ms (for tests).
    #[arg(long, hide = true, default_value_t = PROGRESS_DELAY.as_millis() as u64)]
    progress_delay_ms: u64,
}

fn parse_engine(name: &str) -> Result<kvlab_checker::Engine, String> {
    kvlab_checker::Engine::from_name(name).ok_or_else(|| {
        format!("unknown engine {name:?}; expected one of: race, kvlab, porcupine, reads-from")
    })
}

#[derive(Debug, clap::Args)]
struct PlotArgs {
    /// Run directories.
    #[arg(required = true)]
    run_dirs: Vec<PathBuf>,
    /// Where comparison plots go when several runs are given.
    #[arg(long, value_name = "DIR", default_value = "results/comparison")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => cmd_run(a),
        Command::Swarm(a) => cmd_swarm(a),
        Command::Shrink(a) => cmd_shrink(a),
        Command::Check(a) => cmd_check(a),
        Command::Plot(a) => cmd_plot(a),
        Command::Node(c) => kvlab_node_cli::run(c).map_err(Into::into),
        Command::Docker(DockerCommand::Clean { all }) => cmd_docker_clean(all),
        Command::Kind(KindCommand::Render(a)) => cmd_kind_render(a),
        Command::Ring(RingCommand::Moves(a)) => cmd_ring_moves(a),
        Command::Bench(a) => cmd_bench(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e
                .downcast_ref::<ExperimentError>()
                .map(ExperimentError::exit_code)
                .or_else(|| {
                    e.downcast_ref::<kvlab_node_cli::NodeCliError>()
                        .map(kvlab_node_cli::NodeCliError::exit_code)
                })
                .unwrap_or(1);
            ExitCode::from(code)
        }
    }
}

fn print_outcome(prefix: &str, o: &RunOutcome) {
    let head = prefix;
    let prefix = if prefix.is_empty() { "" } else { "  " };
    let s = &o.summary;
    let lat = s.latency_ms.get("all");
    if !s.measured.iter().any(|m| m == "kv") {
        // No client history: the run's checks passed or not; nothing was "valid".
        let verdict = match o.verdict {
            RunVerdict::Valid => "PASSED".to_string(),
            v => v.name().to_uppercase(),
        };
        say!(
            "{head}{verdict}: {}, {} members, {} faults, {:.1} s wall  {}",
            s.system,
            s.nodes,
            s.faults.injected,
            s.wall_time_s,
            o.run_dir.display()
        );
    } else {
        say!(
            "{head}{}: {} ops ({} ok, {} fail, {} info), {:.1} ok/s, p50 {:.2} ms, p99 {:.2} ms, {} faults  {}",
            o.verdict.name().to_uppercase(),
            s.ops.total,
            s.ops.ok,
            s.ops.fail,
            s.ops.info,
            s.throughput_ok_per_s,
            lat.map(|l| l.p50).unwrap_or(0.0),
            lat.map(|l| l.p99).unwrap_or(0.0),
            s.faults.injected,
            o.run_dir.display()
        );
    }
    match o.verdict {
        RunVerdict::Invalid
            if s.isolation
                .as_ref()
                .is_some_and(|i| i.verdict == kvlab_checker::check::Verdict::Invalid) =>
        {
            let anomalies: Vec<String> = s
                .isolation
                .iter()
                .flat_map(|i| i.report.anomaly_counts.iter())
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            say!(
                "{prefix}  not strict-serializable: {} (see {})\n{prefix}  reproduce: {}",
                anomalies.join(", "),
                o.run_dir.join("summary.json").display(),
                o.reproduce
            )
        }
        RunVerdict::Invalid => say!(
            "{prefix}  not linearizable: key {} (see {})\n{prefix}  reproduce: {}",
            o.failing_key.as_deref().unwrap_or("?"),
            o.run_dir.join("linearizability.html").display(),
            o.reproduce
        ),
        RunVerdict::LivenessFailed => say!(
            "{prefix}  liveness: no progress within {} s after healing ({} of {} clients progressed)\n{prefix}  reproduce: {}",
            s.liveness_s,
            s.liveness.clients_with_progress,
            s.liveness.clients,
            o.reproduce
        ),
        RunVerdict::Unknown => say!(
            "{prefix}  the checker ran out of budget; unknown keys: {}\n{prefix}  reproduce: {}",
            o.check.unknown_keys.join(", "),
            o.reproduce
        ),
        RunVerdict::PropertyFailed => {
            let swim = s.swim.iter().flat_map(|sw| sw.checks.iter());
            let ring = s.ring.iter().flat_map(|r| r.checks.iter());
            let failed: Vec<String> = swim
                .chain(ring)
                .filter(|c| !c.ok)
                .map(|c| match c.value {
                    Some(v) if c.name.starts_with("min_") => {
                        format!("{} = {v:.3} < {}", c.name, c.bound)
                    }
                    Some(v) => format!("{} = {v:.3} > {}", c.name, c.bound),
                    None => format!("{}: never reached (bound {})", c.name, c.bound),
                })
                .collect();
            say!(
                "{prefix}  property failed: {}\n{prefix}  reproduce: {}",
                failed.join("; "),
                o.reproduce
            )
        }
        RunVerdict::InvariantViolated => say!(
            "{prefix}  invariant violated: {}\n{prefix}  reproduce: {}",
            s.invariant_violation.as_deref().unwrap_or("?"),
            o.reproduce
        ),
        RunVerdict::Valid => {}
    }
    if let Some(sw) = &s.swim {
        say!(
            "{prefix}  swim: {}",
            kvlab_experiments::observe::swim::one_line(sw)
        );
    }
    let report = o.run_dir.join("report.html");
    if report.is_file() {
        say!("{prefix}  report: {}", report.display());
    }
    if let Some(e) = &o.report_error {
        say!("{prefix}  warning: {e}");
    }
}

fn cmd_run(a: RunArgs) -> anyhow::Result<u8> {
    let mut spec = Spec::load(&a.spec)?;
    apply_overrides(&mut spec, &a)?;
    let mut variant = None;
    if !spec.variant.is_empty() {
        let variants = load_variants(&a)?;
        let Some(label) = &a.variant else {
            return run_variant_sweep(&a, &spec, &variants);
        };
        let Some(v) = variants.into_iter().find(|v| &v.label == label) else {
            return Err(ExperimentError::BadArgument {
                arg: format!("--variant {label}"),
                reason: "no [[variant]] has this label".into(),
            }
            .into());
        };
        // One variant runs like a spec of its own.
        spec = v.spec;
        variant = Some(v.label);
    }
    let variant = variant.as_deref();
    match &a.seeds {
        Some(range) => run_seed_sweep(&a, &spec, variant, range),
        None => run_one(&a, &spec, variant),
    }
}

/// `kvlab swarm`: draws and runs seeds until the run or time budget is spent, with a
/// progress line; prints each failure with the command that replays it, then the
/// distribution of what was drawn. Exit 1 if any run failed.
fn cmd_swarm(a: SwarmArgs) -> anyhow::Result<u8> {
    use kvlab_experiments::swarm::{Swarm, SwarmOptions, run_swarm, summary_table};
    let swarm = Swarm::load_with(&a.swarm, &a.sets)?;
    let name = swarm.draw(a.first_seed)?.spec.name;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(format!("{name}-swarm")));
    let time_budget = match a.time {
        Some(t) if !(t.is_finite() && t > 0.0) => {
            return Err(ExperimentError::BadArgument {
                arg: format!("--time {t}"),
                reason: "must be a number of seconds > 0".into(),
            }
            .into());
        }
        t => t.map(std::time::Duration::from_secs_f64),
    };
    let opts = SwarmOptions {
        first_seed: a.first_seed,
        runs: a.runs,
        time_budget,
        threads: a.jobs.unwrap_or_else(cores).max(1),
        out: out.clone(),
        stop_at_first_failure: a.stop_at_first_failure,
    };
    let pb = indicatif::ProgressBar::new(a.runs);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "swarm [{bar:30}] {pos}/{len} {per_sec} ({elapsed}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut failures = 0u64;
    let report = run_swarm(&swarm, &opts, |row| {
        pb.inc(1);
        if row.failed() {
            failures += 1;
            pb.set_message(format!("{failures} failed"));
            pb.suspend(|| {
                let why = row.error.as_deref().unwrap_or(&row.verdict);
                say!("seed {}: {why}", row.seed);
                if let Some(cmd) = row.replay() {
                    say!("  replay: {cmd}");
                }
            });
        }
    })?;
    pb.finish_and_clear();
    say_raw!("{}", summary_table(&report));
    say!("swarm.json and failing runs: {}", out.display());
    Ok(u8::from(report.failures > 0))
}

/// `kvlab shrink`: prints before → after and the command that replays the shrunk spec.
fn cmd_shrink(a: ShrinkArgs) -> anyhow::Result<u8> {
    let s = kvlab_experiments::shrink::shrink(&a.run_dir, a.out.as_deref())?;
    say!(
        "seed {} ({}): faults {} -> {}, safety phase {} s -> {} s, clients {} -> {}, keys {} -> {} ({} runs)",
        s.seed,
        s.verdict,
        s.faults.0,
        s.faults.1,
        s.duration_s.0,
        s.duration_s.1,
        s.clients.0,
        s.clients.1,
        s.keys.0,
        s.keys.1,
        s.runs
    );
    if !s.explicit {
        say!(
            "  its faults as an explicit schedule do not fail it again (they need the random \
             nemesis's exact shapes): the shrunk spec keeps the random faults, on a shorter run"
        );
    }
    for f in &s.spec.nemesis.schedule {
        let d = f
            .duration_s
            .map_or_else(|| "-".into(), |d| format!("{d} s"));
        say!(
            "  at {} s: {} {:?} for {d}",
            f.at_s,
            f.kind.spec_name(),
            f.targets
        );
    }
    say!("wrote {}", s.path.display());
    say!("replay: kvlab run {} --seed {}", s.path.display(), s.seed);
    Ok(0)
}

/// The spec's `[[variant]]`s, each with `--backend`/`--transport` laid over.
fn load_variants(a: &RunArgs) -> anyhow::Result<Vec<Variant>> {
    let text = std::fs::read_to_string(&a.spec).map_err(|source| ExperimentError::SpecRead {
        file: a.spec.clone(),
        source,
    })?;
    let mut variants = kvlab_experiments::sweep::expand(&text, &a.spec)?;
    for v in &mut variants {
        apply_overrides(&mut v.spec, a)?;
    }
    Ok(variants)
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Every variant for every seed, then a comparison table.
fn run_variant_sweep(a: &RunArgs, spec: &Spec, variants: &[Variant]) -> anyhow::Result<u8> {
    let seeds = match (&a.seeds, a.seed) {
        (Some(range), _) => parse_seed_range(range)?,
        (None, Some(s)) => s..=s,
        (None, None) => spec.seed..=spec.seed,
    };
    let base = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&spec.name));
    let mut variants = variants.to_vec();
    for v in &mut variants {
        v.spec.name = spec.name.clone();
    }
    let mut worst = 0u8;
    let rows = kvlab_experiments::sweep::run_variants(
        &variants,
        &a.spec,
        seeds,
        &base,
        cores(),
        |v, seed, result| {
            let prefix = format!("{} · seed {seed}: ", v.label);
            worst = worst_code(worst, report_result(&prefix, result));
        },
    )?;
    say!("");
    print_variant_table(&rows);
    say!("variants: {}", base.join("variants.json").display());
    Ok(worst)
}

/// One line per variant run: the KV columns for runs that measured `kv` (a client
/// history), dashes for the others (a SWIM run has no ok/s or p50 to print), whose
/// verdict says its checks `passed` — there is no history to call valid.
fn print_variant_table(rows: &[kvlab_experiments::sweep::VariantRow]) {
    say!(
        "{:<28} {:<13} {:>5} {:>7} {:>7} {:>10} {:>9} {:>9}  verdict",
        "variant",
        "backend",
        "seed",
        "nodes",
        "clients",
        "ok/s",
        "p50 ms",
        "p99 ms"
    );
    for r in rows {
        // `measured` comes from the run's summary, or from its spec when it failed.
        let kv = r.measured.iter().any(|m| m == "kv");
        let kv_columns = if kv {
            format!(
                "{:>7} {:>10.1} {:>9.2} {:>9.2}",
                r.clients, r.throughput_ok_per_s, r.latency_ms_p50, r.latency_ms_p99
            )
        } else {
            format!("{:>7} {:>10} {:>9} {:>9}", "-", "-", "-", "-")
        };
        let verdict = match r.verdict.as_str() {
            "valid" if !kv => "passed",
            v => v,
        };
        say!(
            "{:<28} {:<13} {:>5} {:>7} {kv_columns}  {verdict}",
            r.label,
            format!("{}/{}", r.backend, r.transport),
            r.seed,
            r.nodes,
        );
    }
}

/// Prints one run's outcome (or error, with its reproduce command); returns its exit
/// status.
fn report_result(prefix: &str, result: &Result<RunOutcome, ExperimentError>) -> u8 {
    match result {
        Ok(o) => {
            print_outcome(prefix, o);
            o.verdict.exit_code()
        }
        Err(e) => {
            say!("{prefix}ERROR: {e}");
            e.exit_code().max(1)
        }
    }
}

/// Every seed of `range` in the job pool, then a tally.
fn run_seed_sweep(
    a: &RunArgs,
    spec: &Spec,
    variant: Option<&str>,
    range: &str,
) -> anyhow::Result<u8> {
    let seeds = parse_seed_range(range)?;
    let base = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&spec.name));
    let first = *seeds.start();
    let jobs: Vec<Job> = seeds
        .map(|seed| Job {
            spec: spec.clone(),
            seed,
            run_dir: seed_run_dir(&base, seed),
            reproduce: Reproduce::new(&a.spec, spec, seed, variant),
            report: if seed == first {
                ReportPolicy::Always
            } else {
                ReportPolicy::OnFailure
            },
            progress: false,
        })
        .collect();
    let pb = indicatif::ProgressBar::new(jobs.len() as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "seeds [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut tally = std::collections::BTreeMap::<&'static str, u64>::new();
    let mut worst = 0u8;
    let mut failed_seeds = Vec::new();
    run_jobs(&jobs, threads_for(&jobs, cores()), |job, result| {
        pb.inc(1);
        let seed = job.seed;
        pb.suspend(|| {
            let code = report_result(&format!("seed {seed}: "), &result);
            let name = result.as_ref().map_or("error", |o| o.verdict.name());
            *tally.entry(name).or_default() += 1;
            if name != RunVerdict::Valid.name() {
                failed_seeds.push(seed);
                if result.is_err() {
                    say!("  reproduce: {}", job.reproduce);
                }
            }
            worst = worst_code(worst, code);
        });
    });
    pb.finish_and_clear();
    let parts: Vec<String> = tally.iter().map(|(k, v)| format!("{v} {k}")).collect();
    say!(
        "{} seeds: {}  ({})",
        jobs.len(),
        parts.join(", "),
        base.display()
    );
    if !failed_seeds.is_empty() {
        let list: Vec<String> = failed_seeds.iter().map(u64::to_string).collect();
        say!("seeds not valid: {}", list.join(" "));
    }
    Ok(worst)
}

/// One run, with a progress bar.
fn run_one(a: &RunArgs, spec: &Spec, variant: Option<&str>) -> anyhow::Result<u8> {
    let seed = a.seed.unwrap_or(spec.seed);
    if seed > kvlab_experiments::spec::MAX_SEED {
        return Err(ExperimentError::BadArgument {
            arg: format!("--seed {seed}"),
            reason: format!(
                "must be at most {} (MAX_SEED)",
                kvlab_experiments::spec::MAX_SEED
            ),
        }
        .into());
    }
    let run_dir = a
        .out
        .clone()
        .unwrap_or_else(|| seed_run_dir(&PathBuf::from("results").join(&spec.name), seed));
    let opts = RunOptions {
        seed,
        run_dir,
        reproduce: Reproduce::new(&a.spec, spec, seed, variant),
        report: ReportPolicy::Always,
        progress: true,
    };
    match run_experiment(spec, &opts) {
        Ok(outcome) => {
            print_outcome("", &outcome);
            Ok(outcome.verdict.exit_code())
        }
        Err(e) => {
            say!("reproduce: {}", opts.reproduce);
            Err(e.into())
        }
    }
}

/// Combines exit statuses: a failure (1) outranks unknown (3), which outranks success.
fn worst_code(a: u8, b: u8) -> u8 {
    let rank = |c: u8| match c {
        0 => 0,
        3 => 1,
        1 => 2,
        _ => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}

fn cmd_check(a: CheckArgs) -> anyhow::Result<u8> {
    let model = match a.model {
        CheckModel::Linear(m) => m,
        CheckModel::Txn(m) => return cmd_check_txn(&a, m),
    };
    let timeout = match a.timeout_s {
        s if s.is_finite() && s > 0.0 && s < 1e9 => Some(Duration::from_secs_f64(s)),
        s => {
            return Err(ExperimentError::BadArgument {
                arg: format!("--timeout-s {s}"),
                reason: "must be a number of seconds > 0".into(),
            }
            .into());
        }
    };
    if a.max_line_bytes == 0 {
        return Err(ExperimentError::BadArgument {
            arg: "--max-line-bytes 0".into(),
            reason: "must be at least 1".into(),
        }
        .into());
    }
    let progress = Arc::new(kvlab_checker::Progress::new());
    let display = ProgressDisplay::start(
        Arc::clone(&progress),
        a.progress,
        Duration::from_millis(a.progress_delay_ms),
    );
    let options = kvlab_checker::ReadOptions {
        format: a.format,
        max_line_bytes: a.max_line_bytes,
        progress: Some(&progress),
        // Keys the reads-from engine decides are forgotten as they are read.
        decide_while_reading: a.engine.uses_reads_from(),
    };
    let history = read_for_check(&a.history, model, &options, a.export_edn.as_deref())
        .map_err(|e| hint_txn_history(&a.history, model, e))?;
    if let Some(path) = &a.export_edn {
        eprintln!("history as Jepsen EDN: {}", path.display());
    }
    let config = kvlab_checker::CheckConfig {
        model,
        timeout,
        memory_limit_bytes: Some(a.memory_limit_mb.saturating_mul(1 << 20)),
        engine: a.engine,
        stop_at_first_invalid: !a.all_keys,
    };
    let report = history.check(&config, Some(&progress));
    // The progress line ends (and is cleared from a terminal) before the report.
    drop(display);
    if a.json {
        say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        say_raw!("{report}");
    }
    if let Some(html) = &a.html {
        if let Some(key) = report.invalid_keys.first() {
            history.write_visualization(key, timeout, html)?;
            eprintln!("visualization of key {key}: {}", html.display());
        } else {
            eprintln!("no invalid key: {} not written", html.display());
        }
    }
    Ok(match report.verdict {
        Verdict::Valid => 0,
        Verdict::Invalid => 1,
        Verdict::Unknown => 3,
    })
}

/// `kvlab check --model strict-serializable|serializable|snapshot-isolation|read-committed`:
/// the transaction-isolation checker, under the same budgets and exit codes.
fn cmd_check_txn(a: &CheckArgs, model: kvlab_checker::txn::TxnModel) -> anyhow::Result<u8> {
    let timeout = match a.timeout_s {
        s if s.is_finite() && s > 0.0 && s < 1e9 => Duration::from_secs_f64(s),
        s => {
            return Err(ExperimentError::BadArgument {
                arg: format!("--timeout-s {s}"),
                reason: "must be a number of seconds > 0".into(),
            }
            .into());
        }
    };
    if a.html.is_some() || a.export_edn.is_some() {
        return Err(ExperimentError::BadArgument {
            arg: "--html / --export-edn".into(),
            reason: format!("they apply to the single-key models, not to `{model}`"),
        }
        .into());
    }
    let options = kvlab_checker::txn::TxnCheckOptions {
        model,
        timeout: Some(timeout),
        memory_limit_bytes: Some(a.memory_limit_mb.saturating_mul(1 << 20)),
    };
    let report = check_txn_file(&a.history, a.format, &options)?;
    if a.json {
        say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        say_raw!("{report}");
    }
    Ok(match report.verdict {
        Verdict::Valid => 0,
        Verdict::Invalid => 1,
        Verdict::Unknown => 3,
    })
}

fn cmd_plot(a: PlotArgs) -> anyhow::Result<u8> {
    for dir in &a.run_dirs {
        if !dir.join("history.jsonl").is_file() {
            return Err(ExperimentError::BadArgument {
                arg: dir.display().to_string(),
                reason: "not a run directory (no history.jsonl)".into(),
            }
            .into());
        }
    }
    for dir in &a.run_dirs {
        let html = kvlab_experiments::run::render_report(dir)?;
        say!("{}", html.display());
    }
    if a.run_dirs.len() > 1 {
        let html = kvlab_experiments::run::render_comparison(&a.run_dirs, &a.out)?;
        say!("comparison: {}", html.display());
    }
    Ok(0)
}

fn cmd_docker_clean(all: bool) -> anyhow::Result<u8> {
    use kvlab_experiments::local::docker;
    let timeout = Duration::from_secs(60);
    docker::daemon_version(timeout)
        .map_err(|e| ExperimentError::Backend(format!("no Docker daemon: {e}")))?;
    let report = docker::clean_orphans(all, timeout);
    for r in &report.removed {
        say!("removed {r}");
    }
    for k in &report.kept_live {
        say!("kept {k}: its run is still going (--all removes it too)");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    say!(
        "{} removed, {} kept",
        report.removed.len(),
        report.kept_live.len()
    );
    Ok(if report.warnings.is_empty() { 0 } else { 1 })
}

/// The etcd binary: `--etcd`, `$KVLAB_ETCD_BIN`, or `etcd` on PATH.
fn find_etcd(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit.or_else(|| std::env::var_os("KVLAB_ETCD_BIN").map(PathBuf::from)) {
        return Ok(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no etcd found (install Debian's etcd-server, or pass --etcd / KVLAB_ETCD_BIN)"
            )
        })
}

fn cmd_bench(a: BenchArgs) -> anyhow::Result<u8> {
    use kvlab_experiments::bench::{BenchOptions, OpKind, render_table, run_bench};
    let ops = a
        .ops
        .iter()
        .map(|s| OpKind::parse(s))
        .collect::<Result<Vec<_>, _>>();
    let ops = match ops {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("error: --ops: {e}");
            return Ok(2);
        }
    };
    let transport = match a.transport {
        TransportChoice::Udp => kvlab_server::TransportKind::Udp,
        TransportChoice::Tarpc => kvlab_server::TransportKind::Tarpc,
        TransportChoice::Mem => {
            eprintln!("error: --transport: the bench runs node processes (udp | tarpc)");
            return Ok(2);
        }
    };
    let seconds = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s)
            .map_err(|_| anyhow::anyhow!("{what} must be a number of seconds"))
    };
    let out = a.out.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("results/bench/{now}"))
    });
    let kvlab_exe = match std::env::var_os(kvlab_experiments::local::NODE_EXE_ENV) {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?,
    };
    let opts = BenchOptions {
        out,
        rounds: a.rounds,
        clients: a.clients,
        ops,
        measure: seconds(a.duration_s, "--duration-s")?,
        warmup: seconds(a.warmup_s, "--warmup-s")?,
        conns: a.conns,
        keys: a.keys,
        value_bytes: a.value_bytes,
        members: a.members,
        target: a.target,
        compact_every: seconds(a.compact_every_s, "--compact-every-s")?,
        transport,
        etcd_bin: find_etcd(a.etcd)?,
        kvlab_exe,
        request_timeout: Duration::from_secs(5),
        startup_timeout: Duration::from_secs(30),
        seed: a.seed,
    };
    if let Err(e) = opts.validate() {
        eprintln!("error: {e}");
        return Ok(2);
    }
    match run_bench(&opts) {
        Ok(report) => {
            say_raw!("{}", render_table(&report));
            say!("results: {}", opts.out.display());
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}

fn cmd_ring_moves(a: RingMovesArgs) -> anyhow::Result<u8> {
    use kvlab_experiments::ring_cmd::{
        MovesGrid, attach_measured, format_table, moves_table, read_measured, write_outputs,
    };
    let mut rows = moves_table(&MovesGrid {
        vnodes: a.vnodes,
        before: a.before,
        after: a.after,
        replication_factor: a.rf,
    })?;
    if let Some(dir) = &a.measured {
        attach_measured(&mut rows, &read_measured(dir)?);
    }
    say!("{}", format_table(&rows).trim_end());
    if let Some(dir) = a.out {
        for f in write_outputs(&rows, &dir)? {
            say!("{}", f.display());
        }
    }
    Ok(0)
}

fn cmd_kind_render(a: KindRenderArgs) -> anyhow::Result<u8> {
    let mut spec = Spec::load(&a.spec)?;
    if let Some(t) = a.transport {
        spec.transport = t;
    }
    let files = kvlab_experiments::kind::render_to_dir(&spec, &a.out, a.demo_secrets)?;
    for f in &files {
        say!("{}", f.display());
    }
    Ok(0)
}
