//! OpenAI Responses request ↔ IR (formats.md §2.3).

use serde_json::{json, Map, Value};

use super::{ANTHROPIC_REDACTED_PREFIX, ANTHROPIC_SIG_PREFIX};
use crate::formats::convert::{ConvertError, RequestOptions};
use crate::formats::ir::*;
use crate::formats::json::*;
use crate::formats::openai_chat::request::{
    arguments_text, empty_schema, file_media, join_parts, non_empty_args, parse_tool_choice, text_block,
};

/// The fewest output tokens a Responses request may ask for.
const MIN_OUTPUT_TOKENS: u64 = 16;

/// The id of a whole Responses answer. OpenAI's opens with it: read there, without parsing the
/// rest (the answer was already read once, for its usage); the whole answer is parsed only when it
/// opens with another member.
pub fn answer_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        id: String,
    }
    let first = body.trim_ascii_start().strip_prefix(b"{")?.trim_ascii_start();
    let id = match first.strip_prefix(b"\"id\"") {
        Some(after) => {
            let value = after.trim_ascii_start().strip_prefix(b":")?;
            serde_json::Deserializer::from_slice(value)
                .into_iter::<String>()
                .next()?
                .ok()?
        }
        None => serde_json::from_slice::<Answer>(body).ok()?.id,
    };
    (!id.is_empty()).then_some(id)
}

/// Responses request → IR.
pub fn parse(v: &Value) -> Result<IrRequest, ConvertError> {
    for key in ["previous_response_id", "conversation", "prompt"] {
        if v.get(key).is_some_and(|x| !x.is_null()) {
            return Err(ConvertError::Unsupported(format!(
                "`{key}` needs OpenAI's server-side state and cannot be translated to this upstream"
            )));
        }
    }
    if bool_at(v, "background") == Some(true) {
        return Err(ConvertError::Unsupported(
            "background responses cannot be translated".into(),
        ));
    }
    let mut ir = IrRequest::default();
    if let Some(i) = str_at(v, "instructions") {
        ir.system.push(TextPart {
            text: i.to_string(),
            cache_control: None,
        });
    }
    match v.get("input") {
        Some(Value::String(s)) => ir.messages.push(Message {
            role: Role::User,
            content: vec![text_block(s)],
        }),
        Some(Value::Array(items)) => {
            for item in items {
                parse_item(item, &mut ir)?;
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(ConvertError::Invalid("`input` must be a string or an array".into())),
    }
    // Web search is a built-in tool Codex offers on every request: offered but not forced, it is
    // left out for an upstream that has no such tool (the model answers without searching);
    // forced, the request cannot be translated faithfully.
    let forced = v.get("tool_choice").and_then(|c| str_at(c, "type"));
    for t in arr_at(v, "tools") {
        match str_at(t, "type") {
            Some(k) if k.starts_with("web_search") && forced.is_none_or(|f| !f.starts_with("web_search")) => {}
            Some("custom") => ir.tools.push(freeform_tool(t)?),
            Some("function") => ir.tools.push(Tool {
                name: str_at(t, "name")
                    .ok_or_else(|| ConvertError::Invalid("every tool needs a `name`".into()))?
                    .to_string(),
                description: str_at(t, "description").map(str::to_string),
                parameters: t
                    .get("parameters")
                    .filter(|p| p.is_object())
                    .cloned()
                    .unwrap_or_else(empty_schema),
                strict: bool_at(t, "strict"),
                cache_control: t.get("cache_control").cloned(),
            }),
            other => {
                return Err(ConvertError::Unsupported(format!(
                    "built-in tool `{}` runs on OpenAI's side and cannot be translated",
                    other.unwrap_or("(no type)")
                )))
            }
        }
    }
    ir.tool_choice = match v.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(c) => Some(parse_tool_choice(c)?),
    };
    if ir.tools.is_empty() && ir.tool_choice == Some(ToolChoice::Required) && !arr_at(v, "tools").is_empty() {
        // Only the web search was offered, and a tool call is required: that is forcing it.
        return Err(ConvertError::Unsupported(
            "a required tool call whose only tool is OpenAI's web search cannot be translated".into(),
        ));
    }
    ir.parallel_tool_calls = bool_at(v, "parallel_tool_calls");
    ir.max_tokens = u64_at(v, "max_output_tokens");
    ir.temperature = f64_at(v, "temperature");
    ir.top_p = f64_at(v, "top_p");
    ir.user = str_at(v, "user")
        .or_else(|| str_at(v, "safety_identifier"))
        .map(str::to_string);
    if let Some(f) = v.get("text").and_then(|t| t.get("format")) {
        ir.response_format = match str_at(f, "type") {
            Some("json_object") => Some(ResponseFormat::JsonObject),
            Some("json_schema") => Some(ResponseFormat::JsonSchema {
                name: str_at(f, "name").unwrap_or("response").to_string(),
                schema: f.get("schema").cloned().unwrap_or_else(empty_schema),
                strict: bool_at(f, "strict"),
            }),
            _ => None,
        };
    }
    ir.reasoning = v
        .get("reasoning")
        .and_then(|r| str_at(r, "effort"))
        .and_then(Effort::parse)
        .map(|effort| Reasoning {
            effort,
            budget_tokens: None,
        });
    Ok(ir)
}

fn push_block(ir: &mut IrRequest, role: Role, block: Block) {
    match ir.messages.last_mut() {
        // Consecutive function_call items (and a preceding assistant text) form ONE assistant turn; consecutive
        // outputs one user turn.
        Some(last) if last.role == role && role == Role::Assistant => last.content.push(block),
        Some(last) if last.role == role && last.only_tool_results() => last.content.push(block),
        _ => ir.messages.push(Message {
            role,
            content: vec![block],
        }),
    }
}

/// A freeform (`custom`) tool — Codex's `apply_patch` — as a function of one string argument,
/// `input`, for upstreams that have only functions; its grammar, if any, is told in the
/// argument's description. The call comes back as a `function_call` whose arguments are
/// `{"input": …}`, which Codex takes for its freeform tools as well.
fn freeform_tool(t: &Value) -> Result<Tool, ConvertError> {
    let name = str_at(t, "name").ok_or_else(|| ConvertError::Invalid("every tool needs a `name`".into()))?;
    let format = t.get("format");
    let input = match format.and_then(|f| str_at(f, "definition")) {
        Some(grammar) => format!(
            "The tool's whole input, as plain text in this {} grammar:\n{grammar}",
            format.and_then(|f| str_at(f, "syntax")).unwrap_or("formal")
        ),
        None => "The tool's whole input, as plain text.".to_string(),
    };
    Ok(Tool {
        name: name.to_string(),
        description: str_at(t, "description").map(str::to_string),
        parameters: json!({"type": "object", "properties": {"input": {"type": "string", "description": input}},
            "required": ["input"]}),
        strict: None,
        cache_control: None,
    })
}

fn parse_item(item: &Value, ir: &mut IrRequest) -> Result<(), ConvertError> {
    match str_at(item, "type") {
        None | Some("message") => {
            let role = match str_at(item, "role") {
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some("system") | Some("developer") => Role::System,
                other => return Err(ConvertError::Invalid(format!("unknown input role {other:?}"))),
            };
            let content = parse_content(item.get("content"))?;
            if role == Role::System && ir.messages.is_empty() {
                ir.system.extend(content.into_iter().filter_map(|b| match b {
                    Block::Text(t) => Some(t),
                    _ => None,
                }));
            } else if role == Role::Assistant {
                for b in content {
                    push_block(ir, role, b);
                }
            } else {
                ir.messages.push(Message { role, content });
            }
        }
        Some("function_call") => {
            let (id, signature) = unsmuggle_signature(str_at(item, "call_id").unwrap_or_default());
            push_block(
                ir,
                Role::Assistant,
                Block::ToolCall(ToolCall {
                    id,
                    name: str_at(item, "name").unwrap_or_default().to_string(),
                    arguments: arguments_text(item.get("arguments")),
                    signature,
                }),
            );
        }
        // A freeform tool's call (see `freeform_tool`): its text as the one `input` argument.
        Some("custom_tool_call") => push_block(
            ir,
            Role::Assistant,
            Block::ToolCall(ToolCall {
                id: str_at(item, "call_id").unwrap_or_default().to_string(),
                name: str_at(item, "name").unwrap_or_default().to_string(),
                arguments: json!({"input": str_at(item, "input").unwrap_or_default()}).to_string(),
                signature: None,
            }),
        ),
        Some("function_call_output" | "custom_tool_call_output") => {
            let (call_id, _) = unsmuggle_signature(str_at(item, "call_id").unwrap_or_default());
            let content = match item.get("output") {
                Some(Value::String(s)) => vec![text_block(s)],
                other => parse_content(other)?,
            };
            push_block(
                ir,
                Role::User,
                Block::ToolResult(ToolResult {
                    call_id,
                    content,
                    is_error: false,
                }),
            );
        }
        Some("reasoning") => {
            // Only Claude thinking that this gateway wrapped can be replayed; OpenAI's encrypted reasoning is
            // meaningless to other vendors and is dropped.
            let encrypted = str_at(item, "encrypted_content");
            let text = || -> String {
                arr_at(item, "summary")
                    .iter()
                    .filter_map(|s| str_at(s, "text"))
                    .collect::<Vec<_>>()
                    .join("")
            };
            if let Some(data) = encrypted.and_then(|e| e.strip_prefix(ANTHROPIC_REDACTED_PREFIX)) {
                push_block(ir, Role::Assistant, Block::RedactedThinking { data: data.to_string() });
            } else if encrypted.is_some_and(|e| e.starts_with(super::GATEWAY_UNSIGNED_MARK))
                || (encrypted.is_none()
                    && str_at(item, "id").is_none_or(|id| id.starts_with(super::GATEWAY_REASONING_ID)))
            {
                // Reasoning another vendor streamed that the gateway wrote as a summary (DeepSeek's,
                // say; Codex sends such items back without their id; ones written before the mark
                // have no `encrypted_content`): unsigned text, which only an upstream that wants
                // its reasoning back is sent.
                push_block(
                    ir,
                    Role::Assistant,
                    Block::Thinking {
                        text: text(),
                        signature: None,
                    },
                );
            } else if let Some(sig) = encrypted.and_then(|e| e.strip_prefix(ANTHROPIC_SIG_PREFIX)) {
                let text = text();
                push_block(
                    ir,
                    Role::Assistant,
                    Block::Thinking {
                        text,
                        signature: Some(Signature {
                            vendor: Vendor::Anthropic,
                            value: sig.to_string(),
                        }),
                    },
                );
            }
        }
        // A search OpenAI ran in an earlier turn: its findings are in the answer that followed.
        Some("web_search_call") => {}
        // An image made in an earlier turn, given back whole (to edit it further); one named by
        // id only is OpenAI's to look up, and nothing to another vendor.
        Some("image_generation_call") => {
            if let Some(m) = super::item_image(item) {
                push_block(ir, Role::Assistant, Block::Image(m));
            }
        }
        Some(other) => {
            return Err(ConvertError::Unsupported(format!(
                "input item type `{other}` needs OpenAI's server-side tools or state and cannot be translated"
            )))
        }
    }
    Ok(())
}

fn parse_content(c: Option<&Value>) -> Result<Vec<Block>, ConvertError> {
    let parts = match c {
        Some(Value::String(s)) => return Ok(vec![text_block(s)]),
        Some(Value::Array(parts)) => parts,
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(_) => return Err(ConvertError::Invalid("`content` must be a string or an array".into())),
    };
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match str_at(p, "type") {
            Some("input_text") | Some("output_text") | Some("text") => out.push(Block::Text(TextPart {
                text: str_at(p, "text").unwrap_or_default().to_string(),
                cache_control: p.get("cache_control").cloned(),
            })),
            Some("refusal") => out.push(text_block(str_at(p, "refusal").unwrap_or_default())),
            Some("input_image") => match str_at(p, "image_url") {
                Some(url) => out.push(Block::Image(Media::from_url(url))),
                None => {
                    return Err(ConvertError::Unsupported(
                        "images by `file_id` live in OpenAI's storage and cannot be translated".into(),
                    ))
                }
            },
            Some("input_file") => match (str_at(p, "file_data"), str_at(p, "file_url")) {
                (Some(data), _) => out.push(Block::File(file_media(data, str_at(p, "filename")))),
                (None, Some(url)) => out.push(Block::File(Media::Url {
                    url: url.to_string(),
                    media_type: None,
                })),
                (None, None) => {
                    return Err(ConvertError::Unsupported(
                        "files by `file_id` live in OpenAI's storage and cannot be translated".into(),
                    ))
                }
            },
            other => {
                return Err(ConvertError::Unsupported(format!(
                    "content part {other:?} cannot be translated"
                )))
            }
        }
    }
    Ok(out)
}

/// IR → Responses request.
pub fn render(ir: &IrRequest, opts: &RequestOptions) -> Result<Value, ConvertError> {
    if !ir.stop.is_empty() {
        // The Responses API has no stop sequences; dropping them would silently change the output.
        return Err(ConvertError::Unsupported(
            "stop sequences cannot be sent to a Responses upstream".into(),
        ));
    }
    let mut out = Map::new();
    out.insert("model".into(), opts.model.clone().into());
    if !ir.system.is_empty() {
        out.insert("instructions".into(), join_parts(&ir.system).into());
    }
    let mut input = Vec::with_capacity(ir.messages.len());
    for m in &ir.messages {
        render_message(m, &mut input);
    }
    out.insert("input".into(), input.into());
    if !ir.tools.is_empty() {
        let tools: Vec<Value> = ir
            .tools
            .iter()
            .map(|t| {
                let mut v = Map::new();
                v.insert("type".into(), "function".into());
                v.insert("name".into(), t.name.clone().into());
                v.insert("parameters".into(), t.parameters.clone());
                put(&mut v, "description", t.description.clone());
                // Responses takes an absent `strict` as true (every parameter required, no others
                // allowed): a tool from a format without the notion keeps its optional parameters.
                v.insert("strict".into(), t.strict.unwrap_or(false).into());
                Value::Object(v)
            })
            .collect();
        out.insert("tools".into(), tools.into());
        put(&mut out, "parallel_tool_calls", ir.parallel_tool_calls);
        // Only with tools (a choice among none is refused).
        put(
            &mut out,
            "tool_choice",
            ir.tool_choice.as_ref().map(|c| match c {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Tool(n) => json!({"type": "function", "name": n}),
            }),
        );
    }
    // Responses refuses fewer than 16 (Claude Code probes with `max_tokens: 1`).
    put(
        &mut out,
        "max_output_tokens",
        ir.max_tokens.map(|n| n.max(MIN_OUTPUT_TOKENS)),
    );
    put(&mut out, "temperature", ir.temperature);
    put(&mut out, "top_p", ir.top_p);
    put(&mut out, "user", ir.user.clone());
    match &ir.response_format {
        Some(ResponseFormat::JsonObject) => {
            out.insert("text".into(), json!({"format": {"type": "json_object"}}));
        }
        Some(ResponseFormat::JsonSchema { name, schema, strict }) => {
            let mut f = json!({"type": "json_schema", "name": name, "schema": schema});
            if let Some(s) = strict {
                f["strict"] = (*s).into();
            }
            out.insert("text".into(), json!({ "format": f }));
        }
        _ => {}
    }
    put(
        &mut out,
        "reasoning",
        ir.reasoning.map(|r| json!({"effort": r.effort.as_str()})),
    );
    if opts.stream {
        out.insert("stream".into(), true.into());
    }
    Ok(Value::Object(out))
}

fn content_part(b: &Block, assistant: bool) -> Option<Value> {
    match b {
        Block::Text(t) if assistant => Some(json!({"type": "output_text", "text": t.text, "annotations": []})),
        Block::Text(t) => Some(json!({"type": "input_text", "text": t.text})),
        // OpenAI takes an assistant message's text only.
        Block::Image(_) if assistant => None,
        Block::Image(m) => Some(json!({"type": "input_image", "image_url": m.to_url(), "detail": "auto"})),
        Block::File(m @ Media::Base64 { .. }) => {
            Some(json!({"type": "input_file", "file_data": m.to_url(), "filename": "file"}))
        }
        Block::File(Media::Url { url, .. }) => Some(json!({"type": "input_file", "file_url": url})),
        _ => None,
    }
}

fn render_message(m: &Message, out: &mut Vec<Value>) {
    let role = match m.role {
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::System => "developer",
    };
    let assistant = m.role == Role::Assistant;
    let mut parts = Vec::new();
    let flush = |parts: &mut Vec<Value>, out: &mut Vec<Value>| {
        if !parts.is_empty() {
            out.push(json!({"type": "message", "role": role, "content": std::mem::take(parts)}));
        }
    };
    for b in &m.content {
        match b {
            Block::ToolCall(tc) => {
                flush(&mut parts, out);
                out.push(json!({"type": "function_call", "call_id": tc.id, "name": tc.name,
                    "arguments": non_empty_args(&tc.arguments)}));
            }
            Block::ToolResult(r) => {
                flush(&mut parts, out);
                let mut text = r.text();
                if r.is_error {
                    text = format!("Error: {text}");
                }
                // With an image or file, the output is a list of input parts (text first).
                let media: Vec<Value> = r
                    .content
                    .iter()
                    .filter(|b| matches!(b, Block::Image(_) | Block::File(_)))
                    .filter_map(|b| content_part(b, false))
                    .collect();
                let output = if media.is_empty() {
                    Value::String(text)
                } else {
                    let text_part = (!text.is_empty()).then(|| json!({"type": "input_text", "text": text}));
                    Value::Array(text_part.into_iter().chain(media).collect())
                };
                out.push(json!({"type": "function_call_output", "call_id": r.call_id, "output": output}));
            }
            // Other vendors' reasoning cannot be replayed to OpenAI (§2.5).
            Block::Thinking { .. } | Block::RedactedThinking { .. } => {}
            Block::Text(t) if t.text.is_empty() => {}
            other => parts.extend(content_part(other, assistant)),
        }
    }
    flush(&mut parts, out);
}

/// A Responses request as an OpenAI Responses upstream can take it: without the reasoning items the
/// gateway wrote for this client from another vendor's reasoning (an earlier turn served by
/// Anthropic, Gemini or a Chat upstream), which OpenAI would refuse (an id it never issued, a
/// Claude signature as `encrypted_content`), nor the image items it wrote from another vendor's
/// image (ids OpenAI never issued either). `None` when there are none; the rare body that has
/// some is written anew.
pub fn without_foreign_items(body: &[u8]) -> Option<Vec<u8>> {
    use memchr::memmem::Finder;
    // Built once: a searcher made per request costs more than the search over a small body.
    // What only the gateway writes into a reasoning item: its ids, and the contents it carries
    // (Codex sends the items back without their ids).
    const CONTENTS: [&str; 3] = [
        ANTHROPIC_SIG_PREFIX,
        ANTHROPIC_REDACTED_PREFIX,
        super::GATEWAY_UNSIGNED_MARK,
    ];
    // Both Anthropic contents begin `anthropic-`: one search finds either (the items are then
    // told apart by their whole prefix).
    static MARKS: std::sync::LazyLock<[Finder<'static>; 4]> = std::sync::LazyLock::new(|| {
        [
            Finder::new(super::GATEWAY_REASONING_ID),
            Finder::new("anthropic-"),
            Finder::new(CONTENTS[2]),
            Finder::new(super::GATEWAY_IMAGE_ID),
        ]
    });
    if MARKS.iter().all(|m| m.find(body).is_none()) {
        return None;
    }
    let mut top: Value = serde_json::from_slice(body).ok()?;
    let input = top.get_mut("input")?.as_array_mut()?;
    let before = input.len();
    input.retain(|item| {
        let id_of = |prefix: &str| str_at(item, "id").is_some_and(|id| id.starts_with(prefix));
        let foreign = match str_at(item, "type") {
            Some("reasoning") => {
                id_of(super::GATEWAY_REASONING_ID)
                    || str_at(item, "encrypted_content").is_some_and(|e| CONTENTS.iter().any(|c| e.starts_with(c)))
            }
            Some("image_generation_call") => id_of(super::GATEWAY_IMAGE_ID),
            _ => false,
        };
        !foreign
    });
    (input.len() < before).then(|| serde_json::to_vec(&top).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_s_id_is_read_where_it_opens_or_anywhere() {
        assert_eq!(
            answer_id(br#" { "id" : "resp_1", "object": "response", "output": []}"#).as_deref(),
            Some("resp_1")
        );
        assert_eq!(
            answer_id(br#"{"object":"response","id":"resp_2"}"#).as_deref(),
            Some("resp_2")
        );
        assert_eq!(answer_id(br#"{"id":""}"#), None);
        assert_eq!(answer_id(br#"{"id":7}"#), None);
        assert_eq!(answer_id(b"[]"), None);
    }

    /// Codex's freeform `apply_patch`: a function of one string `input` for other upstreams, and
    /// earlier calls of it in the conversation as calls of that function.
    #[test]
    fn a_freeform_tool_is_a_function_of_one_text_input() {
        let body = json!({"model": "m", "tools": [{"type": "custom", "name": "apply_patch",
                "description": "Edit files.", "format": {"type": "grammar", "syntax": "lark", "definition": "start: patch"}}],
            "input": [{"role": "user", "content": "fix it"},
                {"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch", "input": "*** Begin Patch"},
                {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Done"}]});
        let ir = parse(&body).unwrap();
        let tool = &ir.tools[0];
        assert_eq!(tool.name, "apply_patch");
        assert_eq!(tool.parameters["required"], json!(["input"]));
        let hint = tool.parameters["properties"]["input"]["description"].as_str().unwrap();
        assert!(hint.contains("lark") && hint.contains("start: patch"), "{hint}");
        let call = ir.messages.iter().flat_map(|m| &m.content).find_map(|b| match b {
            Block::ToolCall(c) => Some(c),
            _ => None,
        });
        let call = call.expect("the earlier call");
        assert_eq!(
            serde_json::from_str::<Value>(&call.arguments).unwrap(),
            json!({"input": "*** Begin Patch"})
        );
        assert!(ir
            .messages
            .iter()
            .flat_map(|m| &m.content)
            .any(|b| matches!(b, Block::ToolResult(r) if r.call_id == "call_1")));
    }

    /// Codex offers OpenAI's web search on every request: for another upstream it is left out
    /// unless forced, as are earlier searches in the conversation.
    #[test]
    fn an_offered_web_search_is_left_out_and_a_forced_one_refused() {
        let function = json!({"type": "function", "name": "shell", "parameters": {"type": "object"}});
        let search = json!({"type": "web_search", "external_web_access": false});
        let body = json!({"model": "m", "tools": [search, function], "input": [
            {"role": "user", "content": "hi"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "x"}},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "found"}]}]});
        let ir = parse(&body).unwrap();
        assert_eq!(ir.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["shell"]);
        assert_eq!(ir.messages.len(), 2);
        let mut forced = body.clone();
        forced["tool_choice"] = json!({"type": "web_search"});
        assert!(matches!(parse(&forced), Err(ConvertError::Unsupported(_))));
        let only = json!({"model": "m", "tools": [search], "tool_choice": "required", "input": "hi"});
        assert!(matches!(parse(&only), Err(ConvertError::Unsupported(_))));
        let code = json!({"model": "m", "tools": [{"type": "code_interpreter"}], "input": "hi"});
        match parse(&code) {
            Err(ConvertError::Unsupported(m)) => assert!(m.contains("`code_interpreter`"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// Items the gateway wrote from plain reasoning come back as that reasoning, unsigned, with
    /// their mark or (written before it) with nothing, and with or without their ids.
    #[test]
    fn the_gateway_s_unsigned_reasoning_comes_back_as_unsigned_thinking() {
        use crate::formats::ir::Block;
        for item in [
            json!({"type": "reasoning", "summary": [{"type": "summary_text", "text": "hm"}], "encrypted_content": "apiproxy-unsigned:"}),
            json!({"type": "reasoning", "id": "rs_apx_1", "summary": [{"type": "summary_text", "text": "hm"}], "encrypted_content": "apiproxy-unsigned:"}),
            json!({"type": "reasoning", "summary": [{"type": "summary_text", "text": "hm"}]}),
        ] {
            let body = json!({"model": "m", "input": [{"role": "user", "content": "hi"}, item.clone(),
                {"role": "assistant", "content": "yes"}]});
            let ir = parse(&body).unwrap();
            let thinking: Vec<&Block> = ir
                .messages
                .iter()
                .flat_map(|m| &m.content)
                .filter(|b| matches!(b, Block::Thinking { .. }))
                .collect();
            assert_eq!(
                thinking,
                [&Block::Thinking {
                    text: "hm".into(),
                    signature: None
                }],
                "{item}"
            );
        }
    }

    /// `body` as an OpenAI upstream gets it.
    fn cleaned(body: &Value) -> Value {
        serde_json::from_slice(&without_foreign_items(body.to_string().as_bytes()).unwrap()).unwrap()
    }

    /// The `field` of each input item that has one.
    fn each<'a>(body: &'a Value, field: &str) -> Vec<&'a str> {
        body["input"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| str_at(i, field))
            .collect()
    }

    #[test]
    fn reasoning_the_gateway_wrote_is_not_replayed_to_openai() {
        let body = json!({"model": "m", "input": [
            {"role": "user", "content": "hi"},
            {"type": "reasoning", "id": "rs_apx_0001", "summary": [{"type": "summary_text", "text": "gemini's"}]},
            {"type": "reasoning", "id": "rs_apx_0002", "summary": [], "encrypted_content": "anthropic-thinking:EqQB"},
            {"type": "reasoning", "id": "rs_openai", "summary": [], "encrypted_content": "gAAAA"},
            // As Codex sends them back: without their ids.
            {"type": "reasoning", "summary": [], "encrypted_content": "anthropic-thinking:EqQB"},
            {"type": "reasoning", "summary": [], "encrypted_content": "anthropic-redacted:EmwK"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "deepseek's"}],
                "encrypted_content": "apiproxy-unsigned:"},
            {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA-without-id"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}]});
        let out = cleaned(&body);
        assert_eq!(each(&out, "id"), ["rs_openai"]);
        assert_eq!(each(&out, "encrypted_content"), ["gAAAA", "gAAAA-without-id"]);
        assert_eq!(out["input"].as_array().unwrap().len(), 4);
        let own = json!({"model": "m", "input": [body["input"][3].clone()]});
        assert!(without_foreign_items(own.to_string().as_bytes()).is_none());
    }

    #[test]
    fn an_image_item_the_gateway_wrote_is_not_replayed_to_openai() {
        let body = json!({"model": "m", "input": [
            {"role": "user", "content": "a cat"},
            {"type": "image_generation_call", "id": "ig_apx_0001", "status": "completed", "result": "iVBOR"},
            {"type": "image_generation_call", "id": "ig_openai", "status": "completed", "result": "iVBOR"},
            {"role": "user", "content": "make it blue"}]});
        assert_eq!(each(&cleaned(&body), "id"), ["ig_openai"]);
        let own = json!({"model": "m", "input": [body["input"][2].clone()]});
        assert!(without_foreign_items(own.to_string().as_bytes()).is_none());
    }
}
