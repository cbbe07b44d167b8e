//! OpenAI Responses: requests, whole responses, stream decoding and encoding.

pub mod decode;
pub mod encode;
pub mod request;
pub mod response;

use serde_json::{json, Value};

use super::ir::Media;
use super::json::str_at;

/// The image of an `image_generation_call` item (base64 in `result`, its format in
/// `output_format`); `None` for an item that only names one by id.
pub(crate) fn item_image(item: &Value) -> Option<Media> {
    let data = str_at(item, "result").filter(|d| !d.is_empty())?;
    Some(Media::Base64 {
        media_type: format!("image/{}", str_at(item, "output_format").unwrap_or("png")),
        data: data.to_string(),
    })
}

/// An image the model made, as a Responses client gets one: an `image_generation_call` item,
/// which carries bytes only. An image given by URL (no upstream sends one today) is text with
/// its link, not lost.
pub(crate) fn image_item(id: &str, m: &Media) -> Value {
    match m {
        Media::Base64 { media_type, data } => {
            let format = media_type.strip_prefix("image/").unwrap_or(media_type);
            json!({"type": "image_generation_call", "id": id, "status": "completed", "result": data,
                "output_format": format})
        }
        Media::Url { url, .. } => json!({"type": "message", "id": id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": url, "annotations": []}]}),
    }
}

/// Prefix of an Anthropic thinking signature carried in a Responses `reasoning.encrypted_content`, so a
/// Responses client can replay Claude's signed thinking (the text rides in `summary`).
pub(crate) const ANTHROPIC_SIG_PREFIX: &str = "anthropic-thinking:";

/// Prefix of Claude's redacted thinking (its opaque `data`) carried in a Responses
/// `reasoning.encrypted_content`: Claude refuses a next turn whose thinking blocks changed, so a
/// Responses client must be able to give it back.
pub(crate) const ANTHROPIC_REDACTED_PREFIX: &str = "anthropic-redacted:";

/// The `encrypted_content` of a reasoning item the gateway wrote from reasoning another vendor gave
/// as plain text (DeepSeek's, Gemini's): Codex sends reasoning items back without their ids, and
/// this is how such an item is still known for the gateway's, not OpenAI's (which would refuse it).
pub(crate) const GATEWAY_UNSIGNED_MARK: &str = "apiproxy-unsigned:";

/// Prefix of the ids of reasoning items the gateway writes from another vendor's reasoning: OpenAI
/// knows none of them, so they are not replayed to it.
pub(crate) const GATEWAY_REASONING_ID: &str = "rs_apx_";
