//! The whole-body entry points: request and response translation through the IR, and usage extraction.

use bytes::Bytes;
use serde_json::Value;

use super::ir::IrResponse;
use super::tool_names::ToolNames;
use super::usage::Usage;
use super::wire::WireFormat;
use super::{anthropic, gemini, openai_chat, responses_api};

/// Why a body could not be translated. Both are the client's 400 `invalid_request_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The body is not valid for its own format.
    #[error("{0}")]
    Invalid(String),
    /// Valid, but the upstream's format cannot express it faithfully (n>1 to Anthropic, server tools, …).
    #[error("{0}")]
    Unsupported(String),
}

/// How to build the upstream request.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    /// The physical upstream model.
    pub model: String,
    pub stream: bool,
    /// Anthropic requires `max_tokens`; used when the client gave none (e.g. 4096).
    pub default_max_tokens: u32,
}

/// Client body (format `from`) → upstream body (format `to`), `model` set to `opts.model`. Never called with
/// `from == to` (same-format traffic passes through byte for byte). An OpenAI Chat upstream asked to stream gets
/// `stream_options.include_usage: true`. Gemini's model and stream flag live in the URL, not the body.
pub fn convert_request(
    from: WireFormat,
    to: WireFormat,
    body: &[u8],
    opts: &RequestOptions,
) -> Result<Bytes, ConvertError> {
    convert_request_named(from, to, body, opts).map(|(body, _)| body)
}

/// As `convert_request`, and the tool names renamed for the upstream (see `tool_names`): hand them to
/// `convert_response_named` or `StreamOptions::tool_names` so the client gets its own names back.
pub fn convert_request_named(
    from: WireFormat,
    to: WireFormat,
    body: &[u8],
    opts: &RequestOptions,
) -> Result<(Bytes, Option<ToolNames>), ConvertError> {
    let obj = super::json::parse_object(body)?;
    let mut ir = match from {
        WireFormat::OpenAiChat => openai_chat::request::parse(&obj)?,
        WireFormat::OpenAiResponses => responses_api::request::parse(&obj)?,
        WireFormat::Anthropic => anthropic::request::parse(&obj)?,
        WireFormat::Gemini => gemini::request::parse(&obj)?,
    };
    let n = obj.get("n").and_then(Value::as_u64).unwrap_or(1);
    if n > 1 && from != to {
        // Every encoder streams choice 0 only, and Anthropic/Responses have no `n`.
        return Err(ConvertError::Unsupported(format!(
            "`n` > 1 cannot be translated for a {} upstream; send one request per choice",
            to.label()
        )));
    }
    let names = ToolNames::for_request(to, &mut ir);
    let out = match to {
        WireFormat::OpenAiChat => openai_chat::request::render(&ir, opts),
        WireFormat::OpenAiResponses => responses_api::request::render(&ir, opts)?,
        WireFormat::Anthropic => anthropic::request::render(&ir, opts)?,
        WireFormat::Gemini => gemini::request::render(&ir, opts),
    };
    let body = serde_json::to_vec(&out).map_err(|e| ConvertError::Invalid(e.to_string()))?;
    Ok((Bytes::from(body), names))
}

/// Parses a whole upstream response into the IR.
pub fn parse_response(from: WireFormat, body: &[u8]) -> Result<IrResponse, ConvertError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ConvertError::Invalid(format!("The upstream response is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ConvertError::Invalid(
            "The upstream response is not a JSON object".into(),
        ));
    }
    Ok(match from {
        WireFormat::OpenAiChat => openai_chat::response::parse(&v)?,
        WireFormat::OpenAiResponses => responses_api::response::parse(&v)?,
        WireFormat::Anthropic => anthropic::response::parse(&v)?,
        WireFormat::Gemini => gemini::response::parse(&v)?,
    })
}

/// Whole upstream response (format `from`) → client format `to`; `model` is the name the client asked for.
pub fn convert_response(
    from: WireFormat,
    to: WireFormat,
    body: &[u8],
    model: &str,
) -> Result<(Bytes, Option<Usage>), ConvertError> {
    convert_response_named(from, to, body, model, None)
}

/// As `convert_response`, giving tool calls back the client's names the request was renamed from.
pub fn convert_response_named(
    from: WireFormat,
    to: WireFormat,
    body: &[u8],
    model: &str,
    names: Option<&ToolNames>,
) -> Result<(Bytes, Option<Usage>), ConvertError> {
    let mut ir = parse_response(from, body)?;
    if let Some(names) = names {
        names.restore(&mut ir);
    }
    let out = match to {
        WireFormat::OpenAiChat => openai_chat::response::render(&ir, model),
        WireFormat::OpenAiResponses => responses_api::response::render(&ir, model),
        WireFormat::Anthropic => anthropic::response::render(&ir, model),
        WireFormat::Gemini => gemini::response::render(&ir, model),
    };
    let bytes = serde_json::to_vec(&out).map_err(|e| ConvertError::Invalid(e.to_string()))?;
    Ok((Bytes::from(bytes), ir.usage))
}

/// Usage from a whole response body of any format.
pub fn extract_usage(format: WireFormat, body: &[u8]) -> Option<Usage> {
    /// Only the usage object is built; the rest of the answer is skipped without allocating.
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(borrow, default)]
        usage: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, default, rename = "usageMetadata", alias = "usage_metadata")]
        usage_metadata: Option<&'a serde_json::value::RawValue>,
    }
    let top: Top = serde_json::from_slice(body).ok()?;
    let raw = match format {
        WireFormat::Gemini => top.usage_metadata?,
        _ => top.usage?,
    };
    let v: Value = serde_json::from_str(raw.get()).ok()?;
    match format {
        WireFormat::OpenAiChat => Usage::from_openai_chat(&v),
        WireFormat::OpenAiResponses => Usage::from_responses(&v),
        WireFormat::Anthropic => Usage::from_anthropic(&v),
        WireFormat::Gemini => Usage::from_gemini(&v),
    }
}

/// A rough input-token estimate for a request body (≈4 bytes a token), never 0. Anthropic clients need a
/// non-zero `message_start.usage.input_tokens` before an OpenAI upstream reports the real count (§4.3).
pub fn estimate_input_tokens(body: &[u8]) -> u64 {
    (body.len() as u64 / 4).max(1)
}
