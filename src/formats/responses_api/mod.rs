//! OpenAI Responses: requests, whole responses, stream decoding and encoding.

pub mod decode;
pub mod encode;
pub mod request;
pub mod response;

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
