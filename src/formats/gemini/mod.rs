//! Gemini generateContent: requests, whole responses, stream decoding and encoding.

pub mod decode;
pub mod encode;
pub mod request;
pub mod response;

use serde_json::{json, Value};

use super::ir::{FinishReason, Media};
use super::json::{get2, str_at};

/// The media of an `inlineData` or `fileData` part; `None` for a draft (`thought: true`: Gemini 3
/// Pro Image shows up to two while it thinks, before the image it answers with).
pub(crate) fn part_media(p: &Value) -> Option<Media> {
    if p.get("thought").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    fn media_type(d: &Value) -> Option<&str> {
        get2(d, "mimeType", "mime_type").and_then(Value::as_str)
    }
    if let Some(d) = get2(p, "inlineData", "inline_data") {
        Some(Media::Base64 {
            media_type: media_type(d).unwrap_or("application/octet-stream").to_string(),
            data: str_at(d, "data").unwrap_or_default().to_string(),
        })
    } else {
        get2(p, "fileData", "file_data").map(|d| Media::Url {
            url: get2(d, "fileUri", "file_uri")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            media_type: media_type(d).map(str::to_string),
        })
    }
}

/// The part carrying `m`.
pub(crate) fn media_part(m: &Media) -> Value {
    match m {
        Media::Base64 { media_type, data } => json!({"inlineData": {"mimeType": media_type, "data": data}}),
        // Only gs:// and Files-API URIs are left here: the gateway fetched the others and they arrive
        // inline (`media_to_fetch`, `upstream::media`).
        Media::Url { url, .. } => json!({"fileData": {"mimeType": m.media_type(), "fileUri": url}}),
    }
}

pub(crate) fn finish_str(reason: FinishReason) -> &'static str {
    match reason {
        // Gemini has no tool finish reason: a turn with functionCall parts ends with STOP.
        FinishReason::Stop | FinishReason::StopSequence | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
    }
}

/// Gemini's finish reason; `saw_tool_call` turns STOP into tool_calls (§3.1).
pub(crate) fn parse_finish(s: &str, saw_tool_call: bool) -> FinishReason {
    match s {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "LANGUAGE" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        s if s.starts_with("IMAGE_") => FinishReason::ContentFilter,
        // STOP, OTHER, FINISH_REASON_UNSPECIFIED, MALFORMED_FUNCTION_CALL, … (logged as stop by §3.1).
        _ if saw_tool_call => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}
