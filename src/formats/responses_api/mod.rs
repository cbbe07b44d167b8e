//! OpenAI Responses: requests, whole responses, stream decoding and encoding.

pub mod decode;
pub mod encode;
pub mod request;
pub mod response;

use serde_json::{json, Value};

use super::ir::Media;
use super::json::str_at;

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

/// Prefix of the ids of the image items the gateway writes from another vendor's image (a Gemini
/// image model's): OpenAI knows none of them, so they are not replayed to it.
pub(crate) const GATEWAY_IMAGE_ID: &str = "ig_apx_";

/// The image of an `image_generation_call` item (base64 in `result`, its format in
/// `output_format`, or else told by its first bytes); `None` for an item that only names one by id.
pub(crate) fn item_image(item: &Value) -> Option<Media> {
    let data = str_at(item, "result").filter(|d| !d.is_empty())?;
    let format = str_at(item, "output_format").unwrap_or_else(|| {
        // The base64 of each format's signature.
        [("/9j/", "jpeg"), ("UklGR", "webp"), ("R0lGOD", "gif")]
            .iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map_or("png", |(_, format)| format)
    });
    Some(Media::Base64 {
        media_type: format!("image/{format}"),
        data: data.to_string(),
    })
}

/// An image the model made, as a Responses client gets it: an `image_generation_call` item.
pub(crate) fn image_item(id: &str, media_type: &str, data: &str) -> Value {
    let format = media_type.strip_prefix("image/").unwrap_or(media_type);
    json!({"type": "image_generation_call", "id": id, "status": "completed", "result": data, "output_format": format})
}
