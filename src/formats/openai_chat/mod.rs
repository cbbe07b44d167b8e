//! OpenAI Chat Completions: requests, whole responses, stream decoding and encoding.

pub mod decode;
pub mod encode;
pub mod request;
pub mod response;

use serde_json::{json, Value};

use super::ir::{FinishReason, Media};
use super::json::{arr_at, str_at};

/// The images the model made, in a message or a delta: `images: [{type: image_url, image_url:
/// {url}}]`, OpenRouter's and LiteLLM's convention (Chat has none of its own).
pub(crate) fn images_of(v: &Value) -> impl Iterator<Item = Media> + '_ {
    arr_at(v, "images").iter().filter_map(|i| {
        let url = i
            .get("image_url")
            .and_then(|u| str_at(u, "url").or_else(|| u.as_str()))?;
        Some(Media::from_url(url))
    })
}

/// One `images` entry. It carries its `index`, by which the OpenAI Python SDK's stream helper merges
/// list entries.
pub(crate) fn image_entry(index: usize, m: &Media) -> Value {
    json!({"index": index, "type": "image_url", "image_url": {"url": m.to_url()}})
}

pub(crate) fn finish_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::StopSequence => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

pub(crate) fn parse_finish(s: &str) -> FinishReason {
    match s {
        // DeepSeek's `insufficient_system_resource` and OpenRouter's `error`: the answer was cut
        // short by the server, as a token limit cuts it, not finished.
        "length" | "insufficient_system_resource" | "error" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}
