//! Wire formats: what the client sent, and how to speak back to it. Plain functions on bytes and
//! values, free of Pingora types, so they can be tested and fuzzed alone.
//!
//! Translation between the four LLM wire formats (OpenAI Chat, OpenAI Responses, Anthropic Messages, Gemini)
//! goes through one internal representation (`ir`, formats.md §0): each format's module parses into it and
//! renders from it, for requests, whole responses and streams (`stream`). The public entry points are
//! re-exported here.

pub mod anthropic;
pub mod convert;
pub mod count_tokens;
pub mod detect;
pub mod embeddings;
pub mod error_map;
pub mod errors;
pub mod gemini;
pub mod ir;
pub(crate) mod json;
mod model_name;
pub mod openai_chat;
pub mod request;
pub mod responses_api;
pub mod stream;
pub mod tool_names;
pub mod usage;
pub mod wire;

pub use convert::{
    convert_request, convert_request_named, convert_response, convert_response_named, estimate_input_tokens,
    extract_usage, extract_usage_at_end, media_to_fetch, parse_response, ConvertError, RequestOptions, Translated,
};
pub use detect::detect_chat_body;
pub use error_map::{classify_error, convert_error, error_response, stream_error_event, ErrorKind};
pub use ir::{FetchedMedia, Media};
pub use stream::{
    answer_as_stream, answer_error, first_event, FirstEvent, StreamConverter, StreamError, StreamOptions,
    DEFAULT_MAX_EVENT_BYTES,
};
pub use tool_names::ToolNames;
pub use usage::Usage;
pub use wire::WireFormat;
