//! OpenAI Responses whole response ↔ IR (formats.md §2.3, §3.1).

use serde_json::{json, Value};

use super::ANTHROPIC_SIG_PREFIX;
use crate::formats::convert::ConvertError;
use crate::formats::ir::*;
use crate::formats::json::*;
use crate::formats::openai_chat::request::{arguments_text, non_empty_args, text_block};
use crate::formats::usage::Usage;

pub fn parse(v: &Value) -> Result<IrResponse, ConvertError> {
    if str_at(v, "status") == Some("failed") {
        return Err(ConvertError::Invalid("the upstream response failed".into()));
    }
    let mut content = Vec::new();
    for item in arr_at(v, "output") {
        match str_at(item, "type") {
            Some("message") => {
                for p in arr_at(item, "content") {
                    match str_at(p, "type") {
                        Some("output_text") => content.push(text_block(str_at(p, "text").unwrap_or_default())),
                        Some("refusal") => {
                            content.push(Block::Refusal(str_at(p, "refusal").unwrap_or_default().into()))
                        }
                        _ => {}
                    }
                }
            }
            Some("function_call") => content.push(Block::ToolCall(ToolCall {
                id: str_at(item, "call_id").map_or_else(|| new_id("call_"), str::to_string),
                name: str_at(item, "name").unwrap_or_default().to_string(),
                arguments: arguments_text(item.get("arguments")),
                signature: None,
            })),
            Some("reasoning") => {
                // The summary, or when there is none the reasoning itself (`content` of
                // `reasoning_text` parts: gpt-oss behind vLLM or Ollama sends no summary).
                let parts = |field| {
                    arr_at(item, field)
                        .iter()
                        .filter_map(|s| str_at(s, "text"))
                        .collect::<Vec<_>>()
                };
                let mut text = parts("summary").join("\n\n");
                if text.is_empty() {
                    text = parts("content").concat();
                }
                let signature = str_at(item, "encrypted_content").map(|e| match e.strip_prefix(ANTHROPIC_SIG_PREFIX) {
                    Some(sig) => Signature {
                        vendor: Vendor::Anthropic,
                        value: sig.to_string(),
                    },
                    None => Signature {
                        vendor: Vendor::OpenAi,
                        value: e.to_string(),
                    },
                });
                content.push(Block::Thinking { text, signature });
            }
            Some("image_generation_call") => content.extend(super::item_image(item).map(Block::Image)),
            _ => {}
        }
    }
    let reason = v.get("incomplete_details").and_then(|d| str_at(d, "reason"));
    let finish = match (str_at(v, "status"), reason) {
        (Some("incomplete"), Some("content_filter")) => FinishReason::ContentFilter,
        (Some("incomplete"), _) => FinishReason::Length,
        _ if content.iter().any(|b| matches!(b, Block::ToolCall(_))) => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    };
    Ok(IrResponse {
        id: str_at(v, "id").map(str::to_string),
        model: str_at(v, "model").map(str::to_string),
        created: u64_at(v, "created_at"),
        content,
        finish,
        stop_sequence: None,
        usage: v.get("usage").and_then(Usage::from_responses),
    })
}

/// Output items of a response (shared with the stream encoder's `response.completed`).
pub(crate) fn output_items(content: &[Block]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut text_parts: Vec<Value> = Vec::new();
    let flush = |parts: &mut Vec<Value>, out: &mut Vec<Value>| {
        if !parts.is_empty() {
            out.push(
                json!({"type": "message", "id": new_id("msg_"), "status": "completed", "role": "assistant",
                "content": std::mem::take(parts)}),
            );
        }
    };
    for b in content {
        match b {
            Block::Text(t) if !t.text.is_empty() => {
                text_parts.push(json!({"type": "output_text", "text": t.text, "annotations": []}))
            }
            Block::Refusal(r) if !r.is_empty() => text_parts.push(json!({"type": "refusal", "refusal": r})),
            Block::Thinking { text, signature } => {
                flush(&mut text_parts, &mut out);
                out.push(reasoning_item(&new_id(super::GATEWAY_REASONING_ID), text, signature));
            }
            Block::RedactedThinking { data } => {
                flush(&mut text_parts, &mut out);
                out.push(redacted_item(&new_id(super::GATEWAY_REASONING_ID), data));
            }
            Block::Image(Media::Base64 { media_type, data }) => {
                flush(&mut text_parts, &mut out);
                out.push(super::image_item(&new_id(super::GATEWAY_IMAGE_ID), media_type, data));
            }
            // An item carries an image's bytes only: one given by URL (no upstream sends one
            // today) is its link, as text.
            Block::Image(Media::Url { url, .. }) => {
                text_parts.push(json!({"type": "output_text", "text": url, "annotations": []}))
            }
            Block::ToolCall(tc) => {
                flush(&mut text_parts, &mut out);
                out.push(json!({"type": "function_call", "id": new_id("fc_"), "call_id": smuggle_signature(&tc.id, &tc.signature),
                    "name": tc.name, "arguments": non_empty_args(&tc.arguments), "status": "completed"}));
            }
            _ => {}
        }
    }
    flush(&mut text_parts, &mut out);
    out
}

/// A reasoning item; Claude's signature travels in `encrypted_content` so it can be replayed.
pub(crate) fn reasoning_item(id: &str, text: &str, signature: &Option<Signature>) -> Value {
    let mut item = json!({"type": "reasoning", "id": id, "summary": [{"type": "summary_text", "text": text}]});
    match signature {
        Some(Signature {
            vendor: Vendor::Anthropic,
            value,
        }) => item["encrypted_content"] = format!("{ANTHROPIC_SIG_PREFIX}{value}").into(),
        Some(Signature {
            vendor: Vendor::OpenAi,
            value,
        }) => item["encrypted_content"] = value.clone().into(),
        _ => item["encrypted_content"] = super::GATEWAY_UNSIGNED_MARK.into(),
    }
    item
}

/// A reasoning item carrying Claude's redacted thinking, to be given back as it came.
pub(crate) fn redacted_item(id: &str, data: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [],
        "encrypted_content": format!("{}{data}", super::ANTHROPIC_REDACTED_PREFIX)})
}

/// `status` and `incomplete_details` for a finish reason.
pub(crate) fn status_of(finish: FinishReason) -> (&'static str, Value) {
    match finish {
        FinishReason::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
        FinishReason::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

pub fn render(ir: &IrResponse, model: &str) -> Value {
    let (status, incomplete) = status_of(ir.effective_finish());
    let mut out = json!({
        "id": ir.id.clone().unwrap_or_else(|| new_id("resp_")),
        "object": "response",
        "created_at": ir.created.unwrap_or_else(now_secs),
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "model": model,
        "output": output_items(&ir.content),
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
    });
    // Always there, as in an Anthropic message: the Vercel AI SDK refuses a response without it
    // (an upstream that reported no usage gives zeros, as OpenAI's own `usage` would be read).
    out["usage"] = ir.usage.clone().unwrap_or_default().to_responses();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_always_carries_usage() {
        let ir = IrResponse {
            id: None,
            model: None,
            created: None,
            content: vec![],
            finish: crate::formats::ir::FinishReason::Stop,
            stop_sequence: None,
            usage: None,
        };
        let v = render(&ir, "m");
        assert_eq!(v["usage"]["input_tokens"], 0, "{v}");
        assert_eq!(v["usage"]["output_tokens"], 0, "{v}");
        assert!(v["usage"]["total_tokens"].is_number(), "{v}");
    }

    /// A reasoning item without a summary gives its reasoning text (gpt-oss behind vLLM, Ollama).
    #[test]
    fn reasoning_without_a_summary_is_read_from_its_content() {
        let v = serde_json::json!({"id": "r", "status": "completed", "output": [
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Think "}, {"type": "reasoning_text", "text": "twice."}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}]});
        let ir = parse(&v).unwrap();
        assert!(
            matches!(&ir.content[0], Block::Thinking { text, .. } if text == "Think twice."),
            "{:?}",
            ir.content
        );
    }
}
