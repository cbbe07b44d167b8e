//! Anthropic Messages: requests, whole responses, stream decoding and encoding.

pub mod decode;
pub mod encode;
pub mod request;
pub mod response;
pub mod schema;

use super::ir::FinishReason;

/// Name of the forced tool that carries `json_object` output to Anthropic (§2.1, LiteLLM's convention); its
/// input comes back to the client as the message text.
pub(crate) const JSON_TOOL: &str = "json_tool_call";

pub(crate) fn stop_reason_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

pub(crate) fn parse_stop_reason(s: &str) -> FinishReason {
    match s {
        "stop_sequence" => FinishReason::StopSequence,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // end_turn, pause_turn, unknown.
        _ => FinishReason::Stop,
    }
}
