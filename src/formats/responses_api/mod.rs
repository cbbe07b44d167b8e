//! OpenAI Responses: requests, whole responses, stream decoding and encoding.

pub mod decode;
pub mod encode;
pub mod request;
pub mod response;

/// Prefix of an Anthropic thinking signature carried in a Responses `reasoning.encrypted_content`, so a
/// Responses client can replay Claude's signed thinking (the text rides in `summary`).
pub(crate) const ANTHROPIC_SIG_PREFIX: &str = "anthropic-thinking:";
