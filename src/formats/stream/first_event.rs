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
    /// Only the envelope so far (the stream has opened, nothing of the answer yet): read more, for
    /// a short while (an error after the envelope comes at once, a model's first words may not).
    /// When the hold ends (`complete`) with the envelope alone: at the body's end, an empty answer
    /// if the stream ended properly, else a stream cut before it said anything; at a hold limit,
    /// a stream released as it stands.
    Envelope,
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
    let mut envelope = false;
    while let Some(end) = event_end(rest) {
        if let Some(first) = judge_first(from, &rest[..end], false, &mut envelope) {
            return first;
        }
        rest = &rest[end..];
    }
    if !complete {
        return if envelope {
            FirstEvent::Envelope
        } else {
            FirstEvent::Pending
        };
    }
    // The end: a last event may lack its blank line, which the stream's own reading accepts
    // (`SseParser::finish`), so it is judged here too rather than taken for no answer.
    match judge_first(from, rest, true, &mut envelope) {
        Some(first) => first,
        None if envelope => FirstEvent::Envelope,
        None => FirstEvent::NoEvent,
    }
}

/// The judgement of the first event in `events` that says something: an error, or the answer
/// itself. Keep-alives and the envelope (Anthropic's `message_start`, Responses'
/// `response.created`, a Chat chunk with the role alone) are passed over: an upstream may open
/// its envelope and then fail (Anthropic's `overloaded_error` after `message_start`, Responses'
/// `response.failed` after `response.created`), and nothing has reached the client yet. `at_end`:
/// the stream ends there, so an event without its blank line counts. `envelope` is set when
/// envelope was passed over.
fn judge_first(from: WireFormat, events: &[u8], at_end: bool, envelope: &mut bool) -> Option<FirstEvent> {
    let mut first = None;
    let mut on_frame = |frame: Frame<'_>| {
        if first.is_some() || frame.event == Some("ping") || frame.data.trim().is_empty() {
            return;
        }
        match judge(from, &frame) {
            FirstEvent::Content if !super::carries_content(from, frame.event, frame.data) => *envelope = true,
            verdict => first = Some(verdict),
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
    // Responses says a failure as `response.failed`, its error inside the response.
    let responses_failed = from == WireFormat::OpenAiResponses
        && match frame.event {
            Some(event) => event == "response.failed",
            None => frame.data.contains("\"type\":\"response.failed\""),
        };
    let named_error = frame.event == Some("error") || responses_failed;
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
        let later =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"error\":{\"message\":\"x\"}}\n\n";
        assert_eq!(first_event(WireFormat::OpenAiChat, later, false), FirstEvent::Content);
    }

    /// The envelope an upstream opens with (nothing of the answer) is passed over: an error after
    /// it still fails over. A stream of envelope alone whose hold ends says `Envelope` still: the
    /// hold tells an empty answer from a cut one (`stream::completes`).
    #[test]
    fn an_error_after_the_envelope_is_the_first_event() {
        let responses = b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\"}}\n\n\
event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\",\"status\":\"failed\",\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\"}}}\n\n";
        assert_eq!(
            first_event(WireFormat::OpenAiResponses, responses, false),
            FirstEvent::Error(ErrorKind::RateLimited)
        );
        let anthropic = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(
            first_event(WireFormat::Anthropic, anthropic, false),
            FirstEvent::Error(ErrorKind::Overloaded)
        );
        let role = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        assert_eq!(first_event(WireFormat::OpenAiChat, role, false), FirstEvent::Envelope);
        assert_eq!(first_event(WireFormat::OpenAiChat, role, true), FirstEvent::Envelope);
        // Reasoning is the answer's too (OpenRouter's, Groq's and Ollama's `reasoning`), and a
        // chunk that only says the words `response.failed` is no Responses failure.
        let reasoning = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"Hmm\"}}]}\n\n";
        assert_eq!(
            first_event(WireFormat::OpenAiChat, reasoning, false),
            FirstEvent::Content
        );
        let words =
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\\"type\\\":\\\"response.failed\\\"\"}}]}\n\n";
        assert_eq!(first_event(WireFormat::OpenAiChat, words, false), FirstEvent::Content);
        let started = &anthropic[..anthropic.len() - 120];
        assert_eq!(first_event(WireFormat::Anthropic, started, false), FirstEvent::Envelope);
        assert_eq!(
            first_event(WireFormat::Anthropic, b"event: ping\ndata: {}\n\n", false),
            FirstEvent::Pending
        );
        let answered = b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
        assert_eq!(first_event(WireFormat::Anthropic, answered, false), FirstEvent::Content);
    }
}
