//! Golden tests of the format translation library (formats.md §7.1): fixtures under
//! `tests/fixtures/formats/`, every client × upstream pair, requests, whole responses and streams, checked
//! with independent client-side accumulators (`formats_support`). `BLESS=1` rewrites the expected request
//! files (review the diff!).

mod formats_support;
#[path = "common/shape.rs"]
mod shape;

use apiproxy::formats::ir::FinishReason;
use apiproxy::formats::*;
use formats_support::{self as client, Final};
use serde_json::{json, Value};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/formats");

fn fixture(rel: &str) -> Option<Vec<u8>> {
    std::fs::read(format!("{DIR}/{rel}")).ok()
}

fn opts(stream: bool) -> RequestOptions {
    RequestOptions {
        model: "up-model".into(),
        stream,
        default_max_tokens: 4096,
        fetched_media: None,
        stream_usage: true,
        replay_reasoning: false,
    }
}

/// What the gateway passes: the forced usage chunk is stripped when the client did not ask for usage.
fn stream_opts(_to: WireFormat, include_usage: bool) -> StreamOptions {
    StreamOptions {
        model: "client-model".into(),
        include_usage,
        strip_usage_chunk: !include_usage,
        input_tokens_estimate: 50,
        gemini_json_array: false,
        ..StreamOptions::default()
    }
}

trait WithArray {
    fn with_array(self, array: bool) -> Self;
}

impl WithArray for StreamOptions {
    fn with_array(mut self, array: bool) -> Self {
        self.gemini_json_array = array;
        self
    }
}

/// Runs a stream through a converter in the given chunk sizes (cycled), then `finish`.
fn run(
    from: WireFormat,
    to: WireFormat,
    input: &[u8],
    opts: StreamOptions,
    sizes: &[usize],
) -> (Vec<u8>, StreamConverter) {
    let mut c = StreamConverter::new(from, to, opts);
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < input.len() {
        let n = sizes[i % sizes.len()].max(1).min(input.len() - at);
        c.push(&input[at..at + n], &mut out).expect("push");
        at += n;
        i += 1;
    }
    c.finish(&mut out);
    (out, c)
}

fn read_client(to: WireFormat, out: &[u8], include_usage: bool, array: bool) -> Final {
    match to {
        WireFormat::OpenAiChat => client::openai_chat(out, include_usage),
        WireFormat::OpenAiResponses => client::responses(out),
        WireFormat::Anthropic => client::anthropic(out),
        WireFormat::Gemini => client::gemini(out, array),
    }
}

fn weather(city: &str) -> Value {
    json!({"city": city})
}

fn tool_args(f: &Final) -> Vec<(String, Value)> {
    f.tools.iter().map(|(_, n, a)| (n.clone(), a.clone())).collect()
}

// ---------------------------------------------------------------- streams

#[test]
fn stream_tools_every_pair() {
    for from in WireFormat::ALL {
        let input = fixture(&format!("streams/tools.{}.sse", from.label())).unwrap();
        for to in WireFormat::ALL {
            for include_usage in [true, false] {
                for array in [false, true] {
                    if array && to != WireFormat::Gemini {
                        continue;
                    }
                    let ctx = format!("{} -> {} usage={include_usage} array={array}", from.label(), to.label());
                    let (out, conv) = run(
                        from,
                        to,
                        &input,
                        stream_opts(to, include_usage).with_array(array),
                        &[input.len()],
                    );
                    assert!(conv.completed(), "{ctx}");
                    let f = read_client(to, &out, include_usage, array);
                    assert!(f.clean_end && f.error.is_none(), "{ctx}: {f:?}");
                    assert_eq!(f.text, "Let me check.", "{ctx}");
                    assert_eq!(
                        tool_args(&f),
                        vec![
                            ("get_weather".into(), weather("Paris")),
                            ("get_weather".into(), weather("Rome"))
                        ],
                        "{ctx}"
                    );
                    assert_eq!(f.finish.as_deref(), Some("tool_calls"), "{ctx}");
                    let ids: std::collections::HashSet<_> = f.tools.iter().map(|t| t.0.clone()).collect();
                    if to != WireFormat::Gemini {
                        // (Gemini calls carry no ids; other clients get the upstream's or synthesized ones.)
                        assert_eq!(ids.len(), 2, "{ctx}: distinct tool ids");
                    }
                    if to != WireFormat::OpenAiChat || include_usage {
                        assert_eq!(f.usage, Some((100, 40, 20)), "{ctx}");
                    } else {
                        assert_eq!(f.usage, None, "{ctx}");
                    }
                    let u = conv.usage().expect("usage observed");
                    assert_eq!(
                        (u.input_tokens, u.output_tokens, u.cached_input_tokens),
                        (100, 40, 20),
                        "{ctx}"
                    );
                    if from == WireFormat::Gemini && to != WireFormat::Gemini {
                        // The Gemini signature rides in the id (base64url, no padding) for non-Gemini clients.
                        assert!(
                            f.tools[0].0.ends_with("__thought__c2lnLWE-Lw"),
                            "{ctx}: {}",
                            f.tools[0].0
                        );
                    }
                    if from == WireFormat::Gemini && to == WireFormat::Gemini {
                        assert_eq!(f.signature.as_deref(), Some("c2lnLWE+Lw=="), "{ctx}");
                    }
                }
            }
        }
    }
}

#[test]
fn stream_passthrough_is_byte_for_byte() {
    for f in WireFormat::ALL {
        let input = fixture(&format!("streams/tools.{}.sse", f.label())).unwrap();
        let (out, conv) = run(f, f, &input, stream_opts(f, true), &[7]);
        assert_eq!(out, input, "{}", f.label());
        assert!(conv.completed());
        let u = conv.usage().unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (100, 40));
    }
    // The forced usage chunk is stripped, everything else kept as it came.
    let input = fixture("streams/tools.openai_chat.sse").unwrap();
    let mut o = stream_opts(WireFormat::OpenAiChat, false);
    o.strip_usage_chunk = true;
    let (out, conv) = run(WireFormat::OpenAiChat, WireFormat::OpenAiChat, &input, o, &[5]);
    let text = String::from_utf8(input.clone()).unwrap();
    let usage_event = text.split("\n\n").find(|e| e.contains("\"choices\":[]")).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        text.replace(&format!("{usage_event}\n\n"), "")
    );
    assert_eq!(conv.usage().unwrap().input_tokens, 100, "usage still observed");
    // Gemini SSE upstream to a JSON-array client, and a JSON-array upstream to an SSE client.
    let sse = fixture("streams/tools.gemini.sse").unwrap();
    let (arr, _) = run(
        WireFormat::Gemini,
        WireFormat::Gemini,
        &sse,
        stream_opts(WireFormat::Gemini, false).with_array(true),
        &[3],
    );
    let f = client::gemini(&arr, true);
    assert_eq!(f.text, "Let me check.");
    let array_in = fixture("streams/tools.gemini.json").unwrap();
    let (back, conv) = run(
        WireFormat::Gemini,
        WireFormat::Gemini,
        &array_in,
        stream_opts(WireFormat::Gemini, false),
        &[11],
    );
    assert!(conv.completed());
    assert_eq!(client::gemini(&back, false), f);
}

#[test]
fn stream_gemini_array_upstream_translates() {
    let input = fixture("streams/tools.gemini.json").unwrap();
    for to in WireFormat::ALL {
        let (out, conv) = run(WireFormat::Gemini, to, &input, stream_opts(to, true), &[13]);
        assert!(conv.completed());
        let f = read_client(to, &out, true, false);
        assert_eq!(f.text, "Let me check.");
        assert_eq!(f.tools.len(), 2);
    }
}

#[test]
fn stream_length_every_pair() {
    for from in WireFormat::ALL {
        let input = fixture(&format!("streams/length.{}.sse", from.label())).unwrap();
        for to in WireFormat::ALL {
            let ctx = format!("{} -> {}", from.label(), to.label());
            let (out, _) = run(from, to, &input, stream_opts(to, true), &[input.len()]);
            let f = read_client(to, &out, true, false);
            assert!(f.clean_end, "{ctx}");
            assert_eq!(f.text, "Once upon", "{ctx}");
            assert_eq!(f.finish.as_deref(), Some("length"), "{ctx}");
            assert_eq!(f.usage.map(|u| u.1), Some(2), "{ctx}");
        }
    }
}

#[test]
fn stream_cut_without_terminator_is_an_error_every_pair() {
    for from in WireFormat::ALL {
        let input = fixture(&format!("streams/cut.{}.sse", from.label())).unwrap();
        for to in WireFormat::ALL {
            let ctx = format!("{} -> {}", from.label(), to.label());
            let (out, conv) = run(from, to, &input, stream_opts(to, true), &[input.len()]);
            assert!(!conv.completed(), "{ctx}");
            let f = read_client(to, &out, true, false);
            assert!(!f.clean_end, "{ctx}: a cut stream must not look finished");
            assert!(
                f.error.as_deref().is_some_and(|e| e.contains("ended before")),
                "{ctx}: {f:?}"
            );
            // Cut in the middle of an event: still an error event the client can read.
            let half = &input[..input.len() - 9];
            let (out, _) = run(from, to, half, stream_opts(to, true), &[half.len()]);
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains("ended before"), "{ctx}");
        }
    }
}

#[test]
fn stream_upstream_error_mid_stream_every_pair() {
    for from in WireFormat::ALL {
        let input = fixture(&format!("streams/error.{}.sse", from.label())).unwrap();
        for to in WireFormat::ALL {
            let ctx = format!("{} -> {}", from.label(), to.label());
            let (out, _) = run(from, to, &input, stream_opts(to, true), &[input.len()]);
            let f = read_client(to, &out, true, false);
            assert!(!f.clean_end, "{ctx}");
            assert_eq!(f.error.as_deref(), Some("Overloaded"), "{ctx}: {f:?}");
            assert!(f.text.starts_with("Let me"), "{ctx}");
        }
    }
}

#[test]
fn stream_abort_is_in_format_and_idempotent() {
    let input = fixture("streams/tools.anthropic.sse").unwrap();
    for to in WireFormat::ALL {
        let mut c = StreamConverter::new(WireFormat::Anthropic, to, stream_opts(to, true));
        let mut out = Vec::new();
        c.push(&input[..input.len() / 2], &mut out).unwrap();
        c.abort("connection reset", &mut out);
        let len = out.len();
        c.abort("again", &mut out);
        c.finish(&mut out);
        assert_eq!(out.len(), len, "{}: idempotent", to.label());
        let f = read_client(to, &out, true, false);
        assert_eq!(f.error.as_deref(), Some("connection reset"), "{}", to.label());
        assert!(!f.clean_end);
    }
}

#[test]
fn stream_thinking_and_signatures() {
    // Anthropic upstream: the signature reaches clients that can replay it, never a Gemini client.
    let input = fixture("streams/thinking.anthropic.sse").unwrap();
    for to in WireFormat::ALL {
        let ctx = to.label();
        let (out, _) = run(WireFormat::Anthropic, to, &input, stream_opts(to, true), &[input.len()]);
        let f = read_client(to, &out, true, false);
        assert_eq!(f.thinking, "Paris first.", "{ctx}");
        assert_eq!(f.text, "Let me check.", "{ctx}");
        assert_eq!(tool_args(&f), vec![("get_weather".into(), weather("Paris"))], "{ctx}");
        let expected_sig = match to {
            WireFormat::Gemini => None,
            WireFormat::OpenAiResponses => Some("anthropic-thinking:EqQBCkYIBxgCKkD+sig==".to_string()),
            _ => Some("EqQBCkYIBxgCKkD+sig==".to_string()),
        };
        assert_eq!(f.signature, expected_sig, "{ctx}");
    }
    // Gemini upstream: thoughts stream as thinking; the call's signature is smuggled in the id.
    let input = fixture("streams/thinking.gemini.sse").unwrap();
    for to in WireFormat::ALL {
        let ctx = to.label();
        let (out, _) = run(WireFormat::Gemini, to, &input, stream_opts(to, true), &[input.len()]);
        let f = read_client(to, &out, true, false);
        assert_eq!(f.thinking, "Paris first.", "{ctx}");
        assert_eq!(f.finish.as_deref(), Some("tool_calls"), "{ctx}: STOP + functionCall");
        if to != WireFormat::Gemini {
            assert!(f.tools[0].0.contains("__thought__"), "{ctx}");
        }
    }
}

/// Claude's redacted thinking streamed to a Responses client is an item of its own, given back on
/// the next turn as it came (Claude refuses a turn whose thinking blocks changed); a Chat client
/// gets it as a second `thinking_blocks` entry, with its index.
#[test]
fn stream_redacted_thinking_is_given_back() {
    let input = fixture("streams/redacted.anthropic.sse").unwrap();
    let (out, _) = run(
        WireFormat::Anthropic,
        WireFormat::OpenAiResponses,
        &input,
        stream_opts(WireFormat::OpenAiResponses, true),
        &[input.len()],
    );
    let completed = client::sse_events(&out)
        .into_iter()
        .find(|(e, _)| e.as_deref() == Some("response.completed"))
        .map(|(_, d)| serde_json::from_str::<Value>(&d).unwrap())
        .unwrap();
    let output = &completed["response"]["output"];
    let items: Vec<&str> = output
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(items, ["reasoning", "reasoning", "function_call"], "{output}");
    assert_redacted_item(&output[1]);
    let a = replay_to_anthropic(output);
    let kinds: Vec<&str> = a["messages"][1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["thinking", "redacted_thinking", "tool_use"], "{a}");
    let (out, _) = run(
        WireFormat::Anthropic,
        WireFormat::OpenAiChat,
        &input,
        stream_opts(WireFormat::OpenAiChat, true),
        &[input.len()],
    );
    let f = read_client(WireFormat::OpenAiChat, &out, true, false);
    assert_eq!(f.signature.as_deref(), Some("EqQBCkYIBxgCKkD+sig=="));
    assert!(String::from_utf8_lossy(&out).contains("\"index\":1,\"type\":\"redacted_thinking\""));
}

#[test]
fn upstream_pings_reach_clients_as_their_own_keepalive() {
    let input = fixture("streams/tools.anthropic.sse").unwrap();
    for to in WireFormat::ALL {
        let (out, _) = run(
            WireFormat::Anthropic,
            to,
            &input,
            stream_opts(to, false),
            &[input.len()],
        );
        let text = String::from_utf8(out.clone()).unwrap();
        match to {
            // Same format: the ping itself, as it came.
            WireFormat::Anthropic => assert!(text.contains("event: ping\n"), "{text}"),
            WireFormat::OpenAiChat | WireFormat::OpenAiResponses => assert!(text.contains("\n\n: ping\n\n"), "{text}"),
            // Gemini clients read every line as data: nothing.
            WireFormat::Gemini => assert!(!text.contains("ping"), "{text}"),
        }
        // And the stream still reads as before.
        let f = read_client(to, &out, false, false);
        assert_eq!(
            tool_args(&f),
            vec![
                ("get_weather".into(), weather("Paris")),
                ("get_weather".into(), weather("Rome"))
            ],
            "{}",
            to.label()
        );
    }
}

/// An OpenAI-compatible stream that interleaves the arguments of two parallel calls.
fn interleaved_tool_calls() -> Vec<u8> {
    let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut c = json!({"index": index, "function": {"arguments": args}});
        if let (Some(id), Some(name)) = (id, name) {
            c = json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": args}});
        }
        let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"tool_calls": [c]}, "finish_reason": null}]});
        format!("data: {chunk}\n\n")
    };
    let mut s = String::new();
    s += &call(0, Some("call_a"), Some("get_weather"), "");
    s += &call(1, Some("call_b"), Some("get_time"), "");
    s += &call(0, None, None, "{\"city\":");
    s += &call(1, None, None, "{\"tz\":");
    s += &call(0, None, None, "\"Paris\"}");
    s += &call(1, None, None, "\"CET\"}");
    let fin = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
    s += &format!("data: {fin}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

#[test]
fn interleaved_parallel_arguments_stay_inside_their_blocks() {
    let input = interleaved_tool_calls();
    let want = vec![
        ("get_weather".to_string(), weather("Paris")),
        ("get_time".to_string(), json!({"tz": "CET"})),
    ];
    for to in [
        WireFormat::Anthropic,
        WireFormat::OpenAiResponses,
        WireFormat::OpenAiChat,
    ] {
        let (out, _) = run(WireFormat::OpenAiChat, to, &input, stream_opts(to, false), &[97]);
        let f = read_client(to, &out, false, false);
        assert_eq!(tool_args(&f), want, "{}", to.label());
    }
    // Anthropic: a delta only ever goes to the block that is open, and each tool block's input is
    // whole when the block stops (consumers parse it there).
    let (out, _) = run(
        WireFormat::OpenAiChat,
        WireFormat::Anthropic,
        &input,
        stream_opts(WireFormat::Anthropic, false),
        &[97],
    );
    let (mut open, mut args) = (None, String::new());
    let mut whole = Vec::new();
    for (name, data) in client::sse_events(&out) {
        let v: Value = serde_json::from_str(&data).unwrap();
        match name.as_deref() {
            Some("content_block_start") => (open, args) = (v["index"].as_u64(), String::new()),
            Some("content_block_delta") => {
                assert_eq!(v["index"].as_u64(), open, "delta outside the open block: {v}");
                args += v["delta"]["partial_json"].as_str().unwrap_or_default();
            }
            Some("content_block_stop") => {
                assert_eq!(v["index"].as_u64(), open);
                whole.push(serde_json::from_str::<Value>(&args).expect("tool input whole at its stop"));
                open = None;
            }
            _ => {}
        }
    }
    assert_eq!(whole, vec![weather("Paris"), json!({"tz": "CET"})]);
    // Responses: no argument delta after its item is done, and the completed response carries
    // the whole arguments.
    let (out, _) = run(
        WireFormat::OpenAiChat,
        WireFormat::OpenAiResponses,
        &input,
        stream_opts(WireFormat::OpenAiResponses, false),
        &[97],
    );
    let mut done_items = Vec::new();
    let mut completed = Value::Null;
    for (_, data) in client::sse_events(&out) {
        let v: Value = serde_json::from_str(&data).unwrap();
        match v["type"].as_str() {
            Some("response.output_item.done") => done_items.push(v["item"]["id"].clone()),
            Some("response.function_call_arguments.delta") => {
                assert!(!done_items.contains(&v["item_id"]), "delta after its item is done: {v}")
            }
            Some("response.completed") => completed = v,
            _ => {}
        }
    }
    let args: Vec<Value> = completed["response"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| serde_json::from_str(i["arguments"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(args, vec![weather("Paris"), json!({"tz": "CET"})]);
}

/// The events an Anthropic client gets from an OpenAI Chat stream read in 64-byte pieces.
fn anthropic_events_from_openai(input: &[u8]) -> Vec<(Option<String>, String)> {
    let (out, _) = run(
        WireFormat::OpenAiChat,
        WireFormat::Anthropic,
        input,
        stream_opts(WireFormat::Anthropic, false),
        &[64],
    );
    client::sse_events(&out)
}

#[test]
fn stream_anthropic_client_from_openai_without_usage_never_reports_zero_tokens() {
    // An OpenAI-compatible upstream that ignores `stream_options.include_usage` (or is cut after
    // its finish chunk): no usage chunk. The SDK lets message_delta's usage replace message_start's.
    let input = fixture("streams/tools.openai_chat.sse").unwrap();
    let input: Vec<u8> = String::from_utf8(input)
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.contains("\"choices\":[]"))
        .flat_map(|e| [e, "\n\n"])
        .collect::<String>()
        .into_bytes();
    let events = anthropic_events_from_openai(&input);
    assert_eq!(events[events.len() - 1].0.as_deref(), Some("message_stop"));
    let delta: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(delta["type"], "message_delta");
    let usage = delta["usage"].as_object().unwrap();
    assert!(
        !usage.contains_key("input_tokens") && !usage.contains_key("cache_read_input_tokens"),
        "unknown counts are left out, so message_start's estimate stands: {delta}"
    );
    // ≈4 bytes a token of the 44 bytes of text and arguments sent.
    assert_eq!(usage["output_tokens"], 11, "{delta}");
}

#[test]
fn stream_openai_client_asking_for_usage_gets_no_zeros_when_the_upstream_sent_none() {
    let with_usage = fixture("streams/length.gemini.sse").unwrap();
    let without: Vec<u8> = String::from_utf8(with_usage.clone())
        .unwrap()
        .split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut v: Value = serde_json::from_str(e.trim_start_matches("data: ")).unwrap();
            v.as_object_mut().unwrap().remove("usageMetadata");
            format!("data: {v}\r\n\r\n")
        })
        .collect::<String>()
        .into_bytes();
    let usage_chunks = |input: &[u8]| {
        let opts = stream_opts(WireFormat::OpenAiChat, true);
        let (out, _) = run(WireFormat::Gemini, WireFormat::OpenAiChat, input, opts, &[64]);
        let events = client::sse_events(&out);
        assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
        events
            .iter()
            .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
            .filter(|v| v["usage"].is_object())
            .map(|v| v["usage"].clone())
            .collect::<Vec<_>>()
    };
    let reported = usage_chunks(&with_usage);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(reported[0]["completion_tokens"].as_u64() > Some(0), "{reported:?}");
    assert_eq!(usage_chunks(&without), Vec::<Value>::new());
}

#[test]
fn stream_anthropic_client_from_openai_holds_message_delta_for_usage() {
    let input = fixture("streams/tools.openai_chat.sse").unwrap();
    let events = anthropic_events_from_openai(&input);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], &["message_delta", "message_stop"]);
    let start: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(start["message"]["usage"]["input_tokens"], 50, "local estimate, never 0");
    assert_eq!(start["message"]["id"], "chatcmpl-up1", "upstream id, not a placeholder");
    let delta: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(
        delta["usage"]["input_tokens"], 80,
        "authoritative input (uncached) in message_delta"
    );
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 20);
    assert_eq!(delta["usage"]["output_tokens"], 40);
}

#[test]
fn stream_openai_client_envelope_from_upstream() {
    let input = fixture("streams/tools.anthropic.sse").unwrap();
    let (out, _) = run(
        WireFormat::Anthropic,
        WireFormat::OpenAiChat,
        &input,
        stream_opts(WireFormat::OpenAiChat, true),
        &[100],
    );
    let events = client::sse_events(&out);
    let first: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(first["id"], "msg_up1");
    assert_eq!(first["model"], "client-model");
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let indices: Vec<u64> = events
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["tool_calls"][0]["index"].as_u64())
        .collect();
    assert_eq!(
        indices.first(),
        Some(&0),
        "dense tool index from 0, not the block index"
    );
    assert!(indices.iter().all(|i| *i <= 1));
}

#[test]
fn stream_responses_client_sequence_and_completed() {
    let input = fixture("streams/tools.anthropic.sse").unwrap();
    let (out, _) = run(
        WireFormat::Anthropic,
        WireFormat::OpenAiResponses,
        &input,
        stream_opts(WireFormat::OpenAiResponses, false),
        &[100],
    );
    let events = client::sse_events(&out);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(&names[..2], &["response.created", "response.in_progress"]);
    assert_eq!(names.last(), Some(&"response.completed"));
    let seqs: Vec<u64> = events
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["sequence_number"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let done: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    let output = done["response"]["output"].as_array().unwrap();
    assert_eq!(output.len(), 3, "message + 2 function calls");
    assert_eq!(done["response"]["id"], "msg_up1");
}

// ------------------------------------------------------------- splitting

/// Blanks generated ids and timestamps so two runs of the same stream compare equal.
fn normalize(to: WireFormat, bytes: &[u8], array: bool) -> Vec<Value> {
    fn blank(v: &mut Value) {
        match v {
            Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    if matches!(
                        k.as_str(),
                        "id" | "item_id" | "call_id" | "responseId" | "created" | "created_at"
                    ) {
                        *x = Value::Null;
                    } else {
                        blank(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(blank),
            _ => {}
        }
    }
    let mut values: Vec<Value> = if to == WireFormat::Gemini && array {
        serde_json::from_slice::<Value>(bytes)
            .map(|v| v.as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    } else {
        client::sse_events(bytes)
            .into_iter()
            .map(|(e, d)| json!([e, serde_json::from_str::<Value>(&d).unwrap_or(Value::String(d))]))
            .collect()
    };
    values.iter_mut().for_each(blank);
    values
}

#[test]
fn stream_split_at_every_byte_and_random_chunks_gives_identical_output() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let files = ["tools", "thinking", "length", "cut", "error"];
    for from in WireFormat::ALL {
        for name in files {
            let Some(input) = fixture(&format!("streams/{name}.{}.sse", from.label())) else {
                // Only these have no fixture: OpenAI's formats stream no signed thinking.
                let expected_missing =
                    name == "thinking" && matches!(from, WireFormat::OpenAiChat | WireFormat::OpenAiResponses);
                assert!(
                    expected_missing,
                    "fixture streams/{name}.{}.sse is missing",
                    from.label()
                );
                continue;
            };
            for to in WireFormat::ALL {
                let array = to == WireFormat::Gemini && name == "tools";
                let o = || stream_opts(to, true).with_array(array);
                let (whole, _) = run(from, to, &input, o(), &[input.len()]);
                let expected = normalize(to, &whole, array);
                let (bytewise, _) = run(from, to, &input, o(), &[1]);
                let ctx = format!("{name}: {} -> {}", from.label(), to.label());
                assert_eq!(normalize(to, &bytewise, array), expected, "{ctx} byte by byte");
                if from == to && !array && matches!(name, "tools" | "length" | "thinking") {
                    assert!(bytewise == whole && whole == input, "{ctx}: passthrough bytes differ");
                }
                for _ in 0..20 {
                    let sizes: Vec<usize> = (0..8).map(|_| rng.random_range(1..200)).collect();
                    let (out, _) = run(from, to, &input, o(), &sizes);
                    assert_eq!(normalize(to, &out, array), expected, "{ctx} chunks {sizes:?}");
                }
            }
        }
    }
    // Two chunks split at every boundary, for one translated pair per client format.
    let input = fixture("streams/tools.openai_chat.sse").unwrap();
    for to in [WireFormat::Anthropic, WireFormat::OpenAiResponses, WireFormat::Gemini] {
        let (whole, _) = run(
            WireFormat::OpenAiChat,
            to,
            &input,
            stream_opts(to, true),
            &[input.len()],
        );
        let expected = normalize(to, &whole, false);
        for k in 1..input.len() {
            let (out, _) = run(
                WireFormat::OpenAiChat,
                to,
                &input,
                stream_opts(to, true),
                &[k, input.len()],
            );
            assert_eq!(normalize(to, &out, false), expected, "split at {k}");
        }
    }
}

// -------------------------------------------------------------- requests

fn request_json(from: WireFormat, to: WireFormat, body: &[u8], stream: bool) -> Value {
    request_json_for("up-model", from, to, body, stream)
}

/// As `request_json`, for an upstream model of this name.
fn request_json_for(model: &str, from: WireFormat, to: WireFormat, body: &[u8], stream: bool) -> Value {
    let opts = RequestOptions {
        model: model.into(),
        ..opts(stream)
    };
    let out =
        convert_request(from, to, body, &opts).unwrap_or_else(|e| panic!("{} -> {}: {e}", from.label(), to.label()));
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn request_goldens_every_pair() {
    let bless = std::env::var_os("BLESS").is_some();
    for from in WireFormat::ALL {
        let input = fixture(&format!("requests/tools.{}.json", from.label())).unwrap();
        for to in WireFormat::ALL {
            if to == from {
                continue;
            }
            let got = match convert_request(from, to, &input, &opts(true)) {
                Ok(b) => serde_json::from_slice::<Value>(&b).unwrap(),
                Err(e) => json!({ "refused": format!("{e:?}") }),
            };
            let path = format!("{DIR}/requests/tools.{}_to_{}.json", from.label(), to.label());
            if bless {
                std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
                continue;
            }
            let want: Value = serde_json::from_slice(
                &std::fs::read(&path).unwrap_or_else(|_| panic!("missing {path}; run with BLESS=1")),
            )
            .unwrap();
            assert_eq!(got, want, "{} -> {}", from.label(), to.label());
        }
    }
}

fn shape_api(f: WireFormat) -> shape::Api {
    match f {
        WireFormat::OpenAiChat => shape::Api::OpenAiChat,
        WireFormat::OpenAiResponses => shape::Api::Responses,
        WireFormat::Anthropic => shape::Api::Anthropic,
        WireFormat::Gemini => shape::Api::Gemini,
    }
}

/// Every translation of every request fixture is one the upstream's API takes: the rules each
/// provider answers with a 400 (`common/shape.rs`).
#[test]
fn every_translated_request_is_one_the_upstream_takes() {
    let mut broken = Vec::new();
    let (mut checked, mut refused) = (0, Vec::new());
    for from in WireFormat::ALL {
        for name in ["tools", "thinking"] {
            let Some(input) = fixture(&format!("requests/{name}.{}.json", from.label())) else {
                continue;
            };
            for to in WireFormat::ALL.into_iter().filter(|&to| to != from) {
                for stream in [false, true] {
                    let out = match convert_request(from, to, &input, &opts(stream)) {
                        Ok(out) => out,
                        Err(e) => {
                            refused.push(format!("{name}: {} -> {}: {e}", from.label(), to.label()));
                            continue;
                        }
                    };
                    checked += 1;
                    let body = serde_json::from_slice::<Value>(&out).unwrap();
                    for v in shape::violations(shape_api(to), &body) {
                        broken.push(format!(
                            "{name}: {} -> {} (stream {stream}): {v}",
                            from.label(),
                            to.label()
                        ));
                    }
                }
            }
        }
    }
    // Four formats, two fixtures each, three other formats, streamed and not: 48 translations,
    // of which only those with stop sequences for a Responses upstream (which has none) refuse.
    assert_eq!(checked + refused.len(), 48);
    assert!(checked >= 40, "checked {checked}; refused: {refused:#?}");
    assert!(
        refused
            .iter()
            .all(|r| r.contains("stop sequences cannot be sent to a Responses upstream")),
        "{refused:#?}"
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The token counts sent across (an Anthropic client's count to a Gemini upstream and back), from
/// the fixtures' prompts, are ones the upstream's count endpoint takes.
#[test]
fn every_translated_count_is_one_the_upstream_takes() {
    let mut checked = 0;
    for name in ["tools", "thinking"] {
        // Claude Code's count: the request without the answer's settings.
        let mut anthropic: Value =
            serde_json::from_slice(&fixture(&format!("requests/{name}.anthropic.json")).unwrap()).unwrap();
        let fields = ["model", "messages", "system", "tools", "tool_choice", "thinking"];
        anthropic
            .as_object_mut()
            .unwrap()
            .retain(|k, _| fields.contains(&k.as_str()));
        assert_eq!(
            shape::violations(shape::Api::AnthropicCount, &anthropic),
            Vec::<String>::new()
        );
        // Gemini's, bare and wrapped.
        let gemini: Value = serde_json::from_slice(&fixture(&format!("requests/{name}.gemini.json")).unwrap()).unwrap();
        let bare = json!({"contents": gemini["contents"]});
        let mut inner = gemini.clone();
        inner["model"] = json!("models/client-model");
        let wrapped = json!({ "generateContentRequest": inner });
        let cases = [
            (WireFormat::Anthropic, WireFormat::Gemini, &anthropic),
            (WireFormat::Gemini, WireFormat::Anthropic, &bare),
            (WireFormat::Gemini, WireFormat::Anthropic, &wrapped),
            (WireFormat::Gemini, WireFormat::Gemini, &wrapped),
        ];
        for (from, to, body) in cases {
            let out = count_tokens::request(from, to, body.to_string().as_bytes(), &opts(false)).unwrap();
            let out: Value = serde_json::from_slice(&out).unwrap();
            let api = match to {
                WireFormat::Anthropic => shape::Api::AnthropicCount,
                _ => shape::Api::GeminiCount,
            };
            let broken = shape::violations(api, &out);
            assert!(
                broken.is_empty(),
                "{name}: {} -> {}: {broken:?}\n{out}",
                from.label(),
                to.label()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}

/// Embeddings requests as OpenAI clients send them, and their translations for Gemini, are ones the
/// upstreams take.
#[test]
fn every_translated_embeddings_request_is_one_the_upstream_takes() {
    let many: Vec<String> = (0..100).map(|i| format!("text {i}")).collect();
    for body in [
        json!({"model": "e", "input": "one text"}),
        json!({"model": "e", "input": ["a", "b c"], "dimensions": 256, "encoding_format": "base64"}),
        json!({"model": "e", "input": many, "encoding_format": "float", "user": "u-1"}),
    ] {
        assert_eq!(
            shape::violations(shape::Api::OpenAiEmbeddings, &body),
            Vec::<String>::new()
        );
        let out = embeddings::gemini_request(body.to_string().as_bytes(), "gemini-embedding-001").unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        let broken = shape::violations(shape::Api::GeminiEmbeddings, &out);
        assert!(broken.is_empty(), "{body}: {broken:?}\n{out}");
    }
}

#[test]
fn request_openai_to_anthropic_rules() {
    let input = fixture("requests/tools.openai_chat.json").unwrap();
    let v = request_json(WireFormat::OpenAiChat, WireFormat::Anthropic, &input, false);
    assert_eq!(v["model"], "up-model");
    assert_eq!(v["max_tokens"], 300);
    assert_eq!(v["temperature"], 1.0, "clamped to Anthropic's 0–1");
    assert!(v.get("top_p").is_none(), "never temperature and top_p together");
    assert_eq!(v["stop_sequences"], json!(["END"]), "whitespace-only stops dropped");
    assert_eq!(v["system"][0]["text"], "You are terse.");
    assert_eq!(v["system"][1]["text"], "Use tools when useful.");
    assert_eq!(
        v["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    // A model not known to take structured output gets the schema as a tool's input, beside the
    // client's own tools (so not forced).
    assert!(v.get("output_config").is_none(), "{v}");
    let json_tool = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "json_tool_call");
    assert!(json_tool.is_some_and(|t| t["input_schema"]["type"] == "object"), "{v}");
    let native = request_json_for(
        "claude-sonnet-4-5",
        WireFormat::OpenAiChat,
        WireFormat::Anthropic,
        &input,
        false,
    );
    assert_eq!(native["output_config"]["format"]["type"], "json_schema");
    assert_eq!(v["metadata"]["user_id"], "user-123");
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(
        msgs[0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
    );
    assert_eq!(
        msgs[0]["content"][2]["source"],
        json!({"type": "url", "url": "https://example.com/cat.jpg"})
    );
    assert_eq!(msgs[1]["content"][0], json!({"type": "text", "text": "Let me check."}));
    assert_eq!(msgs[1]["content"][1]["input"], json!({"city": "Paris"}));
    // Both results in ONE user turn, results first.
    assert_eq!(msgs[2]["role"], "user");
    assert_eq!(msgs[2]["content"].as_array().unwrap().len(), 2);
    assert!(msgs[2]["content"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["type"] == "tool_result"));
    // Tool-call-only turn: no empty text block; foreign id sanitised the same way in call and result.
    assert_eq!(msgs[3]["content"].as_array().unwrap().len(), 1);
    assert_eq!(msgs[3]["content"][0]["id"], "functions_lookup_0");
    assert_eq!(msgs[3]["content"][0]["input"], json!({}), "empty arguments become {{}}");
    assert_eq!(msgs[4]["content"][0]["tool_use_id"], "functions_lookup_0");
    assert_eq!(msgs[4]["content"][1], json!({"type": "text", "text": "Summarise."}));
    assert_eq!(msgs.len(), 5);
    assert_eq!(
        v["tools"][1]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
}

#[test]
fn request_anthropic_to_openai_rules() {
    let input = fixture("requests/tools.anthropic.json").unwrap();
    let v = request_json(WireFormat::Anthropic, WireFormat::OpenAiChat, &input, true);
    assert_eq!(v["stream_options"], json!({"include_usage": true}));
    assert_eq!(v["parallel_tool_calls"], false);
    assert!(v.get("reasoning_effort").is_none(), "up-model is not known to take it");
    // (A reasoning model takes no stop sequences: the request without them.)
    let mut unstopped: Value = serde_json::from_slice(&input).unwrap();
    unstopped.as_object_mut().unwrap().remove("stop_sequences");
    let out = convert_request(
        WireFormat::Anthropic,
        WireFormat::OpenAiChat,
        &serde_json::to_vec(&unstopped).unwrap(),
        &RequestOptions {
            model: "o4-mini".into(),
            ..opts(true)
        },
    )
    .unwrap();
    let reasoning: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        reasoning["reasoning_effort"], "low",
        "a reasoning model gets the effort"
    );
    let msgs = v["messages"].as_array().unwrap();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "tool", "user"]);
    assert_eq!(
        msgs[2]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(msgs[2]["content"], "Let me check.");
    assert_eq!(msgs[4]["content"], "Error: error: timeout", "is_error prefixes Error:");
    assert!(
        msgs[2].get("thinking_blocks").is_none(),
        "Claude thinking never goes to another vendor"
    );
}

#[test]
fn request_to_gemini_pairs_function_responses() {
    for from in [
        WireFormat::OpenAiChat,
        WireFormat::Anthropic,
        WireFormat::OpenAiResponses,
    ] {
        let input = fixture(&format!("requests/tools.{}.json", from.label())).unwrap();
        let v = request_json(from, WireFormat::Gemini, &input, true);
        assert!(
            v.get("model").is_none() && v.get("stream").is_none(),
            "model and stream live in the URL"
        );
        let contents = v["contents"].as_array().unwrap();
        let mut total_calls = 0;
        for (i, c) in contents.iter().enumerate() {
            assert!(!c["parts"].as_array().unwrap().is_empty(), "no empty parts");
            if c["role"] == "model" {
                let calls = c["parts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p.get("functionCall").is_some())
                    .count();
                total_calls += calls;
                if calls > 0 {
                    let next = &contents[i + 1];
                    let responses: Vec<&Value> = next["parts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|p| p.get("functionResponse"))
                        .collect();
                    assert_eq!(
                        responses.len(),
                        calls,
                        "{}: functionResponse count == functionCall count",
                        from.label()
                    );
                    assert!(responses
                        .iter()
                        .all(|r| r["name"] != r["id"] && r["response"].is_object()));
                    let first = c["parts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| p.get("functionCall").is_some())
                        .unwrap();
                    assert!(
                        first.get("thoughtSignature").is_some(),
                        "first call of a step carries a signature"
                    );
                }
            }
        }
        // The fixtures' calls (two parallel ones at least) are there: none was dropped, which the
        // loop alone would pass.
        assert!(total_calls >= 2, "{}: {v}", from.label());
    }
    // A Gemini signature smuggled through a Responses client comes back byte-exact.
    let input = fixture("requests/tools.openai_responses.json").unwrap();
    let v = request_json(WireFormat::OpenAiResponses, WireFormat::Gemini, &input, false);
    let parts = v["contents"][1]["parts"].as_array().unwrap();
    assert_eq!(parts[2]["thoughtSignature"], "c2lnLWE+Lw==");
    assert_eq!(parts[2]["functionCall"]["id"], "call_b");
}

#[test]
fn request_from_gemini_assigns_ids_and_pairs_results() {
    let input = fixture("requests/tools.gemini.json").unwrap();
    let v = request_json(WireFormat::Gemini, WireFormat::OpenAiChat, &input, false);
    let msgs = v["messages"].as_array().unwrap();
    let calls: Vec<&str> = msgs[2]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(calls, ["call_1_0", "call_1_1"]);
    assert_eq!(msgs[3]["tool_call_id"], "call_1_0");
    assert_eq!(msgs[3]["content"], "18C sunny");
    assert_eq!(msgs[4]["tool_call_id"], "call_1_1");
    assert_eq!(msgs[4]["content"], "{\"temp\":22}");
    assert_eq!(
        v["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(v["response_format"]["type"], "json_schema");
    assert_eq!(
        v["tools"][0]["function"]["parameters"]["type"], "object",
        "OpenAPI types lowered"
    );
}

/// Codex's hosted web search, its only tool, is left out for other upstreams: its `tool_choice`
/// goes with it (upstreams refuse a choice among no tools), for every upstream format.
#[test]
fn a_choice_among_no_tools_is_not_sent() {
    let body = json!({"model": "m", "input": "hi", "tools": [{"type": "web_search_preview"}], "tool_choice": "auto"});
    for to in [WireFormat::OpenAiChat, WireFormat::Anthropic, WireFormat::Gemini] {
        let v = request_json(WireFormat::OpenAiResponses, to, body.to_string().as_bytes(), false);
        for field in ["tools", "tool_choice", "toolConfig"] {
            assert!(v.get(field).is_none(), "{to:?}: {field} in {v}");
        }
    }
    // With a tool left, the choice stays.
    let mut with_tool = body.clone();
    with_tool["tools"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "function", "name": "shell", "parameters": {"type": "object"}}));
    let v = request_json(
        WireFormat::OpenAiResponses,
        WireFormat::OpenAiChat,
        with_tool.to_string().as_bytes(),
        false,
    );
    assert_eq!(v["tool_choice"], "auto", "{v}");
}

/// Responses to one model turn's calls of the same name, sent in separate contents, answer its
/// calls in order: each call gets its own result.
#[test]
fn gemini_results_in_separate_contents_answer_separate_calls() {
    let call = |city: &str| json!({"functionCall": {"name": "get_weather", "args": {"city": city}}});
    let result = |t: &str| json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": t}}}]});
    let body = json!({"contents": [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [call("Paris"), call("Rome")]},
        result("18C"),
        result("22C"),
    ]});
    let v = request_json(
        WireFormat::Gemini,
        WireFormat::OpenAiChat,
        body.to_string().as_bytes(),
        false,
    );
    let msgs = v["messages"].as_array().unwrap();
    let ids: Vec<&str> = msgs[1]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let answered: Vec<&str> = msgs[2..].iter().map(|m| m["tool_call_id"].as_str().unwrap()).collect();
    assert_eq!(answered, ids, "{v}");
}

#[test]
fn request_responses_to_chat_merges_calls() {
    let input = fixture("requests/tools.openai_responses.json").unwrap();
    let v = request_json(WireFormat::OpenAiResponses, WireFormat::OpenAiChat, &input, true);
    let msgs = v["messages"].as_array().unwrap();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "tool", "user"]);
    assert_eq!(
        msgs[2]["tool_calls"].as_array().unwrap().len(),
        2,
        "text + calls in ONE assistant message"
    );
    assert_eq!(
        msgs[2]["tool_calls"][1]["id"], "call_b",
        "smuggled signature stripped for OpenAI"
    );
    assert_eq!(v["max_tokens"], 400, "up-model is none of OpenAI's: the classic name");
    assert_eq!(v["reasoning_effort"], "high");
    assert_eq!(
        v["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
}

#[test]
fn request_thinking_replay_same_vendor_only() {
    // An OpenAI client replaying Claude's thinking_blocks (as this gateway gave them) to Claude.
    let body = json!({"model": "m", "reasoning_effort": "medium", "max_tokens": 8000, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "thinking_blocks": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig/+=="},
            {"type": "redacted_thinking", "data": "opaque"}],
         "reasoning_content": "Let me think.",
         "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"}]});
    let body = serde_json::to_vec(&body).unwrap();
    let v = request_json(WireFormat::OpenAiChat, WireFormat::Anthropic, &body, false);
    let assistant = &v["messages"][1]["content"];
    assert_eq!(
        assistant[0],
        json!({"type": "thinking", "thinking": "Let me think.", "signature": "sig/+=="})
    );
    assert_eq!(assistant[1], json!({"type": "redacted_thinking", "data": "opaque"}));
    assert_eq!(assistant[2]["type"], "tool_use");
    assert_eq!(v["thinking"], json!({"type": "enabled", "budget_tokens": 2048}));
    assert!(v.get("temperature").is_none());
    // The same history to Gemini: no Claude thinking, and the call gets the documented skip signature.
    let g = request_json(WireFormat::OpenAiChat, WireFormat::Gemini, &body, false);
    let parts = g["contents"][1]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["thoughtSignature"], "skip_thought_signature_validator");
    // Unsigned reasoning_content alone is never turned into a Claude thinking block.
    let unsigned = json!({"model": "m", "messages": [{"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo", "reasoning_content": "hmm"}, {"role": "user", "content": "and?"}]});
    let v = request_json(
        WireFormat::OpenAiChat,
        WireFormat::Anthropic,
        &serde_json::to_vec(&unsigned).unwrap(),
        false,
    );
    assert_eq!(v["messages"][1]["content"], json!([{"type": "text", "text": "yo"}]));
}

#[test]
fn thinking_budget_comes_on_top_of_the_default_limit_and_below_the_client_s() {
    let default = u64::from(opts(false).default_max_tokens);
    // No limit from the client: the answer keeps the default room, the budget is added to it.
    let body = serde_json::to_vec(&json!({"model": "m", "reasoning_effort": "high",
        "messages": [{"role": "user", "content": "hi"}]}))
    .unwrap();
    let v = request_json(WireFormat::OpenAiChat, WireFormat::Anthropic, &body, false);
    assert_eq!(v["thinking"], json!({"type": "enabled", "budget_tokens": 4096}));
    assert_eq!(v["max_tokens"], default + 4096);
    // The Responses API (Codex) without max_output_tokens, medium effort.
    let body = serde_json::to_vec(&json!({"model": "m", "reasoning": {"effort": "medium"}, "input": "hi"})).unwrap();
    let v = request_json(WireFormat::OpenAiResponses, WireFormat::Anthropic, &body, false);
    assert_eq!(v["max_tokens"], default + 2048);
    // The client's own limit holds: the budget fits below it.
    let body = serde_json::to_vec(&json!({"model": "m", "reasoning_effort": "high", "max_tokens": 3000,
        "messages": [{"role": "user", "content": "hi"}]}))
    .unwrap();
    let v = request_json(WireFormat::OpenAiChat, WireFormat::Anthropic, &body, false);
    assert_eq!(v["max_tokens"], 3000);
    assert_eq!(v["thinking"]["budget_tokens"], 2999);
    // A large budget without a limit stays within what every thinking Claude takes (32,000).
    let body = serde_json::to_vec(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 32768}}}))
    .unwrap();
    let v = request_json(WireFormat::Gemini, WireFormat::Anthropic, &body, false);
    assert_eq!(v["max_tokens"], 32_000);
    assert_eq!(v["thinking"]["budget_tokens"], 32_000 - default);
    // No thinking asked: the default alone.
    let v = request_json(
        WireFormat::OpenAiChat,
        WireFormat::Anthropic,
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        false,
    );
    assert_eq!(v["max_tokens"], default);
    assert!(v.get("thinking").is_none());
}

#[test]
fn a_gemini_signature_carried_in_a_tool_id_goes_back_to_gemini_from_every_client() {
    let id = "call_1__thought__c2lnLWE-Lw";
    let bodies = [
        (
            WireFormat::OpenAiChat,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": id, "content": "ok"}]}),
        ),
        (
            WireFormat::Anthropic,
            json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "ok"}]}]}),
        ),
        (
            WireFormat::OpenAiResponses,
            json!({"model": "m", "input": [{"role": "user", "content": "hi"},
                {"type": "function_call", "call_id": id, "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": id, "output": "ok"}]}),
        ),
    ];
    for (from, body) in bodies {
        let g = request_json(from, WireFormat::Gemini, &serde_json::to_vec(&body).unwrap(), false);
        let call = &g["contents"][1]["parts"][0];
        assert_eq!(call["thoughtSignature"], "c2lnLWE+Lw==", "{}: {g}", from.label());
        assert!(!g.to_string().contains("__thought__"), "{}: {g}", from.label());
        // Sent to a non-Gemini upstream, the id is the bare one on both sides of the call.
        let o = request_json(from, WireFormat::OpenAiChat, &serde_json::to_vec(&body).unwrap(), false);
        assert_eq!(
            o["messages"][1]["tool_calls"][0]["id"],
            "call_1",
            "{}: {o}",
            from.label()
        );
        assert_eq!(o["messages"][2]["tool_call_id"], "call_1", "{}: {o}", from.label());
    }
}

#[test]
fn request_json_modes_on_each_upstream() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let body = serde_json::to_vec(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}}}))
    .unwrap();
    let a = request_json_for(
        "claude-opus-4-1",
        WireFormat::OpenAiChat,
        WireFormat::Anthropic,
        &body,
        false,
    );
    // Claude's structured output takes closed objects only.
    let mut closed = schema.clone();
    closed["additionalProperties"] = json!(false);
    assert_eq!(
        a["output_config"]["format"],
        json!({"type": "json_schema", "schema": closed})
    );
    // A dictionary in the schema cannot be closed: a forced tool's input, even for a model that
    // has structured output.
    let dict = json!({"type": "object", "properties": {"scores": {"type": "object", "additionalProperties": {"type": "number"}}}});
    let dict_body = serde_json::to_vec(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": dict}}}))
    .unwrap();
    let a = request_json_for(
        "claude-opus-4-1",
        WireFormat::OpenAiChat,
        WireFormat::Anthropic,
        &dict_body,
        false,
    );
    assert!(a.get("output_config").is_none(), "{a}");
    assert_eq!(a["tools"][0]["input_schema"], dict, "{a}");
    // So does `additionalProperties: true` (Pydantic's `dict[str, Any]`), and a free-form object.
    for open in [
        json!({"type": "object", "properties": {"meta": {"type": "object", "additionalProperties": true}}}),
        json!({"type": "object", "properties": {"meta": {"type": "object"}}}),
    ] {
        let body = serde_json::to_vec(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": open}}}))
        .unwrap();
        let a = request_json_for(
            "claude-sonnet-4.5",
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            &body,
            false,
        );
        assert!(a.get("output_config").is_none(), "{open}: {a}");
    }
    // Claude models before it refuse `output_config.format`: the schema is a forced tool's input.
    for model in ["claude-sonnet-4-20250514", "claude-3-7-sonnet-latest", "glm-4.6"] {
        let a = request_json_for(model, WireFormat::OpenAiChat, WireFormat::Anthropic, &body, false);
        assert!(a.get("output_config").is_none(), "{model}: {a}");
        assert_eq!(a["tools"][0]["input_schema"], schema, "{model}: {a}");
        assert_eq!(
            a["tool_choice"],
            json!({"type": "tool", "name": "json_tool_call"}),
            "{model}: {a}"
        );
    }
    let g = request_json(WireFormat::OpenAiChat, WireFormat::Gemini, &body, false);
    assert_eq!(g["generationConfig"]["responseMimeType"], "application/json");
    assert_eq!(g["generationConfig"]["responseJsonSchema"], schema);
    let r = request_json(WireFormat::OpenAiChat, WireFormat::OpenAiResponses, &body, false);
    assert_eq!(
        r["text"]["format"],
        json!({"type": "json_schema", "name": "x", "schema": schema, "strict": true})
    );
    let obj = serde_json::to_vec(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_object"}}))
    .unwrap();
    let a = request_json(WireFormat::OpenAiChat, WireFormat::Anthropic, &obj, false);
    assert_eq!(a["tool_choice"], json!({"type": "tool", "name": "json_tool_call"}));
    // ...and the forced tool's input comes back as the answer text.
    let resp = br#"{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[{"type":"tool_use","id":"toolu_1","name":"json_tool_call","input":{"a":"b"}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}"#;
    let (out, _) = convert_response(WireFormat::Anthropic, WireFormat::OpenAiChat, resp, "m").unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "{\"a\":\"b\"}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Beside a call of the client's own tool (JSON mode with tools is not forced), the answer
    // still asks for that call.
    let resp = br#"{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[{"type":"tool_use","id":"toolu_1","name":"json_tool_call","input":{"a":"b"}},{"type":"tool_use","id":"toolu_2","name":"get_weather","input":{"city":"Paris"}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}"#;
    let (out, _) = convert_response(WireFormat::Anthropic, WireFormat::OpenAiChat, resp, "m").unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
}

#[test]
fn request_unsupported_is_refused_with_a_reason() {
    let cases: Vec<(WireFormat, WireFormat, Value)> = vec![
        (
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
        ),
        (
            WireFormat::OpenAiChat,
            WireFormat::Gemini,
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
        ),
        (
            // A Gemini Files API upload: only Gemini can read it.
            WireFormat::Gemini,
            WireFormat::Anthropic,
            json!({"contents": [{"role": "user", "parts": [{"fileData": {"mimeType": "image/png",
                "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}}, {"text": "describe"}]}]}),
        ),
        (
            // Legacy function calling: its answer (`message.function_call`) cannot be given.
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            json!({"model": "m", "messages": [{"role": "user", "content": "weather in Paris?"}],
                "functions": [{"name": "get_weather", "parameters": {"type": "object"}}], "function_call": {"name": "get_weather"}}),
        ),
        (
            WireFormat::Anthropic,
            WireFormat::OpenAiChat,
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
        ),
        (
            WireFormat::OpenAiResponses,
            WireFormat::OpenAiChat,
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
        ),
        (
            WireFormat::OpenAiResponses,
            WireFormat::Anthropic,
            // Offered web search is left out (Codex offers it on every request); forced, refused.
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}),
        ),
        (
            WireFormat::Gemini,
            WireFormat::OpenAiChat,
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]}),
        ),
        (
            WireFormat::OpenAiChat,
            WireFormat::OpenAiResponses,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": "END"}),
        ),
    ];
    for (from, to, body) in cases {
        let r = convert_request(from, to, &serde_json::to_vec(&body).unwrap(), &opts(false));
        assert!(
            matches!(r, Err(ConvertError::Unsupported(ref m)) if !m.is_empty()),
            "{body}: {r:?}"
        );
    }
    for (from, body) in [
        (WireFormat::OpenAiChat, &b"{"[..]),
        (WireFormat::Anthropic, b"[1]"),
        (WireFormat::Gemini, b"{}"),
    ] {
        let r = convert_request(from, WireFormat::OpenAiChat, body, &opts(false));
        assert!(matches!(r, Err(ConvertError::Invalid(_))), "{r:?}");
    }
}

// ------------------------------------------------------------- responses

#[test]
fn response_tools_every_pair() {
    for from in WireFormat::ALL {
        let body = fixture(&format!("responses/tools.{}.json", from.label())).unwrap();
        let upstream = parse_response(from, &body).unwrap();
        for to in WireFormat::ALL {
            let ctx = format!("{} -> {}", from.label(), to.label());
            let (out, usage) = convert_response(from, to, &body, "client-model").unwrap();
            let u = usage.expect("usage");
            assert_eq!(
                (u.input_tokens, u.output_tokens, u.cached_input_tokens),
                (100, 40, 20),
                "{ctx}"
            );
            let v: Value = serde_json::from_slice(&out).unwrap();
            let back = parse_response(to, &out).unwrap();
            assert_eq!(
                apiproxy::formats::ir::join_text(&back.content),
                "Let me check.",
                "{ctx}"
            );
            let calls: Vec<(String, Value)> = back
                .content
                .iter()
                .filter_map(|b| match b {
                    apiproxy::formats::ir::Block::ToolCall(tc) => {
                        Some((tc.name.clone(), serde_json::from_str(&tc.arguments).unwrap()))
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(
                calls,
                vec![
                    ("get_weather".into(), weather("Paris")),
                    ("get_weather".into(), weather("Rome"))
                ],
                "{ctx}"
            );
            assert_eq!(back.effective_finish(), FinishReason::ToolCalls, "{ctx}");
            let bu = back.usage.clone().unwrap();
            assert_eq!(
                (bu.input_tokens, bu.output_tokens, bu.cached_input_tokens),
                (100, 40, 20),
                "{ctx}"
            );
            match to {
                WireFormat::OpenAiChat => {
                    assert_eq!(v["choices"][0]["index"], 0);
                    assert_eq!(v["usage"]["total_tokens"], 140);
                    assert_eq!(v["model"], "client-model");
                    if let Some(id) = &upstream.id {
                        assert_eq!(&v["id"], id.as_str(), "{ctx}: upstream id kept");
                    }
                }
                WireFormat::Anthropic => {
                    assert_eq!(v["usage"]["input_tokens"], 80, "{ctx}: Anthropic input excludes cache");
                    assert_eq!(v["stop_reason"], "tool_use");
                }
                WireFormat::Gemini => {
                    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
                    assert_eq!(v["usageMetadata"]["totalTokenCount"], 140);
                }
                WireFormat::OpenAiResponses => {
                    assert_eq!(v["status"], "completed");
                    assert_eq!(v["usage"]["total_tokens"], 140);
                }
            }
        }
    }
}

#[test]
fn response_length_every_pair() {
    for from in WireFormat::ALL {
        let body = fixture(&format!("responses/length.{}.json", from.label())).unwrap();
        for to in WireFormat::ALL {
            let (out, _) = convert_response(from, to, &body, "m").unwrap();
            let back = parse_response(to, &out).unwrap();
            assert_eq!(back.finish, FinishReason::Length, "{} -> {}", from.label(), to.label());
            let v: Value = serde_json::from_slice(&out).unwrap();
            match to {
                WireFormat::OpenAiChat => assert_eq!(v["choices"][0]["finish_reason"], "length"),
                WireFormat::Anthropic => assert_eq!(v["stop_reason"], "max_tokens"),
                WireFormat::Gemini => assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS"),
                WireFormat::OpenAiResponses => {
                    assert_eq!(v["status"], "incomplete");
                    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
                }
            }
        }
    }
}

/// A Responses reasoning item carrying Claude's redacted thinking.
fn assert_redacted_item(item: &Value) {
    assert_eq!(item["type"], "reasoning", "{item}");
    assert_eq!(item["summary"], json!([]), "{item}");
    let carried = item["encrypted_content"].as_str().unwrap_or_default();
    assert!(carried.starts_with("anthropic-redacted:EmwKAhgB"), "{item}");
}

/// The request an Anthropic upstream gets when a Responses client replays `output` (then answers
/// its function call).
fn replay_to_anthropic(output: &Value) -> Value {
    let mut input = vec![json!({"role": "user", "content": "hi"})];
    input.extend(output.as_array().cloned().unwrap_or_default());
    let call = input
        .iter()
        .find(|i| i["type"] == "function_call")
        .cloned()
        .unwrap_or_default();
    input.push(json!({"type": "function_call_output", "call_id": call["call_id"], "output": "ok"}));
    let replay = serde_json::to_vec(&json!({"model": "m", "input": input})).unwrap();
    request_json(WireFormat::OpenAiResponses, WireFormat::Anthropic, &replay, false)
}

#[test]
fn response_thinking_and_stop_sequence() {
    let body = fixture("responses/thinking.anthropic.json").unwrap();
    let (out, usage) = convert_response(WireFormat::Anthropic, WireFormat::OpenAiChat, &body, "m").unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let m = &v["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], "Paris first.");
    assert_eq!(m["thinking_blocks"][0]["signature"], "EqQBCkYIBxgCKkD+sig==");
    assert_eq!(m["thinking_blocks"][1]["type"], "redacted_thinking");
    assert!(m["content"].is_null(), "tool-call-only: content null");
    assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(usage.unwrap().input_tokens, 55, "cache writes count as input");
    // Thinking, redacted thinking included, survives Anthropic -> Responses -> (client replays) ->
    // Anthropic byte-exact: Claude refuses a turn whose thinking blocks changed.
    let (out, _) = convert_response(WireFormat::Anthropic, WireFormat::OpenAiResponses, &body, "m").unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_redacted_item(&v["output"][1]);
    let a = replay_to_anthropic(&v["output"]);
    let redacted =
        "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB5URj2pzmuqc+ol";
    assert_eq!(
        a["messages"][1]["content"],
        json!([
            {"type": "thinking", "thinking": "Paris first.", "signature": "EqQBCkYIBxgCKkD+sig=="},
            {"type": "redacted_thinking", "data": redacted},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
        ])
    );
    // Gemini client: no Claude thinking blocks (vendor-bound), but thoughts are shown as thought parts.
    let (out, _) = convert_response(WireFormat::Anthropic, WireFormat::Gemini, &body, "m").unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0],
        json!({"text": "Paris first.", "thought": true})
    );
    // stop_sequence is kept for Anthropic clients, `stop` for OpenAI ones.
    let body = fixture("responses/stop_sequence.anthropic.json").unwrap();
    let (out, _) = convert_response(WireFormat::Anthropic, WireFormat::OpenAiChat, &body, "m").unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let (out, _) = convert_response(WireFormat::Anthropic, WireFormat::Gemini, &body, "m").unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
}

#[test]
fn response_gemini_blocked_prompt_and_usage_extraction() {
    let blocked =
        br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7}}"#;
    let (out, _) = convert_response(WireFormat::Gemini, WireFormat::OpenAiChat, blocked, "m").unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    for f in WireFormat::ALL {
        let body = fixture(&format!("responses/tools.{}.json", f.label())).unwrap();
        let u = extract_usage(f, &body).unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_input_tokens),
            (100, 40, 20),
            "{}",
            f.label()
        );
    }
    assert_eq!(extract_usage(WireFormat::OpenAiChat, b"not json"), None);
}

/// Claude streams a call of a tool without parameters as `input: {}` and no argument deltas (or an
/// empty one). Every client still gets `{}` as its arguments, as OpenAI sends them: clients parse
/// the arguments as JSON, and `""` is none.
#[test]
fn a_call_without_arguments_reaches_every_client_as_an_empty_object() {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut input = event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-x", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    );
    for (index, name, delta) in [(0, "list_files", None), (1, "get_time", Some(""))] {
        input += &event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": format!("toolu_{index}"), "name": name, "input": {}}}),
        );
        if let Some(partial) = delta {
            input += &event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": partial}}),
            );
        }
        input += &event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
    }
    input += &event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 5}}),
    );
    input += &event("message_stop", json!({"type": "message_stop"}));
    for to in WireFormat::ALL {
        let ctx = to.label();
        let (out, conv) = run(
            WireFormat::Anthropic,
            to,
            input.as_bytes(),
            stream_opts(to, false),
            &[input.len()],
        );
        assert!(conv.completed(), "{ctx}");
        let f = read_client(to, &out, false, false);
        assert!(f.clean_end && f.error.is_none(), "{ctx}: {f:?}");
        assert_eq!(
            tool_args(&f),
            vec![("list_files".into(), json!({})), ("get_time".into(), json!({}))],
            "{ctx}"
        );
        assert_eq!(f.finish.as_deref(), Some("tool_calls"), "{ctx}");
    }
}
