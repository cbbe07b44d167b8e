//! Gemini whole response ↔ IR (formats.md §3.3).

use serde_json::{json, Value};

use super::{finish_str, parse_finish};
use crate::formats::convert::ConvertError;
use crate::formats::ir::*;
use crate::formats::json::*;
use crate::formats::openai_chat::request::text_block;
use crate::formats::usage::Usage;

pub fn parse(v: &Value) -> Result<IrResponse, ConvertError> {
    if v.get("error").is_some() {
        return Err(ConvertError::Invalid("the upstream returned an error body".into()));
    }
    let cand = arr_at(v, "candidates").first();
    let mut content = Vec::new();
    if let Some(c) = cand {
        parse_parts(c.get("content").unwrap_or(&Value::Null), &mut content);
    }
    let saw_tool = content.iter().any(|b| matches!(b, Block::ToolCall(_)));
    let reason = cand
        .and_then(|c| get2(c, "finishReason", "finish_reason"))
        .and_then(Value::as_str);
    let finish = match reason {
        // The model's attempt at a tool call failed, with nothing else said: no answer (another
        // try may make one), rather than an empty answer that reads as a finished turn.
        Some("MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" | "TOO_MANY_TOOL_CALLS") if content.is_empty() => {
            return Err(ConvertError::Invalid(format!(
                "the model's tool call failed ({})",
                reason.unwrap_or_default()
            )));
        }
        Some(f) => parse_finish(f, saw_tool),
        // No candidates: the prompt was blocked when Gemini says so (promptFeedback.blockReason);
        // an answer with nothing in it otherwise.
        None if cand.is_none() => {
            match get2(v, "promptFeedback", "prompt_feedback").and_then(|f| get2(f, "blockReason", "block_reason")) {
                Some(_) => FinishReason::ContentFilter,
                None => return Err(ConvertError::Invalid("an answer with no candidate".into())),
            }
        }
        None => parse_finish("STOP", saw_tool),
    };
    Ok(IrResponse {
        id: get2(v, "responseId", "response_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        model: get2(v, "modelVersion", "model_version")
            .and_then(Value::as_str)
            .map(str::to_string),
        created: None,
        content,
        finish,
        stop_sequence: None,
        usage: get2(v, "usageMetadata", "usage_metadata").and_then(Usage::from_gemini),
    })
}

/// Every part, not just `parts[0]` (Portkey's bug). Gemini has no call ids: `call_<random>`, stable within
/// this response.
pub(crate) fn parse_parts(content: &Value, out: &mut Vec<Block>) {
    for p in arr_at(content, "parts") {
        let signature = get2(p, "thoughtSignature", "thought_signature")
            .and_then(Value::as_str)
            .map(|s| Signature {
                vendor: Vendor::Gemini,
                value: s.to_string(),
            });
        if let Some(fc) = get2(p, "functionCall", "function_call") {
            out.push(Block::ToolCall(ToolCall {
                id: str_at(fc, "id")
                    .filter(|id| !id.is_empty())
                    .map_or_else(|| new_id("call_"), str::to_string),
                name: str_at(fc, "name").unwrap_or_default().to_string(),
                arguments: crate::formats::json::args_text(fc.get("args")),
                signature,
            }));
        } else if let Some(t) = str_at(p, "text") {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                out.push(Block::Thinking {
                    text: t.to_string(),
                    signature,
                });
            } else if !t.is_empty() {
                out.push(text_block(t));
            }
        } else if let Some(media) = super::part_media(p) {
            // An image model's picture.
            out.push(Block::Image(media));
        }
    }
}

pub fn render(ir: &IrResponse, model: &str) -> Value {
    let mut parts = Vec::with_capacity(ir.content.len());
    for b in &ir.content {
        match b {
            Block::Text(t) if !t.text.is_empty() => parts.push(json!({"text": t.text})),
            Block::Refusal(r) if !r.is_empty() => parts.push(json!({"text": r})),
            Block::Thinking { text, signature } if !text.is_empty() => {
                let mut p = json!({"text": text, "thought": true});
                if let Some(sig) = Signature::for_vendor(signature, Vendor::Gemini) {
                    p["thoughtSignature"] = sig.into();
                }
                parts.push(p);
            }
            Block::Image(media) => parts.push(super::media_part(media)),
            Block::ToolCall(tc) => {
                let mut p = json!({"functionCall": {"id": tc.id, "name": tc.name, "args": args_object(&tc.arguments)}});
                if let Some(sig) = Signature::for_vendor(&tc.signature, Vendor::Gemini) {
                    p["thoughtSignature"] = sig.into();
                }
                parts.push(p);
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        parts.push(json!({"text": ""}));
    }
    let mut out = json!({
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish_str(ir.effective_finish()), "index": 0}],
        "modelVersion": model,
        "responseId": ir.id.clone().unwrap_or_else(|| new_id("")),
    });
    if let Some(u) = &ir.usage {
        out["usageMetadata"] = u.to_gemini();
    }
    out
}
