//! Gemini generateContent: requests, whole responses, stream decoding and encoding.

pub mod decode;
pub mod encode;
pub mod request;
pub mod response;

use super::ir::FinishReason;

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
