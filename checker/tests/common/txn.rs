//! Transaction histories for tests and benchmarks: a builder of EDN and JSONL txn
//! histories from micro-ops.

use kvlab_checker::HistoryFormat;
use kvlab_checker::txn::{
    TxnCheckOptions, TxnHistory, TxnModel, TxnReport, check_txn, read_txn_history,
};

/// A micro-op for the builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum M {
    /// Append an element to a list.
    A(String, i64),
    /// Read a list (`None`: nil).
    R(String, Option<Vec<i64>>),
    /// Write a register.
    W(String, i64),
    /// Read a register (`None`: nil).
    Rr(String, Option<i64>),
}

pub fn a(k: &str, e: i64) -> M {
    M::A(k.into(), e)
}
pub fn r(k: &str, l: &[i64]) -> M {
    M::R(k.into(), Some(l.to_vec()))
}
pub fn w(k: &str, v: i64) -> M {
    M::W(k.into(), v)
}
pub fn rr(k: &str, v: Option<i64>) -> M {
    M::Rr(k.into(), v)
}

/// Renders micro-ops as EDN (`invoke`: reads as nil).
pub fn edn_mops(mops: &[M], invoke: bool) -> String {
    let parts: Vec<String> = mops
        .iter()
        .map(|m| match m {
            M::A(k, e) => format!("[:append :{k} {e}]"),
            M::W(k, v) => format!("[:w :{k} {v}]"),
            M::R(k, _) | M::Rr(k, _) if invoke => format!("[:r :{k} nil]"),
            M::R(k, l) => match l {
                None => format!("[:r :{k} nil]"),
                Some(l) => format!(
                    "[:r :{k} [{}]]",
                    l.iter().map(i64::to_string).collect::<Vec<_>>().join(" ")
                ),
            },
            M::Rr(k, v) => format!("[:r :{k} {}]", v.map_or("nil".into(), |v| v.to_string())),
        })
        .collect();
    format!("[{}]", parts.join(" "))
}

/// Renders micro-ops as kvlab JSONL values.
pub fn json_mops(mops: &[M], invoke: bool) -> String {
    let parts: Vec<String> = mops
        .iter()
        .map(|m| match m {
            M::A(k, e) => format!("[\"append\",\"{k}\",{e}]"),
            M::W(k, v) => format!("[\"w\",\"{k}\",{v}]"),
            M::R(k, _) | M::Rr(k, _) if invoke => format!("[\"r\",\"{k}\",null]"),
            M::R(k, l) => match l {
                None => format!("[\"r\",\"{k}\",null]"),
                Some(l) => format!(
                    "[\"r\",\"{k}\",[{}]]",
                    l.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
                ),
            },
            M::Rr(k, v) => format!(
                "[\"r\",\"{k}\",{}]",
                v.map_or("null".into(), |v| v.to_string())
            ),
        })
        .collect();
    format!("[{}]", parts.join(","))
}

/// One event of a built history.
#[derive(Clone, Debug)]
pub struct Ev {
    pub process: u64,
    pub kind: &'static str,
    pub mops: Vec<M>,
}

/// Builds a txn history event by event.
#[derive(Default, Debug, Clone)]
pub struct TxnHist {
    pub events: Vec<Ev>,
}

impl TxnHist {
    pub fn invoke(&mut self, process: u64, mops: &[M]) -> &mut Self {
        self.events.push(Ev {
            process,
            kind: "invoke",
            mops: mops.to_vec(),
        });
        self
    }
    pub fn complete(&mut self, process: u64, kind: &'static str, mops: &[M]) -> &mut Self {
        self.events.push(Ev {
            process,
            kind,
            mops: mops.to_vec(),
        });
        self
    }
    /// Invoke and `ok` at once.
    pub fn ok(&mut self, process: u64, mops: &[M]) -> &mut Self {
        self.invoke(process, mops).complete(process, "ok", mops)
    }
    /// Invoke and `fail` at once.
    pub fn fail(&mut self, process: u64, mops: &[M]) -> &mut Self {
        self.invoke(process, mops).complete(process, "fail", mops)
    }

    pub fn edn(&self) -> String {
        let mut s = String::new();
        for (i, e) in self.events.iter().enumerate() {
            s.push_str(&format!(
                "{{:index {i}, :time {}, :type :{}, :process {}, :f :txn, :value {}}}\n",
                i * 1000,
                e.kind,
                e.process,
                edn_mops(&e.mops, e.kind == "invoke")
            ));
        }
        s
    }

    pub fn jsonl(&self) -> String {
        let mut s = String::new();
        for (i, e) in self.events.iter().enumerate() {
            s.push_str(&format!(
                "{{\"index\":{i},\"time_ns\":{},\"process\":{},\"type\":\"{}\",\"f\":\"txn\",\"value\":{}}}\n",
                i * 1000,
                e.process,
                e.kind,
                json_mops(&e.mops, e.kind == "invoke")
            ));
        }
        s
    }

    pub fn history(&self) -> TxnHistory {
        read_txn_history(self.edn().as_bytes(), HistoryFormat::Auto).expect("a well-formed history")
    }

    pub fn check(&self, model: TxnModel) -> TxnReport {
        check_txn(&self.history(), &TxnCheckOptions::new(model))
    }
}
