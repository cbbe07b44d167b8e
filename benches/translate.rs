//! Translation throughput per core, for every client × upstream pair, with same-format passthrough as the
//! baseline in the same run. Dependency-free: `cargo bench --bench translate` prints the figures.
//! Inputs are the golden fixtures (a multi-turn tool-calling request; a text + 2 parallel tool calls stream).

use std::hint::black_box;
use std::time::{Duration, Instant};

use apiproxy::formats::*;
use bytes::Bytes;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/formats");
const BUDGET: Duration = Duration::from_millis(300);

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Calls `f` repeatedly for about `BUDGET`; returns calls per second.
fn rate(mut f: impl FnMut()) -> f64 {
    for _ in 0..10 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < BUDGET {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn events_in(stream: &[u8]) -> usize {
    let text = String::from_utf8_lossy(stream);
    text.matches("data: ").count()
}

fn main() {
    let opts = RequestOptions {
        model: "up-model".into(),
        stream: true,
        default_max_tokens: 4096,
        fetched_media: None,
        stream_usage: true,
        replay_reasoning: false,
    };
    println!("translation throughput, one core (release: `cargo bench --bench translate`)\n");
    println!(
        "requests/s  (fixture requests/tools.<from>.json; baseline = same-format passthrough: inspect + model rewrite)"
    );
    println!("{:<18} {:<18} {:>12}", "client", "upstream", "req/s");
    for from in WireFormat::ALL {
        let body = fixture(&format!("requests/tools.{}.json", from.label()));
        let bytes = Bytes::from(body.clone());
        let baseline = rate(|| match apiproxy::formats::request::inspect(&bytes) {
            Ok(i) => {
                black_box(apiproxy::formats::request::rewrite(
                    &bytes,
                    &i,
                    &apiproxy::formats::request::Rewrite {
                        model: "up-model",
                        force_stream: false,
                        ask_usage: false,
                    },
                ));
            }
            // Gemini bodies carry no model (it is in the URL): passthrough is a copy.
            Err(_) => {
                black_box(bytes.clone());
            }
        });
        println!(
            "{:<18} {:<18} {:>12.0}   (passthrough)",
            from.label(),
            from.label(),
            baseline
        );
        for to in WireFormat::ALL {
            if to == from {
                continue;
            }
            if convert_request(from, to, &body, &opts).is_err() {
                println!("{:<18} {:<18} {:>12}", from.label(), to.label(), "refused");
                continue;
            }
            let r = rate(|| {
                black_box(convert_request(from, to, black_box(&body), &opts).ok());
            });
            println!("{:<18} {:<18} {:>12.0}", from.label(), to.label(), r);
        }
    }

    println!("\nwhole responses/s  (fixture responses/tools.<upstream>.json)");
    println!("{:<18} {:<18} {:>12}", "upstream", "client", "resp/s");
    for from in WireFormat::ALL {
        let body = fixture(&format!("responses/tools.{}.json", from.label()));
        let baseline = rate(|| {
            black_box(extract_usage(from, black_box(&body)));
        });
        println!(
            "{:<18} {:<18} {:>12.0}   (passthrough: usage extraction)",
            from.label(),
            from.label(),
            baseline
        );
        for to in WireFormat::ALL {
            if to == from {
                continue;
            }
            let r = rate(|| {
                black_box(convert_response(from, to, black_box(&body), "client-model").ok());
            });
            println!("{:<18} {:<18} {:>12.0}", from.label(), to.label(), r);
        }
    }

    println!("\nstream events/s  (fixture streams/tools.<upstream>.sse fed in 512-byte chunks; baseline = passthrough observer)");
    println!("{:<18} {:<18} {:>14} {:>10}", "upstream", "client", "events/s", "MB/s");
    for from in WireFormat::ALL {
        let stream = fixture(&format!("streams/tools.{}.sse", from.label()));
        let events = events_in(&stream) as f64;
        let mut order: Vec<WireFormat> = vec![from];
        order.extend(WireFormat::ALL.iter().copied().filter(|t| *t != from));
        for to in order {
            let mut out = Vec::with_capacity(stream.len() * 4);
            let r = rate(|| {
                let mut c = StreamConverter::new(
                    from,
                    to,
                    StreamOptions {
                        model: "client-model".into(),
                        include_usage: true,
                        ..StreamOptions::default()
                    },
                );
                out.clear();
                for chunk in stream.chunks(512) {
                    let _ = c.push(chunk, &mut out);
                }
                c.finish(&mut out);
                black_box(&out);
            });
            let tag = if to == from { "   (passthrough)" } else { "" };
            println!(
                "{:<18} {:<18} {:>14.0} {:>10.1}{tag}",
                from.label(),
                to.label(),
                r * events,
                r * stream.len() as f64 / 1e6
            );
        }
    }
}
