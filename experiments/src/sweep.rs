//! Variants: one spec file, several configurations, compared side by side.
//!
//! A spec may end with any number of `[[variant]]` tables. Each is a *partial* spec with
//! a `label`, laid over the rest of the file (tables merge key by key, anything else is
//! replaced), and validated like a whole spec:
//!
//! ```toml
//! name = "raft-throughput"
//! system = "raft"
//! nodes = 3
//! [workload]
//! clients = 1
//!
//! [[variant]]
//! label = "3 nodes, 16 clients"
//! workload = { clients = 16 }
//!
//! [[variant]]
//! label = "5 nodes, 16 clients"
//! nodes = 5
//! workload = { clients = 16 }
//! ```
//!
//! `kvlab run` then runs every variant (with `--seeds`, every variant for every seed),
//! each in `<out>/<variant-slug>/` (or `<out>/<variant-slug>/seed-<N>/`), writes
//! `<out>/variants.json` — one row of key numbers per run — and draws comparison plots
//! of the variants (`comparison.png|svg`, `compare.html`) from the first seed of each.
//! `--variant LABEL` runs just one of them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::ExperimentError;
use crate::pool::{Job, run_jobs, threads_for};
use crate::reproduce::Reproduce;
use crate::run::{ReportPolicy, RunOutcome, seed_run_dir};
use crate::spec::Spec;

/// The most variants one spec may have.
pub const MAX_VARIANTS: usize = 64;

/// One configuration of a spec with variants.
#[derive(Clone, Debug)]
pub struct Variant {
    /// The variant's label, as written.
    pub label: String,
    /// The label made safe for a directory name.
    pub slug: String,
    /// The whole spec of this variant, validated.
    pub spec: Spec,
}

/// Lays each `[[variant]]` of the spec file `text` over the rest of it and validates
/// the result. Errors name the variant and the field.
pub fn expand(text: &str, file: &Path) -> Result<Vec<Variant>, ExperimentError> {
    let mut base: toml::Table = toml::from_str(text).map_err(|e| ExperimentError::SpecInvalid {
        file: file.to_path_buf(),
        field: "variant".into(),
        reason: e.to_string(),
    })?;
    let variants = match base.remove("variant") {
        Some(toml::Value::Array(v)) => v,
        Some(_) => {
            return Err(invalid(
                file,
                "variant",
                "must be an array of tables ([[variant]])",
            ));
        }
        None => return Ok(Vec::new()),
    };
    if variants.len() > MAX_VARIANTS {
        return Err(invalid(
            file,
            "variant",
            format!(
                "{} variants; at most {MAX_VARIANTS} (MAX_VARIANTS)",
                variants.len()
            ),
        ));
    }
    let mut out: Vec<Variant> = Vec::with_capacity(variants.len());
    for (i, v) in variants.into_iter().enumerate() {
        let toml::Value::Table(mut over) = v else {
            return Err(invalid(file, &format!("variant[{i}]"), "must be a table"));
        };
        let label = match over.remove("label") {
            Some(toml::Value::String(s)) if !s.trim().is_empty() => s,
            _ => {
                return Err(invalid(
                    file,
                    &format!("variant[{i}].label"),
                    "every variant needs a non-empty string `label`",
                ));
            }
        };
        let slug = slugify(&label);
        if let Some(other) = out.iter().find(|o| o.slug == slug) {
            return Err(invalid(
                file,
                &format!("variant[{i}].label"),
                format!(
                    "`{label}` and `{}` give the same directory name `{slug}`",
                    other.label
                ),
            ));
        }
        let mut merged = base.clone();
        merge(&mut merged, over);
        merged.insert("label".into(), toml::Value::String(label.clone()));
        let where_ = |field: &str| format!("variant[{i}] \"{label}\": {field}");
        let merged_text = toml::to_string(&merged)
            .map_err(|e| invalid(file, &where_("(whole)"), e.to_string()))?;
        let spec = Spec::from_toml_str(&merged_text, file).map_err(|e| match e {
            ExperimentError::SpecParse { field, message, .. } => invalid(
                file,
                &where_(field.as_deref().unwrap_or("(unknown field)")),
                message,
            ),
            ExperimentError::SpecInvalid { field, reason, .. } => {
                invalid(file, &where_(&field), reason)
            }
            other => other,
        })?;
        out.push(Variant { label, slug, spec });
    }
    Ok(out)
}

fn invalid(file: &Path, field: &str, reason: impl Into<String>) -> ExperimentError {
    ExperimentError::SpecInvalid {
        file: file.to_path_buf(),
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Tables merge key by key; any other value of `over` replaces the base's.
pub(crate) fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Lower-case letters, digits and `-` only.
pub fn slugify(label: &str) -> String {
    let mut s = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_matches('-').to_string();
    if s.is_empty() { "variant".into() } else { s }
}

/// One row of `variants.json`.
#[derive(Clone, Debug, Serialize)]
pub struct VariantRow {
    /// The variant's label.
    pub label: String,
    /// The run seed.
    pub seed: u64,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The run's verdict (or `error`).
    pub verdict: String,
    /// Where the nodes ran: `sim` or `local`.
    pub backend: String,
    /// The transport: `sim`, `mem`, `udp` or `tarpc`.
    pub transport: String,
    /// Cluster size.
    pub nodes: u32,
    /// What the run measured (`kv`, `raft-invariants`, `swim`): the KV columns mean
    /// something only with `kv`.
    pub measured: Vec<String>,
    /// Concurrent clients.
    pub clients: u32,
    /// `ok` operations per simulated second.
    pub throughput_ok_per_s: f64,
    /// Latency of `ok` operations, milliseconds: p50.
    pub latency_ms_p50: f64,
    /// … p99.
    pub latency_ms_p99: f64,
    /// Latency percentiles of `ok` operations by type (`all`, `read`, `write`, `cas`).
    pub latency_ms_by_f: std::collections::BTreeMap<String, crate::summary::LatencyStats>,
    /// Operations by outcome: ok, fail, info.
    pub ops_ok: u64,
    /// …
    pub ops_fail: u64,
    /// …
    pub ops_info: u64,
    /// Faults injected.
    pub faults_injected: u64,
    /// `leader_elected` events reported by nodes.
    pub leader_elections: u64,
    /// A transactional run: its sweep coordinates (θ, ops per txn, conflict policy,
    /// partitions per txn), abort rate, goodput and commit latency by phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn: Option<crate::txn_sweep::TxnRow>,
    /// The error, when the run did not reach a verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The directory of one variant's run.
pub fn variant_run_dir(base: &Path, v: &Variant, seed: u64, several_seeds: bool) -> PathBuf {
    let dir = base.join(&v.slug);
    if several_seeds {
        seed_run_dir(&dir, seed)
    } else {
        dir
    }
}

/// Runs every variant for every seed through the job pool (one thread when any variant
/// runs real nodes); calls `on_done` in (variant, seed) order; writes `variants.json` and
/// the comparison of the first seed of each variant into `base`. Returns the rows.
pub fn run_variants(
    variants: &[Variant],
    spec_path: &Path,
    seeds: std::ops::RangeInclusive<u64>,
    base: &Path,
    cores: usize,
    mut on_done: impl FnMut(&Variant, u64, &Result<RunOutcome, ExperimentError>),
) -> Result<Vec<VariantRow>, ExperimentError> {
    let (first, last) = (*seeds.start(), *seeds.end());
    let several = last > first;
    let mut owner = Vec::new();
    let mut jobs = Vec::new();
    for v in variants {
        for seed in first..=last {
            owner.push(v);
            jobs.push(Job {
                spec: v.spec.clone(),
                seed,
                run_dir: variant_run_dir(base, v, seed, several),
                reproduce: Reproduce::new(spec_path, &v.spec, seed, Some(&v.label)),
                report: if seed == first {
                    ReportPolicy::Always
                } else {
                    ReportPolicy::OnFailure
                },
                progress: false,
            });
        }
    }
    let mut rows = Vec::with_capacity(jobs.len());
    let threads = threads_for(&jobs, cores);
    let mut i = 0usize;
    run_jobs(&jobs, threads, |job, r| {
        let v = owner[i];
        i += 1;
        on_done(v, job.seed, &r);
        rows.push(row(v, job.seed, job.run_dir.clone(), &r));
    });
    std::fs::create_dir_all(base).map_err(|source| ExperimentError::Io {
        path: base.to_path_buf(),
        source,
    })?;
    let path = base.join("variants.json");
    let json = serde_json::to_string_pretty(&rows).map_err(|e| ExperimentError::Encode {
        path: path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&path, json + "\n").map_err(|source| ExperimentError::Io {
        path: path.clone(),
        source,
    })?;
    // The same table as the comparison's `summary.json`, next to its plot.
    let table_path = base.join("summary.json");
    let table = serde_json::json!({
        "experiment": variants.first().map(|v| v.spec.name.clone()),
        "kind": "variant-comparison",
        "variants": &rows,
    });
    let table_text = serde_json::to_string_pretty(&table).map_err(|e| ExperimentError::Encode {
        path: table_path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&table_path, table_text + "\n").map_err(|source| ExperimentError::Io {
        path: table_path.clone(),
        source,
    })?;
    let firsts: Vec<PathBuf> = rows
        .iter()
        .filter(|r| r.seed == first && r.error.is_none())
        .map(|r| r.run_dir.clone())
        .collect();
    if firsts.len() > 1 {
        crate::run::render_comparison(&firsts, base)?;
    }
    let txn_rows: Vec<&crate::txn_sweep::TxnRow> =
        rows.iter().filter_map(|r| r.txn.as_ref()).collect();
    if let Some(v) = variants.first() {
        crate::txn_sweep::render_txn_sweep(&txn_rows, &v.spec, base)?;
    }
    Ok(rows)
}

fn row(
    v: &Variant,
    seed: u64,
    run_dir: PathBuf,
    r: &Result<RunOutcome, ExperimentError>,
) -> VariantRow {
    let mut row = VariantRow {
        label: v.label.clone(),
        seed,
        run_dir,
        verdict: "error".into(),
        backend: v.spec.backend.name().into(),
        transport: v.spec.backend.transport_name(v.spec.transport).into(),
        nodes: v.spec.nodes,
        measured: if v.spec.system.serves_keys() {
            vec!["kv".into()]
        } else {
            Vec::new()
        },
        clients: v.spec.workload.clients,
        throughput_ok_per_s: 0.0,
        latency_ms_p50: 0.0,
        latency_ms_p99: 0.0,
        latency_ms_by_f: std::collections::BTreeMap::new(),
        ops_ok: 0,
        ops_fail: 0,
        ops_info: 0,
        faults_injected: 0,
        leader_elections: 0,
        txn: None,
        error: None,
    };
    match r {
        Ok(o) => {
            let s = &o.summary;
            row.verdict = o.verdict.name().into();
            row.measured = s.measured.clone();
            row.throughput_ok_per_s = s.throughput_ok_per_s;
            if let Some(all) = s.latency_ms.get("all") {
                row.latency_ms_p50 = all.p50;
                row.latency_ms_p99 = all.p99;
            }
            row.latency_ms_by_f = s.latency_ms.clone();
            row.ops_ok = s.ops.ok;
            row.ops_fail = s.ops.fail;
            row.ops_info = s.ops.info;
            row.faults_injected = s.faults.injected;
            row.leader_elections = s.node_events.get("leader_elected").copied().unwrap_or(0);
            row.txn = crate::txn_sweep::txn_row(&v.spec, s);
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "t"
system = "single"
nodes = 3
[workload]
clients = 2
keys = 4

[[variant]]
label = "Two clients"

[[variant]]
label = "5 nodes, 8 clients"
nodes = 5
workload = { clients = 8 }
"#;

    #[test]
    fn variants_are_laid_over_the_base_spec() {
        let v = expand(BASE, Path::new("t.toml")).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].spec.nodes, v[0].spec.workload.clients), (3, 2));
        assert_eq!((v[1].spec.nodes, v[1].spec.workload.clients), (5, 8));
        // A table in a variant merges with the base's: `keys` is kept.
        assert_eq!(v[1].spec.workload.keys, 4);
        assert_eq!(v[1].slug, "5-nodes-8-clients");
        assert_eq!(v[1].spec.label.as_deref(), Some("5 nodes, 8 clients"));
        assert!(v[1].spec.variant.is_empty());
    }

    #[test]
    fn a_bad_field_in_a_variant_names_the_variant_and_the_field() {
        let text = BASE.replace("nodes = 5", "nodes = 0");
        let e = expand(&text, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("variant[1]") && e.contains("nodes"), "{e}");
        let text = BASE.replace("nodes = 5", "nodez = 5");
        let e = expand(&text, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("variant[1]") && e.contains("nodez"), "{e}");
    }

    #[test]
    fn a_variant_needs_a_unique_label() {
        let text = BASE.replace("label = \"Two clients\"", "");
        let e = expand(&text, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("variant[0].label"), "{e}");
        let text = BASE.replace("Two clients", "5 nodes 8 clients");
        let e = expand(&text, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("same directory name"), "{e}");
    }

    #[test]
    fn variants_run_and_are_compared() {
        let dir = tempfile::tempdir().unwrap();
        let text = BASE.replace(
            "[workload]",
            "[time]\nduration_s = 2\nliveness_s = 2\n[nemesis]\nfaults = []\n[workload]",
        );
        let v = expand(&text, Path::new("t.toml")).unwrap();
        let mut seen = Vec::new();
        let rows = run_variants(&v, Path::new("t.toml"), 1..=2, dir.path(), 2, |v, s, r| {
            seen.push((v.label.clone(), s, r.is_ok()))
        })
        .unwrap();
        assert_eq!(seen.len(), 4);
        assert!(seen.iter().all(|(_, _, ok)| *ok), "{seen:?}");
        assert_eq!(rows[0].label, "Two clients");
        assert_eq!(rows[3].seed, 2);
        assert!(
            rows.iter()
                .all(|r| r.verdict == "valid" && r.throughput_ok_per_s > 0.0)
        );
        assert!(dir.path().join("variants.json").exists());
        assert!(dir.path().join("compare.html").exists());
        assert!(dir.path().join("two-clients/seed-1/history.jsonl").exists());
    }
}
