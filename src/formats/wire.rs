//! The four wire formats the gateway speaks, on either side of a request.

/// An LLM API's request/response/stream dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// `POST /v1/chat/completions`.
    OpenAiChat,
    /// `POST /v1/responses`.
    OpenAiResponses,
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /{v1beta,v1}/models/{model}:generateContent` / `:streamGenerateContent`.
    Gemini,
}

impl WireFormat {
    /// Bounded metrics/log label.
    pub fn label(self) -> &'static str {
        match self {
            WireFormat::OpenAiChat => "openai_chat",
            WireFormat::OpenAiResponses => "openai_responses",
            WireFormat::Anthropic => "anthropic",
            WireFormat::Gemini => "gemini",
        }
    }

    /// Whose opaque reasoning signatures this format's upstream produces and accepts.
    pub fn vendor(self) -> Vendor {
        match self {
            WireFormat::OpenAiChat | WireFormat::OpenAiResponses => Vendor::OpenAi,
            WireFormat::Anthropic => Vendor::Anthropic,
            WireFormat::Gemini => Vendor::Gemini,
        }
    }

    /// Every format, for tests and benchmarks that walk the matrix.
    pub const ALL: [WireFormat; 4] = [
        WireFormat::OpenAiChat,
        WireFormat::OpenAiResponses,
        WireFormat::Anthropic,
        WireFormat::Gemini,
    ];
}

/// The vendor that minted a thinking signature: signatures are only valid when replayed to it (formats.md §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    OpenAi,
    Anthropic,
    Gemini,
}
