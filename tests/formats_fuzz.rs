//! Fuzz-style robustness of the format translation library: arbitrary and mutated inputs (seeded, so failures
//! reproduce) into every request, response and stream pair. Nothing may panic, and stream output stays bounded.

use apiproxy::formats::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/formats");

fn corpus(sub: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(format!("{DIR}/{sub}"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.into_iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 2 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => Value::from(rng.random_range(-5i64..100_000)),
        3 => Value::from(
            [
                "",
                "text",
                "tool_use",
                "function",
                "STOP",
                "user",
                "model",
                "{",
                "data:x;base64,",
            ][rng.random_range(0..9)],
        ),
        4 => Value::from(rng.random::<f64>() * 3.0),
        5 => Value::Array(
            (0..rng.random_range(0..3))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "type",
                "text",
                "content",
                "role",
                "parts",
                "id",
                "name",
                "input",
                "arguments",
                "index",
                "delta",
            ];
            Value::Object(
                (0..rng.random_range(0..3))
                    .map(|_| {
                        (
                            keys[rng.random_range(0..keys.len())].to_string(),
                            random_value(rng, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
    }
}

/// Replaces one random node of `v` with a random value (shape confusion is what breaks translators).
fn mutate_value(rng: &mut StdRng, v: &mut Value) {
    let descend = rng.random_range(0..4) != 0;
    match v {
        Value::Object(o) if descend && !o.is_empty() => {
            let k = o.keys().nth(rng.random_range(0..o.len())).cloned().unwrap();
            if let Some(child) = o.get_mut(&k) {
                mutate_value(rng, child);
            }
        }
        Value::Array(a) if descend && !a.is_empty() => {
            let i = rng.random_range(0..a.len());
            mutate_value(rng, &mut a[i]);
        }
        _ => *v = random_value(rng, 0),
    }
}

fn mutate_bytes(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..rng.random_range(1..6) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..b.len());
        match rng.random_range(0..5) {
            0 => b[i] = rng.random(),
            1 => b.insert(
                i,
                [b'{', b'}', b'"', b'\n', b'\r', b'[', b',', b':', b'\\'][rng.random_range(0..9)],
            ),
            2 => {
                b.remove(i);
            }
            3 => b.truncate(i),
            _ => {
                let j = rng.random_range(i..b.len());
                let slice = b[i..j].to_vec();
                b.splice(i..i, slice);
            }
        }
    }
    b
}

fn mutated(rng: &mut StdRng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let base = &corpus[rng.random_range(0..corpus.len())];
    match rng.random_range(0..4) {
        0 => mutate_bytes(rng, base),
        1 | 2 => match serde_json::from_slice::<Value>(base) {
            Ok(mut v) => {
                for _ in 0..rng.random_range(1..4) {
                    mutate_value(rng, &mut v);
                }
                serde_json::to_vec(&v).unwrap()
            }
            Err(_) => mutate_bytes(rng, base),
        },
        _ => (0..rng.random_range(0..300)).map(|_| rng.random()).collect(),
    }
}

#[test]
fn requests_and_responses_never_panic() {
    let mut rng = StdRng::seed_from_u64(0xF022);
    let requests = corpus("requests");
    let responses = corpus("responses");
    let opts = RequestOptions {
        model: "m".into(),
        stream: true,
        default_max_tokens: 4096,
        fetched_media: None,
        stream_usage: true,
        replay_reasoning: false,
    };
    for _ in 0..1500 {
        let body = mutated(&mut rng, &requests);
        let _ = detect_chat_body(&body);
        for from in WireFormat::ALL {
            for to in WireFormat::ALL {
                if from != to {
                    if let Ok(out) = convert_request(from, to, &body, &opts) {
                        assert!(serde_json::from_slice::<Value>(&out).is_ok(), "valid JSON out");
                    }
                }
            }
        }
    }
    for _ in 0..1500 {
        let body = mutated(&mut rng, &responses);
        for from in WireFormat::ALL {
            let _ = extract_usage(from, &body);
            for to in WireFormat::ALL {
                let _ = convert_response(from, to, &body, "m");
                let (status, err) = convert_error(from, to, rng.random_range(100..700), &body, None);
                assert!((400..=599).contains(&status));
                assert!(serde_json::from_slice::<Value>(&err).is_ok());
            }
        }
    }
}

#[test]
fn streams_never_panic_and_stay_bounded() {
    let mut rng = StdRng::seed_from_u64(0x57AE);
    let streams = corpus("streams");
    for case in 0..600 {
        let input = if case % 3 == 0 {
            // Event-level mutation: mutate one data payload's JSON.
            let base = String::from_utf8_lossy(&streams[rng.random_range(0..streams.len())]).into_owned();
            let mut events: Vec<String> = base.split("\n\n").map(str::to_string).collect();
            let i = rng.random_range(0..events.len());
            if let Some(data) = events[i].split("data: ").nth(1).map(str::to_string) {
                if let Ok(mut v) = serde_json::from_str::<Value>(data.trim()) {
                    mutate_value(&mut rng, &mut v);
                    events[i] = format!("data: {v}");
                }
            }
            events.join("\n\n").into_bytes()
        } else {
            mutated(&mut rng, &streams)
        };
        let max_event_bytes = if case % 5 == 0 { 256 } else { 64 << 10 };
        for from in WireFormat::ALL {
            for to in WireFormat::ALL {
                let opts = StreamOptions {
                    model: "m".into(),
                    include_usage: rng.random(),
                    strip_usage_chunk: rng.random(),
                    max_event_bytes,
                    input_tokens_estimate: 0,
                    gemini_json_array: rng.random(),
                    tool_names: None,
                    several_choices: rng.random(),
                    json_mode: rng.random(),
                };
                let mut c = StreamConverter::new(from, to, opts);
                let mut out = Vec::new();
                let mut at = 0;
                let mut broke = false;
                while at < input.len() {
                    let n = rng.random_range(1..64).min(input.len() - at);
                    if c.push(&input[at..at + n], &mut out).is_err() {
                        broke = true;
                        break;
                    }
                    at += n;
                }
                if broke || rng.random_range(0..4) == 0 {
                    c.abort("reset", &mut out);
                }
                c.finish(&mut out);
                let _ = (c.usage(), c.completed());
                // Output is proportional to input: per event, a bounded envelope.
                assert!(
                    out.len() <= 40 * input.len() + 8192,
                    "{} -> {}: {} bytes out of {}",
                    from.label(),
                    to.label(),
                    out.len(),
                    input.len()
                );
            }
        }
    }
}

#[test]
fn an_event_larger_than_the_bound_is_refused_not_buffered() {
    for from in WireFormat::ALL {
        for to in WireFormat::ALL {
            let opts = StreamOptions {
                model: "m".into(),
                max_event_bytes: 4096,
                ..StreamOptions::default()
            };
            let mut c = StreamConverter::new(from, to, opts);
            let mut out = Vec::new();
            let start: &[u8] = if from == WireFormat::Gemini {
                b"[{\"a\":\""
            } else {
                b"data: {\"a\":\""
            };
            assert!(c.push(start, &mut out).is_ok());
            let mut refused = false;
            for _ in 0..100 {
                if c.push(&[b'x'; 1000], &mut out).is_err() {
                    refused = true;
                    break;
                }
            }
            assert!(refused, "{} -> {}", from.label(), to.label());
            c.abort("too large", &mut out);
            assert!(out.len() < 4096, "no partial event leaked");
            assert!(
                String::from_utf8_lossy(&out).contains("too large"),
                "{} -> {}",
                from.label(),
                to.label()
            );
        }
    }
}
