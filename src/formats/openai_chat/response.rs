//! OpenAI Chat whole response ↔ IR (formats.md §3.3).

use serde_json::{json, Value};

use super::{finish_str, parse_finish};
use crate::formats::convert::ConvertError;
use crate::formats::ir::*;
use crate::formats::json::*;
use crate::formats::openai_chat::request::{arguments_text, non_empty_args, push_thinking_blocks, text_block};
use crate::formats::usage::Usage;

pub fn parse(v: &Value) -> Result<IrResponse, ConvertError> {
    let choice = arr_at(v, "choices")
        .first()
        .ok_or_else(|| ConvertError::Invalid("the upstream response has no choices".into()))?;
    let msg = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    push_thinking_blocks(msg, &mut content);
    if content.is_empty() {
        if let Some(r) = str_at(msg, "reasoning_content").or_else(|| str_at(msg, "reasoning")) {
            content.push(Block::Thinking {
                text: r.to_string(),
                signature: None,
            });
        }
    }
    match msg.get("content") {
        Some(Value::String(s)) if !s.is_empty() => content.push(text_block(s)),
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(t) = str_at(p, "text") {
                    content.push(text_block(t));
                } else if str_at(p, "type") == Some("thinking") {
                    // Mistral's reasoning: `{"type": "thinking", "thinking": [{"type": "text", …}]}`.
                    let text: String = arr_at(p, "thinking").iter().filter_map(|t| str_at(t, "text")).collect();
                    if !text.is_empty() {
                        content.push(Block::Thinking { text, signature: None });
                    }
                }
            }
        }
        _ => {}
    }
    if let Some(r) = str_at(msg, "refusal").filter(|r| !r.is_empty()) {
        content.push(Block::Refusal(r.to_string()));
    }
    content.extend(super::images_of(msg).map(Block::Image));
    for tc in arr_at(msg, "tool_calls") {
        let f = tc.get("function").unwrap_or(&Value::Null);
        content.push(Block::ToolCall(ToolCall {
            // LM Studio and others send `"id": ""`: each call needs its own to be answered.
            id: str_at(tc, "id")
                .filter(|id| !id.is_empty())
                .map_or_else(|| new_id("call_"), str::to_string),
            name: str_at(f, "name").unwrap_or_default().to_string(),
            arguments: arguments_text(f.get("arguments")),
            signature: None,
        }));
    }
    // The legacy `function_call` (finish `function_call`), which older servers still answer with.
    // (`"function_call": null`, which LiteLLM sends on every answer, is none.)
    if let Some(f) = msg
        .get("function_call")
        .filter(|f| str_at(f, "name").is_some_and(|n| !n.is_empty()))
        .filter(|_| arr_at(msg, "tool_calls").is_empty())
    {
        content.push(Block::ToolCall(ToolCall {
            id: new_id("call_"),
            name: str_at(f, "name").unwrap_or_default().to_string(),
            arguments: arguments_text(f.get("arguments")),
            signature: None,
        }));
    }
    Ok(IrResponse {
        id: str_at(v, "id").map(str::to_string),
        model: str_at(v, "model").map(str::to_string),
        created: u64_at(v, "created"),
        content,
        finish: parse_finish(str_at(choice, "finish_reason").unwrap_or("stop")),
        stop_sequence: None,
        usage: v.get("usage").and_then(Usage::from_openai_chat),
    })
}

pub fn render(ir: &IrResponse, model: &str) -> Value {
    let text: String = join_text(&ir.content);
    let refusal = join_refusal(&ir.content);
    let no_content = text.is_empty() && (ir.has_tool_calls() || !refusal.is_empty());
    let mut message = json!({
        "role": "assistant",
        "content": if no_content { Value::Null } else { text.into() },
        "refusal": if refusal.is_empty() { Value::Null } else { refusal.into() },
    });
    let reasoning: String = ir
        .content
        .iter()
        .filter_map(|b| match b {
            Block::Thinking { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    if !reasoning.is_empty() {
        // Non-standard but widespread (DeepSeek, LiteLLM).
        message["reasoning_content"] = reasoning.into();
    }
    let thinking_blocks: Vec<Value> = ir
        .content
        .iter()
        .filter_map(|b| match b {
            Block::Thinking { text, signature } => Signature::for_vendor(signature, Vendor::Anthropic)
                .map(|sig| json!({"type": "thinking", "thinking": text, "signature": sig})),
            Block::RedactedThinking { data } => Some(json!({"type": "redacted_thinking", "data": data})),
            _ => None,
        })
        .collect();
    if !thinking_blocks.is_empty() {
        // LiteLLM's convention, so the client can replay signed Claude thinking.
        message["thinking_blocks"] = thinking_blocks.into();
    }
    let calls: Vec<Value> = ir
        .content
        .iter()
        .filter_map(|b| match b {
            Block::ToolCall(tc) => Some(json!({
                "id": smuggle_signature(&tc.id, &tc.signature),
                "type": "function",
                "function": {"name": tc.name, "arguments": non_empty_args(&tc.arguments)},
            })),
            _ => None,
        })
        .collect();
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    let images: Vec<Value> = ir
        .content
        .iter()
        .filter_map(|b| match b {
            Block::Image(m) => Some(m),
            _ => None,
        })
        .enumerate()
        .map(|(i, m)| super::image_entry(i, m))
        .collect();
    if !images.is_empty() {
        message["images"] = images.into();
    }
    let mut out = json!({
        "id": ir.id.clone().unwrap_or_else(|| new_id("chatcmpl-")),
        "object": "chat.completion",
        "created": ir.created.unwrap_or_else(now_secs),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_str(ir.effective_finish()), "logprobs": null}],
    });
    if let Some(u) = &ir.usage {
        out["usage"] = u.to_openai_chat();
    }
    out
}
