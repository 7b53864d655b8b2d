//! A bad spec is refused with an error that names the file, the line and the field.

use std::path::Path;

use kvlab_experiments::ExperimentError;
use kvlab_experiments::spec::{FaultKind, LoadMode, Spec};

const GOOD: &str = r#"
name = "t"
system = "single"
nodes = 3
[time]
duration_s = 2
liveness_s = 1
[workload]
clients = 2
mix = { read = 1, write = 1, cas = 1 }
"#;

fn parse(text: &str) -> Result<Spec, ExperimentError> {
    Spec::from_toml_str(text, Path::new("configs/t.toml"))
}

fn invalid_field(text: &str) -> (String, String) {
    match parse(text) {
        Err(ExperimentError::SpecInvalid { field, reason, .. }) => (field, reason),
        other => panic!("expected SpecInvalid, got {other:?}"),
    }
}

#[test]
fn good_spec_parses_with_defaults() {
    let spec = parse(GOOD).unwrap();
    assert_eq!(spec.nodes, 3);
    assert_eq!(spec.workload.clients, 2);
    assert_eq!(spec.workload.mode, LoadMode::Closed);
    assert_eq!(spec.workload.keys, 8);
    assert!(spec.nemesis.faults.is_empty());
}

#[test]
fn resolved_spec_round_trips_through_toml() {
    let mut text = GOOD.to_string();
    text.push_str("[nemesis]\nfaults = [\"crash\", \"partition-halves\"]\n");
    let spec = parse(&text).unwrap();
    let again = parse(&spec.to_toml_string().unwrap()).unwrap();
    assert_eq!(
        again.to_toml_string().unwrap(),
        spec.to_toml_string().unwrap()
    );
    assert_eq!(
        again.nemesis.faults,
        vec![FaultKind::Crash, FaultKind::PartitionHalves]
    );
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let text = "name = \"t\"\nsystem = \"single\"\nnodes = = 3\n";
    match parse(text) {
        Err(e @ ExperimentError::SpecParse { line, column, .. }) => {
            assert_eq!(line, 3, "{e}");
            assert!(column >= 7, "{e}");
            let msg = e.to_string();
            assert!(msg.starts_with("configs/t.toml:3:"), "{msg}");
            assert_eq!(e.exit_code(), 2);
        }
        other => panic!("expected SpecParse, got {other:?}"),
    }
}

#[test]
fn unknown_field_is_named_with_its_line() {
    let text = GOOD.replace("clients = 2", "clients = 2\nclinets = 3");
    match parse(&text) {
        Err(
            ref e @ ExperimentError::SpecParse {
                line, ref field, ..
            },
        ) => {
            let msg = e.to_string();
            assert!(msg.contains("clinets"), "{msg}");
            assert_eq!(line, 10, "{msg}");
            assert_eq!(field.as_deref(), Some("workload.clinets"), "{msg}");
        }
        other => panic!("expected SpecParse, got {other:?}"),
    }
}

#[test]
fn unknown_table_is_refused() {
    let text = format!("{GOOD}[nemsis]\nfaults = []\n");
    let err = parse(&text).unwrap_err();
    assert!(err.to_string().contains("nemsis"), "{err}");
}

#[test]
fn wrong_type_names_the_field() {
    let text = GOOD.replace("nodes = 3", "nodes = \"three\"");
    match parse(&text) {
        Err(e @ ExperimentError::SpecParse { line, .. }) => {
            assert_eq!(line, 4, "{e}");
            let msg = e.to_string();
            assert!(msg.contains("nodes"), "{msg}");
        }
        other => panic!("expected SpecParse, got {other:?}"),
    }
}

#[test]
fn nested_wrong_value_names_the_dotted_field() {
    let text = GOOD.replace("clients = 2", "clients = 2\nmode = \"sideways\"");
    let err = parse(&text).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("workload.mode"), "{msg}");
}

#[test]
fn zero_nodes_is_refused_naming_nodes() {
    let (field, reason) = invalid_field(&GOOD.replace("nodes = 3", "nodes = 0"));
    assert_eq!(field, "nodes");
    assert!(reason.contains("1..="), "{reason}");
}

#[test]
fn mix_summing_to_zero_is_refused_naming_mix() {
    let (field, _) = invalid_field(&GOOD.replace(
        "mix = { read = 1, write = 1, cas = 1 }",
        "mix = { read = 0, write = 0, cas = 0 }",
    ));
    assert_eq!(field, "workload.mix");
}

#[test]
fn negative_mix_weight_is_refused_naming_it() {
    let (field, _) = invalid_field(&GOOD.replace("read = 1,", "read = -1,"));
    assert_eq!(field, "workload.mix.read");
}

#[test]
fn open_loop_needs_a_positive_rate() {
    let (field, _) = invalid_field(&GOOD.replace(
        "clients = 2",
        "clients = 2\nmode = \"open\"\nrate_per_s = 0",
    ));
    assert_eq!(field, "workload.rate_per_s");
}

#[test]
fn faults_may_not_overlap_unless_asked() {
    let text =
        format!("{GOOD}[nemesis]\nfaults = [\"crash\"]\ninterval_s = 2\nfault_duration_s = 3\n");
    let (field, _) = invalid_field(&text);
    assert_eq!(field, "nemesis.fault_duration_s");
    let ok = text.replace(
        "fault_duration_s = 3",
        "fault_duration_s = 3\noverlap = true",
    );
    parse(&ok).unwrap();
}

#[test]
fn ring_needs_four_nodes() {
    let (field, reason) = invalid_field(&format!("{GOOD}[nemesis]\nfaults = [\"ring\"]\n"));
    assert_eq!(field, "nemesis.faults");
    assert!(reason.contains("ring"), "{reason}");
}

#[test]
fn simulator_config_errors_name_the_network_field() {
    let text = format!("{GOOD}[network]\nloss_probability = 2.0\n");
    let (field, _) = invalid_field(&text);
    assert_eq!(field, "network.loss_probability");
}

#[test]
fn missing_spec_file_is_bad_input() {
    let err = Spec::load(Path::new("/nonexistent/kvlab/spec.toml")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string().contains("/nonexistent/kvlab/spec.toml"),
        "{err}"
    );
}

#[test]
fn shipped_configs_parse_and_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    for name in ["quickstart.toml", "baseline-async-primary.toml"] {
        let spec = Spec::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!spec.nemesis.faults.is_empty(), "{name} injects no faults");
    }
}

/// Every spec in `configs/` parses and validates, every variant of it too, and every
/// example node config in `configs/nodes/` loads: a shipped file never rots.
#[test]
fn every_shipped_spec_and_node_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut specs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.lines().any(|l| l.trim() == "[swarm]") {
                // A swarm file: its ranges and the draws of 50 seeds must be valid.
                let swarm = kvlab_experiments::swarm::Swarm::load(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                for seed in 1..=50 {
                    swarm
                        .draw(seed)
                        .unwrap_or_else(|e| panic!("{} seed {seed}: {e}", path.display()));
                }
                specs += 1;
                continue;
            }
            let spec = Spec::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !spec.variant.is_empty() {
                let text = std::fs::read_to_string(&path).unwrap();
                kvlab_experiments::sweep::expand(&text, &path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            specs += 1;
        }
    }
    assert!(specs >= 10, "only {specs} specs found in {}", dir.display());
    // configs/nodes/*.toml and one level of subdirectories (configs/nodes/etcd/).
    let mut nodes = 0;
    let mut paths: Vec<std::path::PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir.join("nodes")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).unwrap() {
                paths.push(inner.unwrap().path());
            }
        } else {
            paths.push(path);
        }
    }
    for path in paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        kvlab_server::load_node_config(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        nodes += 1;
    }
    assert_eq!(
        nodes, 6,
        "configs/nodes: 3 plain nodes and 3 with the etcd API"
    );
}

#[test]
fn system_tables_are_checked_against_the_cluster() {
    let (field, _) = invalid_field(&format!("{GOOD}[single]\nholder = 4\n"));
    assert_eq!(field, "single.holder");
    let spec = parse(&format!(
        "{GOOD}[single]\nholder = 3\nforward_timeout_ms = 100\n"
    ))
    .unwrap();
    assert_eq!(spec.single.forward_timeout_ms, 100);
    let err = parse(&format!("{GOOD}[async_primary]\nprimry = 1\n")).unwrap_err();
    assert!(err.to_string().contains("primry"), "{err}");
}

/// A `[[nemesis.schedule]]` entry appended to `GOOD` (3 nodes, 2 s safety phase).
fn scheduled(entry: &str) -> String {
    format!("{GOOD}[[nemesis.schedule]]\n{entry}\n")
}

#[test]
fn scheduled_faults_parse_with_targets_and_durations() {
    let spec = parse(&scheduled(
        "at_s = 0.5\nkind = \"crash\"\ntargets = [2]\nduration_s = 1.0",
    ))
    .unwrap();
    let f = &spec.nemesis.schedule[0];
    assert_eq!(
        (f.kind, f.targets.clone(), f.duration_s),
        (FaultKind::Crash, vec![2], Some(1.0))
    );
    // The resolved spec keeps the entry.
    let again = parse(&spec.to_toml_string().unwrap()).unwrap();
    assert_eq!(again.nemesis.schedule, spec.nemesis.schedule);
}

#[test]
fn bad_scheduled_faults_name_the_entry_and_field() {
    let cases = [
        (
            "at_s = 5\nkind = \"crash\"",
            "nemesis.schedule[0].at_s",
            "before the end",
        ),
        (
            "at_s = -1\nkind = \"crash\"",
            "nemesis.schedule[0].at_s",
            ">= 0",
        ),
        (
            "at_s = 1\nkind = \"crash\"\ntargets = [4]",
            "nemesis.schedule[0].targets",
            "1..=3",
        ),
        (
            "at_s = 1\nkind = \"crash\"\ntargets = [1, 2]",
            "nemesis.schedule[0].targets",
            "1..=1",
        ),
        (
            "at_s = 1\nkind = \"partition-halves\"\ntargets = [1, 1]",
            "nemesis.schedule[0].targets",
            "twice",
        ),
        (
            // The bridge and one side: with 3 nodes, exactly 2.
            "at_s = 1\nkind = \"bridge\"\ntargets = [1]",
            "nemesis.schedule[0].targets",
            "2..=2",
        ),
        (
            "at_s = 1\nkind = \"loss\"\ntargets = [1]",
            "nemesis.schedule[0].targets",
            "leave targets out",
        ),
        (
            "at_s = 1\nkind = \"kill-permanently\"\nduration_s = 1",
            "nemesis.schedule[0].duration_s",
            "permanent",
        ),
        (
            "at_s = 1\nkind = \"crash\"\nduration_s = 0",
            "nemesis.schedule[0].duration_s",
            "> 0",
        ),
        (
            "at_s = 1\nkind = \"join\"",
            "nemesis.schedule[0].kind",
            "system = \"kvlab\"",
        ),
        (
            "at_s = 1\nkind = \"drain\"\ntargets = [1]",
            "nemesis.schedule[0].kind",
            "system = \"kvlab\"",
        ),
    ];
    for (entry, want_field, want_reason) in cases {
        let (field, reason) = invalid_field(&scheduled(entry));
        assert_eq!(field, want_field, "{entry}: {reason}");
        assert!(reason.contains(want_reason), "{entry}: {reason}");
    }
}

#[test]
fn permanent_faults_are_refused_in_the_random_mix() {
    let text = format!("{GOOD}[nemesis]\nfaults = [\"kill-permanently\"]\n");
    let (field, reason) = invalid_field(&text);
    assert_eq!(field, "nemesis.faults");
    assert!(reason.contains("[[nemesis.schedule]]"), "{reason}");
}

#[test]
fn joins_must_name_nodes_outside_the_initial_members() {
    let ring = r#"
name = "t"
system = "kvlab"
nodes = 4
[time]
duration_s = 10
liveness_s = 5
[kvlab]
initial_members = [1, 2, 3]
"#;
    let join = |targets: &str| {
        format!("{ring}[[nemesis.schedule]]\nat_s = 1\nkind = \"join\"\n{targets}\n")
    };
    parse(&join("targets = [4]")).unwrap();
    parse(&join("")).unwrap();
    let (field, reason) = invalid_field(&join("targets = [2]"));
    assert_eq!(field, "nemesis.schedule[0].targets");
    assert!(reason.contains("boots with the cluster"), "{reason}");
    let twice = format!(
        "{}[[nemesis.schedule]]\nat_s = 2\nkind = \"join\"\n",
        join("")
    );
    let (field, reason) = invalid_field(&twice);
    assert_eq!(field, "nemesis.schedule");
    assert!(reason.contains("only 1 node"), "{reason}");
}

#[test]
fn spare_learners_belong_to_raft_and_replace_voter_needs_one() {
    let with = |system: &str, nemesis: &str| {
        format!(
            "{}\n[nemesis]\n{nemesis}\n",
            GOOD.replace("\"single\"", system)
        )
        .replace("nodes = 3", "nodes = 4")
    };
    let (field, reason) = invalid_field(&with("\"single\"", "spare_learners = 1"));
    assert_eq!(field, "nemesis.spare_learners");
    assert!(reason.contains("raft"), "{reason}");
    let (field, reason) = invalid_field(&with("\"raft\"", "faults = [\"replace-voter\"]"));
    assert_eq!(field, "nemesis.spare_learners");
    assert!(reason.contains("replace-voter"), "{reason}");
    let (field, _) = invalid_field(&with("\"raft\"", "spare_learners = 4"));
    assert_eq!(field, "nemesis.spare_learners");
    let ok = parse(&with(
        "\"raft\"",
        "faults = [\"replace-voter\"]\nspare_learners = 1",
    ))
    .unwrap();
    assert_eq!(ok.nemesis.faults, vec![FaultKind::ReplaceVoter]);
    // On a system without membership the fault is allowed and skipped at run time.
    parse(&with("\"single\"", "faults = [\"replace-voter\"]")).unwrap();
}

#[test]
fn transaction_faults_need_the_composed_node_and_only_kill_gateway_takes_a_point() {
    let kvlab = r#"
name = "t"
system = "kvlab"
nodes = 5
[time]
duration_s = 10
liveness_s = 5
[workload]
kind = "txn-list-append"
"#;
    // On a system without transactions, both are refused, random or scheduled.
    for fault in ["kill-gateway", "partition-home-group"] {
        let text = format!("{GOOD}[nemesis]\nfaults = [\"{fault}\"]\n");
        let (field, reason) = invalid_field(&text);
        assert_eq!(field, "nemesis.faults", "{fault}");
        assert!(reason.contains(fault), "{reason}");
        assert!(reason.contains("system = \"kvlab\""), "{reason}");
    }
    let (field, reason) = invalid_field(&scheduled("at_s = 1\nkind = \"kill-gateway\""));
    assert_eq!(field, "nemesis.faults");
    assert!(reason.contains("kill-gateway"), "{reason}");
    // On kvlab: the point, random and scheduled, and a gateway as target.
    let ok = parse(&format!(
        "{kvlab}[nemesis]\nfaults = [\"kill-gateway\", \"partition-home-group\"]\n\
         gateway_kill_point = \"after-decision\"\n\
         [[nemesis.schedule]]\nat_s = 2\nkind = \"kill-gateway\"\ntargets = [3]\npoint = \"after-prepare\"\n"
    ))
    .unwrap();
    assert_eq!(
        ok.nemesis.faults,
        vec![FaultKind::KillGateway, FaultKind::PartitionHomeGroup]
    );
    assert_eq!(
        ok.nemesis.schedule[0].point,
        Some(kvlab_types::TxnFaultPoint::AfterPrepare)
    );
    let bad = [
        (
            "[nemesis]\ngateway_kill_point = \"mid-flight\"\n",
            "gateway_kill_point",
        ),
        (
            "[[nemesis.schedule]]\nat_s = 1\nkind = \"crash\"\npoint = \"after-prepare\"\n",
            "nemesis.schedule[0].point",
        ),
        (
            "[[nemesis.schedule]]\nat_s = 1\nkind = \"partition-home-group\"\ntargets = [1]\n",
            "nemesis.schedule[0].targets",
        ),
    ];
    for (tail, want) in bad {
        match parse(&format!("{kvlab}{tail}")) {
            Err(ExperimentError::SpecInvalid { field, reason, .. }) => {
                assert_eq!(field, want, "{tail}: {reason}")
            }
            Err(e) => assert!(e.to_string().contains(want), "{tail}: {e}"),
            Ok(_) => panic!("{tail}: accepted"),
        }
    }
    // A real backend cannot see the 2PC point in time.
    let local = kvlab.replace("nodes = 5", "nodes = 5\nbackend = \"local\"")
        + "[nemesis]\nfaults = [\"kill-gateway\"]\n";
    let (field, reason) = invalid_field(&local);
    assert_eq!(field, "nemesis.faults");
    assert!(reason.contains("kill-gateway"), "{reason}");
}

#[test]
fn zipf_theta_zero_and_above_one_are_accepted_and_a_negative_one_is_named() {
    for theta in ["0", "0.0", "1.2"] {
        let text = GOOD.replace(
            "[workload]",
            &format!("[workload]\nkey_distribution = \"zipfian\"\nzipf_exponent = {theta}"),
        );
        parse(&text).unwrap_or_else(|e| panic!("θ = {theta}: {e}"));
    }
    let text = GOOD.replace(
        "[workload]",
        "[workload]\nkey_distribution = \"zipfian\"\nzipf_exponent = -0.5",
    );
    let (field, reason) = invalid_field(&text);
    assert_eq!(field, "workload.zipf_exponent", "{reason}");
}

#[test]
fn partitions_per_txn_needs_a_transactional_workload_and_fits_the_ops() {
    let kv = GOOD.replace("[workload]", "[workload]\npartitions_per_txn = 2");
    assert_eq!(invalid_field(&kv).0, "workload.partitions_per_txn");
    let txn = |n: &str| {
        GOOD.replace("system = \"single\"", "system = \"kvlab\"")
            .replace("mix = { read = 1, write = 1, cas = 1 }", "")
            .replace(
                "[workload]",
                &format!(
                    "[workload]\nkind = \"txn-list-append\"\nkeys = 64\ntxn_ops_min = 3\ntxn_ops_max = 3\npartitions_per_txn = {n}"
                ),
            )
    };
    parse(&txn("3")).expect("3 partitions for 3 ops");
    parse(&txn("\"any\"")).expect("any");
    for bad in ["4", "0", "\"some\""] {
        match parse(&txn(bad)) {
            Err(e) => assert!(e.to_string().contains("partitions_per_txn"), "{bad}: {e}"),
            Ok(_) => panic!("{bad} accepted"),
        }
    }
}
