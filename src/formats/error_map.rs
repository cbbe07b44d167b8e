//! Errors in each client's format (formats.md §5): body shapes, status re-encoding (529 ↔ 503), the upstream's
//! message kept, and the in-format mid-stream error event (§4.7).

use bytes::Bytes;
use serde_json::{json, Value};

use super::json::{str_at, u64_at};
use super::wire::WireFormat;

/// What went wrong, format-neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidRequest,
    /// The prompt is longer than the model's context.
    ContextLength,
    Authentication,
    /// Out of credit / spend limit (402, OpenAI `insufficient_quota`).
    Billing,
    PermissionDenied,
    NotFound,
    Conflict,
    RequestTooLarge,
    RateLimited,
    Overloaded,
    /// An upstream 5xx other than overload.
    Upstream,
    Timeout,
}

impl ErrorKind {
    /// The status that stands for this kind (Anthropic's 529 for an overload).
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::ContextLength => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::Billing => 402,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::Overloaded => 529,
            ErrorKind::Upstream => 500,
            ErrorKind::Timeout => 504,
        }
    }

    /// The request's own fault (a bad field, a prompt too long, a body too large): it says nothing
    /// of the upstream's health.
    pub fn is_request_s_own(self) -> bool {
        matches!(
            self,
            ErrorKind::InvalidRequest | ErrorKind::ContextLength | ErrorKind::RequestTooLarge
        )
    }

    /// The kind an HTTP status means when nothing better is known.
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            400 | 422 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            402 => ErrorKind::Billing,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            408 | 504 => ErrorKind::Timeout,
            409 => ErrorKind::Conflict,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimited,
            503 | 529 => ErrorKind::Overloaded,
            _ => ErrorKind::Upstream,
        }
    }

    fn openai(self) -> (&'static str, Option<&'static str>) {
        match self {
            ErrorKind::InvalidRequest => ("invalid_request_error", None),
            ErrorKind::ContextLength => ("invalid_request_error", Some("context_length_exceeded")),
            ErrorKind::Authentication => ("invalid_request_error", Some("invalid_api_key")),
            ErrorKind::Billing => ("insufficient_quota", Some("insufficient_quota")),
            ErrorKind::PermissionDenied => ("permission_error", None),
            ErrorKind::NotFound => ("invalid_request_error", Some("model_not_found")),
            ErrorKind::Conflict => ("server_error", Some("conflict")),
            ErrorKind::RequestTooLarge => ("invalid_request_error", Some("request_too_large")),
            ErrorKind::RateLimited => ("requests", Some("rate_limit_exceeded")),
            ErrorKind::Overloaded => ("service_unavailable_error", Some("server_is_overloaded")),
            ErrorKind::Upstream => ("server_error", None),
            ErrorKind::Timeout => ("timeout", Some("timeout")),
        }
    }

    fn anthropic(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::ContextLength => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Billing => "billing_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::Conflict => "conflict_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Upstream => "api_error",
            ErrorKind::Timeout => "timeout_error",
        }
    }

    fn gemini(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::ContextLength | ErrorKind::RequestTooLarge => "INVALID_ARGUMENT",
            ErrorKind::Authentication => "UNAUTHENTICATED",
            ErrorKind::Billing | ErrorKind::RateLimited => "RESOURCE_EXHAUSTED",
            ErrorKind::PermissionDenied => "PERMISSION_DENIED",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::Conflict => "ABORTED",
            ErrorKind::Overloaded => "UNAVAILABLE",
            ErrorKind::Upstream => "INTERNAL",
            ErrorKind::Timeout => "DEADLINE_EXCEEDED",
        }
    }
}

/// The status a client of format `to` expects for `kind`: overload is 529 for Anthropic clients and 503 for
/// the others; a stray 529 never reaches a non-Anthropic client.
/// The status a client of format `to` gets for an error of `kind` that arrived with `status`.
pub fn client_status(to: WireFormat, status: u16, kind: ErrorKind) -> u16 {
    match (to, kind) {
        (WireFormat::Anthropic, ErrorKind::Overloaded) => 529,
        (_, ErrorKind::Overloaded) => 503,
        // Out of credit: Anthropic's `billing_error` is a 402; OpenAI's `insufficient_quota` and
        // Gemini's `RESOURCE_EXHAUSTED` are 429s, which their SDKs raise as such (§5.2).
        (WireFormat::Anthropic, ErrorKind::Billing) => 402,
        (_, ErrorKind::Billing) => 429,
        (_, _) if status == 529 => 503,
        (_, _) if !(400..=599).contains(&status) => 502,
        _ => status,
    }
}

/// Error body in the client's format (§5.1) and the status to send. An Anthropic body carries
/// `request_id`, the request's id as the gateway's `x-request-id` says it (a new one when `None`),
/// so what a client logs of an error finds the gateway's log line.
pub fn error_response(
    to: WireFormat,
    status: u16,
    kind: ErrorKind,
    message: &str,
    request_id: Option<&str>,
) -> (u16, Bytes) {
    let status = client_status(to, status, kind);
    let body = match to {
        WireFormat::OpenAiChat | WireFormat::OpenAiResponses => {
            let (t, code) = kind.openai();
            json!({"error": {"message": message, "type": t, "param": null, "code": code}})
        }
        WireFormat::Anthropic => json!({"type": "error", "error": {"type": kind.anthropic(), "message": message},
            "request_id": request_id.map_or_else(|| super::json::new_id("req_"), str::to_string)}),
        WireFormat::Gemini => json!({"error": {"code": status, "message": message, "status": kind.gemini()}}),
    };
    (status, Bytes::from(body.to_string()))
}

/// The kind and message of an upstream error body of format `from`.
pub fn classify_error(from: WireFormat, status: u16, body: &[u8]) -> (ErrorKind, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // The error object; a Responses stream's `error` event is one itself (`code` at the top level).
    let e = match v.get("error") {
        Some(e) => e,
        None if str_at(&v, "type") == Some("error") => &v,
        // vLLM's and other OpenAI-compatible servers' flat error (`"object": "error"`).
        None if str_at(&v, "object") == Some("error") => &v,
        // A Responses stream's `response.failed`: the error is the failed response's.
        None if str_at(&v, "type") == Some("response.failed") => v.pointer("/response/error").unwrap_or(&Value::Null),
        None => &Value::Null,
    };
    // A message that is itself an object (Mistral's `{"detail": [...]}`), or FastAPI's `detail`
    // beside no error object: said as compact JSON rather than lost.
    let structured = |m: &Value| (m.is_object() || m.is_array()).then(|| m.to_string().chars().take(1000).collect());
    let message = str_at(e, "message")
        .or_else(|| e.as_str())
        .map(str::to_string)
        .or_else(|| e.get("message").and_then(structured))
        .or_else(|| match v.get("detail") {
            Some(Value::String(d)) if e.is_null() => Some(d.clone()),
            Some(d) if e.is_null() => structured(d),
            _ => None,
        })
        .or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            (!text.is_empty() && v.is_null()).then(|| text.chars().take(1000).collect())
        })
        .unwrap_or_else(|| format!("upstream returned HTTP {status}"));
    let by_status = ErrorKind::from_status(status);
    let kind = match from {
        WireFormat::OpenAiChat | WireFormat::OpenAiResponses => match (str_at(e, "code"), str_at(e, "type")) {
            (Some("context_length_exceeded"), _) => ErrorKind::ContextLength,
            (Some("invalid_api_key"), _) => ErrorKind::Authentication,
            // xAI says a bad key under a 400, in words only.
            _ if message.starts_with("Incorrect API key provided") => ErrorKind::Authentication,
            (Some("insufficient_quota"), _) | (_, Some("insufficient_quota")) => ErrorKind::Billing,
            (Some("model_not_found"), _) => ErrorKind::NotFound,
            (Some("rate_limit_exceeded"), _) | (_, Some("rate_limit_error" | "requests" | "tokens")) => {
                ErrorKind::RateLimited
            }
            (Some("server_is_overloaded"), _) | (_, Some("service_unavailable_error")) => ErrorKind::Overloaded,
            // OpenAI-compatible servers (vLLM, llama.cpp) say it in words only.
            _ if by_status == ErrorKind::InvalidRequest && says_context_too_long(&message) => ErrorKind::ContextLength,
            // OpenRouter's 402 for a request larger than the balance covers: the request's (its
            // `max_tokens`), not the key's; smaller ones still go through.
            _ if status == 402 && says_request_unaffordable(&message) => ErrorKind::InvalidRequest,
            // An error event inside a 200 stream has no status to go by (see `first_event`).
            (_, Some("invalid_request_error")) if by_status == ErrorKind::Upstream => ErrorKind::InvalidRequest,
            _ => by_status,
        },
        WireFormat::Anthropic => match str_at(e, "type") {
            // Anthropic says "out of credit" as a 400 invalid_request_error, in words: at the
            // start of its message, as it says it (a client's own header or field named "credit
            // balance" is echoed further in, and must not bench the provider's keys).
            Some("invalid_request_error") if message.starts_with("Your credit balance is too low") => {
                ErrorKind::Billing
            }
            Some("invalid_request_error") if says_context_too_long(&message) => ErrorKind::ContextLength,
            Some("invalid_request_error") => ErrorKind::InvalidRequest,
            Some("authentication_error") => ErrorKind::Authentication,
            Some("billing_error") => ErrorKind::Billing,
            Some("permission_error") => ErrorKind::PermissionDenied,
            Some("not_found_error") => ErrorKind::NotFound,
            Some("request_too_large") => ErrorKind::RequestTooLarge,
            // A spend limit reached is said as a 429 rate limit: the key is out of credit.
            Some("rate_limit_error")
                if e.get("details").and_then(|d| str_at(d, "error_code")) == Some("enforced_spend_limit_reached") =>
            {
                ErrorKind::Billing
            }
            Some("rate_limit_error") => ErrorKind::RateLimited,
            Some("overloaded_error") => ErrorKind::Overloaded,
            Some("timeout_error") => ErrorKind::Timeout,
            Some("api_error") => ErrorKind::Upstream,
            _ => by_status,
        },
        WireFormat::Gemini => {
            // Gemini says "bad key" with 400 INVALID_ARGUMENT + reason API_KEY_INVALID: classify by reason.
            let key_invalid = super::json::arr_at(e, "details")
                .iter()
                .any(|d| str_at(d, "reason") == Some("API_KEY_INVALID"));
            match str_at(e, "status") {
                _ if key_invalid => ErrorKind::Authentication,
                Some("INVALID_ARGUMENT") if says_context_too_long(&message) => ErrorKind::ContextLength,
                Some("UNAUTHENTICATED") => ErrorKind::Authentication,
                Some("PERMISSION_DENIED") => ErrorKind::PermissionDenied,
                Some("NOT_FOUND") => ErrorKind::NotFound,
                // Prepaid credit used up: the key's account, not the moment.
                Some("RESOURCE_EXHAUSTED") if status == 402 => ErrorKind::Billing,
                Some("RESOURCE_EXHAUSTED") => ErrorKind::RateLimited,
                // The key's project cannot be served (the free tier in an unsupported country,
                // billing off): nothing of the request's; the next key or upstream may serve it.
                Some("FAILED_PRECONDITION") => ErrorKind::PermissionDenied,
                Some("UNAVAILABLE") => ErrorKind::Overloaded,
                Some("DEADLINE_EXCEEDED") => ErrorKind::Timeout,
                Some("ABORTED") => ErrorKind::Conflict,
                Some("INTERNAL") => ErrorKind::Upstream,
                _ => by_status,
            }
        }
    };
    (kind, message)
}

/// Whether a 402 says this request costs more than the balance allows (OpenRouter: "This request
/// requires more credits, or fewer max_tokens. You requested up to 65536 tokens, but can only
/// afford 30104"), rather than that the account is empty.
fn says_request_unaffordable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("fewer max_tokens") || m.contains("can only afford")
}

/// Whether an error's message says the prompt does not fit the model's context: Anthropic's
/// "prompt is too long", Gemini's "input token count … exceeds the maximum number of tokens",
/// vLLM's "maximum context length", llama.cpp's and xAI's words. Clients act on the kind
/// (OpenAI's `context_length_exceeded`: trim and retry), so it is read from the words where no
/// code says it.
fn says_context_too_long(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "prompt is too long",
        // Anthropic: "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000".
        "exceed context limit",
        // llama.cpp: "the request exceeds the available context size, try increasing it".
        "exceeds the available context size",
        // xAI: "This model's maximum prompt length is 131072 but the request contains 140000 tokens."
        "maximum prompt length",
        "maximum context length",
        "exceeds the maximum number of tokens",
        "context window",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Re-renders an upstream error body (format `from`, HTTP `status`) in the client's format, keeping the
/// provider's message.
pub fn convert_error(
    from: WireFormat,
    to: WireFormat,
    status: u16,
    body: &[u8],
    request_id: Option<&str>,
) -> (u16, Bytes) {
    let (kind, mut message) = classify_error(from, status, body);
    let status = if kind == ErrorKind::Authentication && status == 400 {
        401
    } else {
        status
    };
    // Claude Code compacts the conversation when the error says "prompt is too long", Anthropic's
    // words; another upstream's wording would leave it failing.
    if kind == ErrorKind::ContextLength && to == WireFormat::Anthropic && !message.contains("prompt is too long") {
        message = format!("prompt is too long: {message}");
    }
    error_response(to, status, kind, &message, request_id)
}

/// Anthropic `error.type` for a stream error code.
pub(crate) fn anthropic_error_type(code: &str) -> &'static str {
    let c = code.to_ascii_lowercase();
    if c.contains("overload") || c.contains("unavailable") {
        "overloaded_error"
    } else if c.contains("rate_limit") || c.contains("resource_exhausted") {
        "rate_limit_error"
    } else if c.contains("timeout") || c.contains("deadline") {
        "timeout_error"
    } else {
        "api_error"
    }
}

/// Gemini's in-stream error object (google-genai raises APIError on chunks starting with `{"error":`).
pub(crate) fn gemini_stream_error(message: &str, code: &str) -> Value {
    let c = code.to_ascii_lowercase();
    let (status, name) = if c.contains("timeout") || c.contains("deadline") {
        (504, "DEADLINE_EXCEEDED")
    } else if c.contains("rate_limit") || c.contains("resource_exhausted") {
        (429, "RESOURCE_EXHAUSTED")
    } else {
        (503, "UNAVAILABLE")
    };
    json!({"error": {"code": status, "message": message, "status": name}})
}

/// A Responses stream's `response.failed` event payload; `sequence` when the stream's count is known.
pub fn responses_failed(message: &str, code: &str, sequence: Option<u64>) -> serde_json::Value {
    let mut v = json!({"type": "response.failed", "response": {"id": super::json::new_id("resp_"), "object": "response",
        "created_at": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "status": "failed", "output": [], "error": {"code": code, "message": message}}});
    if let Some(n) = sequence {
        v["sequence_number"] = json!(n);
    }
    v
}

/// The in-format mid-stream error event (§4.7), for a stream this library is not translating. A Responses
/// stream gets `response.failed` without a `sequence_number` (this function does not know the stream's count;
/// `StreamConverter` emits it with the right one).
pub fn stream_error_event(to: WireFormat, message: &str, code: &str) -> Bytes {
    let mut out = Vec::with_capacity(128 + message.len());
    match to {
        WireFormat::OpenAiChat => super::stream::events::write_data(
            &mut out,
            &json!({"error": {"message": message, "type": "server_error", "param": null, "code": code}}),
        ),
        WireFormat::OpenAiResponses => {
            super::stream::events::write_event(&mut out, "response.failed", &responses_failed(message, code, None))
        }
        WireFormat::Anthropic => super::stream::events::write_event(
            &mut out,
            "error",
            &json!({"type": "error", "error": {"type": anthropic_error_type(code), "message": message}}),
        ),
        WireFormat::Gemini => {
            out.extend_from_slice(b"data: ");
            let _ = serde_json::to_writer(&mut out, &gemini_stream_error(message, code));
            out.extend_from_slice(b"\r\n\r\n");
        }
    }
    Bytes::from(out)
}

/// A retry hint in seconds as whole seconds, rounded up (half a second is a second to wait, not
/// none); a negative or non-finite one says nothing.
pub fn whole_secs_up(secs: f64) -> Option<u64> {
    (secs.is_finite() && secs >= 0.0).then(|| secs.ceil().min(u32::MAX as f64) as u64)
}

/// Retry hint of an upstream error body, when it carries one (Gemini `RetryInfo.retryDelay`, a
/// protobuf duration such as `"7s"` or `"0.5s"`), in whole seconds rounded up as `Retry-After`'s
/// are: half a second is a second to wait, not none.
pub fn retry_after_secs(body: &[u8]) -> Option<u64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let details = v.get("error").and_then(|e| e.get("details")).and_then(Value::as_array);
    details
        .into_iter()
        .flatten()
        .find_map(|d| whole_secs_up(str_at(d, "retryDelay")?.strip_suffix('s')?.parse().ok()?))
        .or_else(|| u64_at(&v, "retry_after"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_anthropic_s_own_words_say_out_of_credit() {
        let said = |message: &str| {
            let body = json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
            classify_error(WireFormat::Anthropic, 400, body.to_string().as_bytes()).0
        };
        assert_eq!(
            said("Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."),
            ErrorKind::Billing
        );
        assert_eq!(
            said("Unexpected value(s) `credit balance` for the `anthropic-beta` header."),
            ErrorKind::InvalidRequest
        );
    }

    #[test]
    fn xai_s_bad_key_under_a_400_is_an_authentication_error() {
        let body = br#"{"code":"Client specified an invalid argument","error":"Incorrect API key provided: xa***Bz. You can obtain an API key from https://console.x.ai."}"#;
        assert_eq!(
            classify_error(WireFormat::OpenAiChat, 400, body).0,
            ErrorKind::Authentication
        );
    }

    #[test]
    fn a_top_level_retry_after_counts_without_error_details() {
        assert_eq!(
            retry_after_secs(br#"{"error":{"message":"slow down"},"retry_after":7}"#),
            Some(7)
        );
        assert_eq!(retry_after_secs(br#"{"retry_after":3}"#), Some(3));
        assert_eq!(retry_after_secs(br#"{"error":{"message":"x"}}"#), None);
    }

    #[test]
    fn gemini_s_retry_delay_is_rounded_up_to_whole_seconds() {
        let body = |delay: &str| {
            format!(
                r#"{{"error":{{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}]}}}}"#
            )
        };
        let of = |delay: &str| retry_after_secs(body(delay).as_bytes());
        assert_eq!(of("7s"), Some(7));
        assert_eq!(of("0.5s"), Some(1));
        assert_eq!(of("1.9s"), Some(2));
        assert_eq!(of("12.000000001s"), Some(13));
        assert_eq!(of("soon"), None);
        assert_eq!(of("-3s"), None);
    }

    #[test]
    fn a_prompt_too_long_for_the_context_is_said_so_in_every_format() {
        let cases: [(WireFormat, u16, &str); 4] = [
            (
                WireFormat::Anthropic,
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#,
            ),
            (
                WireFormat::Gemini,
                400,
                r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."}}"#,
            ),
            (
                WireFormat::OpenAiChat,
                400,
                r#"{"object":"error","type":"BadRequestError","message":"This model's maximum context length is 32768 tokens. However, you requested 40000 tokens."}"#,
            ),
            (
                WireFormat::OpenAiChat,
                400,
                r#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
            ),
        ];
        for (from, status, sent) in cases {
            assert_eq!(
                classify_error(from, status, sent.as_bytes()).0,
                ErrorKind::ContextLength,
                "{sent}"
            );
            let (status, out) = convert_error(from, WireFormat::OpenAiChat, status, sent.as_bytes(), None);
            assert_eq!(status, 400);
            assert_eq!(body(&out)["error"]["code"], "context_length_exceeded", "{sent}");
        }
        // Anthropic's other wording of it, and Claude Code's trigger for compacting.
        let limit = r#"{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000, decrease input length or `max_tokens` and try again"}}"#;
        assert_eq!(
            classify_error(WireFormat::Anthropic, 400, limit.as_bytes()).0,
            ErrorKind::ContextLength
        );
        for words in [
            r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#,
            r#"{"error":{"message":"This model's maximum prompt length is 131072 but the request contains 140000 tokens.","type":"invalid_request_error"}}"#,
        ] {
            assert_eq!(
                classify_error(WireFormat::OpenAiChat, 400, words.as_bytes()).0,
                ErrorKind::ContextLength,
                "{words}"
            );
        }
        let vllm = cases[2].2.as_bytes();
        let (_, out) = convert_error(WireFormat::OpenAiChat, WireFormat::Anthropic, 400, vllm, None);
        let message = body(&out)["error"]["message"].as_str().unwrap().to_string();
        assert!(
            message.starts_with("prompt is too long: This model's maximum context length"),
            "{message}"
        );
        // Other invalid requests stay what they are.
        let other = r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: field required"}}"#;
        assert_eq!(
            classify_error(WireFormat::Anthropic, 400, other.as_bytes()).0,
            ErrorKind::InvalidRequest
        );
    }

    /// Mistral's 422 carries its message as an object; FastAPI servers say `detail`.
    #[test]
    fn a_structured_message_is_kept_as_json() {
        let mistral = br#"{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","max_completion_tokens"],"msg":"Extra inputs are not permitted"}]},"type":"invalid_request_error"}"#;
        let (_, message) = classify_error(WireFormat::OpenAiChat, 422, mistral);
        assert!(
            message.contains("max_completion_tokens") && message.contains("extra_forbidden"),
            "{message}"
        );
        let fastapi = br#"{"detail":"Model not loaded"}"#;
        assert_eq!(
            classify_error(WireFormat::OpenAiChat, 400, fastapi).1,
            "Model not loaded"
        );
    }

    fn body(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn out_of_credit_is_each_client_s_own_status() {
        let anth = br#"{"type":"error","error":{"type":"billing_error","message":"Your credit balance is too low"}}"#;
        for (to, want) in [
            (WireFormat::OpenAiChat, 429),
            (WireFormat::OpenAiResponses, 429),
            (WireFormat::Gemini, 429),
            (WireFormat::Anthropic, 402),
        ] {
            let (status, body) = convert_error(WireFormat::Anthropic, to, 402, anth, None);
            assert_eq!(status, want, "{to:?}");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            match to {
                WireFormat::Gemini => assert_eq!(
                    (v["error"]["code"].as_u64(), v["error"]["status"].as_str()),
                    (Some(429), Some("RESOURCE_EXHAUSTED"))
                ),
                WireFormat::Anthropic => assert_eq!(v["error"]["type"], "billing_error"),
                _ => assert_eq!(v["error"]["code"], "insufficient_quota"),
            }
        }
    }

    #[test]
    fn overload_statuses_are_re_encoded() {
        let anth = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let (s, b) = convert_error(WireFormat::Anthropic, WireFormat::OpenAiChat, 529, anth, None);
        assert_eq!(s, 503);
        assert_eq!(body(&b)["error"]["message"], "Overloaded");
        assert_eq!(body(&b)["error"]["type"], "service_unavailable_error");
        let oa = br#"{"error":{"message":"busy","type":"server_error","param":null,"code":null}}"#;
        let (s, b) = convert_error(WireFormat::OpenAiChat, WireFormat::Anthropic, 503, oa, None);
        assert_eq!(s, 529);
        assert_eq!(body(&b)["error"]["type"], "overloaded_error");
        let (s, b) = convert_error(WireFormat::Anthropic, WireFormat::Gemini, 529, anth, None);
        assert_eq!(s, 503);
        assert_eq!(body(&b)["error"]["status"], "UNAVAILABLE");
        assert_eq!(body(&b)["error"]["code"], 503);
    }

    #[test]
    fn gemini_bad_key_is_authentication() {
        let g = br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT",
            "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
        let (s, b) = convert_error(WireFormat::Gemini, WireFormat::Anthropic, 400, g, None);
        assert_eq!(s, 401);
        assert_eq!(body(&b)["error"]["type"], "authentication_error");
        assert_eq!(body(&b)["error"]["message"], "API key not valid.");
    }

    /// Gemini's account-level refusals are the key's, not the request's.
    #[test]
    fn gemini_account_refusals_are_the_key_s() {
        let region = br#"{"error":{"code":400,"message":"Gemini API free tier is not available in your country. Please enable billing on your project in Google AI Studio.","status":"FAILED_PRECONDITION"}}"#;
        assert_eq!(
            classify_error(WireFormat::Gemini, 400, region).0,
            ErrorKind::PermissionDenied
        );
        let prepaid = br#"{"error":{"code":402,"message":"Your prepayment credits are depleted.","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(classify_error(WireFormat::Gemini, 402, prepaid).0, ErrorKind::Billing);
        let quota = br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(classify_error(WireFormat::Gemini, 429, quota).0, ErrorKind::RateLimited);
    }

    #[test]
    fn rate_limits_keep_status_and_message() {
        let a = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
        for to in WireFormat::ALL {
            let (s, b) = convert_error(WireFormat::Anthropic, to, 429, a, None);
            assert_eq!(s, 429);
            assert!(String::from_utf8_lossy(&b).contains("slow down"));
        }
        let (_, b) = error_response(WireFormat::Gemini, 429, ErrorKind::RateLimited, "x", None);
        assert_eq!(body(&b)["error"]["status"], "RESOURCE_EXHAUSTED");
    }

    #[test]
    fn stream_error_shapes() {
        let e = stream_error_event(WireFormat::Anthropic, "Overloaded", "overloaded_error");
        assert!(e.starts_with(b"event: error\ndata: {"));
        let e = stream_error_event(WireFormat::Gemini, "cut", "stream_interrupted");
        assert!(e.starts_with(b"data: {\"error\":{"));
        let e = stream_error_event(WireFormat::OpenAiResponses, "cut", "stream_interrupted");
        assert!(e.starts_with(b"event: response.failed\n"));
        let e = stream_error_event(WireFormat::OpenAiChat, "cut", "stream_interrupted");
        assert!(e.starts_with(b"data: {\"error\":{"));
    }
}
