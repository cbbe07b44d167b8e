//! What the real upstream APIs refuse in a request body, checked the way they check it: the strict
//! mocks answer a violation with a 400, and the golden tests check every translated request. Each
//! rule is one the provider documents or answers with a 400 (quoted where the message is known),
//! so a translation that breaks one fails here instead of in production.

use serde_json::{Map, Value};

/// The request APIs whose bodies are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    OpenAiChat,
    Responses,
    Anthropic,
    Gemini,
    /// `/v1/messages/count_tokens`.
    AnthropicCount,
    /// `:countTokens`.
    GeminiCount,
    /// `/v1/embeddings`.
    OpenAiEmbeddings,
    /// `:batchEmbedContents`.
    GeminiEmbeddings,
}

/// Every rule `body` breaks for `api`; empty when the provider would take it.
pub fn violations(api: Api, body: &Value) -> Vec<String> {
    let mut v = Violations(Vec::new());
    match body.as_object() {
        None => v.add("the body is not a JSON object"),
        Some(o) => match api {
            Api::OpenAiChat => chat(o, &mut v),
            Api::Responses => responses(o, &mut v),
            Api::Anthropic => anthropic(o, &mut v),
            Api::Gemini => gemini(o, &mut v),
            Api::AnthropicCount => anthropic_count(o, &mut v),
            Api::GeminiCount => gemini_count(o, &mut v),
            Api::OpenAiEmbeddings => openai_embeddings(o, &mut v),
            Api::GeminiEmbeddings => gemini_embeddings(o, &mut v),
        },
    }
    v.0
}

struct Violations(Vec<String>);

impl Violations {
    fn add(&mut self, s: impl Into<String>) {
        self.0.push(s.into());
    }
    fn check(&mut self, ok: bool, s: impl FnOnce() -> String) {
        if !ok {
            self.0.push(s());
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// OpenAI's `user`: "Invalid 'user': string too long. Expected a string with maximum length 64".
fn openai_user(o: &Map<String, Value>, v: &mut Violations) {
    if let Some(u) = o.get("user") {
        v.check(u.as_str().is_some_and(|u| u.chars().count() <= 64), || {
            format!("Invalid 'user': string too long. Expected a string with maximum length 64 ({u})")
        });
    }
}

fn in_range(o: &Map<String, Value>, key: &str, lo: f64, hi: f64, v: &mut Violations) {
    if let Some(x) = o.get(key) {
        v.check(x.as_f64().is_some_and(|x| (lo..=hi).contains(&x)), || {
            format!("{key} must be a number in [{lo}, {hi}], got {x}")
        });
    }
}

fn positive_int(o: &Map<String, Value>, key: &str, v: &mut Violations) {
    if let Some(x) = o.get(key) {
        v.check(x.as_u64().is_some_and(|n| n >= 1), || {
            format!("{key} must be an integer >= 1, got {x}")
        });
    }
}

/// `^[a-zA-Z0-9_-]{1,max}$`: OpenAI's function names, Anthropic's tool names (max 128 there) and ids.
fn plain_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Gemini's function names: a letter or `_` first, then letters, digits, `_ . : -`, at most 64.
fn gemini_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok && s.len() <= 64 && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

fn array<'a>(o: &'a Map<String, Value>, key: &str, v: &mut Violations) -> &'a [Value] {
    match o.get(key) {
        None => &[],
        Some(Value::Array(a)) => a,
        Some(x) => {
            v.add(format!("{key} must be an array, got {x}"));
            &[]
        }
    }
}

// ------------------------------------------------------------------------------- OpenAI Chat

fn chat(o: &Map<String, Value>, v: &mut Violations) {
    v.check(o.get("model").is_some_and(Value::is_string), || {
        "model is required".into()
    });
    let messages = array(o, "messages", v);
    v.check(!messages.is_empty(), || "messages must be a non-empty array".into());
    let stream = o.get("stream").and_then(Value::as_bool).unwrap_or(false);
    v.check(stream || o.get("stream_options").is_none_or(Value::is_null), || {
        "The 'stream_options' parameter is only allowed when 'stream' is enabled.".into()
    });
    in_range(o, "temperature", 0.0, 2.0, v);
    in_range(o, "top_p", 0.0, 1.0, v);
    openai_user(o, v);
    positive_int(o, "max_tokens", v);
    positive_int(o, "max_completion_tokens", v);
    positive_int(o, "n", v);
    // api.openai.com takes at most 4 `stop` sequences, but OpenAI-style servers (vLLM, llama.cpp)
    // take more, and the gateway cannot tell them apart: not checked.
    // DeepSeek's reasoner (always in thinking mode) wants its reasoning back on each tool call.
    if o.get("model").and_then(Value::as_str) == Some("deepseek-reasoner") {
        for (i, m) in messages.iter().enumerate() {
            let calls = m
                .get("tool_calls")
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty());
            v.check(!calls || str_of(m, "reasoning_content").is_some(), || {
                format!("Missing `reasoning_content` field in the assistant message at message index {i}")
            });
        }
    }
    let mut open_calls: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = str_of(m, "role").unwrap_or("");
        if role != "tool" && !open_calls.is_empty() {
            v.add(format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each \
                 'tool_call_id'. The following tool_call_ids did not have response messages: {} (messages[{i}])",
                open_calls.join(", ")
            ));
            open_calls.clear();
        }
        match role {
            "system" | "developer" | "user" => chat_content(m, i, v),
            "assistant" => {
                let calls = m.get("tool_calls").and_then(Value::as_array);
                for (j, c) in calls.into_iter().flatten().enumerate() {
                    let id = str_of(c, "id").unwrap_or("");
                    v.check(!id.is_empty(), || {
                        format!("messages[{i}].tool_calls[{j}].id is required")
                    });
                    v.check(str_of(c, "type") == Some("function"), || {
                        format!("messages[{i}].tool_calls[{j}].type must be 'function'")
                    });
                    let name = c.pointer("/function/name").and_then(Value::as_str).unwrap_or("");
                    v.check(plain_name(name, 64), || {
                        format!("messages[{i}].tool_calls[{j}].function.name {name:?}")
                    });
                    v.check(c.pointer("/function/arguments").is_some_and(Value::is_string), || {
                        format!("messages[{i}].tool_calls[{j}].function.arguments must be a string")
                    });
                    open_calls.push(id.to_string());
                }
                let has_calls = calls.is_some_and(|c| !c.is_empty());
                v.check(has_calls || m.get("content").is_some_and(|c| !c.is_null()), || {
                    format!("messages[{i}]: an assistant message needs content or tool_calls")
                });
            }
            "tool" => {
                let id = str_of(m, "tool_call_id").unwrap_or("");
                match open_calls.iter().position(|c| c == id) {
                    Some(p) => {
                        open_calls.remove(p);
                    }
                    None => v.add(format!(
                        "messages[{i}]: messages with role 'tool' must be a response to a preceeding message \
                         with 'tool_calls' (tool_call_id {id:?})"
                    )),
                }
                v.check(m.get("content").is_some_and(|c| c.is_string() || c.is_array()), || {
                    format!("messages[{i}].content of a tool message must be a string or parts")
                });
            }
            other => v.add(format!(
                "messages[{i}].role {other:?} is not one of system, developer, user, assistant, tool"
            )),
        }
    }
    for (j, t) in array(o, "tools", v).iter().enumerate() {
        v.check(str_of(t, "type") == Some("function"), || {
            format!("tools[{j}].type must be 'function'")
        });
        let name = t.pointer("/function/name").and_then(Value::as_str).unwrap_or("");
        v.check(plain_name(name, 64), || {
            format!("tools[{j}].function.name {name:?} does not match ^[a-zA-Z0-9_-]{{1,64}}$")
        });
    }
}

fn chat_content(m: &Value, i: usize, v: &mut Violations) {
    match m.get("content") {
        Some(Value::String(_)) => {}
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                match str_of(p, "type") {
                    Some("text") => v.check(p.get("text").is_some_and(Value::is_string), || {
                        format!("messages[{i}].content[{j}].text must be a string")
                    }),
                    Some("image_url") => v.check(p.pointer("/image_url/url").is_some_and(Value::is_string), || {
                        format!("messages[{i}].content[{j}].image_url.url is required")
                    }),
                    Some("input_audio" | "file") => {}
                    other => v.add(format!(
                        "messages[{i}].content[{j}].type {other:?} is not a content part type"
                    )),
                }
            }
        }
        other => v.add(format!(
            "messages[{i}].content must be a string or an array of parts, got {other:?}"
        )),
    }
}

// ------------------------------------------------------------------------------- Responses

fn responses(o: &Map<String, Value>, v: &mut Violations) {
    v.check(o.get("model").is_some_and(Value::is_string), || {
        "model is required".into()
    });
    in_range(o, "temperature", 0.0, 2.0, v);
    in_range(o, "top_p", 0.0, 1.0, v);
    openai_user(o, v);
    if let Some(x) = o.get("max_output_tokens") {
        v.check(x.as_u64().is_some_and(|n| n >= 16), || {
            format!("max_output_tokens must be an integer >= 16, got {x}")
        });
    }
    let chained = o.get("previous_response_id").is_some_and(|x| !x.is_null());
    let mut calls: Vec<String> = Vec::new();
    match o.get("input") {
        Some(Value::String(_)) => {}
        Some(Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let kind = str_of(it, "type").unwrap_or(if it.get("role").is_some() { "message" } else { "" });
                match kind {
                    "message" => {
                        let role = str_of(it, "role").unwrap_or("");
                        v.check(["user", "assistant", "system", "developer"].contains(&role), || {
                            format!("input[{i}].role {role:?}")
                        });
                        responses_content(it, role, i, v);
                    }
                    "function_call" => {
                        let call_id = str_of(it, "call_id").unwrap_or("");
                        v.check(!call_id.is_empty(), || format!("input[{i}].call_id is required"));
                        let name = str_of(it, "name").unwrap_or("");
                        v.check(plain_name(name, 64), || format!("input[{i}].name {name:?}"));
                        v.check(it.get("arguments").is_some_and(Value::is_string), || {
                            format!("input[{i}].arguments must be a string")
                        });
                        calls.push(call_id.to_string());
                    }
                    "function_call_output" => {
                        let call_id = str_of(it, "call_id").unwrap_or("");
                        v.check(chained || calls.iter().any(|c| c == call_id), || {
                            format!("No tool call found for function call output with call_id {call_id}.")
                        });
                        v.check(it.get("output").is_some_and(|x| x.is_string() || x.is_array()), || {
                            format!("input[{i}].output must be a string or content parts")
                        });
                    }
                    "reasoning" => v.check(it.get("summary").is_some_and(Value::is_array), || {
                        format!("input[{i}]: a reasoning item needs its summary array")
                    }),
                    "image_generation_call" => {
                        let id = str_of(it, "id").unwrap_or("");
                        v.check(!id.is_empty(), || format!("input[{i}].id is required"));
                    }
                    "item_reference" | "custom_tool_call" | "custom_tool_call_output" | "web_search_call" => {}
                    other => v.add(format!("input[{i}].type {other:?} is not an input item type")),
                }
            }
        }
        other => v.add(format!("input must be a string or an array of items, got {other:?}")),
    }
    for (j, t) in array(o, "tools", v).iter().enumerate() {
        if str_of(t, "type") == Some("function") {
            let name = str_of(t, "name").unwrap_or("");
            v.check(plain_name(name, 64), || {
                format!("tools[{j}].name {name:?} (Responses tools are flat: name at the top, no `function` object)")
            });
        }
    }
    if let Some(tc) = o.get("tool_choice").filter(|t| t.is_object()) {
        if str_of(tc, "type") == Some("function") {
            v.check(str_of(tc, "name").is_some(), || {
                "tool_choice.name is required for type function".into()
            });
        }
    }
}

fn responses_content(it: &Value, role: &str, i: usize, v: &mut Violations) {
    match it.get("content") {
        Some(Value::String(_)) => {}
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let kind = str_of(p, "type").unwrap_or("");
                let allowed: &[&str] = if role == "assistant" {
                    &["output_text", "refusal"]
                } else {
                    &["input_text", "input_image", "input_file", "input_audio"]
                };
                v.check(allowed.contains(&kind), || {
                    format!("input[{i}].content[{j}].type {kind:?} is not allowed for role {role} (one of {allowed:?})")
                });
            }
        }
        other => v.add(format!("input[{i}].content must be a string or parts, got {other:?}")),
    }
}

// ------------------------------------------------------------------------------- Token counts

/// Anthropic's count takes the prompt's fields only (`max_tokens`, `stream`, sampling: "Extra
/// inputs are not permitted"); the prompt itself is checked as a Messages request's.
fn anthropic_count(o: &Map<String, Value>, v: &mut Violations) {
    const FIELDS: [&str; 7] = [
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "mcp_servers",
    ];
    for key in o.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        v.add(format!("{key}: Extra inputs are not permitted"));
    }
    let mut as_request = o.clone();
    as_request.insert("max_tokens".into(), u32::MAX.into());
    anthropic(&as_request, v);
}

/// Gemini's count takes `contents`, or a whole `generateContentRequest` naming its model, not both.
fn gemini_count(o: &Map<String, Value>, v: &mut Violations) {
    match (o.get("contents"), o.get("generateContentRequest")) {
        (Some(_), Some(_)) => v.add("contents and generateContentRequest are mutually exclusive"),
        (None, None) => v.add("either contents or generateContentRequest is required"),
        (Some(_), None) => {
            for key in o.keys().filter(|k| *k != "contents") {
                v.add(format!(
                    "Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."
                ));
            }
            gemini(o, v);
        }
        (None, Some(Value::Object(inner))) => {
            let model = inner.get("model").and_then(Value::as_str);
            v.check(model.is_some_and(|m| m.starts_with("models/")), || {
                "generateContentRequest.model: must be `models/{model}`".into()
            });
            let mut prompt = inner.clone();
            prompt.remove("model");
            gemini(&prompt, v);
        }
        (None, Some(x)) => v.add(format!("generateContentRequest must be an object, got {x}")),
    }
}

// ------------------------------------------------------------------------------- Embeddings

fn openai_embeddings(o: &Map<String, Value>, v: &mut Violations) {
    v.check(o.get("model").is_some_and(Value::is_string), || {
        "you must provide a model parameter".into()
    });
    let input_ok = match o.get("input") {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(items)) => {
            !items.is_empty()
                && items.len() <= 2048
                && items
                    .iter()
                    .all(|i| i.as_str().is_some_and(|s| !s.is_empty()) || i.is_array() || i.is_u64())
        }
        _ => false,
    };
    v.check(input_ok, || {
        "'input' : input must be a non-empty string or array".into()
    });
    if let Some(f) = o.get("encoding_format") {
        v.check(f == "float" || f == "base64", || {
            format!("encoding_format: {f} is not one of float, base64")
        });
    }
}

/// Gemini's batch: at most 100 requests, each naming its model as `models/…`, with text parts.
fn gemini_embeddings(o: &Map<String, Value>, v: &mut Violations) {
    for key in o.keys().filter(|k| *k != "requests") {
        v.add(format!(
            "Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."
        ));
    }
    let requests = array(o, "requests", v);
    v.check(!requests.is_empty() && requests.len() <= 100, || {
        format!(
            "* BatchEmbedContentsRequest.requests: between 1 and 100 requests, got {}",
            requests.len()
        )
    });
    for (i, r) in requests.iter().enumerate() {
        v.check(str_of(r, "model").is_some_and(|m| m.starts_with("models/")), || {
            format!("requests[{i}].model: must be `models/{{model}}`")
        });
        let parts = r.pointer("/content/parts").and_then(Value::as_array);
        v.check(
            parts.is_some_and(|p| !p.is_empty() && p.iter().all(|p| str_of(p, "text").is_some())),
            || format!("requests[{i}].content: text parts required"),
        );
    }
}

// ------------------------------------------------------------------------------- Anthropic

fn anthropic(o: &Map<String, Value>, v: &mut Violations) {
    v.check(o.get("model").is_some_and(Value::is_string), || {
        "model: Field required".into()
    });
    let max_tokens = o.get("max_tokens").and_then(Value::as_u64);
    v.check(max_tokens.is_some_and(|n| n >= 1), || {
        "max_tokens: Field required".into()
    });
    in_range(o, "temperature", 0.0, 1.0, v);
    in_range(o, "top_p", 0.0, 1.0, v);
    v.check(!(o.contains_key("temperature") && o.contains_key("top_p")), || {
        "`temperature` and `top_p` cannot both be specified for this model.".into()
    });
    for (j, s) in array(o, "stop_sequences", v).iter().enumerate() {
        v.check(s.as_str().is_some_and(|s| !s.trim().is_empty()), || {
            format!("stop_sequences[{j}]: each stop sequence must contain non-whitespace")
        });
    }
    match o.get("system") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (j, b) in blocks.iter().enumerate() {
                v.check(
                    str_of(b, "type") == Some("text") && str_of(b, "text").is_some_and(|t| !t.is_empty()),
                    || format!("system[{j}]: system blocks must be non-empty text blocks"),
                );
            }
        }
        Some(x) => v.add(format!("system must be a string or text blocks, got {x}")),
    }
    let thinking = o.get("thinking").filter(|t| str_of(t, "type") == Some("enabled"));
    if let Some(t) = thinking {
        let budget = t.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0);
        v.check(budget >= 1024, || {
            format!("thinking.budget_tokens: must be >= 1024, got {budget}")
        });
        v.check(max_tokens.is_some_and(|m| m > budget), || {
            "`max_tokens` must be greater than `thinking.budget_tokens`".into()
        });
        v.check(o.get("temperature").is_none_or(|t| t.as_f64() == Some(1.0)), || {
            "`temperature` may only be set to 1 when thinking is enabled".into()
        });
        v.check(o.get("top_k").is_none(), || {
            "`top_k` is not allowed when thinking is enabled".into()
        });
        let tc = o.get("tool_choice").and_then(|t| str_of(t, "type"));
        v.check(matches!(tc, None | Some("auto" | "none")), || {
            "Thinking may not be enabled when tool_choice forces tool use.".into()
        });
    }
    if let Some(tc) = o.get("tool_choice") {
        match str_of(tc, "type") {
            Some("auto" | "any" | "none") => {}
            Some("tool") => v.check(str_of(tc, "name").is_some(), || {
                "tool_choice.name: Field required".into()
            }),
            _ => v.add(format!("tool_choice: {tc} is not auto, any, tool or none")),
        }
    }
    for (j, t) in array(o, "tools", v).iter().enumerate() {
        let custom = str_of(t, "type").is_none_or(|k| k == "custom");
        if custom {
            let name = str_of(t, "name").unwrap_or("");
            v.check(plain_name(name, 128), || {
                format!("tools.{j}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$' ({name:?})")
            });
            v.check(
                t.pointer("/input_schema/type").and_then(Value::as_str) == Some("object"),
                || format!("tools.{j}.custom.input_schema.type: Input should be 'object'"),
            );
        }
    }
    let messages = array(o, "messages", v);
    v.check(!messages.is_empty(), || {
        "messages: at least one message is required".into()
    });
    if let Some(first) = messages.first() {
        v.check(str_of(first, "role") == Some("user"), || {
            "messages: the first message must use the \"user\" role".into()
        });
    }
    let mut pending_uses: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = str_of(m, "role").unwrap_or("");
        v.check(role == "user" || role == "assistant", || {
            format!("messages.{i}.role: Input should be 'user' or 'assistant'")
        });
        let blocks: Vec<Value> = match m.get("content") {
            Some(Value::String(s)) => {
                let last_assistant = i + 1 == messages.len() && role == "assistant";
                v.check(!s.is_empty() || last_assistant, || {
                    format!("messages.{i}: text content blocks must be non-empty")
                });
                vec![]
            }
            Some(Value::Array(b)) => {
                let final_assistant = i + 1 == messages.len() && role == "assistant";
                v.check(!b.is_empty() || final_assistant, || {
                    format!("messages.{i}: all messages must have non-empty content except for the optional final assistant message")
                });
                b.clone()
            }
            other => {
                v.add(format!(
                    "messages.{i}.content must be a string or blocks, got {other:?}"
                ));
                vec![]
            }
        };
        // The tool_use ids of the previous assistant turn must all be answered at the start of this one.
        if !pending_uses.is_empty() {
            let mut leading_results = Vec::new();
            for b in &blocks {
                if str_of(b, "type") != Some("tool_result") {
                    break;
                }
                leading_results.push(str_of(b, "tool_use_id").unwrap_or("").to_string());
            }
            let missing: Vec<&String> = pending_uses.iter().filter(|u| !leading_results.contains(u)).collect();
            v.check(role == "user" && missing.is_empty(), || {
                format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing:?}. \
                     Each `tool_use` block must have a corresponding `tool_result` block in the next message."
                )
            });
        }
        let answered = std::mem::take(&mut pending_uses);
        let mut seen_other = false;
        for (j, b) in blocks.iter().enumerate() {
            let kind = str_of(b, "type").unwrap_or("");
            match kind {
                "text" => v.check(str_of(b, "text").is_some_and(|t| !t.is_empty()), || {
                    format!("messages.{i}.content.{j}: text content blocks must be non-empty")
                }),
                "image" => {
                    v.check(role == "user", || {
                        format!("messages.{i}.content.{j}: 'image' blocks are not permitted within assistant turns.")
                    });
                    anthropic_image(b, i, j, v)
                }
                "document" | "search_result" => {}
                "thinking" => {
                    v.check(role == "assistant", || {
                        format!("messages.{i}.content.{j}: thinking only in assistant turns")
                    });
                    v.check(str_of(b, "signature").is_some_and(|s| !s.is_empty()), || {
                        format!("messages.{i}.content.{j}.thinking.signature: Field required")
                    });
                }
                "redacted_thinking" => v.check(str_of(b, "data").is_some(), || {
                    format!("messages.{i}.content.{j}.redacted_thinking.data: Field required")
                }),
                "tool_use" => {
                    v.check(role == "assistant", || {
                        format!("messages.{i}.content.{j}: tool_use only in assistant turns")
                    });
                    let id = str_of(b, "id").unwrap_or("");
                    v.check(plain_name(id, usize::MAX), || {
                        format!("messages.{i}.content.{j}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$' ({id:?})")
                    });
                    let name = str_of(b, "name").unwrap_or("");
                    v.check(plain_name(name, 200), || {
                        format!("messages.{i}.content.{j}.tool_use.name {name:?}")
                    });
                    v.check(b.get("input").is_some_and(Value::is_object), || {
                        format!("messages.{i}.content.{j}.tool_use.input: Input should be a valid dictionary")
                    });
                    pending_uses.push(id.to_string());
                }
                "tool_result" => {
                    v.check(role == "user", || {
                        format!("messages.{i}.content.{j}: tool_result only in user turns")
                    });
                    let id = str_of(b, "tool_use_id").unwrap_or("");
                    v.check(answered.iter().any(|u| u == id), || {
                        format!(
                            "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. \
                             Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        )
                    });
                    v.check(!seen_other, || {
                        format!("messages.{i}.content.{j}: tool_result blocks must come before any other content in the turn")
                    });
                    if let Some(Value::Array(inner)) = b.get("content") {
                        for (k, c) in inner.iter().enumerate() {
                            match str_of(c, "type") {
                                Some("text") => v.check(str_of(c, "text").is_some_and(|t| !t.is_empty()), || {
                                    format!(
                                        "messages.{i}.content.{j}.content.{k}: text content blocks must be non-empty"
                                    )
                                }),
                                Some("image") => anthropic_image(c, i, j, v),
                                Some("document" | "search_result") => {}
                                other => v.add(format!("messages.{i}.content.{j}.content.{k}.type {other:?}")),
                            }
                        }
                    }
                }
                other => v.add(format!(
                    "messages.{i}.content.{j}.type {other:?} is not a content block type"
                )),
            }
            if kind != "tool_result" {
                seen_other = true;
            }
        }
    }
    v.check(
        pending_uses.is_empty() || messages.last().is_some_and(|m| str_of(m, "role") == Some("assistant")),
        || "tool_use blocks without tool_result".into(),
    );
}

fn anthropic_image(b: &Value, i: usize, j: usize, v: &mut Violations) {
    let source = b.get("source");
    match source.and_then(|s| str_of(s, "type")) {
        Some("base64") => {
            let mt = source.and_then(|s| str_of(s, "media_type")).unwrap_or("");
            v.check(["image/jpeg", "image/png", "image/gif", "image/webp"].contains(&mt), || {
                format!("messages.{i}.content.{j}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp' ({mt:?})")
            });
            v.check(source.and_then(|s| str_of(s, "data")).is_some(), || {
                format!("messages.{i}.content.{j}.image.source.data: Field required")
            });
        }
        Some("url") => v.check(source.and_then(|s| str_of(s, "url")).is_some(), || {
            format!("messages.{i}.content.{j}.image.source.url: Field required")
        }),
        Some("file") => {}
        other => v.add(format!("messages.{i}.content.{j}.image.source.type {other:?}")),
    }
}

// ------------------------------------------------------------------------------- Gemini

fn gemini(o: &Map<String, Value>, v: &mut Violations) {
    for key in [
        "messages",
        "model",
        "max_tokens",
        "stream",
        "tools_choice",
        "temperature",
    ] {
        v.check(!o.contains_key(key), || {
            format!("Invalid JSON payload received. Unknown name \"{key}\": Cannot find field.")
        });
    }
    let contents = array(o, "contents", v);
    v.check(!contents.is_empty(), || "contents is not specified".into());
    if let Some(si) = o.get("systemInstruction").or_else(|| o.get("system_instruction")) {
        let parts = si.get("parts").and_then(Value::as_array);
        v.check(
            parts.is_some_and(|p| !p.is_empty() && p.iter().all(|p| p.get("text").is_some_and(Value::is_string))),
            || "systemInstruction must have text parts".into(),
        );
    }
    if let Some(gc) = o
        .get("generationConfig")
        .or_else(|| o.get("generation_config"))
        .and_then(Value::as_object)
    {
        in_range(gc, "temperature", 0.0, 2.0, v);
        in_range(gc, "topP", 0.0, 1.0, v);
        positive_int(gc, "maxOutputTokens", v);
        if let Some(stops) = gc.get("stopSequences").and_then(Value::as_array) {
            v.check(stops.len() <= 5, || {
                format!("generationConfig.stopSequences takes at most 5, got {}", stops.len())
            });
        }
    }
    let mut declared: Vec<String> = Vec::new();
    for (j, t) in array(o, "tools", v).iter().enumerate() {
        let decls = t.get("functionDeclarations").or_else(|| t.get("function_declarations"));
        for (k, d) in decls.and_then(Value::as_array).into_iter().flatten().enumerate() {
            let name = str_of(d, "name").unwrap_or("");
            v.check(gemini_name(name), || {
                format!("tools[{j}].function_declarations[{k}].name: Invalid function name {name:?}")
            });
            declared.push(name.to_string());
        }
    }
    let mut calls_of_last_model_turn = 0usize;
    for (i, c) in contents.iter().enumerate() {
        let role = str_of(c, "role").unwrap_or("user");
        v.check(role == "user" || role == "model", || {
            format!("contents[{i}].role: Please use a valid role: user, model. ({role:?})")
        });
        let parts = c
            .get("parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        v.check(!parts.is_empty(), || {
            format!("contents[{i}].parts: must contain at least one part")
        });
        let mut calls = 0;
        let mut responses = 0;
        for (j, p) in parts.iter().enumerate() {
            let Some(p) = p.as_object() else {
                v.add(format!("contents[{i}].parts[{j}] is not an object"));
                continue;
            };
            let data: Vec<&str> = [
                "text",
                "inlineData",
                "fileData",
                "functionCall",
                "functionResponse",
                "executableCode",
                "codeExecutionResult",
            ]
            .into_iter()
            .filter(|k| p.contains_key(*k))
            .collect();
            v.check(data.len() == 1, || {
                format!("contents[{i}].parts[{j}]: a part holds exactly one of text, inlineData, fileData, functionCall, functionResponse (has {data:?})")
            });
            if let Some(fc) = p.get("functionCall") {
                v.check(role == "model", || {
                    format!("contents[{i}].parts[{j}]: functionCall only in model turns")
                });
                let name = str_of(fc, "name").unwrap_or("");
                v.check(gemini_name(name), || {
                    format!("contents[{i}].parts[{j}].functionCall.name {name:?}")
                });
                v.check(fc.get("args").is_none_or(Value::is_object), || {
                    format!("contents[{i}].parts[{j}].functionCall.args must be an object")
                });
                calls += 1;
            }
            if let Some(fr) = p.get("functionResponse") {
                v.check(role == "user", || {
                    format!("contents[{i}].parts[{j}]: functionResponse only in user turns")
                });
                let name = str_of(fr, "name").unwrap_or("");
                v.check(gemini_name(name), || {
                    format!("contents[{i}].parts[{j}].functionResponse.name {name:?}")
                });
                v.check(fr.get("response").is_some_and(Value::is_object), || {
                    format!("contents[{i}].parts[{j}].functionResponse.response: Proto field is not repeating, cannot start list / must be an object")
                });
                responses += 1;
            }
            if let Some(d) = p.get("inlineData") {
                v.check(str_of(d, "mimeType").is_some() && str_of(d, "data").is_some(), || {
                    format!("contents[{i}].parts[{j}].inlineData needs mimeType and data")
                });
            }
            if let Some(d) = p.get("fileData") {
                v.check(str_of(d, "fileUri").is_some(), || {
                    format!("contents[{i}].parts[{j}].fileData.fileUri is required")
                });
            }
        }
        if responses > 0 {
            v.check(responses == calls_of_last_model_turn, || {
                format!(
                    "contents[{i}]: Please ensure that the number of function response parts ({responses}) is equal to the \
                     number of function call parts of the function call turn ({calls_of_last_model_turn})."
                )
            });
        }
        if calls > 0 && i > 0 {
            let prev = &contents[i - 1];
            let prev_ok = str_of(prev, "role").unwrap_or("user") == "user";
            v.check(prev_ok, || {
                format!("contents[{i}]: Please ensure that function call turn comes immediately after a user turn or after a function response turn.")
            });
        }
        if role == "model" {
            calls_of_last_model_turn = calls;
        } else if responses > 0 {
            calls_of_last_model_turn = 0;
        }
    }
}
