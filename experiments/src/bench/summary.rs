//! A bench's numbers: one result per cell and round, one row per cell with the medians
//! and the kvlab/etcd ratios over the rounds; the table, `bench.json` and the plot.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::BenchOptions;
use super::load::{LoadResult, OpKind};
use super::procs::System;

/// What one system did in one cell of one round.
#[derive(Clone, Debug, Serialize)]
pub struct CellResult {
    /// The system.
    pub system: System,
    /// The operation.
    pub op: OpKind,
    /// Concurrent clients.
    pub clients: usize,
    /// The round (from 0).
    pub round: usize,
    /// Successful requests per second of the measured window.
    pub ops_per_s: f64,
    /// Median latency of the successful requests, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Successful requests.
    pub ok: u64,
    /// Failed or timed-out requests.
    pub errors: u64,
    /// CAS txns whose compare failed (counted in `ok`).
    pub cas_failed: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// CPU time (user + system) the members used during the measured window, per
    /// successful request, in microseconds: what a request costs the servers, which a
    /// busy machine changes much less than it changes ops/s.
    pub server_cpu_us_per_op: f64,
    /// CPU time the bench process (the clients of both systems share it) used in the
    /// window, per successful request, µs. Clients and servers share the machine's
    /// cores: this is the part of each request's cost no server can save.
    pub client_cpu_us_per_op: f64,
}

/// CPU time used during one measured window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCpu {
    /// By the system's members.
    pub servers: Duration,
    /// By the bench process (its clients).
    pub client: Duration,
}

impl CellResult {
    /// The result of `r`; `cpu` is what its window cost.
    pub fn new(
        system: System,
        op: OpKind,
        clients: usize,
        round: usize,
        r: &LoadResult,
        cpu: WindowCpu,
    ) -> Self {
        let per_op = |d: Duration| d.as_secs_f64() * 1e6 / (r.ok.max(1) as f64);
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        CellResult {
            system,
            op,
            clients,
            round,
            ops_per_s: r.ok as f64 / secs,
            p50_ms: r.latency.quantile_ms(0.50),
            p99_ms: r.latency.quantile_ms(0.99),
            ok: r.ok,
            errors: r.errors,
            cas_failed: r.cas_failed,
            first_error: r.first_error.clone(),
            server_cpu_us_per_op: per_op(cpu.servers),
            client_cpu_us_per_op: per_op(cpu.client),
        }
    }

    /// One progress line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "round {} {:<5} {:<4} {:>4} clients: {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  cpu {:>6.0} us/op (client {:.0})",
            self.round + 1,
            self.system.name(),
            self.op.name(),
            self.clients,
            self.ops_per_s,
            self.p50_ms,
            self.p99_ms,
            self.server_cpu_us_per_op,
            self.client_cpu_us_per_op
        );
        if self.errors > 0 {
            let _ = write!(
                s,
                "  {} errors (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        s
    }
}

/// Min, median and max of a few numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    /// The smallest.
    pub min: f64,
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `xs` (all zero when empty; non-finite values are dropped).
    pub fn of(xs: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = xs.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            min: v[0],
            median,
            max: v[n - 1],
        }
    }
}

/// One cell over every round: medians per system and the per-round ratios.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The operation.
    pub op: OpKind,
    /// Concurrent clients.
    pub clients: usize,
    /// kvlab's ops/s over the rounds.
    pub kvlab_ops_per_s: Spread,
    /// etcd's ops/s over the rounds.
    pub etcd_ops_per_s: Spread,
    /// Median p50 latency, ms, per system.
    pub kvlab_p50_ms: f64,
    /// etcd's median p50, ms.
    pub etcd_p50_ms: f64,
    /// Median p99 latency, ms, per system.
    pub kvlab_p99_ms: f64,
    /// etcd's median p99, ms.
    pub etcd_p99_ms: f64,
    /// kvlab ops/s ÷ etcd ops/s of each round (above 1: kvlab is faster).
    pub ops_ratio: Spread,
    /// kvlab p99 ÷ etcd p99 of each round (below 1: kvlab's tail is shorter).
    pub p99_ratio: Spread,
    /// Median server CPU per request, µs, per system.
    pub kvlab_cpu_us_per_op: f64,
    /// etcd's median server CPU per request, µs.
    pub etcd_cpu_us_per_op: f64,
    /// Errors of both systems over the rounds.
    pub kvlab_errors: u64,
    /// etcd's errors.
    pub etcd_errors: u64,
}

fn row_of(cells: &[CellResult], op: OpKind, clients: usize) -> Row {
    let of = |s: System| -> Vec<&CellResult> {
        cells
            .iter()
            .filter(|c| c.system == s && c.op == op && c.clients == clients)
            .collect()
    };
    let (k, e) = (of(System::Kvlab), of(System::Etcd));
    let paired: Vec<(&CellResult, &CellResult)> = k
        .iter()
        .filter_map(|a| e.iter().find(|b| b.round == a.round).map(|b| (*a, *b)))
        .collect();
    let med =
        |xs: &[&CellResult], f: fn(&CellResult) -> f64| Spread::of(xs.iter().map(|c| f(c))).median;
    Row {
        op,
        clients,
        kvlab_ops_per_s: Spread::of(k.iter().map(|c| c.ops_per_s)),
        etcd_ops_per_s: Spread::of(e.iter().map(|c| c.ops_per_s)),
        kvlab_p50_ms: med(&k, |c| c.p50_ms),
        etcd_p50_ms: med(&e, |c| c.p50_ms),
        kvlab_p99_ms: med(&k, |c| c.p99_ms),
        etcd_p99_ms: med(&e, |c| c.p99_ms),
        ops_ratio: Spread::of(paired.iter().map(|(a, b)| a.ops_per_s / b.ops_per_s)),
        p99_ratio: Spread::of(paired.iter().map(|(a, b)| a.p99_ms / b.p99_ms)),
        kvlab_cpu_us_per_op: med(&k, |c| c.server_cpu_us_per_op),
        etcd_cpu_us_per_op: med(&e, |c| c.server_cpu_us_per_op),
        kvlab_errors: k.iter().map(|c| c.errors).sum(),
        etcd_errors: e.iter().map(|c| c.errors).sum(),
    }
}

/// A whole bench: the options, every cell and the rows.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The options it ran with.
    pub options: BenchOptions,
    /// Every cell of every round, in the order run.
    pub cells: Vec<CellResult>,
    /// One row per (op, clients).
    pub rows: Vec<Row>,
    /// The wall time of the rounds, seconds.
    pub elapsed_s: f64,
    /// The load average when the bench ended (1, 5, 15 min), if readable: a busy
    /// machine makes absolute numbers noisy.
    pub load_average: Option<[f64; 3]>,
}

fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

impl BenchReport {
    /// The report of `cells`.
    pub fn new(opts: &BenchOptions, cells: Vec<CellResult>, elapsed: Duration) -> Self {
        let mut rows = Vec::new();
        for &op in &opts.ops {
            for &clients in &opts.clients {
                rows.push(row_of(&cells, op, clients));
            }
        }
        BenchReport {
            options: opts.clone(),
            cells,
            rows,
            elapsed_s: elapsed.as_secs_f64(),
            load_average: load_average(),
        }
    }

    /// Writes `bench.json`, `table.txt` and `bench.{png,svg}` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        let path = dir.join("bench.json");
        std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        let path = dir.join("table.txt");
        std::fs::write(&path, render_table(self))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let rows: Vec<kvlab_report::BenchPlotRow> = self
            .rows
            .iter()
            .map(|r| kvlab_report::BenchPlotRow {
                op: r.op.name().to_string(),
                clients: r.clients,
                ops_per_s: [r.kvlab_ops_per_s.median, r.etcd_ops_per_s.median],
                p99_ms: [r.kvlab_p99_ms, r.etcd_p99_ms],
            })
            .collect();
        kvlab_report::render_bench_plot(&rows, ["kvlab", "etcd"], dir)
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn spread(s: Spread, rounds: usize) -> String {
    if rounds <= 1 {
        format!("{:.2}", s.median)
    } else {
        format!("{:.2}/{:.2}/{:.2}", s.min, s.median, s.max)
    }
}

/// The table: per (op, clients), median ops/s and latencies of both systems and the
/// ratios (min/median/max over the rounds when there are several).
pub fn render_table(r: &BenchReport) -> String {
    let rounds = r.options.rounds;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<4} {:>7} | {:>9} {:>9} {:>16} | {:>7} {:>7} | {:>7} {:>7} {:>16} | {:>6} {:>6} | {:>6}",
        "op",
        "clients",
        "kvlab/s",
        "etcd/s",
        "ratio",
        "p50 kv",
        "p50 et",
        "p99 kv",
        "p99 et",
        "p99 ratio",
        "cpu kv",
        "cpu et",
        "errors"
    );
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{:<4} {:>7} | {:>9.0} {:>9.0} {:>16} | {:>7.2} {:>7.2} | {:>7.2} {:>7.2} {:>16} | {:>6.0} {:>6.0} | {:>6}",
            row.op.name(),
            row.clients,
            row.kvlab_ops_per_s.median,
            row.etcd_ops_per_s.median,
            spread(row.ops_ratio, rounds),
            row.kvlab_p50_ms,
            row.etcd_p50_ms,
            row.kvlab_p99_ms,
            row.etcd_p99_ms,
            spread(row.p99_ratio, rounds),
            row.kvlab_cpu_us_per_op,
            row.etcd_cpu_us_per_op,
            row.kvlab_errors + row.etcd_errors
        );
    }
    let _ = writeln!(
        s,
        "ops/s: median over {rounds} round(s); ratio = kvlab/etcd per round{}; latencies in ms (median of the rounds' p50/p99); cpu = the members' CPU time (user + system) per request, us; {} s per cell after {} s warm-up; {} members each, fsync on.",
        if rounds > 1 { " (min/median/max)" } else { "" },
        r.options.measure.as_secs_f64(),
        r.options.warmup.as_secs_f64(),
        r.options.members
    );
    if let Some([a, b, c]) = r.load_average {
        let _ = writeln!(s, "load average at the end: {a:.2} {b:.2} {c:.2}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(system: System, round: usize, ops: f64, p99: f64) -> CellResult {
        CellResult {
            system,
            op: OpKind::Put,
            clients: 16,
            round,
            ops_per_s: ops,
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            ok: 1,
            errors: 0,
            cas_failed: 0,
            first_error: None,
            server_cpu_us_per_op: 0.0,
            client_cpu_us_per_op: 0.0,
        }
    }

    #[test]
    fn spread_of_odd_even_and_empty() {
        assert_eq!(
            Spread::of([3.0, 1.0, 2.0]),
            Spread {
                min: 1.0,
                median: 2.0,
                max: 3.0
            }
        );
        assert_eq!(Spread::of([4.0, 1.0]).median, 2.5);
        assert_eq!(Spread::of([f64::NAN]), Spread::default());
    }

    #[test]
    fn ratios_pair_the_same_round() {
        let cells = vec![
            cell(System::Kvlab, 0, 200.0, 1.0),
            cell(System::Etcd, 0, 100.0, 2.0),
            cell(System::Etcd, 1, 100.0, 1.0),
            cell(System::Kvlab, 1, 300.0, 2.0),
            cell(System::Kvlab, 2, 100.0, 1.0),
            cell(System::Etcd, 2, 100.0, 1.0),
        ];
        let row = row_of(&cells, OpKind::Put, 16);
        assert_eq!(
            row.ops_ratio,
            Spread {
                min: 1.0,
                median: 2.0,
                max: 3.0
            }
        );
        assert_eq!(
            row.p99_ratio,
            Spread {
                min: 0.5,
                median: 1.0,
                max: 2.0
            }
        );
        assert_eq!(row.kvlab_ops_per_s.median, 200.0);
    }
}
