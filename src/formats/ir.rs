//! The internal representation every format is parsed into and rendered from (formats.md §0): a superset of
//! OpenAI Chat with typed content blocks, so no pair of formats needs its own translation.

use base64::Engine;
use serde_json::Value;

use super::usage::Usage;
pub use super::wire::Vendor;

/// A whole request, format-neutral.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IrRequest {
    /// System/developer instructions that precede the conversation, in order.
    pub system: Vec<TextPart>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// `Some(false)` when the client forbade parallel tool calls.
    pub parallel_tool_calls: Option<bool>,
    /// Output token limit (reasoning included).
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub stop: Vec<String>,
    pub response_format: Option<ResponseFormat>,
    pub reasoning: Option<Reasoning>,
    /// An opaque end-user id.
    pub user: Option<String>,
}

/// A system text with its Anthropic prompt-cache marker, kept so caching survives a translation.
#[derive(Debug, Clone, PartialEq)]
pub struct TextPart {
    pub text: String,
    pub cache_control: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    /// A system/developer turn in the middle of the conversation (Claude Code sends these).
    System,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

impl Message {
    /// Whether this message is a turn of tool results only (the answer to an assistant's calls),
    /// which the next result joins, for the Chat and Responses parsers. They begin such turns with
    /// a result and only ever add results to them, so the first and last block tell: no scan per
    /// result, which made long tool histories quadratic. (Not a test for turns built otherwise.)
    pub(crate) fn only_tool_results(&self) -> bool {
        matches!(self.content.first(), Some(Block::ToolResult(_)))
            && matches!(self.content.last(), Some(Block::ToolResult(_)))
    }
}

/// One typed piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Text(TextPart),
    Image(Media),
    /// A non-image file (PDF, …).
    File(Media),
    ToolCall(ToolCall),
    ToolResult(ToolResult),
    /// Model reasoning. Unsigned thinking is never replayed to a vendor that wants signatures.
    Thinking {
        text: String,
        signature: Option<Signature>,
    },
    /// Anthropic's encrypted thinking, opaque.
    RedactedThinking {
        data: String,
    },
    /// An OpenAI model's refusal (structured outputs): `message.refusal` or a `refusal` part for
    /// an OpenAI client, whose SDK's `.parse()` would read it as the answer's JSON otherwise; text
    /// for the others.
    Refusal(String),
}

/// Where an image or file comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Media {
    Base64 { media_type: String, data: String },
    Url { url: String, media_type: Option<String> },
}

impl Media {
    /// A `data:` URL is inline bytes; anything else is a reference.
    pub fn from_url(url: &str) -> Media {
        if let Some(rest) = url.strip_prefix("data:") {
            if let Some((meta, data)) = rest.split_once(',') {
                if let Some(media_type) = meta.strip_suffix(";base64") {
                    // `image/jpg` is common in clients and refused by Anthropic and Gemini.
                    let media_type = if media_type.eq_ignore_ascii_case("image/jpg") {
                        "image/jpeg"
                    } else {
                        media_type
                    };
                    return Media::Base64 {
                        media_type: media_type.to_string(),
                        data: data.to_string(),
                    };
                }
            }
        }
        Media::Url {
            url: url.to_string(),
            media_type: None,
        }
    }

    /// The OpenAI-style URL: a `data:` URL for inline bytes.
    pub fn to_url(&self) -> String {
        match self {
            Media::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
            Media::Url { url, .. } => url.clone(),
        }
    }

    /// Best-effort media type: declared, or guessed from the URL's extension.
    pub fn media_type(&self) -> String {
        match self {
            Media::Base64 { media_type, .. } => media_type.clone(),
            Media::Url {
                media_type: Some(m), ..
            } => m.clone(),
            Media::Url { url, .. } => guess_media_type(url).to_string(),
        }
    }
}

/// Media fetched by the gateway for an upstream that cannot fetch it itself: URL → inline bytes.
pub type FetchedMedia = std::collections::HashMap<String, Media>;

impl IrRequest {
    /// Every image or file given by URL, in order.
    pub fn media_urls(&self) -> Vec<&str> {
        let mut urls = Vec::new();
        for b in self.messages.iter().flat_map(|m| &m.content) {
            visit_media(b, &mut |m| {
                if let Media::Url { url, .. } = m {
                    urls.push(url.as_str());
                }
            });
        }
        urls
    }

    /// Whether a file (a document, not an image) is named by URL rather than sent inline.
    pub fn has_file_by_url(&self) -> bool {
        fn by_url(b: &Block) -> bool {
            match b {
                Block::File(Media::Url { .. }) => true,
                Block::ToolResult(r) => r.content.iter().any(by_url),
                _ => false,
            }
        }
        self.messages.iter().flat_map(|m| &m.content).any(by_url)
    }

    /// Replaces each URL found in `fetched` with the bytes fetched for it.
    pub fn inline_media(&mut self, fetched: &FetchedMedia) {
        for b in self.messages.iter_mut().flat_map(|m| &mut m.content) {
            visit_media_mut(b, &mut |m| {
                if let Media::Url { url, .. } = m {
                    if let Some(inline) = fetched.get(url.as_str()) {
                        *m = inline.clone();
                    }
                }
            });
        }
    }
}

fn visit_media<'a>(b: &'a Block, f: &mut impl FnMut(&'a Media)) {
    match b {
        Block::Image(m) | Block::File(m) => f(m),
        Block::ToolResult(r) => r.content.iter().for_each(|b| visit_media(b, f)),
        _ => {}
    }
}

fn visit_media_mut(b: &mut Block, f: &mut impl FnMut(&mut Media)) {
    match b {
        Block::Image(m) | Block::File(m) => f(m),
        Block::ToolResult(r) => r.content.iter_mut().for_each(|b| visit_media_mut(b, f)),
        _ => {}
    }
}

fn guess_media_type(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        _ => "image/jpeg",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, exactly as the model produced them.
    pub arguments: String,
    /// Gemini's `thoughtSignature` on the functionCall part.
    pub signature: Option<Signature>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub call_id: String,
    /// Text and image blocks.
    pub content: Vec<Block>,
    pub is_error: bool,
}

impl ToolResult {
    /// The text of the result, blocks joined.
    /// The result's text parts, one per line: a tool's parts are separate pieces (an MCP tool's
    /// sections, two JSON documents), not one text cut in places.
    pub fn text(&self) -> String {
        join_text_with(&self.content, "\n")
    }
}

/// The text of a `text/*` file sent inline, when it is UTF-8: a document an upstream that takes
/// only PDF files can still read, as text.
pub fn plain_text(media_type: &str, data: &str) -> Option<String> {
    if !media_type.starts_with("text/") {
        return None;
    }
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).ok()?;
    String::from_utf8(bytes).ok()
}

/// The text blocks of `blocks`, concatenated.
pub fn join_text(blocks: &[Block]) -> String {
    join_blocks(blocks, |b| match b {
        Block::Text(t) => Some(&t.text),
        _ => None,
    })
}

/// The answer's refusal, when it is one.
pub fn join_refusal(blocks: &[Block]) -> String {
    join_blocks(blocks, |b| match b {
        Block::Refusal(r) => Some(r),
        _ => None,
    })
}

/// The text blocks of `blocks`, `separator` between them: for pieces that stand apart (a system
/// turn's parts, a tool result's), where an answer's text (which Anthropic cuts mid-sentence
/// around citations) is joined as it is.
pub fn join_text_with(blocks: &[Block], separator: &str) -> String {
    let texts: Vec<&str> = blocks
        .iter()
        .filter_map(|b| match b {
            Block::Text(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect();
    texts.join(separator)
}

fn join_blocks(blocks: &[Block], pick: impl Fn(&Block) -> Option<&String>) -> String {
    blocks.iter().filter_map(pick).map(String::as_str).collect()
}

/// An opaque reasoning signature and who minted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub vendor: Vendor,
    pub value: String,
}

impl Signature {
    /// The signature when it may be replayed to `vendor`, never across vendors (formats.md §2.5).
    pub fn for_vendor(sig: &Option<Signature>, vendor: Vendor) -> Option<&str> {
        sig.as_ref().filter(|s| s.vendor == vendor).map(|s| s.value.as_str())
    }
}

/// Separator of a Gemini thought signature smuggled in a tool-call id for clients that cannot carry it.
const THOUGHT_MARK: &str = "__thought__";

/// `id` with a Gemini signature appended as base64url without padding, so the id still matches Anthropic's
/// `^[a-zA-Z0-9_-]+$` (formats.md §2.5). Other vendors' signatures are not smuggled.
pub fn smuggle_signature(id: &str, sig: &Option<Signature>) -> String {
    match Signature::for_vendor(sig, Vendor::Gemini) {
        Some(value) => {
            let engine = base64::engine::general_purpose::STANDARD;
            let url = match engine.decode(value) {
                Ok(bytes) => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
                // Not standard base64: carry the characters the id pattern allows, which loses nothing here.
                Err(_) => value.replace('+', "-").replace('/', "_").replace('=', ""),
            };
            format!("{id}{THOUGHT_MARK}{url}")
        }
        None => id.to_string(),
    }
}

/// Splits a smuggled signature off a client-supplied tool-call id.
pub fn unsmuggle_signature(id: &str) -> (String, Option<Signature>) {
    let Some((bare, encoded)) = id.split_once(THOUGHT_MARK) else {
        return (id.to_string(), None);
    };
    let value = match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded) {
        Ok(bytes) => base64::engine::general_purpose::STANDARD.encode(bytes),
        Err(_) => return (id.to_string(), None),
    };
    (
        bare.to_string(),
        Some(Signature {
            vendor: Vendor::Gemini,
            value,
        }),
    )
}

/// A same-format OpenAI body (Chat or Responses) with the Gemini signatures the gateway smuggled into
/// tool-call ids for the client taken off again, when a later turn goes to an OpenAI upstream
/// (OpenAI refuses tool-call ids over 40 characters; the signature means nothing to it). `None`
/// when there are none; the rare body that has some is written anew.
pub fn without_smuggled_signatures(body: &[u8]) -> Option<Vec<u8>> {
    // Built once: a searcher made per call costs more than the search over a 1 KiB body.
    static MARK: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(THOUGHT_MARK.as_bytes()));
    MARK.find(body)?;
    let mut top: Value = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    let mut bare = |v: Option<&mut Value>| {
        if let Some(v) = v {
            if let Some(id) = v.as_str().filter(|id| id.contains(THOUGHT_MARK)) {
                *v = unsmuggle_signature(id).0.into();
                changed = true;
            }
        }
    };
    for list in ["messages", "input"] {
        let Some(items) = top.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for item in items {
            bare(item.get_mut("tool_call_id"));
            bare(item.get_mut("call_id"));
            if let Some(calls) = item.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    bare(call.get_mut("id"));
                }
            }
        }
    }
    changed.then(|| serde_json::to_vec(&top).ok()).flatten()
}

/// Anthropic tool ids must match `^[a-zA-Z0-9_-]+$`: foreign ids (e.g. `functions.x:0`) are mapped the same
/// way wherever they appear, so a call and its result still pair up.
pub fn sanitize_tool_id(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "toolu_empty".into()
    } else {
        s
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Value,
    pub strict: Option<bool>,
    pub cache_control: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Some tool must be called.
    Required,
    /// This tool must be called.
    Tool(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        strict: Option<bool>,
    },
}

/// OpenAI's reasoning efforts. `none` and `minimal` stay apart, as do `high` and `xhigh`: each
/// OpenAI model takes only some of them (gpt-5.1 refuses `minimal`, gpt-5 `none`), so an OpenAI
/// client's value reaches an OpenAI upstream as it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    None,
    Minimal,
    Low,
    Medium,
    High,
    /// `xhigh` (only OpenAI clients ask it: Anthropic's `max` is `High`).
    XHigh,
}

impl Effort {
    pub fn parse(s: &str) -> Option<Effort> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(Effort::None),
            "minimal" => Some(Effort::Minimal),
            "low" => Some(Effort::Low),
            "medium" => Some(Effort::Medium),
            "high" => Some(Effort::High),
            "xhigh" => Some(Effort::XHigh),
            // Anthropic's top effort: `high` for OpenAI models, most of which refuse `xhigh`.
            "max" => Some(Effort::High),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Effort::None => "none",
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
            Effort::XHigh => "xhigh",
        }
    }

    /// Effort for an explicit token budget (Anthropic/Gemini clients → OpenAI upstreams).
    pub fn from_budget(budget: u64) -> Effort {
        match budget {
            0 => Effort::Minimal,
            1..=2047 => Effort::Low,
            2048..=8191 => Effort::Medium,
            _ => Effort::High,
        }
    }
}

/// What the client asked of the model's reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reasoning {
    pub effort: Effort,
    /// An explicit budget, when the client gave one (Anthropic `budget_tokens`, Gemini `thinkingBudget`).
    pub budget_tokens: Option<u64>,
}

/// Why generation ended (formats.md §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    /// A client stop sequence matched.
    StopSequence,
    Length,
    ToolCalls,
    ContentFilter,
}

/// A whole (non-streamed) response, format-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct IrResponse {
    pub id: Option<String>,
    pub model: Option<String>,
    pub created: Option<u64>,
    pub content: Vec<Block>,
    pub finish: FinishReason,
    pub stop_sequence: Option<String>,
    pub usage: Option<Usage>,
}

impl IrResponse {
    pub fn has_tool_calls(&self) -> bool {
        self.content.iter().any(|b| matches!(b, Block::ToolCall(_)))
    }

    /// The finish reason, corrected to `ToolCalls` when tool calls are present (OpenAI/Gemini quirk, §3.1),
    /// and from `ToolCalls` to `Stop` when none is (a client told to run tools would find none).
    pub fn effective_finish(&self) -> FinishReason {
        match (self.finish, self.has_tool_calls()) {
            (FinishReason::Stop, true) => FinishReason::ToolCalls,
            (FinishReason::ToolCalls, false) => FinishReason::Stop,
            (finish, _) => finish,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn smuggled_signatures_come_off_openai_tool_ids() {
        let sig = Some(Signature {
            vendor: Vendor::Gemini,
            value: "c2lnbmF0dXJl".into(),
        });
        let id = smuggle_signature("call_1", &sig);
        let chat = json!({"model": "m", "messages": [
            {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": id, "content": "ok"},
            {"role": "user", "content": "say __thought__ please"}]});
        let out: Value =
            serde_json::from_slice(&without_smuggled_signatures(chat.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(out["messages"][0]["tool_calls"][0]["id"], "call_1");
        assert_eq!(out["messages"][1]["tool_call_id"], "call_1");
        assert_eq!(out["messages"][2], chat["messages"][2], "text is never touched");
        let responses = json!({"model": "m", "input": [
            {"type": "function_call", "id": "fc_1", "call_id": id, "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": id, "output": "ok"}]});
        let out: Value =
            serde_json::from_slice(&without_smuggled_signatures(responses.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(
            (out["input"][0]["call_id"].as_str(), out["input"][1]["call_id"].as_str()),
            (Some("call_1"), Some("call_1"))
        );
        assert!(without_smuggled_signatures(br#"{"messages":[{"role":"user","content":"__thought__"}]}"#).is_none());
    }
}
