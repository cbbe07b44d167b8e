//! The first event of an upstream stream, read before anything reaches the client: a stream that
//! opens with an error (Anthropic `event: error`, OpenAI or Gemini `data: {"error": …}`, sent with
//! HTTP 200) can still fail over to another upstream (formats.md §4.7).

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde_json::Value;

use super::sse_parser::{Frame, SseParser};
use crate::formats::error_map::{classify_error, ErrorKind};
use crate::formats::wire::WireFormat;

/// What the beginning of a stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstEvent {
    /// No complete event yet: read more.
    Pending,
    /// The stream opens with content.
    Content,
    /// Nothing more will be read, and the stream held no whole event (comments and pings at most):
    /// the upstream answered nothing.
    NoEvent,
    /// The stream opens with an error of this kind.
    Error(ErrorKind),
}

/// Judges the first event of `body`, the beginning of an SSE stream from a `from` upstream.
/// `complete`: nothing more will be read, so no event at all means `NoEvent`. Keep-alive `ping`
/// events and comments are skipped.
pub fn first_event(from: WireFormat, body: &[u8], complete: bool) -> FirstEvent {
    // Event by event (each up to its blank line), so a long stream read in one piece is not parsed
    // past its first event.
    let mut rest = super::sse_parser::strip_bom(body);
    while let Some(end) = event_end(rest) {
        if let Some(first) = judge_first(from, &rest[..end], false) {
            return first;
        }
        rest = &rest[end..];
    }
    if !complete {
        return FirstEvent::Pending;
    }
    // The end: a last event may lack its blank line, which the stream's own reading accepts
    // (`SseParser::finish`), so it is judged here too rather than taken for no answer.
    judge_first(from, rest, true).unwrap_or(FirstEvent::NoEvent)
}

/// The judgement of the first event in `events` that is not a keep-alive; `at_end`: the stream
/// ends there, so an event without its blank line counts.
fn judge_first(from: WireFormat, events: &[u8], at_end: bool) -> Option<FirstEvent> {
    let mut first = None;
    let mut on_frame = |frame: Frame<'_>| {
        if first.is_none() && frame.event != Some("ping") && !frame.data.trim().is_empty() {
            first = Some(judge(from, &frame));
        }
    };
    let mut parser = SseParser::new(events.len() + 1, false);
    let _ = parser.push(events, &mut on_frame);
    if at_end {
        parser.finish(&mut on_frame);
    }
    first
}

/// Where the first event of `body` ends: just past its blank line, two line ends in a row (each
/// `\n`, `\r\n` or a lone `\r`, as the SSE standard allows).
fn event_end(body: &[u8]) -> Option<usize> {
    // The length of the line end at `at`, if one starts there.
    let line_end = |at: usize| match body.get(at..)? {
        [b'\r', b'\n', ..] => Some(2),
        [b'\r' | b'\n', ..] => Some(1),
        _ => None,
    };
    memchr::memchr2_iter(b'\n', b'\r', body).find_map(|p| {
        // A `\n` right after a `\r` belongs to the `\r`'s line end, already looked at.
        if body[p] == b'\n' && p > 0 && body[p - 1] == b'\r' {
            return None;
        }
        // A `\r` that ends the buffer may still be followed by its `\n`: wait for it.
        if body[p] == b'\r' && p + 1 == body.len() {
            return None;
        }
        let next = p + line_end(p)?;
        line_end(next).map(|n| next + n)
    })
}

fn judge(from: WireFormat, frame: &Frame<'_>) -> FirstEvent {
    // Only an event that says `error` is parsed; content events pass on a substring check.
    let named_error = frame.event == Some("error");
    let error_object = || {
        frame.data.contains("\"error\"")
            && serde_json::from_str::<Value>(frame.data).is_ok_and(|v| v.get("error").is_some_and(|e| !e.is_null()))
    };
    if !named_error && !error_object() {
        return FirstEvent::Content;
    }
    // An error event without a recognisable type counts as the upstream's own failure (500).
    FirstEvent::Error(classify_error(from, 500, frame.data.as_bytes()).0)
}

/// How far into a whole answer an error object names itself (a Responses object's `"error"` comes
/// after its id, times and status): all `answer_error` reads before it decides.
pub const ANSWER_ERROR_WITHIN: usize = 512;

static ERROR_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"error\""));

/// Judges the beginning of a whole (non-stream) answer under a 2xx, which some OpenAI-compatible
/// servers make an error object (`{"error": …}`, Anthropic's `{"type": "error", …}`, a Responses
/// object that `failed`). Only an answer whose beginning may hold an `"error"` member that is not
/// `null` is read whole (`Pending` until `complete`) and parsed; any other is `Content` at once.
pub fn answer_error(from: WireFormat, body: &[u8], complete: bool) -> FirstEvent {
    if !may_hold_error(&body[..body.len().min(ANSWER_ERROR_WITHIN)]) {
        return FirstEvent::Content;
    }
    if !complete {
        return FirstEvent::Pending;
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return FirstEvent::Content;
    };
    let is_error =
        v.get("error").is_some_and(|e| !e.is_null()) || v.get("type").and_then(Value::as_str) == Some("error");
    match is_error {
        true => FirstEvent::Error(classify_error(from, 500, body).0),
        false => FirstEvent::Content,
    }
}

/// Whether `body` has an `"error"` key (not inside a string, where its quotes are escaped) whose
/// value is not `null`; or, for Anthropic, `"type":"error"`.
fn may_hold_error(body: &[u8]) -> bool {
    ERROR_KEY.find_iter(body).any(|at| {
        if at > 0 && body[at - 1] == b'\\' {
            return false;
        }
        let after = body[at + 7..].trim_ascii_start();
        match after.strip_prefix(b":") {
            Some(value) => !value.trim_ascii_start().starts_with(b"null"),
            // A value: Anthropic's `"type": "error"`.
            None => body[..at].trim_ascii_end().ends_with(b":"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_objects_under_a_success_are_found_and_answers_are_not() {
        let judge = |from, body: &[u8]| answer_error(from, body, true);
        let error = |kind| FirstEvent::Error(kind);
        let openrouter = br#"{"error":{"message":"Provider returned error","code":502}}"#;
        assert_eq!(judge(WireFormat::OpenAiChat, openrouter), error(ErrorKind::Upstream));
        // Read whole before it is judged.
        assert_eq!(
            answer_error(WireFormat::OpenAiChat, &openrouter[..20], false),
            FirstEvent::Pending
        );
        let context = br#"{"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}}"#;
        assert_eq!(judge(WireFormat::OpenAiChat, context), error(ErrorKind::ContextLength));
        let anthropic = br#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
        assert_eq!(judge(WireFormat::Anthropic, anthropic), error(ErrorKind::Overloaded));
        let failed = br#"{"id":"resp_1","object":"response","status":"failed","error":{"code":"rate_limit_exceeded","message":"slow down"}}"#;
        assert_eq!(
            judge(WireFormat::OpenAiResponses, failed),
            error(ErrorKind::RateLimited)
        );
        // Answers: no error member, a `null` one, the word inside the text; none waits.
        let answer = br#"{"choices":[{"message":{"content":"an \"error\": it happens"}}],"usage":{}}"#;
        assert_eq!(answer_error(WireFormat::OpenAiChat, answer, false), FirstEvent::Content);
        let completed = br#"{"id":"resp_1","object":"response","status":"completed","error": null,"output":[]}"#;
        assert_eq!(
            answer_error(WireFormat::OpenAiResponses, completed, false),
            FirstEvent::Content
        );
        let message = br#"{"type":"message","content":[{"type":"text","text":"error"}]}"#;
        assert_eq!(judge(WireFormat::Anthropic, message), FirstEvent::Content);
        assert_eq!(
            judge(WireFormat::OpenAiChat, b"not json \"error\": 1"),
            FirstEvent::Content
        );
    }

    #[test]
    fn an_error_as_first_event_is_found_in_each_format() {
        let anthropic = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(
            first_event(WireFormat::Anthropic, anthropic, false),
            FirstEvent::Error(ErrorKind::Overloaded)
        );
        let openai = b"data: {\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_error\",\"code\":\"rate_limit_exceeded\"}}\r\n\r\n";
        assert_eq!(
            first_event(WireFormat::OpenAiChat, openai, false),
            FirstEvent::Error(ErrorKind::RateLimited)
        );
        let gemini = b"data: {\"error\":{\"code\":503,\"message\":\"busy\",\"status\":\"UNAVAILABLE\"}}\n\n";
        assert_eq!(
            first_event(WireFormat::Gemini, gemini, false),
            FirstEvent::Error(ErrorKind::Overloaded)
        );
        // An error as a plain string (as TGI sends it) counts too, as the stream decoder reads it.
        assert_eq!(
            first_event(
                WireFormat::OpenAiChat,
                b"data: {\"error\":\"Input validation error\"}\n\n",
                false
            ),
            FirstEvent::Error(ErrorKind::Upstream)
        );
        // A Responses stream's error event carries its code at the top level.
        let responses = b"event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\",\"param\":null,\"sequence_number\":0}\n\n";
        assert_eq!(
            first_event(WireFormat::OpenAiResponses, responses, false),
            FirstEvent::Error(ErrorKind::RateLimited)
        );
        // Lines that end in a lone `\r` (the SSE standard allows it), a ping first.
        let lone_cr = b"event: ping\rdata: {}\r\revent: error\rdata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\r\r";
        assert_eq!(
            first_event(WireFormat::Anthropic, lone_cr, false),
            FirstEvent::Error(ErrorKind::Overloaded)
        );
        assert_eq!(
            first_event(WireFormat::Anthropic, &lone_cr[..lone_cr.len() - 1], false),
            FirstEvent::Pending
        );
        // An error event of no known type is the upstream's failure.
        assert_eq!(
            first_event(WireFormat::OpenAiChat, b"event: error\ndata: oops\n\n", false),
            FirstEvent::Error(ErrorKind::Upstream)
        );
    }

    #[test]
    fn content_pings_and_partial_events_are_not_errors() {
        let content = b"data: {\"choices\":[{\"delta\":{\"content\":\"an \\\"error\\\" word\"}}]}\n\n";
        assert_eq!(first_event(WireFormat::OpenAiChat, content, false), FirstEvent::Content);
        // A ping first, then the error: the error is what counts.
        let pinged = b": keep-alive\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"x\"}}\n\n";
        assert_eq!(
            first_event(WireFormat::Anthropic, pinged, false),
            FirstEvent::Error(ErrorKind::Upstream)
        );
        let partial = b"event: message_start\ndata: {\"type\":\"message_st";
        assert_eq!(first_event(WireFormat::Anthropic, partial, false), FirstEvent::Pending);
        assert_eq!(first_event(WireFormat::Anthropic, partial, true), FirstEvent::NoEvent);
        assert_eq!(first_event(WireFormat::Anthropic, b"", true), FirstEvent::NoEvent);
        let pings = b": PROCESSING\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n";
        assert_eq!(first_event(WireFormat::Anthropic, pings, true), FirstEvent::NoEvent);
        // A stream of one event without its blank line, then the end: that event is judged, as
        // the stream's own reading would take it.
        let unclosed = b"data: {\"error\":{\"message\":\"bad param\",\"type\":\"invalid_request_error\"}}\n";
        assert!(matches!(
            first_event(WireFormat::OpenAiChat, unclosed, true),
            FirstEvent::Error(_)
        ));
        let unclosed = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}";
        assert_eq!(first_event(WireFormat::OpenAiChat, unclosed, true), FirstEvent::Content);
        // A later error is a mid-stream error, not a first event.
        let later = b"data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"x\"}}\n\n";
        assert_eq!(first_event(WireFormat::OpenAiChat, later, false), FirstEvent::Content);
    }
}
