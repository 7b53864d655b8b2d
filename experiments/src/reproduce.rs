//! [`Reproduce`]: the one command that replays a run, built once per run from what
//! decides it (spec file, variant, seed, backend, transport) and used everywhere it is
//! shown: stdout, `meta.json`, the report.
//!
//! On the simulator the command replays the run exactly (same commit → byte-identical
//! history); on real nodes it reruns the same experiment on the same kind of cluster.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::spec::{BackendKind, Spec, TransportChoice};

/// How to run a run again. `Display` gives the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reproduce {
    /// The spec file as the user named it.
    pub spec_file: PathBuf,
    /// The `[[variant]]` the run was, if any.
    pub variant: Option<String>,
    /// The seed.
    pub seed: u64,
    /// Where the nodes ran.
    pub backend: BackendKind,
    /// How real nodes talked (ignored on the simulator).
    pub transport: TransportChoice,
}

impl Reproduce {
    /// The command for a run of `spec` (as resolved: `--backend`/`--transport` already
    /// laid over it) from `spec_file`, with `seed`, as `variant` if it is one.
    pub fn new(spec_file: &Path, spec: &Spec, seed: u64, variant: Option<&str>) -> Self {
        Reproduce {
            spec_file: spec_file.to_path_buf(),
            variant: variant.map(str::to_string),
            seed,
            backend: spec.backend,
            transport: spec.transport,
        }
    }
}

/// Quotes an argument for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl fmt::Display for Reproduce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kvlab run {}",
            shell_quote(&self.spec_file.display().to_string())
        )?;
        if let Some(v) = &self.variant {
            write!(f, " --variant {}", shell_quote(v))?;
        }
        write!(f, " --seed {}", self.seed)?;
        if self.backend.is_simulated() {
            return Ok(());
        }
        write!(
            f,
            " --backend {} --transport {}",
            self.backend.name(),
            self.transport.name()
        )
    }
}

impl Serialize for Reproduce {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(backend: BackendKind, transport: TransportChoice) -> Spec {
        let mut s = Spec::from_toml_str(
            "name = \"t\"\nsystem = \"raft\"\nnodes = 3\n",
            Path::new("t.toml"),
        )
        .unwrap();
        s.backend = backend;
        s.transport = transport;
        s
    }

    #[test]
    fn a_simulated_run_replays_with_its_seed() {
        let r = Reproduce::new(
            Path::new("configs/q.toml"),
            &spec(BackendKind::Sim, TransportChoice::Tarpc),
            7,
            None,
        );
        assert_eq!(r.to_string(), "kvlab run configs/q.toml --seed 7");
    }

    #[test]
    fn a_local_run_names_its_backend_and_transport_and_a_variant_is_quoted() {
        let r = Reproduce::new(
            Path::new("configs/q.toml"),
            &spec(BackendKind::Local, TransportChoice::Udp),
            3,
            Some("3 nodes, 16 clients"),
        );
        assert_eq!(
            r.to_string(),
            "kvlab run configs/q.toml --variant '3 nodes, 16 clients' --seed 3 --backend local --transport udp"
        );
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!(r.to_string())
        );
    }
}
