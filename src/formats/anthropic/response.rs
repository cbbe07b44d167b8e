//! Anthropic whole response ↔ IR (formats.md §3.3).

use serde_json::{json, Value};

use super::{parse_stop_reason, stop_reason_str, JSON_TOOL};
use crate::formats::convert::ConvertError;
use crate::formats::ir::*;
use crate::formats::json::*;
use crate::formats::openai_chat::request::text_block;
use crate::formats::usage::Usage;

pub fn parse(v: &Value) -> Result<IrResponse, ConvertError> {
    if str_at(v, "type") == Some("error") {
        return Err(ConvertError::Invalid("the upstream returned an error body".into()));
    }
    let mut content = Vec::new();
    let mut finish = parse_stop_reason(str_at(v, "stop_reason").unwrap_or("end_turn"));
    let blocks = arr_at(v, "content");
    // In JSON mode the forced tool's input is the whole answer: text Claude wrote beside it (it
    // may, when the client's own tools leave the choice `auto`) would make it no JSON.
    let json_mode = blocks
        .iter()
        .any(|b| str_at(b, "type") == Some("tool_use") && str_at(b, "name") == Some(JSON_TOOL));
    for b in blocks {
        match str_at(b, "type") {
            Some("text") if json_mode => {}
            Some("text") => content.push(text_block(str_at(b, "text").unwrap_or_default())),
            Some("thinking") => content.push(Block::Thinking {
                text: str_at(b, "thinking").unwrap_or_default().to_string(),
                signature: str_at(b, "signature").map(|s| Signature {
                    vendor: Vendor::Anthropic,
                    value: s.to_string(),
                }),
            }),
            Some("redacted_thinking") => content.push(Block::RedactedThinking {
                data: str_at(b, "data").unwrap_or_default().to_string(),
            }),
            // Another gateway's answer of an image model, as this one writes it.
            Some("image") => content.extend(image_of(b).map(Block::Image)),
            Some("tool_use") if str_at(b, "name") == Some(JSON_TOOL) => {
                // The forced JSON-mode tool: its input is the answer.
                content.push(text_block(&crate::formats::json::args_text(b.get("input"))));
            }
            Some("tool_use") => content.push(Block::ToolCall(ToolCall {
                id: str_at(b, "id")
                    .filter(|id| !id.is_empty())
                    .map_or_else(|| new_id("toolu_"), str::to_string),
                name: str_at(b, "name").unwrap_or_default().to_string(),
                arguments: crate::formats::json::args_text(b.get("input")),
                signature: None,
            })),
            _ => {}
        }
    }
    // The JSON-mode tool's call is the answer, not a call for the client to make: the answer
    // stopped, unless the model also called one of the client's own tools.
    if json_mode && finish == FinishReason::ToolCalls && !content.iter().any(|b| matches!(b, Block::ToolCall(_))) {
        finish = FinishReason::Stop;
    }
    Ok(IrResponse {
        id: str_at(v, "id").map(str::to_string),
        model: str_at(v, "model").map(str::to_string),
        created: None,
        content,
        finish,
        stop_sequence: str_at(v, "stop_sequence").map(str::to_string),
        usage: v.get("usage").and_then(Usage::from_anthropic),
    })
}

/// The picture of an `image` block.
pub(crate) fn image_of(block: &Value) -> Option<Media> {
    super::request::parse_source(block.get("source")?).ok()
}

/// An image the model made, as an Anthropic client gets one.
pub(crate) fn image_block(m: &Media) -> Value {
    json!({"type": "image", "source": super::request::render_source(m)})
}

pub fn render(ir: &IrResponse, model: &str) -> Value {
    let mut content = Vec::with_capacity(ir.content.len());
    for b in &ir.content {
        match b {
            // Anthropic refuses a text block of whitespace alone when the turn is sent back.
            Block::Text(t) if !t.text.trim().is_empty() => content.push(json!({"type": "text", "text": t.text})),
            Block::Refusal(r) if !r.trim().is_empty() => content.push(json!({"type": "text", "text": r})),
            Block::Thinking { text, signature } => {
                // Unsigned or foreign reasoning cannot be a Claude thinking block (it would fail on replay).
                if let Some(sig) = Signature::for_vendor(signature, Vendor::Anthropic) {
                    content.push(json!({"type": "thinking", "thinking": text, "signature": sig}));
                }
            }
            Block::RedactedThinking { data } => content.push(json!({"type": "redacted_thinking", "data": data})),
            // An image model's picture: Anthropic's own image block (Claude makes none).
            Block::Image(m) => content.push(image_block(m)),
            Block::ToolCall(tc) => content.push(json!({
                "type": "tool_use",
                "id": sanitize_tool_id(&smuggle_signature(&tc.id, &tc.signature)),
                "name": tc.name,
                "input": args_object(&tc.arguments),
            })),
            _ => {}
        }
    }
    let finish = ir.effective_finish();
    json!({
        "id": ir.id.clone().unwrap_or_else(|| new_id("msg_")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_str(finish),
        "stop_sequence": if finish == FinishReason::StopSequence { ir.stop_sequence.clone().into() } else { Value::Null },
        "usage": ir.usage.clone().unwrap_or_default().to_anthropic(),
    })
}
