//! Which format a body sent to `/v1/chat/completions` is in: the original product accepted Claude-style and
//! Gemini-style bodies there too.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::wire::WireFormat;

/// The top-level fields that tell the shapes apart, borrowed: every request to `/v1/chat/completions`
/// goes through here, so nothing is copied into a JSON tree. It also carries what routing reads
/// (`model`, `stream`, `stream_options`), so such a body is parsed once ([super::request::inspect_chat]).
#[derive(Deserialize)]
pub(super) struct Top<'a> {
    #[serde(borrow, default)]
    pub(super) model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "super::request::present")]
    pub(super) stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "super::request::present")]
    pub(super) stream_options: Option<&'a RawValue>,
    /// OpenAI's `n`: how many choices.
    #[serde(borrow, default)]
    pub(super) n: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(borrow, default)]
    contents: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stop_sequences: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thinking: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_choice: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response_format: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow, default)]
    input_schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
}

/// Claude's `thinking` (a budget, or `adaptive`); OpenAI-compatible servers (GLM, Ark) take a
/// `thinking: {"type": "enabled"}` of their own in Chat bodies, which says nothing of the shape.
fn claude_thinking(raw: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct Thinking<'a> {
        #[serde(borrow, default, rename = "type")]
        kind: Option<Cow<'a, str>>,
        #[serde(default)]
        budget_tokens: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_str::<Thinking>(raw.get())
        .is_ok_and(|t| t.budget_tokens.is_some() || t.kind.as_deref() == Some("adaptive"))
}

fn is_null(raw: &Option<&RawValue>) -> bool {
    raw.is_none_or(|r| r.get() == "null")
}

/// Detects Claude-style bodies (top-level `system`, `stop_sequences`, `anthropic`-shaped tools/tool_choice,
/// content blocks of type tool_use/tool_result/thinking/image-with-source) and Gemini-style bodies
/// (`contents`); a body with `input` and no `messages` is Responses-shaped. Everything else, including bodies
/// that are not JSON, is OpenAI Chat (whose parser then reports the problem).
pub fn detect_chat_body(body: &[u8]) -> WireFormat {
    match serde_json::from_slice::<Top>(body) {
        Ok(top) => classify(&top),
        Err(_) => WireFormat::OpenAiChat,
    }
}

/// [detect_chat_body] on a parsed body.
pub(super) fn classify(top: &Top) -> WireFormat {
    let Some(messages) = &top.messages else {
        if !is_null(&top.contents) {
            return WireFormat::Gemini;
        }
        if !is_null(&top.input) {
            return WireFormat::OpenAiResponses;
        }
        return WireFormat::OpenAiChat;
    };
    // What only an OpenAI Chat body has: it stays one whatever else it carries (LiteLLM documents a
    // Claude-style `thinking` for Chat bodies, for one).
    let openai_only = !is_null(&top.max_completion_tokens)
        || !is_null(&top.response_format)
        || top.tools.iter().flatten().any(|t| !is_null(&t.function))
        || messages
            .iter()
            .any(|m| matches!(m.role.as_deref(), Some("tool" | "function" | "developer")));
    if openai_only {
        return WireFormat::OpenAiChat;
    }
    let anthropic_choice = top
        .tool_choice
        .and_then(|c| serde_json::from_str::<Typed>(c.get()).ok())
        .and_then(|t| t.kind)
        .is_some_and(|t| matches!(&*t, "auto" | "any" | "tool"));
    let claude_top_level = !is_null(&top.system)
        || !is_null(&top.stop_sequences)
        || top.thinking.is_some_and(claude_thinking)
        || anthropic_choice
        || top.tools.iter().flatten().any(|t| !is_null(&t.input_schema));
    if claude_top_level {
        return WireFormat::Anthropic;
    }
    let claude_block = |b: &Typed| match b.kind.as_deref() {
        Some("tool_use" | "tool_result" | "thinking" | "redacted_thinking" | "document") => true,
        Some("image") => b.source.is_some(),
        _ => false,
    };
    let claude_content = messages.iter().filter_map(|m| m.content).any(|c| {
        c.get().starts_with('[')
            && serde_json::from_str::<Vec<Typed>>(c.get()).is_ok_and(|blocks| blocks.iter().any(claude_block))
    });
    if claude_content {
        WireFormat::Anthropic
    } else {
        WireFormat::OpenAiChat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_shape() {
        let chat = br#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}],"max_tokens":5}"#;
        assert_eq!(detect_chat_body(chat), WireFormat::OpenAiChat);
        let claude = br#"{"model":"m","system":"s","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(detect_chat_body(claude), WireFormat::Anthropic);
        let claude_tools = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"x"}]}]}"#;
        assert_eq!(detect_chat_body(claude_tools), WireFormat::Anthropic);
        let gemini = br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
        assert_eq!(detect_chat_body(gemini), WireFormat::Gemini);
        let input = br#"{"model":"m","input":"hi"}"#;
        assert_eq!(detect_chat_body(input), WireFormat::OpenAiResponses);
        assert_eq!(detect_chat_body(b"nope"), WireFormat::OpenAiChat);
        // Claude's thinking marks a Claude body; GLM's and Ark's own `thinking` in a Chat body does not.
        let claude_thinking = br#"{"model":"m","max_tokens":5000,"thinking":{"type":"enabled","budget_tokens":2048},"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(detect_chat_body(claude_thinking), WireFormat::Anthropic);
        let adaptive = br#"{"model":"m","max_tokens":5000,"thinking":{"type":"adaptive"},"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(detect_chat_body(adaptive), WireFormat::Anthropic);
        let glm = br#"{"model":"glm-4.6","thinking":{"type":"enabled"},"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#;
        assert_eq!(detect_chat_body(glm), WireFormat::OpenAiChat);
        // What only Chat bodies have wins over a Claude-style `thinking` (LiteLLM's, in Chat bodies).
        let litellm = br#"{"model":"m","thinking":{"type":"enabled","budget_tokens":2048},"tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"a","content":"x"}]}"#;
        assert_eq!(detect_chat_body(litellm), WireFormat::OpenAiChat);
        let tool_turn = br#"{"model":"m","system":"s","thinking":{"type":"enabled","budget_tokens":2048},"messages":[{"role":"tool","tool_call_id":"a","content":"x"}]}"#;
        assert_eq!(detect_chat_body(tool_turn), WireFormat::OpenAiChat);
    }
}
