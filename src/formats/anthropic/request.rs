//! Anthropic Messages request ↔ IR (formats.md §2.1, §2.4).

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde_json::{json, Map, Value};

use super::JSON_TOOL;
use crate::formats::convert::{ConvertError, RequestOptions};
use crate::formats::ir::*;
use crate::formats::json::*;
use crate::formats::openai_chat::request::{empty_schema, text_block};

/// Messages request → IR.
pub fn parse(v: &Value) -> Result<IrRequest, ConvertError> {
    let mut ir = IrRequest::default();
    for key in ["mcp_servers", "container"] {
        if v.get(key).is_some_and(|x| !x.is_null()) {
            return Err(ConvertError::Unsupported(format!(
                "`{key}` is an Anthropic server-side feature that this upstream does not have"
            )));
        }
    }
    match v.get("system") {
        Some(Value::String(s)) => ir.system.push(TextPart {
            text: s.clone(),
            cache_control: None,
        }),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                ir.system.push(TextPart {
                    text: str_at(b, "text").unwrap_or_default().to_string(),
                    cache_control: b.get("cache_control").cloned(),
                });
            }
        }
        _ => {}
    }
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ConvertError::Invalid("messages: Field required".into()))?;
    for m in messages {
        let role = match str_at(m, "role") {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("system") => Role::System,
            other => return Err(ConvertError::Invalid(format!("unknown message role {other:?}"))),
        };
        ir.messages.push(Message {
            role,
            content: parse_content(m.get("content"))?,
        });
    }
    for t in arr_at(v, "tools") {
        match str_at(t, "type") {
            None | Some("custom") => {}
            Some(other) => {
                return Err(ConvertError::Unsupported(format!(
                    "server tool `{other}` runs on Anthropic's side and cannot be translated"
                )))
            }
        }
        ir.tools.push(Tool {
            name: str_at(t, "name")
                .ok_or_else(|| ConvertError::Invalid("every tool needs a `name`".into()))?
                .to_string(),
            description: str_at(t, "description").map(str::to_string),
            parameters: t.get("input_schema").cloned().unwrap_or_else(empty_schema),
            // Claude's strict tools may leave properties optional, which OpenAI's strict mode
            // refuses: the upstream's default mode, as for `output_config` below.
            strict: None,
            cache_control: t.get("cache_control").cloned(),
        });
    }
    if let Some(tc) = v.get("tool_choice").filter(|x| x.is_object()) {
        ir.tool_choice = match str_at(tc, "type") {
            Some("auto") => Some(ToolChoice::Auto),
            Some("any") => Some(ToolChoice::Required),
            Some("none") => Some(ToolChoice::None),
            Some("tool") => Some(ToolChoice::Tool(str_at(tc, "name").unwrap_or_default().to_string())),
            _ => return Err(ConvertError::Invalid("unknown tool_choice type".into())),
        };
        if bool_at(tc, "disable_parallel_tool_use") == Some(true) {
            ir.parallel_tool_calls = Some(false);
        }
    }
    ir.max_tokens = u64_at(v, "max_tokens");
    ir.temperature = f64_at(v, "temperature");
    ir.top_p = f64_at(v, "top_p");
    ir.top_k = u64_at(v, "top_k");
    ir.stop = arr_at(v, "stop_sequences")
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    ir.user = v.get("metadata").and_then(|m| str_at(m, "user_id")).map(str::to_string);
    let output_config = v.get("output_config").unwrap_or(&Value::Null);
    if let Some(f) = output_config
        .get("format")
        .filter(|f| str_at(f, "type") == Some("json_schema"))
    {
        ir.response_format = Some(ResponseFormat::JsonSchema {
            name: "response".into(),
            schema: f.get("schema").cloned().unwrap_or_else(empty_schema),
            // Claude's schemas may leave properties optional, which OpenAI's strict mode refuses
            // (it wants every property in `required`): the upstream's default mode instead.
            strict: None,
        });
    }
    let effort = str_at(output_config, "effort").and_then(Effort::parse);
    if let Some(th) = v.get("thinking") {
        match str_at(th, "type") {
            Some("enabled") => {
                let budget = u64_at(th, "budget_tokens");
                ir.reasoning = Some(Reasoning {
                    effort: effort.unwrap_or_else(|| Effort::from_budget(budget.unwrap_or(0))),
                    budget_tokens: budget,
                });
            }
            Some("adaptive") => {
                ir.reasoning = Some(Reasoning {
                    effort: effort.unwrap_or(Effort::Medium),
                    budget_tokens: None,
                })
            }
            _ => {}
        }
    }
    Ok(ir)
}

fn parse_content(c: Option<&Value>) -> Result<Vec<Block>, ConvertError> {
    match c {
        Some(Value::String(s)) => Ok(vec![text_block(s)]),
        Some(Value::Array(blocks)) => blocks.iter().map(parse_block).collect(),
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(_) => Err(ConvertError::Invalid(
            "message content must be a string or a list of blocks".into(),
        )),
    }
}

pub(crate) fn parse_source(src: &Value) -> Result<Media, ConvertError> {
    match str_at(src, "type") {
        Some("base64") => Ok(Media::Base64 {
            media_type: str_at(src, "media_type").unwrap_or("image/png").to_string(),
            data: str_at(src, "data").unwrap_or_default().to_string(),
        }),
        Some("url") => Ok(Media::Url {
            url: str_at(src, "url").unwrap_or_default().to_string(),
            media_type: None,
        }),
        Some("text") => Ok(Media::Base64 {
            media_type: "text/plain".into(),
            data: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                str_at(src, "data").unwrap_or_default(),
            ),
        }),
        other => Err(ConvertError::Unsupported(format!(
            "content source type {other:?} (e.g. Files API ids) cannot be translated"
        ))),
    }
}

fn parse_block(b: &Value) -> Result<Block, ConvertError> {
    Ok(match str_at(b, "type") {
        Some("text") => Block::Text(TextPart {
            text: str_at(b, "text").unwrap_or_default().to_string(),
            cache_control: b.get("cache_control").cloned(),
        }),
        Some("image") => Block::Image(parse_source(b.get("source").unwrap_or(&Value::Null))?),
        Some("document") => Block::File(parse_source(b.get("source").unwrap_or(&Value::Null))?),
        Some("tool_use") => {
            // A Gemini thought signature this gateway carried in the id goes back to Gemini.
            let (id, signature) = unsmuggle_signature(str_at(b, "id").unwrap_or_default());
            Block::ToolCall(ToolCall {
                id,
                name: str_at(b, "name").unwrap_or_default().to_string(),
                arguments: crate::formats::json::args_text(b.get("input")),
                signature,
            })
        }
        Some("tool_result") => Block::ToolResult(ToolResult {
            call_id: unsmuggle_signature(str_at(b, "tool_use_id").unwrap_or_default()).0,
            content: parse_content(b.get("content"))?,
            is_error: bool_at(b, "is_error").unwrap_or(false),
        }),
        Some("thinking") => Block::Thinking {
            text: str_at(b, "thinking").unwrap_or_default().to_string(),
            signature: str_at(b, "signature").map(|s| Signature {
                vendor: Vendor::Anthropic,
                value: s.to_string(),
            }),
        },
        Some("redacted_thinking") => Block::RedactedThinking {
            data: str_at(b, "data").unwrap_or_default().to_string(),
        },
        Some(other) => {
            return Err(ConvertError::Unsupported(format!(
                "content block type `{other}` cannot be translated to this upstream"
            )))
        }
        None => return Err(ConvertError::Invalid("every content block needs a `type`".into())),
    })
}

/// The largest `max_tokens` every current Claude model with thinking takes (Opus 4: 32,000): a
/// budget added to the default never goes past it.
const MAX_OUTPUT_TOKENS: u64 = 32_000;

/// The `max_tokens` Anthropic requires, for a client that gave no limit (Codex, Gemini CLI): as much
/// room as the model surely has, so long output (a large patch) is not cut at 4096. Claude 3.7 and
/// 4.x take 32,000 or more (16,384 leaves room for a thinking budget on top, and stays under the
/// size Anthropic wants streamed); Claude 3.5 8,192; any other model (Claude 3 Haiku, another
/// vendor's Anthropic-style API) the `fallback`.
/// `bare` is the model's name without its provider prefix, `claude` its version as
/// `model_name::claude_version` reads it.
fn default_max_tokens(bare: &str, claude: Option<(&str, u32, u32)>, fallback: u32) -> u32 {
    // By the version, wherever the name has it (Bedrock's `anthropic.claude-…-v1:0`, Vertex's `@`).
    match claude.map(|(_, major, minor)| (major, minor)) {
        Some(v) if v >= (3, 7) => 16_384,
        Some((3, 5)) => 8_192,
        _ if bare.starts_with("claude-4") => 16_384,
        _ => fallback,
    }
}

/// Thinking budgets per effort (LiteLLM's 1024/2048/4096).
fn budget_for(r: &Reasoning) -> u64 {
    r.budget_tokens.unwrap_or(match r.effort {
        Effort::None | Effort::Minimal => 0,
        Effort::Low => 1024,
        Effort::Medium => 2048,
        Effort::High => 4096,
        Effort::XHigh => 8192,
    })
}

/// IR → Messages request, applying Anthropic's validity rules (§2.4).
pub fn render(ir: &IrRequest, opts: &RequestOptions) -> Result<Value, ConvertError> {
    refuse_unreadable_documents(ir)?;
    let mut out = Map::new();
    out.insert("model".into(), opts.model.clone().into());
    // The model's family and version, read once: what it takes goes by them.
    let bare = crate::formats::model_name::bare(&opts.model);
    let claude = crate::formats::model_name::claude_version(&bare);
    let default = default_max_tokens(&bare, claude, opts.default_max_tokens);
    let max_tokens = ir.max_tokens.unwrap_or(u64::from(default)).max(1);
    out.insert("max_tokens".into(), max_tokens.into());

    // Mid-conversation system turns join `system`: Anthropic has no system role in `messages` outside a beta.
    let mut system: Vec<&TextPart> = ir.system.iter().collect();
    for m in ir.messages.iter().filter(|m| m.role == Role::System) {
        system.extend(m.content.iter().filter_map(|b| match b {
            Block::Text(t) => Some(t),
            _ => None,
        }));
    }
    let system: Vec<Value> = system
        .into_iter()
        .filter(|t| !t.text.trim().is_empty())
        .map(|t| {
            let mut b = json!({"type": "text", "text": t.text});
            if let Some(cc) = &t.cache_control {
                b["cache_control"] = cc.clone();
            }
            b
        })
        .collect();
    if !system.is_empty() {
        out.insert("system".into(), system.into());
    }

    let messages = render_messages(ir);
    let has_tool_blocks = messages.iter().any(|m| {
        arr_at(m, "content")
            .iter()
            .any(|b| matches!(str_at(b, "type"), Some("tool_use") | Some("tool_result")))
    });
    out.insert("messages".into(), messages.into());

    let mut tools: Vec<Value> = ir.tools.iter().map(render_tool).collect();
    // A choice among no tools (the client's only tool was one the gateway cannot pass on, such as
    // a hosted web search) is no choice, but `none` (which the placeholder tool below may carry).
    let client_choice = ir
        .tool_choice
        .as_ref()
        .filter(|c| !ir.tools.is_empty() || matches!(c, ToolChoice::None));
    let mut tool_choice = match client_choice {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::Tool(n)) => Some(json!({"type": "tool", "name": n})),
    };
    let mut output_config = Map::new();
    match json_answer(&ir.response_format, claude) {
        Some(JsonAnswer::Structured(schema)) => {
            let schema = super::schema::for_structured_output(schema);
            output_config.insert("format".into(), json!({"type": "json_schema", "schema": schema}));
        }
        // A tool whose input is the answer, forced when the client has no tools of its own (JSON
        // mode shapes the text; it must not keep the model from calling the client's tools).
        Some(JsonAnswer::Tool(input_schema)) => {
            tools.push(json!({"name": JSON_TOOL, "description": "Respond with a JSON object.",
                "input_schema": input_schema}));
            if ir.tools.is_empty() {
                tool_choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
            }
        }
        None => {}
    }
    if tools.is_empty() && has_tool_blocks {
        // Anthropic 400s on tool blocks in history without `tools` (LiteLLM adds the same dummy).
        tools.push(
            json!({"name": "dummy_tool", "description": "Unused; keeps tool history valid.",
            "input_schema": {"type": "object", "properties": {}}}),
        );
    }
    if tools.is_empty() {
        // Anthropic refuses `tool_choice` without `tools`.
        tool_choice = None;
    }
    if ir.parallel_tool_calls == Some(false) && !tools.is_empty() {
        let tc = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        // `none` has no such field (and calls no tool at all).
        if str_at(tc, "type") != Some("none") {
            tc["disable_parallel_tool_use"] = true.into();
        }
    }

    // Thinking: needs budget >= 1024 below max_tokens, temperature 1, no top_p/top_k, tool_choice auto/none.
    let forced_tool = tool_choice
        .as_ref()
        .is_some_and(|tc| matches!(str_at(tc, "type"), Some("any") | Some("tool")));
    let thinking_budget = ir
        .reasoning
        .as_ref()
        // Claude 3 models before 3.7 cannot think: they refuse `thinking` with a 400.
        .filter(|_| thinks(claude))
        .map(budget_for)
        // A client's own limit holds: the budget fits below it. Without one, the budget comes on
        // top of the default, so thinking does not eat the answer's room.
        .map(|b| match ir.max_tokens {
            Some(_) => b.min(max_tokens.saturating_sub(1)),
            None => b.min(MAX_OUTPUT_TOKENS.saturating_sub(max_tokens)),
        })
        // Too small a limit to think within, a forced tool (which thinking forbids), or a tool loop
        // whose assistant turn has no thinking Anthropic signed (thinking would require the turn
        // to open with it): no thinking; the hard constraint wins over the effort hint.
        .filter(|b| *b >= 1024 && !forced_tool && !unsigned_tool_turn(ir));
    if let Some(budget) = thinking_budget {
        if ir.max_tokens.is_none() {
            out.insert("max_tokens".into(), max_tokens.saturating_add(budget).into());
        }
        out.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    } else {
        // Anthropic temperature is 0–1; OpenAI's 0–2 is clamped.
        put(&mut out, "temperature", ir.temperature.map(|t| t.clamp(0.0, 1.0)));
        if ir.temperature.is_none() {
            // Newer Claude models reject temperature and top_p together: temperature wins.
            put(&mut out, "top_p", ir.top_p);
        }
        put(&mut out, "top_k", ir.top_k);
    }
    if !tools.is_empty() {
        out.insert("tools".into(), tools.into());
    }
    put(&mut out, "tool_choice", tool_choice);
    if !output_config.is_empty() {
        out.insert("output_config".into(), output_config.into());
    }
    let stops: Vec<&String> = ir.stop.iter().filter(|s| !s.trim().is_empty()).collect();
    if !stops.is_empty() {
        out.insert("stop_sequences".into(), json!(stops));
    }
    if let Some(user) = ir.user.as_deref().filter(|u| is_opaque_id(u)) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if opts.stream {
        out.insert("stream".into(), true.into());
    }
    Ok(Value::Object(out))
}

/// A Claude model's family and version, as `model_name::claude_version` reads them.
type ClaudeVersion<'a> = Option<(&'a str, u32, u32)>;

/// How a JSON answer is asked of Claude.
enum JsonAnswer<'a> {
    /// As structured output (`output_config.format`), with this schema.
    Structured(&'a Value),
    /// As the input of a tool (`JSON_TOOL`) of this input schema: no schema-less JSON mode on
    /// Anthropic; a model without structured output (before Sonnet and Haiku 4.5, Opus 4.1, or
    /// another vendor's behind Anthropic's API) refuses `output_config.format`; and a schema with
    /// a dictionary in it cannot be closed as structured output needs.
    Tool(Value),
}

fn json_answer<'a>(format: &'a Option<ResponseFormat>, claude: ClaudeVersion<'_>) -> Option<JsonAnswer<'a>> {
    match format {
        Some(ResponseFormat::JsonSchema { schema, .. })
            if takes_output_format(claude) && !super::schema::has_open_objects(schema) =>
        {
            Some(JsonAnswer::Structured(schema))
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => Some(JsonAnswer::Tool(schema.clone())),
        Some(ResponseFormat::JsonObject) => Some(JsonAnswer::Tool(
            json!({"type": "object", "additionalProperties": true}),
        )),
        Some(ResponseFormat::Text) | None => None,
    }
}

/// Whether the answer to `format` comes as the JSON tool's input (`json_mode` of the translation).
pub(crate) fn answers_in_json_tool(format: &Option<ResponseFormat>, model: &str) -> bool {
    let bare = crate::formats::model_name::bare(model);
    let claude = crate::formats::model_name::claude_version(&bare);
    matches!(json_answer(format, claude), Some(JsonAnswer::Tool(_)))
}

/// Whether the model takes structured output (`output_config.format`): Claude Sonnet and Haiku
/// 4.5, Opus 4.1, and every later Claude.
fn takes_output_format(claude: ClaudeVersion<'_>) -> bool {
    claude.is_some_and(|(family, major, minor)| {
        major > 4 || (major == 4 && minor >= if family == "opus" { 1 } else { 5 })
    })
}

/// Whether a Claude model can think (extended thinking came with Claude 3.7); a model of another
/// name on an Anthropic-style API is given the benefit of the doubt.
fn thinks(claude: ClaudeVersion<'_>) -> bool {
    claude.is_none_or(|(_, major, minor)| (major, minor) >= (3, 7))
}

/// Whether the last assistant turn called tools without thinking Anthropic can take back (signed
/// by it, or redacted): with thinking on, Anthropic refuses such a turn ("a final assistant message
/// must start with a thinking block"). Clients that do not keep Claude's thinking (Gemini and most
/// OpenAI clients) send exactly that on the second step of every tool loop.
fn unsigned_tool_turn(ir: &IrRequest) -> bool {
    let Some(last) = ir.messages.iter().rev().find(|m| m.role == Role::Assistant) else {
        return false;
    };
    let calls_tools = last.content.iter().any(|b| matches!(b, Block::ToolCall(_)));
    let thinking_kept = last.content.iter().any(|b| match b {
        Block::Thinking { signature, .. } => Signature::for_vendor(signature, Vendor::Anthropic).is_some(),
        Block::RedactedThinking { .. } => true,
        _ => false,
    });
    calls_tools && !thinking_kept
}

/// Anthropic rejects emails and other PII as `metadata.user_id`: only opaque ids are forwarded.
fn is_opaque_id(u: &str) -> bool {
    !u.is_empty() && u.len() <= 256 && !u.contains('@') && !u.contains(char::is_whitespace)
}

fn render_tool(t: &Tool) -> Value {
    // Anthropic requires `"type": "object"` at the top of every schema; clients send `{}` or
    // `{"properties": …}` for tools without arguments.
    let mut schema = t.parameters.clone();
    match schema.as_object_mut() {
        Some(o) => {
            o.entry("type").or_insert_with(|| "object".into());
        }
        None => schema = empty_schema(),
    }
    let mut v = json!({"name": t.name, "input_schema": schema});
    if let Some(d) = &t.description {
        v["description"] = d.clone().into();
    }
    if let Some(cc) = &t.cache_control {
        v["cache_control"] = cc.clone();
    }
    v
}

pub(crate) fn render_source(m: &Media) -> Value {
    match m {
        Media::Base64 { media_type, data } => json!({"type": "base64", "media_type": media_type, "data": data}),
        Media::Url { url, .. } => json!({"type": "url", "url": url}),
    }
}

/// Anthropic reads a document sent inline only as a PDF or as plain text: another file (a Word
/// document, audio, video) would be refused upstream, so the request is refused here instead, and
/// another candidate may take it.
fn refuse_unreadable_documents(ir: &IrRequest) -> Result<(), ConvertError> {
    for block in ir.messages.iter().flat_map(|m| &m.content) {
        if let Block::File(Media::Base64 { media_type, data }) = block {
            if media_type != "application/pdf" && plain_text(media_type, data).is_none() {
                return Err(ConvertError::Unsupported(format!(
                    "Anthropic takes documents as PDF or plain text; this request sends a `{media_type}` file"
                )));
            }
        }
    }
    Ok(())
}

fn render_document(m: &Media) -> Value {
    let source = match m {
        Media::Base64 { media_type, data } if media_type != "application/pdf" => match plain_text(media_type, data) {
            Some(text) => json!({"type": "text", "media_type": "text/plain", "data": text}),
            None => render_source(m),
        },
        m => render_source(m),
    };
    json!({"type": "document", "source": source})
}

fn render_block(b: &Block) -> Option<Value> {
    match b {
        // "text content blocks must contain non-whitespace text" (the "\n\n" Qwen, GLM or
        // DeepSeek write beside a tool call): dropped, never replaced by placeholder text.
        Block::Text(t) if t.text.trim().is_empty() => None,
        Block::Text(t) => {
            let mut v = json!({"type": "text", "text": t.text});
            if let Some(cc) = &t.cache_control {
                v["cache_control"] = cc.clone();
            }
            Some(v)
        }
        Block::Image(m) => Some(json!({"type": "image", "source": render_source(m)})),
        Block::File(m) => Some(render_document(m)),
        Block::ToolCall(tc) => Some(json!({
            "type": "tool_use",
            "id": sanitize_tool_id(&tc.id),
            "name": tc.name,
            "input": args_object(&tc.arguments),
        })),
        Block::ToolResult(r) => {
            let content: Vec<Value> = r.content.iter().filter_map(render_block).collect();
            let mut v = json!({"type": "tool_result", "tool_use_id": sanitize_tool_id(&r.call_id), "content": content});
            if r.is_error {
                v["is_error"] = true.into();
            }
            Some(v)
        }
        // Signed by Anthropic: replayed byte for byte. Unsigned or foreign thinking is never fabricated.
        Block::Thinking { text, signature } => Signature::for_vendor(signature, Vendor::Anthropic)
            .map(|sig| json!({"type": "thinking", "thinking": text, "signature": sig})),
        Block::RedactedThinking { data } => Some(json!({"type": "redacted_thinking", "data": data})),
        // Histories carry refusals as text; one from elsewhere still is.
        Block::Refusal(r) if r.trim().is_empty() => None,
        Block::Refusal(r) => Some(json!({"type": "text", "text": r})),
    }
}

/// Messages with tool results first in their turn, same-role turns merged, a user turn first.
fn render_messages(ir: &IrRequest) -> Vec<Value> {
    let mut out: Vec<(Role, Vec<Value>)> = Vec::with_capacity(ir.messages.len());
    for m in ir.messages.iter().filter(|m| m.role != Role::System) {
        let mut blocks: Vec<Value> = Vec::with_capacity(m.content.len());
        if m.role == Role::User {
            // tool_result blocks must come first in the turn after tool_use.
            let (results, rest): (Vec<&Block>, Vec<&Block>) =
                m.content.iter().partition(|b| matches!(b, Block::ToolResult(_)));
            blocks.extend(results.into_iter().chain(rest).filter_map(render_block));
        } else {
            // Thinking before tool_use, as Anthropic produced it. An image the model made (a
            // Gemini image model's, given back) is no content Anthropic takes from an assistant.
            let (thinking, rest): (Vec<&Block>, Vec<&Block>) = m
                .content
                .iter()
                .filter(|b| !matches!(b, Block::Image(_)))
                .partition(|b| matches!(b, Block::Thinking { .. } | Block::RedactedThinking { .. }));
            blocks.extend(thinking.into_iter().chain(rest).filter_map(render_block));
        }
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((role, prev)) if *role == m.role => {
                // A user turn after a merged tool-result turn: results stay first.
                prev.extend(blocks);
            }
            _ => out.push((m.role, blocks)),
        }
    }
    if out.first().is_some_and(|(r, _)| *r == Role::Assistant) {
        // The first message must be a user turn (New-API's "..." convention).
        out.insert(0, (Role::User, vec![json!({"type": "text", "text": "..."})]));
    }
    out.into_iter()
        .map(|(role, content)| {
            let role = if role == Role::User { "user" } else { "assistant" };
            json!({"role": role, "content": content})
        })
        .collect()
}

/// Whether an `image` block may sit in an assistant turn: the nearest `"role"` before some
/// `"type": "image"` names the assistant. A cheap look, right for a body that gives a message's
/// role before its content (as SDKs write them); a false alarm only costs the parse.
fn assistant_image(body: &[u8]) -> bool {
    static IMAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"image\""));
    static ROLE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"role\""));
    // One forward pass over both: the roles seen so far are read up to each image, never again
    // (looking back from every image made a body of many images quadratic).
    let mut roles = ROLE.find_iter(body).peekable();
    let mut assistant = false;
    IMAGE.find_iter(body).any(|at| {
        while let Some(r) = roles.next_if(|&r| r < at) {
            let value = body[r + 6..].trim_ascii_start();
            assistant = value
                .strip_prefix(b":")
                .is_some_and(|v| v.trim_ascii_start().starts_with(b"\"assistant\""));
        }
        let before = body[..at].trim_ascii_end();
        let is_type = before
            .strip_suffix(b":")
            .is_some_and(|b| b.trim_ascii_end().ends_with(b"\"type\""));
        is_type && assistant
    })
}

/// An Anthropic request without the blocks Anthropic would refuse, when it has any (`None`:
/// nothing to remove, send the body as it is): images in an assistant turn ("'image' blocks are
/// not permitted within assistant turns"; a client gets them from a Gemini image model through the
/// gateway), and thinking blocks that carry no signature. A client gets those from a stream
/// translated from another vendor's reasoning (which has no Claude signature), then replays them;
/// the text of the reasoning has no other use upstream. A message
/// left with nothing goes (Anthropic joins the turns around it). When the last assistant turn then
/// calls tools without thinking Anthropic can take back, thinking is turned off for the request, as
/// the translated path does (`unsigned_tool_turn`): with it on, Anthropic refuses such a turn. Only
/// the `messages` array (and `thinking`, when turned off) is rewritten; every other byte of the body
/// stays as it came.
pub fn without_refused_blocks(body: &[u8]) -> Option<Vec<u8>> {
    without_blocks(body, false)
}

/// As [without_refused_blocks], and every thinking block of the conversation goes too: for an
/// upstream that refused a signature in it (thinking another Anthropic-style vendor signed, GLM's or
/// Kimi's, replayed to Claude: "Invalid `signature` in `thinking` block").
pub fn without_thinking(body: &[u8]) -> Option<Vec<u8>> {
    without_blocks(body, true)
}

fn without_blocks(body: &[u8], all_thinking: bool) -> Option<Vec<u8>> {
    use std::borrow::Cow;

    use serde_json::value::RawValue;
    // One pass over the body: is any `"signature":` followed by an empty string?
    static SIGNATURE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"signature\":"));
    let empty_signature = SIGNATURE.find_iter(body).any(|at| {
        let rest = &body[at + SIGNATURE.needle().len()..];
        rest.trim_ascii_start().starts_with(b"\"\"")
    });
    if !all_thinking && !empty_signature && !assistant_image(body) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Req<'a> {
        #[serde(borrow)]
        messages: &'a RawValue,
        #[serde(borrow, default)]
        thinking: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Msg<'a> {
        #[serde(borrow, default)]
        role: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        content: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Block<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        signature: Option<Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Thinking<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
    }
    let unsigned =
        |b: &Block<'_>| b.kind.as_deref() == Some("thinking") && b.signature.as_deref().is_none_or(str::is_empty);
    let thinking = |b: &Block<'_>| matches!(b.kind.as_deref(), Some("thinking" | "redacted_thinking"));
    let refused = |b: &Block<'_>, assistant: bool| {
        unsigned(b) || (assistant && b.kind.as_deref() == Some("image")) || (all_thinking && thinking(b))
    };
    let offset = |inner: &str, outer: &str| inner.as_ptr() as usize - outer.as_ptr() as usize;

    let req: Req<'_> = serde_json::from_slice(body).ok()?;
    let messages: Vec<&RawValue> = serde_json::from_str(req.messages.get()).ok()?;
    let mut changed = false;
    let mut rebuilt: Vec<Cow<'_, str>> = Vec::with_capacity(messages.len());
    // Whether the last assistant turn, as sent on, calls tools without thinking Anthropic can take.
    let mut last_turn_unsigned_tools = false;
    for raw in messages {
        let Ok(msg) = serde_json::from_str::<Msg<'_>>(raw.get()) else {
            rebuilt.push(Cow::Borrowed(raw.get()));
            continue;
        };
        let blocks: Option<Vec<&RawValue>> = msg.content.and_then(|c| serde_json::from_str(c.get()).ok());
        let (Some(content), Some(blocks)) = (msg.content, blocks) else {
            if msg.role.as_deref() == Some("assistant") {
                last_turn_unsigned_tools = false;
            }
            rebuilt.push(Cow::Borrowed(raw.get()));
            continue;
        };
        let assistant = msg.role.as_deref() == Some("assistant");
        let parsed: Vec<Option<Block<'_>>> = blocks.iter().map(|b| serde_json::from_str(b.get()).ok()).collect();
        let kept: Vec<&str> = blocks
            .iter()
            .zip(&parsed)
            .filter(|(_, b)| !b.as_ref().is_some_and(|b| refused(b, assistant)))
            .map(|(raw, _)| raw.get())
            .collect();
        // A turn that goes (below) leaves the flag as the turn before it set it.
        if assistant && !kept.is_empty() {
            let kept_blocks = parsed.iter().flatten().filter(|b| !refused(b, assistant));
            let (mut tools, mut thinking) = (false, false);
            for b in kept_blocks {
                match b.kind.as_deref() {
                    Some("tool_use") => tools = true,
                    Some("thinking" | "redacted_thinking") => thinking = true,
                    _ => {}
                }
            }
            last_turn_unsigned_tools = tools && !thinking;
        }
        if kept.len() == blocks.len() {
            rebuilt.push(Cow::Borrowed(raw.get()));
            continue;
        }
        changed = true;
        if kept.is_empty() {
            // Nothing but what Anthropic refuses: an empty turn would be refused too; it goes.
            continue;
        }
        let at = offset(content.get(), raw.get());
        rebuilt.push(Cow::Owned(format!(
            "{}[{}]{}",
            &raw.get()[..at],
            kept.join(","),
            &raw.get()[at + content.get().len()..]
        )));
    }
    if !changed {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    // (start, end, replacement) in body order.
    let mut edits = vec![(
        offset(req.messages.get(), text),
        offset(req.messages.get(), text) + req.messages.get().len(),
        format!("[{}]", rebuilt.join(",")),
    )];
    let thinking_on = req
        .thinking
        .and_then(|t| serde_json::from_str::<Thinking<'_>>(t.get()).ok())
        .is_some_and(|t| t.kind.as_deref() != Some("disabled"));
    if let (true, true, Some(t)) = (last_turn_unsigned_tools, thinking_on, req.thinking) {
        let start = offset(t.get(), text);
        edits.push((start, start + t.get().len(), r#"{"type":"disabled"}"#.to_string()));
        edits.sort_by_key(|e| e.0);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for (start, end, replacement) in edits {
        out.extend_from_slice(&body[at..start]);
        out.extend_from_slice(replacement.as_bytes());
        at = end;
    }
    out.extend_from_slice(&body[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client without an output limit gets the room its Claude model surely has, thinking on top.
    #[test]
    fn the_default_limit_is_the_model_s_room() {
        let opts = |model: &str| RequestOptions {
            model: model.into(),
            stream: true,
            default_max_tokens: 4096,
            fetched_media: None,
            stream_usage: true,
            replay_reasoning: false,
        };
        let body = json!({"model": "x", "input": "hi"});
        let ir = crate::formats::responses_api::request::parse(&body).unwrap();
        for (model, want) in [
            ("claude-sonnet-4-5", 16_384),
            ("claude-opus-4-1-20250805", 16_384),
            ("anthropic/claude-3-7-sonnet", 16_384),
            ("claude-3-5-haiku-latest", 8_192),
            ("claude-3-haiku-20240307", 4_096),
            ("glm-4.6", 4_096),
            // Bedrock's and Vertex's ids, and an aggregator's dotted versions.
            ("anthropic.claude-sonnet-4-5-20250929-v1:0", 16_384),
            ("claude-opus-4@20250514", 16_384),
            ("anthropic/claude-3.5-sonnet", 8_192),
            ("claude-4", 16_384),
        ] {
            assert_eq!(render(&ir, &opts(model)).unwrap()["max_tokens"], want, "{model}");
        }
        let thinking = json!({"model": "x", "input": "hi", "reasoning": {"effort": "high"}});
        let ir = crate::formats::responses_api::request::parse(&thinking).unwrap();
        let v = render(&ir, &opts("claude-sonnet-4-5")).unwrap();
        assert_eq!(
            (v["max_tokens"].as_u64(), v["thinking"]["budget_tokens"].as_u64()),
            (Some(20_480), Some(4096)),
            "{v}"
        );

        // Claude before 3.7 cannot think: asked to, it answers without.
        for model in ["claude-3-5-haiku-latest", "claude-3-opus-20240229"] {
            let v = render(&ir, &opts(model)).unwrap();
            assert!(v.get("thinking").is_none(), "{model}: {v}");
        }
        assert!(render(&ir, &opts("claude-3-7-sonnet-latest"))
            .unwrap()
            .get("thinking")
            .is_some());
    }

    /// Thinking another vendor signed, refused by Claude: every thinking block goes, the rest of the
    /// conversation stays, and thinking is turned off only when the last turn's tool calls would then
    /// lack the thinking Claude requires before them.
    #[test]
    fn without_thinking_takes_every_thinking_block_out() {
        let think = json!({"type": "thinking", "thinking": "hmm", "signature": "glm-signed"});
        let body = |last: Value| {
            json!({"model": "m", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024},
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [think, {"type": "text", "text": "Hello"}]},
                    {"role": "user", "content": "weather?"},
                    last]})
        };
        let tool_turn =
            json!({"role": "assistant", "content": [think, {"type": "tool_use", "id": "t", "name": "w", "input": {}}]});
        let out: Value =
            serde_json::from_slice(&without_thinking(body(tool_turn).to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out["messages"][1]["content"],
            json!([{"type": "text", "text": "Hello"}])
        );
        assert_eq!(out["messages"][3]["content"][0]["type"], "tool_use");
        assert_eq!(out["thinking"], json!({"type": "disabled"}), "{out}");
        let text_turn = json!({"role": "assistant", "content": [think, {"type": "text", "text": "Sunny"}]});
        let out: Value =
            serde_json::from_slice(&without_thinking(body(text_turn).to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(out["thinking"]["type"], "enabled", "{out}");
        assert!(!out.to_string().contains("glm-signed"));
    }

    #[test]
    fn an_image_in_an_assistant_turn_is_removed_and_one_in_a_user_turn_kept() {
        let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}});
        let body = json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a cat"}, image]},
            {"role": "assistant", "content": [{"type": "text", "text": "Here:"}, image]},
            {"role": "assistant", "content": [image]},
            {"role": "user", "content": "now describe it"}]});
        let out: Value = serde_json::from_slice(&without_refused_blocks(body.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(out["messages"][0], body["messages"][0]);
        assert_eq!(
            out["messages"][1]["content"],
            json!([{"type": "text", "text": "Here:"}])
        );
        // A turn of an image alone goes.
        assert_eq!(out["messages"][2], body["messages"][3]);
        // As Python's SDK writes JSON (spaces after the colons).
        let spaced = r#"{"messages": [{"role": "assistant", "content": [{"type": "image", "source": {}}, {"type": "text", "text": "t"}]}]}"#;
        assert!(without_refused_blocks(spaced.as_bytes()).is_some());
        // Images in user turns only (Claude Code's screenshots): the body goes as it came.
        let users = json!({"messages": [body["messages"][0].clone(),
            {"role": "assistant", "content": "It is a cat."}, body["messages"][0].clone()]});
        assert!(without_refused_blocks(users.to_string().as_bytes()).is_none());
    }

    #[test]
    fn unsigned_thinking_is_removed_and_signed_thinking_kept() {
        let body = json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "from another vendor", "signature": ""},
                {"type": "text", "text": "hello"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Claude's own", "signature": "EqQB"},
                {"type": "text", "text": "again"}]},
            {"role": "user", "content": "go on"}]});
        let out: Value = serde_json::from_slice(&without_refused_blocks(body.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out["messages"][1]["content"],
            json!([{"type": "text", "text": "hello"}])
        );
        assert_eq!(out["messages"][2], body["messages"][2]);
        assert_eq!(out["model"], "m");
        // Everything but the changed array is byte for byte as sent (key order included).
        let sent = r#"{"z":1,"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"x","signature":""}, {"type":"text","text":"t"}]}],"a":{"y":2,"b":3}}"#;
        let cleaned = String::from_utf8(without_refused_blocks(sent.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            cleaned,
            r#"{"z":1,"messages":[{"role":"assistant","content":[{"type":"text","text":"t"}]}],"a":{"y":2,"b":3}}"#
        );
        // Nothing to remove: the body goes as it is.
        let signed = json!({"messages": [body["messages"][2].clone()]}).to_string();
        assert!(without_refused_blocks(signed.as_bytes()).is_none());
        assert!(without_refused_blocks(br#"{"messages":[{"role":"user","content":"say \"thinking\""}]}"#).is_none());
    }

    #[test]
    fn documents_go_as_pdf_or_plain_text_or_not_at_all() {
        let file = |media_type: &str, data: &str| IrRequest {
            messages: vec![Message {
                role: Role::User,
                content: vec![Block::File(Media::Base64 {
                    media_type: media_type.into(),
                    data: data.into(),
                })],
            }],
            ..Default::default()
        };
        let opts = RequestOptions {
            model: "claude-x".into(),
            stream: false,
            default_max_tokens: 1024,
            fetched_media: None,
            stream_usage: true,
            replay_reasoning: false,
        };
        let out = render(&file("text/plain", "aGVsbG8="), &opts).unwrap();
        assert_eq!(
            out["messages"][0]["content"][0]["source"],
            json!({"type": "text", "media_type": "text/plain", "data": "hello"})
        );
        let out = render(&file("application/pdf", "JVBERi0="), &opts).unwrap();
        assert_eq!(out["messages"][0]["content"][0]["source"]["type"], "base64");
        for refused in [file("audio/mpeg", "AAAA"), file("application/msword", "AAAA")] {
            assert!(matches!(render(&refused, &opts), Err(ConvertError::Unsupported(_))));
        }
    }

    #[test]
    fn a_tool_turn_left_without_thinking_turns_thinking_off_and_empty_turns_go() {
        let body = json!({"model": "m", "max_tokens": 2000,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "only reasoning", "signature": ""}]},
                {"role": "user", "content": "and?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "from another vendor", "signature": ""},
                    {"type": "tool_use", "id": "t1", "name": "get", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}]});
        let out: Value = serde_json::from_slice(&without_refused_blocks(body.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(out["thinking"], json!({"type": "disabled"}));
        let messages = out["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4, "the turn of only unsigned reasoning went: {out}");
        assert_eq!(
            messages[2]["content"],
            json!([{"type": "tool_use", "id": "t1", "name": "get", "input": {}}])
        );

        // A turn of only unsigned thinking after the tool turn goes: the tool turn is still last.
        let mut trailing = body.clone();
        trailing["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "assistant", "content": [{"type": "thinking", "thinking": "x", "signature": ""}]}));
        let out: Value =
            serde_json::from_slice(&without_refused_blocks(trailing.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(out["thinking"], json!({"type": "disabled"}), "{out}");

        // A signed turn last: thinking stays on.
        let mut signed = body.clone();
        signed["messages"][3]["content"][0]["signature"] = json!("EqQB");
        let out: Value =
            serde_json::from_slice(&without_refused_blocks(signed.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(out["thinking"], body["thinking"]);
        assert_eq!(out["messages"].as_array().unwrap().len(), 4);
    }
}
