//! Independent client-side accumulators for the four stream formats, written the way the official SDKs
//! rebuild a message (formats.md §7): they check the protocol traps (§4, §6) and return the final message.
//! Shared by the golden and split tests; no code from `apiproxy::formats` is used to read the client side.

#![allow(dead_code)]

use serde_json::Value;

/// What a client ends up with.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Final {
    pub text: String,
    pub thinking: String,
    /// Thinking signature the client could replay (Anthropic `signature` / OpenAI `thinking_blocks`).
    pub signature: Option<String>,
    /// (id, name, parsed arguments)
    pub tools: Vec<(String, String, Value)>,
    /// Normalised: stop | length | tool_calls | content_filter.
    pub finish: Option<String>,
    /// (total input, output, cached input)
    pub usage: Option<(u64, u64, u64)>,
    pub error: Option<String>,
    /// The stream ended the way its format says a stream ends successfully.
    pub clean_end: bool,
}

/// `(event name, data)` of each SSE event; panics on a malformed frame (that is a test failure).
pub fn sse_events(bytes: &[u8]) -> Vec<(Option<String>, String)> {
    let text = std::str::from_utf8(bytes)
        .expect("client stream is UTF-8")
        .replace("\r\n", "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut event = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event: ") {
                event = Some(e.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push(d.to_string());
            } else if line.starts_with(':') {
            } else {
                panic!("bad SSE line {line:?} (the `data: ` prefix needs its space)");
            }
        }
        // A block of comments only (a keep-alive) dispatches nothing, as in every SSE client.
        if event.is_some() || !data.is_empty() {
            out.push((event, data.join("\n")));
        }
    }
    out
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON {s:?}: {e}"))
}

/// Parsed arguments; incomplete JSON (a cut stream), or none at all, stays a string. OpenAI's
/// arguments are always JSON text (`{}` for none), and clients parse them as such.
fn args(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

/// An Anthropic tool_use input from its `input_json_delta`s: none at all is `{}` (what Anthropic's
/// SDKs make of a tool without parameters).
fn anthropic_input(s: &str) -> Value {
    if s.is_empty() {
        Value::Object(Default::default())
    } else {
        args(s)
    }
}

/// The openai SDK's `chat.completions.stream` accumulator, strict about tool-call indices.
pub fn openai_chat(bytes: &[u8], include_usage: bool) -> Final {
    let mut f = Final::default();
    let mut tools: Vec<(String, String, String)> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut thinking_blocks = 0usize;
    for (event, data) in sse_events(bytes) {
        assert!(event.is_none(), "OpenAI chat streams have no event lines");
        assert!(!f.clean_end, "nothing after [DONE]");
        assert!(f.error.is_none(), "nothing after an error");
        if data == "[DONE]" {
            f.clean_end = true;
            continue;
        }
        let v = json(&data);
        if let Some(e) = v.get("error") {
            f.error = Some(e["message"].as_str().unwrap_or_default().to_string());
            continue;
        }
        assert_eq!(v["object"], "chat.completion.chunk");
        let id = v["id"].as_str().expect("chunk id").to_string();
        assert!(
            !id.is_empty() && v["created"].as_u64().unwrap_or(0) > 0,
            "real id and created"
        );
        ids.insert(id);
        let choices = v["choices"].as_array().expect("choices array");
        if choices.is_empty() {
            assert!(include_usage, "usage chunk only when asked");
            let u = &v["usage"];
            let (p, c, t) = (
                u["prompt_tokens"].as_u64().unwrap(),
                u["completion_tokens"].as_u64().unwrap(),
                u["total_tokens"].as_u64().unwrap(),
            );
            assert_eq!(t, p + c, "total == prompt + completion");
            f.usage = Some((p, c, u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0)));
            continue;
        }
        if include_usage {
            assert!(v.get("usage").is_some_and(Value::is_null), "usage:null on other chunks");
        } else {
            assert!(
                v.get("usage").is_none_or(Value::is_null),
                "no usage without include_usage"
            );
        }
        assert_eq!(choices.len(), 1);
        let ch = &choices[0];
        assert_eq!(ch["index"], 0, "choices[].index is always 0");
        let d = &ch["delta"];
        if let Some(t) = d["content"].as_str() {
            f.text.push_str(t);
        }
        if let Some(t) = d["reasoning_content"].as_str() {
            f.thinking.push_str(t);
        }
        if let Some(tb) = d["thinking_blocks"].as_array() {
            for b in tb {
                // The SDK's stream helper merges list entries by `index`, and raises without one.
                let i = b["index"].as_u64().expect("a thinking_blocks entry has an index") as usize;
                assert_eq!(i, thinking_blocks, "thinking_blocks indices count up: {b}");
                thinking_blocks += 1;
                if let Some(s) = b["signature"].as_str() {
                    f.signature = Some(s.to_string());
                }
            }
        }
        for tc in d["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().expect("tool index") as usize;
            assert!(i <= tools.len(), "tool index {i} skips ahead (SDK IndexError)");
            if i == tools.len() {
                let a = tc["function"]["arguments"]
                    .as_str()
                    .expect("first tool chunk has arguments");
                assert_ne!(a, "{}", "arguments must start as \"\", never \"{{}}\"");
                tools.push((
                    tc["id"].as_str().expect("first tool chunk has id").to_string(),
                    tc["function"]["name"].as_str().expect("name").to_string(),
                    a.to_string(),
                ));
            } else if let Some(a) = tc["function"]["arguments"].as_str() {
                assert!(tc.get("id").is_none_or(|x| x.as_str() == Some(tools[i].0.as_str())));
                tools[i].2.push_str(a);
            }
        }
        if let Some(fr) = ch["finish_reason"].as_str() {
            assert!(f.finish.is_none(), "one finish_reason");
            f.finish = Some(fr.to_string());
        }
    }
    assert!(ids.len() <= 1, "one id for the whole stream");
    f.tools = tools.into_iter().map(|(i, n, a)| (i, n, args(&a))).collect();
    f
}

/// The anthropic SDK's `messages.stream` accumulator: `event:` lines required, contiguous block indices,
/// matching starts and stops, delta types matching their block.
pub fn anthropic(bytes: &[u8]) -> Final {
    let mut f = Final::default();
    let mut blocks: Vec<(String, String, String, String, bool)> = Vec::new(); // type, text/json, id, name, stopped
    let mut open: Option<usize> = None;
    let mut started = false;
    // message_start usage: (uncached input, cache read, cache creation); message_delta overrides present fields.
    let mut start_usage = (0u64, 0u64, 0u64);
    let mut stopped = false;
    for (event, data) in sse_events(bytes) {
        let v = json(&data);
        let t = v["type"].as_str().expect("type").to_string();
        assert_eq!(event.as_deref(), Some(t.as_str()), "event: line must name the type");
        assert!(!stopped, "nothing after message_stop");
        assert!(f.error.is_none(), "nothing after an error");
        match t.as_str() {
            "message_start" => {
                assert!(!started);
                started = true;
                let m = &v["message"];
                assert!(m["id"].as_str().is_some_and(|s| !s.is_empty()));
                let u = &m["usage"];
                start_usage = (
                    u["input_tokens"].as_u64().unwrap(),
                    u["cache_read_input_tokens"].as_u64().unwrap_or(0),
                    u["cache_creation_input_tokens"].as_u64().unwrap_or(0),
                );
                assert!(
                    start_usage.0 + start_usage.1 > 0,
                    "message_start carries a non-zero input estimate"
                );
            }
            "content_block_start" => {
                assert!(started && open.is_none(), "one block at a time");
                let i = v["index"].as_u64().unwrap() as usize;
                assert_eq!(i, blocks.len(), "block indices contiguous from 0");
                let b = &v["content_block"];
                let bt = b["type"].as_str().unwrap().to_string();
                if bt == "tool_use" {
                    assert_eq!(b["input"], serde_json::json!({}));
                }
                blocks.push((
                    bt,
                    String::new(),
                    b["id"].as_str().unwrap_or_default().into(),
                    b["name"].as_str().unwrap_or_default().into(),
                    false,
                ));
                open = Some(i);
            }
            "content_block_delta" => {
                let i = v["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(i), "delta for the open block");
                let d = &v["delta"];
                let b = &mut blocks[i];
                match (d["type"].as_str().unwrap(), b.0.as_str()) {
                    ("text_delta", "text") => b.1.push_str(d["text"].as_str().unwrap()),
                    ("thinking_delta", "thinking") => b.1.push_str(d["thinking"].as_str().unwrap()),
                    ("signature_delta", "thinking") => f.signature = Some(d["signature"].as_str().unwrap().into()),
                    ("input_json_delta", "tool_use") => b.1.push_str(d["partial_json"].as_str().unwrap()),
                    (dt, bt) => panic!("delta {dt} into a {bt} block"),
                }
                // (Anthropic itself sends an empty first input_json_delta.)
                let empty = d.get("text").or(d.get("thinking")).is_some_and(|x| x == "");
                assert!(!empty, "no empty text deltas");
            }
            "content_block_stop" => {
                let i = v["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(i), "stop matches the open block");
                blocks[i].4 = true;
                open = None;
            }
            "message_delta" => {
                assert!(open.is_none(), "blocks closed before message_delta");
                let sr = v["delta"]["stop_reason"].as_str().expect("stop_reason");
                f.finish = Some(
                    match sr {
                        "end_turn" | "stop_sequence" => "stop",
                        "max_tokens" => "length",
                        "tool_use" => "tool_calls",
                        "refusal" => "content_filter",
                        other => panic!("stop_reason {other}"),
                    }
                    .into(),
                );
                let u = &v["usage"];
                let read = u["cache_read_input_tokens"].as_u64().unwrap_or(start_usage.1);
                let input = u["input_tokens"].as_u64().unwrap_or(start_usage.0)
                    + read
                    + u["cache_creation_input_tokens"].as_u64().unwrap_or(start_usage.2);
                f.usage = Some((input, u["output_tokens"].as_u64().unwrap(), read));
            }
            "message_stop" => {
                assert!(f.finish.is_some());
                stopped = true;
                f.clean_end = true;
            }
            "error" => f.error = Some(v["error"]["message"].as_str().unwrap().into()),
            "ping" => {}
            other => panic!("unknown event {other}"),
        }
    }
    for (bt, body, id, name, _) in blocks {
        match bt.as_str() {
            "text" => f.text.push_str(&body),
            "thinking" => f.thinking.push_str(&body),
            "tool_use" => {
                assert!(
                    id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                    "tool_use id pattern: {id}"
                );
                f.tools.push((id, name, anthropic_input(&body)))
            }
            _ => {}
        }
    }
    f
}

/// The openai SDK's `responses.stream` accumulator: `event:` lines, strictly increasing `sequence_number`,
/// a terminal `response.completed` carrying the full response.
pub fn responses(bytes: &[u8]) -> Final {
    let mut f = Final::default();
    let mut last_seq: Option<u64> = None;
    let mut delta_text = String::new();
    let mut delta_args: Vec<(String, String)> = Vec::new();
    let mut terminal = false;
    for (event, data) in sse_events(bytes) {
        let v = json(&data);
        let t = v["type"].as_str().expect("type").to_string();
        assert_eq!(event.as_deref(), Some(t.as_str()), "event: line must name the type");
        assert!(!terminal, "nothing after the terminal event");
        if let Some(s) = v["sequence_number"].as_u64() {
            assert!(
                last_seq.is_none_or(|l| s == l + 1),
                "sequence_number strictly increasing by 1"
            );
            last_seq = Some(s);
        }
        match t.as_str() {
            "response.output_text.delta" => delta_text.push_str(v["delta"].as_str().unwrap()),
            "response.reasoning_summary_text.delta" => f.thinking.push_str(v["delta"].as_str().unwrap()),
            "response.output_item.added" if v["item"]["type"] == "function_call" => {
                delta_args.push((v["item"]["id"].as_str().unwrap().into(), String::new()))
            }
            "response.function_call_arguments.delta" => {
                let id = v["item_id"].as_str().unwrap();
                let slot = delta_args
                    .iter_mut()
                    .find(|(i, _)| i == id)
                    .expect("args for a known item");
                slot.1.push_str(v["delta"].as_str().unwrap());
            }
            "response.completed" | "response.incomplete" => {
                terminal = true;
                f.clean_end = true;
                let r = &v["response"];
                for item in r["output"].as_array().expect("full output") {
                    match item["type"].as_str().unwrap() {
                        "message" => {
                            for p in item["content"].as_array().unwrap() {
                                f.text.push_str(p["text"].as_str().unwrap());
                            }
                        }
                        "function_call" => {
                            f.tools.push((
                                item["call_id"].as_str().unwrap().into(),
                                item["name"].as_str().unwrap().into(),
                                args(item["arguments"].as_str().unwrap()),
                            ));
                        }
                        "reasoning" => {
                            if let Some(e) = item["encrypted_content"].as_str() {
                                f.signature = Some(e.into());
                            }
                        }
                        _ => {}
                    }
                }
                assert_eq!(f.text, delta_text, "completed output matches the deltas");
                let streamed: Vec<Value> = delta_args.iter().map(|(_, a)| args(a)).collect();
                let done: Vec<Value> = f.tools.iter().map(|t| t.2.clone()).collect();
                assert_eq!(streamed, done, "completed arguments match the deltas");
                f.finish = Some(
                    match (
                        r["status"].as_str().unwrap(),
                        r["incomplete_details"]["reason"].as_str(),
                    ) {
                        ("incomplete", Some("content_filter")) => "content_filter",
                        ("incomplete", _) => "length",
                        _ if !f.tools.is_empty() => "tool_calls",
                        _ => "stop",
                    }
                    .into(),
                );
                let u = &r["usage"];
                if u.is_object() {
                    let (i, o) = (
                        u["input_tokens"].as_u64().unwrap(),
                        u["output_tokens"].as_u64().unwrap(),
                    );
                    assert_eq!(u["total_tokens"].as_u64().unwrap(), i + o);
                    f.usage = Some((i, o, u["input_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0)));
                }
            }
            "response.failed" => {
                terminal = true;
                f.error = Some(v["response"]["error"]["message"].as_str().unwrap().into());
            }
            "error" => f.error = Some(v["message"].as_str().unwrap().into()),
            _ => {}
        }
    }
    if f.error.is_some() {
        f.text = delta_text;
    }
    f
}

/// google-genai's `generate_content_stream`: one object per `data: ` event (or JSON array element).
pub fn gemini(bytes: &[u8], array: bool) -> Final {
    let chunks: Vec<Value> = if array {
        let v: Value = serde_json::from_slice(bytes).expect("a complete JSON array");
        v.as_array().expect("array").clone()
    } else {
        sse_events(bytes)
            .into_iter()
            .map(|(e, d)| {
                assert!(e.is_none());
                json(&d)
            })
            .collect()
    };
    let mut f = Final::default();
    let mut saw_call = false;
    for c in chunks {
        assert!(f.error.is_none(), "nothing after an error");
        if let Some(e) = c.get("error") {
            f.error = Some(e["message"].as_str().unwrap().into());
            continue;
        }
        assert!(f.finish.is_none(), "finishReason is the last chunk");
        let cand = &c["candidates"][0];
        assert_eq!(cand["content"]["role"], "model");
        assert_eq!(cand["index"], 0);
        for p in cand["content"]["parts"].as_array().unwrap() {
            if let Some(fc) = p.get("functionCall") {
                saw_call = true;
                assert!(fc["args"].is_object(), "whole args objects");
                f.tools.push((
                    fc["id"].as_str().unwrap_or_default().into(),
                    fc["name"].as_str().unwrap().into(),
                    fc["args"].clone(),
                ));
                if let Some(s) = p["thoughtSignature"].as_str() {
                    f.signature = Some(s.into());
                }
            } else if p["thought"] == true {
                f.thinking.push_str(p["text"].as_str().unwrap());
            } else if let Some(t) = p["text"].as_str() {
                f.text.push_str(t);
            }
        }
        if let Some(u) = c.get("usageMetadata") {
            let p = u["promptTokenCount"].as_u64().unwrap();
            let o = u["candidatesTokenCount"].as_u64().unwrap_or(0) + u["thoughtsTokenCount"].as_u64().unwrap_or(0);
            assert_eq!(u["totalTokenCount"].as_u64().unwrap(), p + o);
            f.usage = Some((p, o, u["cachedContentTokenCount"].as_u64().unwrap_or(0)));
        }
        if let Some(fr) = cand["finishReason"].as_str() {
            f.finish = Some(
                match fr {
                    "STOP" if saw_call => "tool_calls",
                    "STOP" => "stop",
                    "MAX_TOKENS" => "length",
                    _ => "content_filter",
                }
                .into(),
            );
            f.clean_end = true;
        }
    }
    f
}
