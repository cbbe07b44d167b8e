//! OpenAI Chat request ↔ IR (formats.md §2.1–2.3).

use serde_json::{json, Map, Value};

use crate::formats::convert::{ConvertError, RequestOptions};
use crate::formats::ir::*;
use crate::formats::json::*;

/// Chat request → IR.
pub fn parse(v: &Value) -> Result<IrRequest, ConvertError> {
    let mut ir = IrRequest::default();
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ConvertError::Invalid("`messages` must be an array".into()))?;
    if v.get("audio").is_some_and(|a| !a.is_null())
        || arr_at(v, "modalities").iter().any(|m| m.as_str() == Some("audio"))
    {
        return Err(ConvertError::Unsupported(
            "audio output cannot be translated to this upstream".into(),
        ));
    }
    if v.get("web_search_options").is_some_and(|a| !a.is_null()) {
        return Err(ConvertError::Unsupported(
            "`web_search_options` is a built-in OpenAI tool that this upstream does not have".into(),
        ));
    }
    // The legacy function calling is answered in `message.function_call`, which no translated
    // answer carries: refused rather than sent without the functions (a plain-text answer the
    // client would wait on for a call).
    if ["functions", "function_call"]
        .iter()
        .any(|k| v.get(k).is_some_and(|f| !f.is_null()))
    {
        return Err(ConvertError::Unsupported(
            "the legacy `functions` and `function_call` cannot be translated to this upstream; use `tools` and `tool_choice`"
                .into(),
        ));
    }
    for m in messages {
        parse_message(m, &mut ir)?;
    }
    for t in arr_at(v, "tools") {
        ir.tools.push(parse_tool(t)?);
    }
    ir.tool_choice = match v.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(c) => Some(parse_tool_choice(c)?),
    };
    ir.parallel_tool_calls = bool_at(v, "parallel_tool_calls");
    ir.max_tokens = u64_at(v, "max_completion_tokens").or_else(|| u64_at(v, "max_tokens"));
    ir.temperature = f64_at(v, "temperature");
    ir.top_p = f64_at(v, "top_p");
    ir.top_k = u64_at(v, "top_k");
    ir.seed = v.get("seed").and_then(Value::as_i64);
    ir.presence_penalty = f64_at(v, "presence_penalty");
    ir.frequency_penalty = f64_at(v, "frequency_penalty");
    ir.stop = parse_stop(v.get("stop"));
    ir.response_format = v
        .get("response_format")
        .map(parse_response_format)
        .transpose()?
        .flatten();
    ir.reasoning = str_at(v, "reasoning_effort")
        .and_then(Effort::parse)
        .map(|effort| Reasoning {
            effort,
            budget_tokens: None,
        });
    ir.user = str_at(v, "user").map(str::to_string);
    Ok(ir)
}

pub(crate) fn parse_stop(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

fn parse_message(m: &Value, ir: &mut IrRequest) -> Result<(), ConvertError> {
    let role = str_at(m, "role").ok_or_else(|| ConvertError::Invalid("every message needs a `role`".into()))?;
    match role {
        "system" | "developer" => {
            let parts = text_parts(m.get("content"))?;
            if ir.messages.is_empty() {
                ir.system.extend(parts);
            } else {
                ir.messages.push(Message {
                    role: Role::System,
                    content: parts.into_iter().map(Block::Text).collect(),
                });
            }
        }
        "user" => {
            let content = content_blocks(m.get("content"))?;
            ir.messages.push(Message {
                role: Role::User,
                content,
            });
        }
        "assistant" => {
            let mut content = Vec::new();
            // Signed thinking first: it must precede tool_use when replayed (§2.1).
            push_thinking_blocks(m, &mut content);
            content.extend(content_blocks(m.get("content"))?);
            if let Some(r) = str_at(m, "refusal") {
                content.push(text_block(r));
            }
            // Images it made, given back (to edit them further with a Gemini image model).
            content.extend(super::images_of(m).map(Block::Image));
            for tc in arr_at(m, "tool_calls") {
                let f = tc.get("function").unwrap_or(&Value::Null);
                let (id, signature) = unsmuggle_signature(str_at(tc, "id").unwrap_or_default());
                content.push(Block::ToolCall(ToolCall {
                    id,
                    name: str_at(f, "name").unwrap_or_default().to_string(),
                    arguments: arguments_text(f.get("arguments")),
                    signature,
                }));
            }
            ir.messages.push(Message {
                role: Role::Assistant,
                content,
            });
        }
        "tool" => {
            let (call_id, _) = unsmuggle_signature(str_at(m, "tool_call_id").unwrap_or_default());
            let result = Block::ToolResult(ToolResult {
                call_id,
                content: content_blocks(m.get("content"))?,
                is_error: false,
            });
            // Consecutive tool messages answer one assistant turn: keep them in one user message.
            match ir.messages.last_mut() {
                Some(last) if last.role == Role::User && last.only_tool_results() => last.content.push(result),
                _ => ir.messages.push(Message {
                    role: Role::User,
                    content: vec![result],
                }),
            }
        }
        "function" => {
            return Err(ConvertError::Unsupported(
                "the legacy `function` role cannot be translated; use `tool` messages".into(),
            ))
        }
        other => return Err(ConvertError::Invalid(format!("unknown message role `{other}`"))),
    }
    Ok(())
}

/// Tool arguments as text: a string as is, an object (some clients send one) serialised.
pub(crate) fn arguments_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

pub(crate) fn text_block(text: &str) -> Block {
    Block::Text(TextPart {
        text: text.to_string(),
        cache_control: None,
    })
}

fn text_parts(content: Option<&Value>) -> Result<Vec<TextPart>, ConvertError> {
    Ok(content_blocks(content)?
        .into_iter()
        .filter_map(|b| match b {
            Block::Text(t) => Some(t),
            _ => None,
        })
        .collect())
}

/// Message `content`: a string, null, or an array of parts.
fn content_blocks(content: Option<&Value>) -> Result<Vec<Block>, ConvertError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![text_block(s)]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                if let Some(b) = parse_part(p)? {
                    out.push(b);
                }
            }
            Ok(out)
        }
        Some(_) => Err(ConvertError::Invalid(
            "message `content` must be a string or an array".into(),
        )),
    }
}

fn parse_part(p: &Value) -> Result<Option<Block>, ConvertError> {
    Ok(match str_at(p, "type") {
        Some("text") | Some("input_text") | Some("output_text") => Some(Block::Text(TextPart {
            text: str_at(p, "text").unwrap_or_default().to_string(),
            cache_control: p.get("cache_control").cloned(),
        })),
        Some("refusal") => Some(text_block(str_at(p, "refusal").unwrap_or_default())),
        Some("image_url") => {
            let iu = p.get("image_url").unwrap_or(&Value::Null);
            let url = iu.as_str().or_else(|| str_at(iu, "url")).unwrap_or_default();
            if url.is_empty() {
                return Err(ConvertError::Invalid("`image_url.url` is required".into()));
            }
            Some(Block::Image(Media::from_url(url)))
        }
        Some("file") => {
            let f = p.get("file").unwrap_or(&Value::Null);
            match str_at(f, "file_data") {
                Some(data) => Some(Block::File(file_media(data, str_at(f, "filename")))),
                None => {
                    return Err(ConvertError::Unsupported(
                        "files by `file_id` live in OpenAI's storage and cannot be sent to this upstream".into(),
                    ))
                }
            }
        }
        Some("input_audio") => {
            return Err(ConvertError::Unsupported(
                "audio input cannot be translated to this upstream".into(),
            ))
        }
        Some(other) => return Err(ConvertError::Invalid(format!("unknown content part type `{other}`"))),
        None => return Err(ConvertError::Invalid("every content part needs a `type`".into())),
    })
}

/// `file_data` is a data URL, or bare base64 (then PDF is assumed from the filename or by default).
pub(crate) fn file_media(data: &str, filename: Option<&str>) -> Media {
    match Media::from_url(data) {
        m @ Media::Base64 { .. } => m,
        Media::Url { .. } => Media::Base64 {
            media_type: match filename.map(str::to_ascii_lowercase) {
                Some(f) if f.ends_with(".txt") => "text/plain".into(),
                _ => "application/pdf".into(),
            },
            data: data.to_string(),
        },
    }
}

fn parse_tool(t: &Value) -> Result<Tool, ConvertError> {
    match str_at(t, "type") {
        Some("function") | None => {}
        Some(other) => {
            return Err(ConvertError::Unsupported(format!(
                "tool type `{other}` has no equivalent on this upstream; only function tools translate"
            )))
        }
    }
    let f = t.get("function").unwrap_or(t);
    let name = str_at(f, "name").ok_or_else(|| ConvertError::Invalid("every tool needs a `name`".into()))?;
    Ok(Tool {
        name: name.to_string(),
        description: str_at(f, "description").map(str::to_string),
        parameters: f
            .get("parameters")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(empty_schema),
        strict: bool_at(f, "strict"),
        cache_control: t.get("cache_control").cloned(),
    })
}

pub(crate) fn empty_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

/// `auto|none|required` or `{type:function, function:{name}}` (also the Responses `{type:function, name}`).
pub(crate) fn parse_tool_choice(c: &Value) -> Result<ToolChoice, ConvertError> {
    match c {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(ConvertError::Invalid(format!("unknown tool_choice `{other}`"))),
        },
        Value::Object(_) => {
            let name = c
                .get("function")
                .and_then(|f| str_at(f, "name"))
                .or_else(|| str_at(c, "name"));
            match (str_at(c, "type"), name) {
                (Some("function"), Some(n)) => Ok(ToolChoice::Tool(n.to_string())),
                (Some("allowed_tools"), _) => Err(ConvertError::Unsupported(
                    "tool_choice `allowed_tools` cannot be translated to this upstream".into(),
                )),
                (Some(t), _) if t != "function" => Err(ConvertError::Unsupported(format!(
                    "tool_choice type `{t}` cannot be translated to this upstream"
                ))),
                _ => Err(ConvertError::Invalid("tool_choice needs a function name".into())),
            }
        }
        _ => Err(ConvertError::Invalid(
            "tool_choice must be a string or an object".into(),
        )),
    }
}

fn parse_response_format(rf: &Value) -> Result<Option<ResponseFormat>, ConvertError> {
    match str_at(rf, "type") {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let js = rf.get("json_schema").unwrap_or(&Value::Null);
            Ok(Some(ResponseFormat::JsonSchema {
                name: str_at(js, "name").unwrap_or("response").to_string(),
                schema: js.get("schema").cloned().unwrap_or_else(empty_schema),
                strict: bool_at(js, "strict"),
            }))
        }
        Some(other) => Err(ConvertError::Unsupported(format!(
            "response_format `{other}` cannot be translated"
        ))),
    }
}

/// OpenAI's own models take at most four `stop` sequences.
const MAX_STOP_SEQUENCES: usize = 4;

/// IR → Chat request; `Unsupported` for what Chat cannot carry.
pub fn render(ir: &IrRequest, opts: &RequestOptions) -> Result<Value, ConvertError> {
    if ir.has_file_by_url() {
        return Err(ConvertError::Unsupported(
            "an OpenAI Chat upstream takes files inline (base64) only, not by URL; send the file's bytes".into(),
        ));
    }
    // Chat's `file` part takes PDF only; a plain-text file goes as text, anything else would be
    // OpenAI's 400, so another candidate may take the request instead.
    for block in ir.messages.iter().flat_map(|m| &m.content) {
        if let Block::File(Media::Base64 { media_type, data }) = block {
            if media_type != "application/pdf" && plain_text(media_type, data).is_none() {
                return Err(ConvertError::Unsupported(format!(
                    "an OpenAI Chat upstream takes files as PDF (or plain text); this request sends a `{media_type}` file"
                )));
            }
        }
    }
    let mut messages = Vec::with_capacity(ir.messages.len() + 1);
    if !ir.system.is_empty() {
        messages.push(json!({"role": "system", "content": join_parts(&ir.system)}));
    }
    let replay_reasoning = opts.replay_reasoning;
    for m in &ir.messages {
        render_message(m, replay_reasoning, &mut messages);
    }
    let mut out = Map::new();
    out.insert("model".into(), opts.model.clone().into());
    out.insert("messages".into(), messages.into());
    if !ir.tools.is_empty() {
        let tools: Vec<Value> = ir.tools.iter().map(render_tool).collect();
        out.insert("tools".into(), tools.into());
        // Only with tools: OpenAI refuses `tool_choice` without them ("'tool_choice' is only
        // allowed when 'tools' are specified"), as when the only tool could not be passed on.
        put(&mut out, "tool_choice", ir.tool_choice.as_ref().map(render_tool_choice));
        put(&mut out, "parallel_tool_calls", ir.parallel_tool_calls);
    }
    // OpenAI's own models take `max_completion_tokens` (its reasoning models refuse the
    // deprecated `max_tokens`); other OpenAI-style servers know `max_tokens`, and some refuse the
    // newer name (Mistral: 422 `extra_forbidden`).
    let openai_own = openai_model(&opts.model);
    let limit = if openai_own {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    put(&mut out, limit, ir.max_tokens);
    put(&mut out, "temperature", ir.temperature);
    put(&mut out, "top_p", ir.top_p);
    put(&mut out, "seed", ir.seed);
    put(&mut out, "presence_penalty", ir.presence_penalty);
    put(&mut out, "frequency_penalty", ir.frequency_penalty);
    if ir.stop.len() > MAX_STOP_SEQUENCES && openai_own {
        // Sending the first four would let the answer run past the others unnoticed. (Other
        // OpenAI-style servers take more.)
        return Err(ConvertError::Unsupported(format!(
            "OpenAI takes at most {MAX_STOP_SEQUENCES} stop sequences; this request has {}",
            ir.stop.len()
        )));
    }
    if !ir.stop.is_empty() {
        out.insert("stop".into(), ir.stop.clone().into());
    }
    put(
        &mut out,
        "response_format",
        ir.response_format.as_ref().map(render_response_format),
    );
    put(&mut out, "reasoning_effort", ir.reasoning.map(|r| r.effort.as_str()));
    put(&mut out, "user", ir.user.clone());
    if opts.stream {
        out.insert("stream".into(), true.into());
        if opts.stream_usage {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    Ok(Value::Object(out))
}

pub(crate) fn join_parts(parts: &[TextPart]) -> String {
    let texts: Vec<&str> = parts.iter().map(|p| p.text.as_str()).collect();
    texts.join("\n\n")
}

fn render_message(m: &Message, replay_reasoning: bool, out: &mut Vec<Value>) {
    match m.role {
        Role::System => out.push(json!({"role": "system", "content": join_text_with(&m.content, "\n\n")})),
        Role::Assistant => {
            let text = join_text(&m.content);
            let calls: Vec<Value> = m
                .content
                .iter()
                .filter_map(|b| match b {
                    Block::ToolCall(tc) => Some(json!({
                        "id": tc.id,
                        "type": "function",
                        "function": {"name": tc.name, "arguments": non_empty_args(&tc.arguments)},
                    })),
                    _ => None,
                })
                .collect();
            // Thinking is vendor-bound and OpenAI takes no replayed reasoning text: dropped (§2.5),
            // but for the upstreams that require their reasoning back (`replay_reasoning`).
            let mut msg =
                json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { text.into() }});
            if replay_reasoning {
                let reasoning: Vec<&str> = m
                    .content
                    .iter()
                    .filter_map(|b| match b {
                        Block::Thinking { text, .. } if !text.is_empty() => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                // A tool-call turn must carry the field even when no reasoning reached the client
                // (thinking off, redacted, or a client that keeps none): empty, then.
                if !reasoning.is_empty() || !calls.is_empty() {
                    msg["reasoning_content"] = reasoning.join("\n\n").into();
                }
            }
            if !calls.is_empty() {
                msg["tool_calls"] = calls.into();
            }
            if msg["content"].is_null() && msg.get("tool_calls").is_none() {
                msg["content"] = "".into();
            }
            out.push(msg);
        }
        Role::User => {
            // Tool results first, each its own `tool` message right after the assistant turn (§2.1 reverse).
            let mut moved_media = Vec::new();
            for b in &m.content {
                if let Block::ToolResult(r) = b {
                    let mut text = r.text();
                    if r.is_error {
                        text = format!("Error: {text}");
                    }
                    out.push(json!({"role": "tool", "tool_call_id": r.call_id, "content": text}));
                    // A tool message takes text only: images and files it returned (a PDF Claude
                    // Code's Read tool gave back) follow in a user message.
                    moved_media.extend(
                        r.content
                            .iter()
                            .filter(|b| matches!(b, Block::Image(_) | Block::File(_)))
                            .cloned(),
                    );
                }
            }
            let rest: Vec<&Block> = m
                .content
                .iter()
                .filter(|b| !matches!(b, Block::ToolResult(_)))
                .chain(moved_media.iter())
                .collect();
            if rest.is_empty() {
                return;
            }
            if let [Block::Text(t)] = rest.as_slice() {
                out.push(json!({"role": "user", "content": t.text}));
                return;
            }
            let parts: Vec<Value> = rest.iter().filter_map(|b| render_part(b)).collect();
            out.push(json!({"role": "user", "content": parts}));
        }
    }
}

/// A model of OpenAI's own (`gpt-4o`, `o3-mini`, `gpt-5.1`, `chatgpt-4o-latest`, `openai/o4-mini`
/// through an aggregator), by its name.
fn openai_model(model: &str) -> bool {
    let name = crate::formats::model_name::bare(model);
    crate::formats::model_name::is_o_series(&name) || ["gpt-", "chatgpt-", "codex-"].iter().any(|p| name.starts_with(p))
}

fn render_part(b: &Block) -> Option<Value> {
    match b {
        Block::Text(t) => Some(json!({"type": "text", "text": t.text})),
        Block::Image(m) => Some(json!({"type": "image_url", "image_url": {"url": m.to_url()}})),
        Block::File(Media::Base64 { media_type, data }) if media_type != "application/pdf" => {
            plain_text(media_type, data).map(|text| json!({"type": "text", "text": text}))
        }
        Block::File(m) => Some(json!({"type": "file", "file": {"file_data": m.to_url(), "filename": "file"}})),
        _ => None,
    }
}

/// Tool-call arguments for an OpenAI upstream: never empty (it must be a JSON text).
pub(crate) fn non_empty_args(args: &str) -> String {
    // `null`: a tool without parameters, as some servers send it.
    if args.trim().is_empty() || args.trim() == "null" {
        "{}".into()
    } else {
        args.to_string()
    }
}

fn render_tool(t: &Tool) -> Value {
    let mut f = json!({"name": t.name, "parameters": t.parameters});
    if let Some(d) = &t.description {
        f["description"] = d.clone().into();
    }
    if let Some(s) = t.strict {
        f["strict"] = s.into();
    }
    json!({"type": "function", "function": f})
}

fn render_tool_choice(c: &ToolChoice) -> Value {
    match c {
        ToolChoice::Auto => "auto".into(),
        ToolChoice::None => "none".into(),
        ToolChoice::Required => "required".into(),
        ToolChoice::Tool(n) => json!({"type": "function", "function": {"name": n}}),
    }
}

fn render_response_format(rf: &ResponseFormat) -> Value {
    match rf {
        ResponseFormat::Text => json!({"type": "text"}),
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema { name, schema, strict } => {
            let mut js = json!({"name": name, "schema": schema});
            if let Some(s) = strict {
                js["strict"] = (*s).into();
            }
            json!({"type": "json_schema", "json_schema": js})
        }
    }
}

/// The non-standard `thinking_blocks` of an assistant message (LiteLLM's convention for carrying
/// Claude's signed thinking through OpenAI clients), as IR blocks.
pub(crate) fn push_thinking_blocks(msg: &Value, content: &mut Vec<Block>) {
    for tb in arr_at(msg, "thinking_blocks") {
        match str_at(tb, "type") {
            Some("thinking") => content.push(Block::Thinking {
                text: str_at(tb, "thinking").unwrap_or_default().to_string(),
                signature: str_at(tb, "signature").map(|s| Signature {
                    vendor: Vendor::Anthropic,
                    value: s.to_string(),
                }),
            }),
            Some("redacted_thinking") => content.push(Block::RedactedThinking {
                data: str_at(tb, "data").unwrap_or_default().to_string(),
            }),
            _ => {}
        }
    }
}
