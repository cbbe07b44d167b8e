//! Wire formats: what the client sent, and how to speak back to it. Plain functions on bytes and
//! values, free of Pingora types, so they can be tested and fuzzed alone.

pub mod errors;
pub mod request;
pub mod sse;

/// The client-facing API a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientApi {
    ChatCompletions,
    Responses,
}

impl ClientApi {
    /// Bounded metrics/log label.
    pub fn label(self) -> &'static str {
        match self {
            ClientApi::ChatCompletions => "openai_chat",
            ClientApi::Responses => "openai_responses",
        }
    }
}
