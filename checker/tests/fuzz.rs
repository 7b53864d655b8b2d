//! Random bytes and random mutations of valid histories never make the reader or the
//! checker panic: they answer with an error or a report.

mod common;

use std::time::Duration;

use common::{GenSpec, SplitMix, generate};
use kvlab_checker::{CheckOptions, EventType, ModelKind, OpFn, check, read_jsonl, write_jsonl};
use serde_json::json;

const MODELS: [ModelKind; 3] = [ModelKind::Register, ModelKind::CasRegister, ModelKind::Kv];

fn opts(model: ModelKind) -> CheckOptions {
    CheckOptions {
        model,
        timeout: Some(Duration::from_millis(200)),
    }
}

/// Returns whether the bytes were a readable history (and so were checked).
fn read_and_check(bytes: &[u8]) -> bool {
    let Ok(events) = read_jsonl(bytes) else {
        return false;
    };
    for model in MODELS {
        let _ = check(&events, &opts(model));
    }
    true
}

fn valid_text(seed: u64) -> Vec<u8> {
    let events = generate(GenSpec {
        seed,
        operations: 40,
        keys: 3,
        clients: 4,
        info_rate: 0.15,
        kv_ops: true,
    });
    let mut out = Vec::new();
    write_jsonl(&mut out, &events).expect("written");
    out
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = SplitMix::new(1);
    for _ in 0..500 {
        let len = rng.below(300) as usize;
        let alphabet = b"{}[]\",:0123456789-.nultrefaxyzk \n\r\tindexprocesstypeinvokeokfailinfo";
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.chance(0.5) {
                    alphabet[rng.below(alphabet.len() as u64) as usize]
                } else {
                    rng.below(256) as u8
                }
            })
            .collect();
        read_and_check(&bytes);
    }
}

#[test]
fn mutated_history_text_never_panics() {
    let mut rng = SplitMix::new(2);
    let tokens: [&[u8]; 12] = [
        b"null",
        b"-1",
        b"[1,2]",
        b"[null,3]",
        b"\"ok\"",
        b"\"info\"",
        b"\"fail\"",
        b"\"invoke\"",
        b"\"cas\"",
        b"\"delete\"",
        b"18446744073709551615",
        b"\n",
    ];
    let (mut readable, mut total) = (0, 0);
    for seed in 0..60 {
        let base = valid_text(seed);
        for _ in 0..20 {
            let mut text = base.clone();
            if rng.chance(0.5) {
                // One event's value replaced: usually still readable, often not linearizable.
                let mut lines: Vec<String> = String::from_utf8(text)
                    .expect("utf-8")
                    .lines()
                    .map(str::to_owned)
                    .collect();
                let i = rng.below(lines.len() as u64) as usize;
                let mut event: serde_json::Value = serde_json::from_str(&lines[i]).expect("json");
                let token =
                    std::str::from_utf8(tokens[rng.below(tokens.len() as u64 - 1) as usize])
                        .expect("ascii");
                event["value"] = serde_json::from_str(token).expect("token is json");
                lines[i] = event.to_string();
                text = lines.join("\n").into_bytes();
            }
            for _ in 0..rng.below(3) {
                if text.is_empty() {
                    break;
                }
                let at = rng.below(text.len() as u64) as usize;
                match rng.below(4) {
                    0 => text[at] = rng.below(256) as u8,
                    1 => {
                        let end = (at + rng.below(20) as usize).min(text.len());
                        text.drain(at..end);
                    }
                    2 => {
                        let token = tokens[rng.below(tokens.len() as u64) as usize];
                        text.splice(at..at, token.iter().copied());
                    }
                    _ => {
                        // Swap two lines.
                        let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
                        let n = lines.len() as u64;
                        lines.swap(rng.below(n) as usize, rng.below(n) as usize);
                        text = lines.join(&b'\n');
                    }
                }
            }
            total += 1;
            if read_and_check(&text) {
                readable += 1;
            }
        }
    }
    // Some mutations must survive reading, or the checker was never exercised.
    assert!(
        readable * 20 > total,
        "{readable} of {total} mutated histories were readable"
    );
}

#[test]
fn mutated_events_given_to_check_directly_never_panic() {
    let mut rng = SplitMix::new(3);
    let kinds = [
        EventType::Invoke,
        EventType::Ok,
        EventType::Fail,
        EventType::Info,
    ];
    let fs = [OpFn::Read, OpFn::Write, OpFn::Cas, OpFn::Delete, OpFn::Txn];
    let values = [
        json!(null),
        json!(5),
        json!([5, 6]),
        json!([null, 1]),
        json!("x"),
        json!([[1]]),
    ];
    let (mut accepted, mut refused) = (0, 0);
    for seed in 0..100 {
        let mut events = generate(GenSpec {
            seed,
            operations: 40,
            keys: 2,
            clients: 3,
            info_rate: 0.2,
            kv_ops: true,
        });
        for _ in 0..=rng.below(3) {
            let i = rng.below(events.len() as u64) as usize;
            let e = &mut events[i];
            match rng.below(6) {
                0 => e.kind = kinds[rng.below(4) as usize],
                1 => e.f = fs[rng.below(5) as usize],
                2 => e.value = values[rng.below(values.len() as u64) as usize].clone(),
                3 => e.process = rng.below(5),
                4 => {
                    e.key = if rng.chance(0.5) {
                        None
                    } else {
                        Some("k0".into())
                    }
                }
                _ => e.index = rng.next_u64(),
            }
        }
        for model in MODELS {
            match check(&events, &opts(model)) {
                Ok(_) => accepted += 1,
                Err(_) => refused += 1,
            }
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "accepted {accepted}, refused {refused}"
    );
}

/// Random bytes and mutated valid text fed to every format's reader never panic.
#[test]
fn every_format_reader_survives_random_and_mutated_input() {
    use kvlab_checker::{EdnKeyStyle, HistoryFormat, read_history_bytes, write_edn};
    let mut rng = SplitMix::new(9);
    let events = common::generate(GenSpec {
        seed: 4,
        operations: 30,
        keys: 2,
        clients: 3,
        info_rate: 0.2,
        kv_ops: true,
    });
    let mut edn = Vec::new();
    write_edn(&mut edn, &events, EdnKeyStyle::KeyField).expect("writes");
    let log = b"INFO  jepsen.util - 0\t:invoke\t:cas\t[1 4]\nINFO  jepsen.util - 0\t:ok\t:cas\t[1 4]\nINFO  jepsen.util - :nemesis\t:info\t:start\tnil\nINFO  jepsen.util - 1\t:invoke\t:read\tnil\nINFO  jepsen.util - 1\t:fail\t:read\t:timed-out\n".to_vec();
    let kv = b"{:process 0, :type :invoke, :f :append, :key \"0\", :value \"x 0 0 y\"}\n{:process 0, :type :ok, :f :append, :key \"0\", :value \"x 0 0 y\"}\n{:process 0, :type :invoke, :f :get, :key \"0\", :value nil}\n{:process 0, :type :ok, :f :get, :key \"0\", :value \"x 0 0 y\"}\n".to_vec();
    let seeds = [edn, log, kv, valid_text(5)];
    let alphabet = b"{}[]()#_;:\"\\ \n\t,0123456789-Nnilprocesstypeinvokeokfailinfo fvaluereadwritecasjepsen.util - ";
    for round in 0..4000 {
        let bytes: Vec<u8> = if round % 4 == 0 {
            let len = rng.below(200) as usize;
            (0..len)
                .map(|_| {
                    if rng.chance(0.7) {
                        alphabet[rng.below(alphabet.len() as u64) as usize]
                    } else {
                        rng.below(256) as u8
                    }
                })
                .collect()
        } else {
            let mut b = seeds[round % seeds.len()].clone();
            for _ in 0..1 + rng.below(4) {
                if b.is_empty() {
                    break;
                }
                let at = rng.below(b.len() as u64) as usize;
                match rng.below(3) {
                    0 => b[at] = alphabet[rng.below(alphabet.len() as u64) as usize],
                    1 => {
                        b.remove(at);
                    }
                    _ => b.truncate(at),
                }
            }
            b
        };
        for format in HistoryFormat::ALL {
            if let Ok(events) = read_history_bytes(&bytes, format) {
                for model in MODELS {
                    let _ = check(&events, &opts(model));
                }
            }
        }
    }
}
