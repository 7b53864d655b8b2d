//! `kvlab kind render SPEC`: the Kubernetes manifests that run a spec's nodes as pods of
//! a kind (Kubernetes-in-Docker) cluster, from the same node image the docker backend
//! runs (`kind-cluster/build-image.sh`, then `kind load docker-image`).
//!
//! What is written, one file per concern, into the output directory:
//!
//! - `namespace.yaml` — the namespace (`[kind] namespace`);
//! - `secret-node-configs.yaml` — a Secret with one node config per pod
//!   (`<app>-<ordinal>.toml`). They hold the cluster secret and the admin token, which is
//!   why they are a Secret and not a ConfigMap; mounted read-only, mode 0440, group
//!   65532 (the pod's `fsGroup`);
//! - `configmap-spec.yaml` — the experiment spec as resolved, for the record;
//! - `services.yaml` — the headless Service of the StatefulSet (stable DNS names
//!   `<app>-<i>.<app>.<namespace>.svc`, published before the pods are ready) and one
//!   ClusterIP Service per node at a fixed address (`[kind] service_ip_prefix`): node
//!   configs name their peers by address, and a pod's own address changes when it is
//!   recreated, a Service's does not;
//! - `statefulset.yaml` — the nodes: each pod picks its config by its own name
//!   (`--config /etc/kvlab/$(POD_NAME).toml`, expanded by Kubernetes: the image has no
//!   shell), runs as uid 65532 with a read-only root and no capabilities, keeps its data
//!   on a PersistentVolumeClaim at `/data`, has TCP probes on the admin port and CPU and
//!   memory limits;
//! - `pdb.yaml` — a PodDisruptionBudget that keeps a majority of the nodes up through
//!   voluntary disruptions (a Raft group needs a majority).
//!
//! The manifests are validated offline against the Kubernetes JSON schemas in CI
//! (`kubernetes-validate --strict`); nothing here talks to an API server.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::ExperimentError;
use crate::local::docker::{ADMIN_PORT, CLIENT_PORT, NODE_UID, PEER_PORT};
use crate::spec::{Spec, TransportChoice};

/// The secret of manifests rendered with `--demo-secrets`: public (it is in the
/// repository), so such a cluster must never be reachable by anyone else.
pub const DEMO_SECRET_ENTROPY: &[u8] = b"kvlab demo cluster secret: public, for examples only";
/// The admin token of manifests rendered with `--demo-secrets`.
pub const DEMO_ADMIN_TOKEN: &str = "kvlab-demo-token-public";
/// Where the node configs are mounted in a pod.
pub const CONFIG_DIR_IN_POD: &str = "/etc/kvlab";

/// The name of the StatefulSet and its Services: `kvlab-<spec name>` as a DNS label.
pub fn app_name(spec: &Spec) -> String {
    let mut s = String::from("kvlab-");
    for c in spec.name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let mut s = s.trim_end_matches('-').to_string();
    // Pod names add `-<ordinal>` and DNS labels stop at 63 characters.
    s.truncate(40);
    s.trim_end_matches('-').to_string()
}

/// The manifests of `spec`: `(file name, header comment, documents)`.
pub fn render(
    spec: &Spec,
    demo_secrets: bool,
) -> Result<Vec<(String, Vec<Value>)>, ExperimentError> {
    let invalid = |field: &str, reason: &str| ExperimentError::SpecInvalid {
        file: PathBuf::from(&spec.name),
        field: field.into(),
        reason: reason.into(),
    };
    let transport = match spec.transport {
        TransportChoice::Udp => kvlab_server::TransportKind::Udp,
        TransportChoice::Tarpc => kvlab_server::TransportKind::Tarpc,
        TransportChoice::Mem => {
            return Err(invalid(
                "transport",
                "pods talk over udp or tarpc (mem exists only inside one process)",
            ));
        }
    };
    // Pods need what containers need (real transports, supported faults, node count).
    let mut k8s_spec = spec.clone();
    k8s_spec.backend = crate::spec::BackendKind::Docker;
    k8s_spec
        .validate()
        .map_err(|e| invalid(&e.field, &e.reason))?;
    let kind = &spec.kind;
    let app = app_name(spec);
    let ns = kind.namespace.as_str();
    let service_ip = |id: u32| format!("{}.{}", kind.service_ip_prefix, 10 + id);
    let labels = json!({
        "app.kubernetes.io/name": "kvlab",
        "app.kubernetes.io/instance": app,
        "app.kubernetes.io/component": "node",
    });
    let meta = |name: &str| {
        json!({
            "name": name,
            "namespace": ns,
            "labels": labels,
        })
    };
    let (cluster_secret, token) = if demo_secrets {
        (
            kvlab_transport::ClusterSecret::from_entropy(DEMO_SECRET_ENTROPY),
            DEMO_ADMIN_TOKEN.to_string(),
        )
    } else {
        (
            kvlab_server::generate_cluster_secret(spec.seed),
            crate::local::procs::run_token(spec.seed),
        )
    };
    let ids: Vec<u32> = (1..=spec.nodes).collect();
    let peers: std::collections::BTreeMap<String, std::net::SocketAddr> = ids
        .iter()
        .map(|&id| {
            let addr = format!("{}:{PEER_PORT}", service_ip(id))
                .parse()
                .map_err(|_| invalid("kind.service_ip_prefix", "not an IPv4 prefix"));
            addr.map(|a| (id.to_string(), a))
        })
        .collect::<Result<_, _>>()?;
    let any = |port: u16| std::net::SocketAddr::from(([0, 0, 0, 0], port));
    let mut configs = serde_json::Map::new();
    for &id in &ids {
        let config = crate::local::procs::node_config(
            spec,
            crate::local::procs::NodeSetup {
                id: kvlab_types::NodeId(id),
                transport,
                listen: any(PEER_PORT),
                client: any(CLIENT_PORT),
                admin: any(ADMIN_PORT),
                admin_beyond_loopback: true,
                token: token.clone(),
                cluster_secret: cluster_secret.clone(),
                peers: peers.clone(),
                data_dir: PathBuf::from("/data"),
                seed: spec.seed,
            },
        )?;
        let text = config
            .to_toml_string()
            .map_err(|e| ExperimentError::Backend(e.to_string()))?;
        configs.insert(format!("{app}-{}.toml", id - 1), Value::String(text));
    }
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": ns, "labels": { "app.kubernetes.io/name": "kvlab" } },
    });
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(&format!("{app}-node-configs")),
        "type": "Opaque",
        "stringData": configs,
    });
    let spec_text = spec.to_toml_string()?;
    let configmap = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(&format!("{app}-spec")),
        "data": { "spec.toml": spec_text },
    });
    let peer_protocol = match transport {
        kvlab_server::TransportKind::Udp => "UDP",
        kvlab_server::TransportKind::Tarpc => "TCP",
    };
    let services = services(&ids, &app, &labels, &meta, peer_protocol, service_ip);
    let statefulset = statefulset(spec, &app, &labels, meta(&app), peer_protocol);
    let majority = spec.nodes / 2 + 1;
    let pdb = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(&app),
        "spec": {
            "minAvailable": majority,
            "selector": { "matchLabels": labels },
        },
    });
    Ok(vec![
        ("namespace.yaml".into(), vec![namespace]),
        ("secret-node-configs.yaml".into(), vec![secret]),
        ("configmap-spec.yaml".into(), vec![configmap]),
        ("services.yaml".into(), services),
        ("statefulset.yaml".into(), vec![statefulset]),
        ("pdb.yaml".into(), vec![pdb]),
    ])
}

/// Renders `spec` into `out` (created if missing); returns the files written.
pub fn render_to_dir(
    spec: &Spec,
    out: &Path,
    demo_secrets: bool,
) -> Result<Vec<PathBuf>, ExperimentError> {
    let files = render(spec, demo_secrets)?;
    std::fs::create_dir_all(out).map_err(|e| ExperimentError::io(out, e))?;
    let mut written = Vec::new();
    for (name, docs) in files {
        let mut text = format!(
            "# Rendered by `kvlab kind render` from the spec \"{}\" ({} nodes); re-render instead of editing.\n",
            spec.name, spec.nodes
        );
        if demo_secrets && name.starts_with("secret") {
            text.push_str(
                "# DEMO SECRETS: the cluster secret and admin token below are public. Render\n# without --demo-secrets for a cluster anyone else can reach.\n",
            );
        }
        for doc in &docs {
            text.push_str("---\n");
            write_yaml(&mut text, doc, 0);
        }
        let path = out.join(&name);
        if name.starts_with("secret") {
            kvlab_server::write_private_file(&path, text.as_bytes())
        } else {
            std::fs::write(&path, text)
        }
        .map_err(|e| ExperimentError::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

/// Whether `s` can stand unquoted in YAML as a string (and is read back as one).
fn plain_scalar(s: &str) -> bool {
    let reserved = [
        "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "yes",
        "Yes", "no", "No", "on", "On", "off", "Off", "y", "n", "Y", "N",
    ];
    !reserved.contains(&s)
        && s.parse::<f64>().is_err()
        && !s.starts_with(['-', '.', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// YAML for a JSON value (block style; multi-line strings as literal blocks).
fn write_yaml(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                out.push_str(&pad);
                out.push_str(&scalar_key(k));
                out.push(':');
                write_value_after_key(out, val, indent);
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        // The first key on the dash's line, the rest aligned under it.
                        let mut first = true;
                        for (k, val) in m {
                            if first {
                                out.push(' ');
                                first = false;
                            } else {
                                out.push_str(&" ".repeat(indent + 2));
                            }
                            out.push_str(&scalar_key(k));
                            out.push(':');
                            write_value_after_key(out, val, indent + 2);
                        }
                    }
                    other => write_value_after_key(out, other, indent),
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar(other, indent));
            out.push('\n');
        }
    }
}

fn write_value_after_key(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_yaml(out, v, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_yaml(out, v, indent + 2);
        }
        Value::Object(_) => out.push_str(" {}\n"),
        Value::Array(_) => out.push_str(" []\n"),
        Value::String(s) if s.contains('\n') && !s.contains('\t') && !s.contains('\r') => {
            let body = s.strip_suffix('\n');
            out.push_str(if body.is_some() { " |\n" } else { " |-\n" });
            let pad = " ".repeat(indent + 2);
            for line in body.unwrap_or(s).split('\n') {
                if !line.is_empty() {
                    out.push_str(&pad);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other, indent));
            out.push('\n');
        }
    }
}

fn scalar_key(k: &str) -> String {
    if plain_scalar(k) {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn scalar(v: &Value, _indent: usize) -> String {
    match v {
        Value::String(s) if plain_scalar(s) => s.clone(),
        // A JSON string is a valid YAML double-quoted scalar.
        other => other.to_string(),
    }
}

/// The headless service of the StatefulSet, and one ClusterIP service per node at a
/// fixed address (the peers' addresses in the node configs).
fn services(
    ids: &[u32],
    app: &str,
    labels: &Value,
    meta: &dyn Fn(&str) -> Value,
    peer_protocol: &str,
    service_ip: impl Fn(u32) -> String,
) -> Vec<Value> {
    let ports = json!([
        { "name": "peer", "port": PEER_PORT, "targetPort": PEER_PORT, "protocol": peer_protocol },
        { "name": "client", "port": CLIENT_PORT, "targetPort": CLIENT_PORT, "protocol": "TCP" },
        { "name": "admin", "port": ADMIN_PORT, "targetPort": ADMIN_PORT, "protocol": "TCP" },
    ]);
    let mut services = vec![json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(app),
        "spec": {
            "clusterIP": "None",
            // Peers and operators find a pod by name before it is ready (a Raft node
            // is ready only once it can reach the others).
            "publishNotReadyAddresses": true,
            "selector": labels,
            "ports": ports,
        },
    })];
    for &id in ids {
        let pod = format!("{app}-{}", id - 1);
        let mut selector = labels.clone();
        selector["statefulset.kubernetes.io/pod-name"] = Value::String(pod.clone());
        services.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(&format!("{app}-n{id}")),
            "spec": {
                "type": "ClusterIP",
                "clusterIP": service_ip(id),
                "publishNotReadyAddresses": true,
                "selector": selector,
                "ports": ports,
            },
        }));
    }
    services
}

/// The StatefulSet: one pod per node, each reading `<pod>.toml` from the configs secret
/// and keeping its data on its own claim.
fn statefulset(
    spec: &Spec,
    app: &str,
    labels: &Value,
    metadata: Value,
    peer_protocol: &str,
) -> Value {
    let probe = |initial_s: u32, period_s: u32| {
        json!({
            "tcpSocket": { "port": "admin" },
            "initialDelaySeconds": initial_s,
            "periodSeconds": period_s,
            "timeoutSeconds": 1,
            "failureThreshold": 3,
        })
    };
    let kind = &spec.kind;
    let stop_s = spec.local.stop_timeout_s.ceil() as u64 + 5;
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata,
        "spec": {
            "serviceName": app,
            "replicas": spec.nodes,
            // Every node starts at once: a Raft node waits for the others, not the
            // other way round.
            "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": labels },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "terminationGracePeriodSeconds": stop_s,
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": NODE_UID,
                        "runAsGroup": NODE_UID,
                        "fsGroup": NODE_UID,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "node",
                        "image": kind.image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["--config", format!("{CONFIG_DIR_IN_POD}/$(POD_NAME).toml")],
                        "env": [
                            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                            { "name": "RUST_LOG", "value": "info" },
                        ],
                        "ports": [
                            { "name": "peer", "containerPort": PEER_PORT, "protocol": peer_protocol },
                            { "name": "client", "containerPort": CLIENT_PORT, "protocol": "TCP" },
                            { "name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP" },
                        ],
                        "readinessProbe": probe(1, 2),
                        "livenessProbe": probe(10, 10),
                        "resources": {
                            "requests": { "cpu": "100m", "memory": "64Mi" },
                            "limits": {
                                "cpu": format!("{}m", kind.cpu_millis),
                                "memory": format!("{}Mi", kind.memory_mb),
                            },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": [
                            { "name": "data", "mountPath": "/data" },
                            { "name": "config", "mountPath": CONFIG_DIR_IN_POD, "readOnly": true },
                        ],
                    }],
                    "volumes": [{
                        "name": "config",
                        "secret": {
                            "secretName": format!("{app}-node-configs"),
                            // 0440: readable by the fsGroup the node runs in, by no one else.
                            "defaultMode": 0o440,
                        },
                    }],
                },
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data", "labels": labels },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": format!("{}Mi", kind.storage_mb) } },
                },
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> Spec {
        Spec::from_toml_str(
            &format!("name = \"kind_test\"\nsystem = \"raft\"\nnodes = 3\n{extra}"),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn a_three_node_spec_renders_every_object_with_fixed_service_addresses() {
        let files = render(&spec(""), true).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "namespace.yaml",
                "secret-node-configs.yaml",
                "configmap-spec.yaml",
                "services.yaml",
                "statefulset.yaml",
                "pdb.yaml"
            ]
        );
        let services = &files[3].1;
        assert_eq!(services.len(), 4, "headless + one per node");
        assert_eq!(services[0]["spec"]["clusterIP"], "None");
        assert_eq!(services[2]["spec"]["clusterIP"], "10.96.77.12");
        let configs = files[1].1[0]["stringData"].as_object().unwrap();
        assert_eq!(configs.len(), 3);
        let n2 = configs["kvlab-kind-test-1.toml"].as_str().unwrap();
        let parsed = kvlab_server::NodeConfig::from_toml_str(n2, Path::new("n2.toml")).unwrap();
        assert_eq!(parsed.id, 2);
        assert_eq!(parsed.peer_table().unwrap().len(), 3);
        assert_eq!(files[5].1[0]["spec"]["minAvailable"], 2);
        let sts = &files[4].1[0];
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(
            sts["spec"]["template"]["spec"]["containers"][0]["args"][1],
            "/etc/kvlab/$(POD_NAME).toml"
        );
    }

    #[test]
    fn yaml_quotes_what_a_reader_would_take_for_a_bool_or_a_number() {
        // Reading the output back is done offline in CI (kubernetes-validate parses
        // every rendered file); here the emitter's quoting rules are pinned: YAML 1.1
        // reads `yes`, `on`, `y` as booleans and `0440` as an octal number.
        let mut out = String::new();
        write_yaml(
            &mut out,
            &json!({"a": "yes", "b": "0440", "c": "plain-text", "d": "two\nlines\n", "e": [ {"x": 1, "y": "on"} ], "f": {}}),
            0,
        );
        assert_eq!(
            out,
            "a: \"yes\"\nb: \"0440\"\nc: plain-text\nd: |\n  two\n  lines\ne:\n  - x: 1\n    \"y\": \"on\"\nf: {}\n"
        );
    }

    #[test]
    fn mem_transport_and_bad_kind_tables_are_refused() {
        let s = spec("transport = \"mem\"\n");
        assert!(render(&s, true).is_err());
        let bad = Spec::from_toml_str(
            "name = \"t\"\nsystem = \"raft\"\nnodes = 3\n[kind]\nservice_ip_prefix = \"10.96\"\n",
            Path::new("t.toml"),
        );
        assert!(
            matches!(bad, Err(ExperimentError::SpecInvalid { field, .. }) if field == "kind.service_ip_prefix")
        );
    }
}
