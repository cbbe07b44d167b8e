//! Which format a body sent to `/v1/chat/completions` is in: the original product accepted Claude-style and
//! Gemini-style bodies there too.

use serde_json::Value;

use super::json::{arr_at, str_at};
use super::wire::WireFormat;

/// Detects Claude-style bodies (top-level `system`, `stop_sequences`, `anthropic`-shaped tools/tool_choice,
/// content blocks of type tool_use/tool_result/thinking/image-with-source) and Gemini-style bodies
/// (`contents`); a body with `input` and no `messages` is Responses-shaped. Everything else, including bodies
/// that are not JSON, is OpenAI Chat (whose parser then reports the problem).
pub fn detect_chat_body(body: &[u8]) -> WireFormat {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return WireFormat::OpenAiChat;
    };
    if v.get("messages").is_none() {
        if v.get("contents").is_some() {
            return WireFormat::Gemini;
        }
        if v.get("input").is_some() {
            return WireFormat::OpenAiResponses;
        }
        return WireFormat::OpenAiChat;
    }
    let claude_top_level = v.get("system").is_some()
        || v.get("stop_sequences").is_some()
        || v.get("thinking").is_some()
        || v.get("tool_choice")
            .and_then(|c| str_at(c, "type"))
            .is_some_and(|t| matches!(t, "auto" | "any" | "tool"))
        || arr_at(&v, "tools").iter().any(|t| t.get("input_schema").is_some());
    if claude_top_level {
        return WireFormat::Anthropic;
    }
    let claude_block = |b: &Value| match str_at(b, "type") {
        Some("tool_use" | "tool_result" | "thinking" | "redacted_thinking" | "document") => true,
        Some("image") => b.get("source").is_some(),
        _ => false,
    };
    let claude_content = arr_at(&v, "messages")
        .iter()
        .any(|m| arr_at(m, "content").iter().any(claude_block));
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
    }
}
