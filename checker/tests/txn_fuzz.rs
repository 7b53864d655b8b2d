//! Hostile input never panics the transaction checker: seeded byte mutations of valid
//! EDN and JSONL txn histories are either read (and then checked under every model) or
//! refused with an error.

mod common;

use common::SplitMix;
use common::txn::{TxnHist, a, r, rr, w};
use kvlab_checker::HistoryFormat;
use kvlab_checker::txn::{TxnCheckOptions, TxnModel, check_txn, read_txn_history};

fn seeds() -> Vec<Vec<u8>> {
    let mut la = TxnHist::default();
    la.invoke(0, &[a("x", 1), r("y", &[])]);
    la.invoke(1, &[a("y", 1), r("x", &[])]);
    la.complete(0, "ok", &[a("x", 1), r("y", &[1])]);
    la.complete(1, "info", &[a("y", 1), r("x", &[])]);
    la.ok(2, &[r("x", &[1]), a("x", 2), r("x", &[1, 2])]);
    la.fail(3, &[a("y", 3)]);
    la.ok(3, &[r("x", &[1, 2]), r("y", &[1])]);
    let mut reg = TxnHist::default();
    reg.ok(0, &[rr("x", None), w("x", 1)]);
    reg.ok(1, &[rr("x", Some(1)), w("x", 2), w("y", 1)]);
    reg.ok(0, &[rr("x", Some(2)), rr("y", Some(1))]);
    vec![
        la.edn().into_bytes(),
        la.jsonl().into_bytes(),
        reg.edn().into_bytes(),
        reg.jsonl().into_bytes(),
    ]
}

fn mutate(rng: &mut SplitMix, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    const BYTES: &[u8] = b"[]{}():0123456789-\"\n ,nilokfailinvoketxnappendr";
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            break;
        }
        let i = rng.below(out.len() as u64) as usize;
        match rng.below(4) {
            0 => out[i] = BYTES[rng.below(BYTES.len() as u64) as usize],
            1 => {
                out.remove(i);
            }
            2 => out.insert(i, BYTES[rng.below(BYTES.len() as u64) as usize]),
            _ => {
                // Swap two lines.
                let text = String::from_utf8_lossy(&out).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let j = rng.below(lines.len() as u64) as usize;
                    let k = rng.below(lines.len() as u64) as usize;
                    lines.swap(j, k);
                }
                out = lines.join("\n").into_bytes();
            }
        }
    }
    out
}

#[test]
fn mutated_histories_are_read_or_refused_never_a_panic() {
    let mut rng = SplitMix::new(0x7e11e);
    let (mut read, mut refused) = (0, 0);
    for input in seeds() {
        for _ in 0..1_500 {
            let bytes = mutate(&mut rng, &input);
            match read_txn_history(&bytes[..], HistoryFormat::Auto) {
                Ok(h) => {
                    read += 1;
                    for model in TxnModel::ALL {
                        let report = check_txn(&h, &TxnCheckOptions::new(model));
                        let _ = report.to_string();
                    }
                }
                Err(e) => {
                    refused += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }
    eprintln!("{read} read, {refused} refused");
    assert!(
        read > 100 && refused > 100,
        "{read} read, {refused} refused"
    );
}
