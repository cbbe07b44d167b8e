//! Stateful stream translation (formats.md §4): upstream bytes → frames → events → client bytes, one
//! converter per request. With `from == to` it is a passthrough observer that copies bytes unchanged.

pub mod events;
mod first_event;
pub(crate) mod sse_parser;
mod whole;

use std::sync::{Arc, LazyLock};

pub use first_event::{answer_error, first_event, FirstEvent, ANSWER_ERROR_WITHIN};
pub use whole::answer_as_stream;

use events::{write_event, Decode, Encode, StreamEvent, KEEPALIVE};
use memchr::memmem::Finder;
use sse_parser::{Frame, JsonArrayParser, SseParser};

use super::error_map::{stream_error_event, ErrorKind};
use super::ir::Media;
use super::tool_names::ToolNames;
use super::usage::Usage;
use super::wire::WireFormat;
use super::{anthropic, gemini, openai_chat, responses_api};

/// The default bound on one partial upstream event: as large as a whole answer, since image
/// models send an image whole, base64, in one event (Gemini's `inlineData` at 2K or 4K is well
/// over 4 MiB). Only a stream's largest event is buffered, at its own size.
pub const DEFAULT_MAX_EVENT_BYTES: usize = WHOLE_ANSWER_LIMIT;

/// Message of the error event for a stream that ended without its terminator.
const CUT_MESSAGE: &str = "The upstream stream ended before it was complete";

/// How to translate one stream.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// The model name the client asked for.
    pub model: String,
    /// The client asked for usage (OpenAI `stream_options.include_usage`).
    pub include_usage: bool,
    /// The gateway forced `include_usage` upstream although the client did not ask: strip that chunk.
    pub strip_usage_chunk: bool,
    /// Bound on a partial event; default 64 MiB.
    pub max_event_bytes: usize,
    /// Input-token estimate for an Anthropic client's `message_start` when the upstream reports usage only at
    /// the end (see `estimate_input_tokens`); 0 means unknown (1 is sent: never 0).
    pub input_tokens_estimate: u64,
    /// A Gemini client called `:streamGenerateContent` without `alt=sse`: answer with a JSON array.
    pub gemini_json_array: bool,
    /// Tool names the request was renamed from for the upstream (`convert_request_named`).
    pub tool_names: Option<Arc<ToolNames>>,
    /// The client asked for several choices (OpenAI `n > 1`): a passed-through stream is watched
    /// for every choice's finish, not only the first's.
    pub several_choices: bool,
    /// The request went to Anthropic in JSON mode (the gateway's `json_tool_call`): its input is
    /// the answer, without text Claude wrote before it.
    pub json_mode: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            model: String::new(),
            include_usage: false,
            strip_usage_chunk: false,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            input_tokens_estimate: 0,
            gemini_json_array: false,
            tool_names: None,
            several_choices: false,
            json_mode: false,
        }
    }
}

/// Most of a whole answer buffered to translate it or replay it as a stream.
pub const WHOLE_ANSWER_LIMIT: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("an upstream stream event exceeded {limit} bytes")]
    EventTooLarge { limit: usize },
}

/// Upstream framing, detected from the first bytes for Gemini (SSE, or JSON: an array or one whole
/// object).
enum Framer {
    Undetected,
    Sse(SseParser),
    Array(JsonArrayParser),
}

/// What happens to the client side.
enum Output {
    Translate(Box<dyn Encode>),
    /// Same format: bytes copied unchanged, event by event, so a cut stream never leaves the client half an
    /// event before the error event. `events` counts the events copied: a Responses stream's closing
    /// `response.failed` takes the next `sequence_number`.
    Copy {
        events: u64,
    },
    /// OpenAI Chat passthrough minus the usage chunk the gateway forced.
    StripUsage,
    /// Gemini passthrough, framing not known yet.
    GeminiPending,
    /// Gemini passthrough re-framed (SSE ↔ JSON array); event payloads unchanged.
    Reframe {
        array: bool,
        frames: usize,
    },
}

/// Keys looked for in every event of an OpenAI stream passed through, built once.
static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"usage\""));
static FINISH_REASON_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"finish_reason\""));
static ERROR_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"error\""));
static INDEX_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"index\""));
static TOOL_CALLS_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"tool_calls\""));
static CONTENT_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"content\""));
static REASONING_CONTENT_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"reasoning_content\""));
/// OpenRouter's, Groq's and Ollama's name for it.
static REASONING_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"reasoning\""));
static REFUSAL_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"refusal\""));
static IMAGES_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"images\""));

/// Whether `body`, the whole of a stream from a `from` upstream, reached its proper end (its
/// terminator, or every choice's finish), as the stream's own reading judges it. Read with the
/// default options (one choice): used for streams that said nothing past their envelope, where
/// the number of choices makes no difference that matters.
pub fn completes(from: WireFormat, body: &[u8]) -> bool {
    let mut conv = StreamConverter::new(from, from, StreamOptions::default());
    let mut out = Vec::new();
    if conv.push(body, &mut out).is_err() {
        return false;
    }
    conv.finish(&mut out);
    conv.completed()
}

/// Whether an upstream event carries the answer itself (text, reasoning, a tool call), not only its
/// envelope (a role, `message_start`, a ping): the first one marks the time to first token.
fn carries_content(from: WireFormat, event: Option<&str>, data: &str) -> bool {
    let has = |needle: &str| memchr::memmem::find(data.as_bytes(), needle.as_bytes()).is_some();
    match from {
        WireFormat::OpenAiChat => {
            let bytes = data.as_bytes();
            // Each value of `key` (what follows it and its colon) passes `check`.
            let any_value = |key: &Finder, check: fn(&[u8]) -> bool| {
                key.find_iter(bytes).any(|at| {
                    let after = bytes[at + key.needle().len()..].trim_ascii_start();
                    after.strip_prefix(b":").is_some_and(|v| check(v.trim_ascii_start()))
                })
            };
            // A string value that is not empty.
            let filled = |key: &Finder| {
                any_value(key, |v| {
                    v.first() == Some(&b'"') && v.get(1).is_some_and(|b| *b != b'"')
                })
            };
            // A list that is not empty: tool calls, or images the model made.
            let listed = |key: &Finder| {
                any_value(key, |v| {
                    v.strip_prefix(b"[")
                        .is_some_and(|v| v.trim_ascii_start().first() != Some(&b']'))
                })
            };
            filled(&CONTENT_KEY)
                || filled(&REASONING_CONTENT_KEY)
                || filled(&REASONING_KEY)
                || filled(&REFUSAL_KEY)
                || listed(&TOOL_CALLS_KEY)
                || listed(&IMAGES_KEY)
        }
        WireFormat::Anthropic => match event {
            Some(e) => e == "content_block_delta",
            None => has("\"content_block_delta\""),
        },
        // An image comes whole, in its finished item.
        WireFormat::OpenAiResponses => match event {
            Some(e) => e.ends_with(".delta") || (e == "response.output_item.done" && has("\"image_generation_call\"")),
            None => has(".delta\"") || has("\"image_generation_call\""),
        },
        WireFormat::Gemini => {
            has("\"text\"") || has("functionCall") || has("function_call") || has("inlineData") || has("inline_data")
        }
    }
}

/// Whether a passed-through event can carry what the observer needs: a finish, usage, an error or the
/// end. A cheap substring check; a false positive only costs a decode.
fn worth_decoding(from: WireFormat, event: Option<&str>, data: &str) -> bool {
    let has = |needle: &str| memchr::memmem::find(data.as_bytes(), needle.as_bytes()).is_some();
    match from {
        WireFormat::OpenAiChat => {
            let bytes = data.as_bytes();
            let value_opens = |key: &Finder, open: &[u8]| value_opens_with(bytes, key, open);
            data.starts_with("[DONE]")
                || value_opens(&FINISH_REASON_KEY, b"\"")
                || value_opens(&USAGE_KEY, b"{")
                || ERROR_KEY.find(bytes).is_some()
        }
        WireFormat::Anthropic => match event {
            Some(e) => matches!(e, "message_start" | "message_delta" | "message_stop" | "error"),
            None => has("\"message_") || has("\"error\""),
        },
        WireFormat::OpenAiResponses => match event {
            Some(e) => !e.ends_with(".delta"),
            None => !has(".delta\""),
        },
        // The decoder takes both spellings (proto-JSON's snake_case comes from some Gemini-compatible
        // servers), so the check must too, or a finish goes unseen and the stream reads as cut.
        WireFormat::Gemini => {
            has("finishReason")
                || has("finish_reason")
                || has("usageMetadata")
                || has("usage_metadata")
                // A blocked prompt ends the stream without a finish reason.
                || has("promptFeedback")
                || has("prompt_feedback")
                || has("\"error\"")
        }
    }
}

/// Where `key` appears in `bytes`, whether its value opens with one of `open`: a finish reason that
/// is a string, usage that is an object (not `null`), an index other than 0.
fn value_opens_with(bytes: &[u8], key: &Finder, open: &[u8]) -> bool {
    key.find_iter(bytes).any(|at| {
        let after = bytes[at + key.needle().len()..].trim_ascii_start();
        let value = after.strip_prefix(b":").unwrap_or(after).trim_ascii_start();
        value.first().is_some_and(|b| open.contains(b))
    })
}

/// An OpenAI chunk with an `index` other than 0: a choice of `n > 1`, which the decoder must see to
/// know when every choice has finished (or a second tool call: a decode for nothing). Asked only of
/// streams of several choices: it is a search of every event.
fn names_another_choice(data: &str) -> bool {
    value_opens_with(data.as_bytes(), &INDEX_KEY, b"123456789")
}

/// The encoder of a client's stream.
fn encoder(to: WireFormat, opts: &StreamOptions) -> Box<dyn Encode> {
    match to {
        WireFormat::OpenAiChat => Box::new(openai_chat::encode::ChatEncoder::new(&opts.model, opts.include_usage)),
        WireFormat::OpenAiResponses => Box::new(responses_api::encode::ResponsesEncoder::new(&opts.model)),
        WireFormat::Anthropic => Box::new(anthropic::encode::AnthropicEncoder::new(
            &opts.model,
            opts.input_tokens_estimate,
        )),
        WireFormat::Gemini => Box::new(gemini::encode::GeminiEncoder::new(&opts.model, opts.gemini_json_array)),
    }
}

/// Stateful stream translation; also the passthrough observer when `from == to` (usage, terminator).
pub struct StreamConverter {
    from: WireFormat,
    to: WireFormat,
    opts: StreamOptions,
    framer: Framer,
    decoder: Box<dyn Decode>,
    output: Output,
    events: Vec<StreamEvent>,
    /// Content bytes translated so far; encoders that must replay the whole response (Responses'
    /// `response.completed`, Gemini's whole function calls) hold up to this much.
    accumulated: usize,
    ended: bool,
    broken: bool,
    /// An upstream event with content has come (see `carries_content`).
    content_seen: bool,
    /// What the upstream's first error event said: whose the error is.
    error_kind: Option<ErrorKind>,
    /// How many bytes of a leading byte-order mark were read, while the stream's first bytes could
    /// still be one (it may arrive split across chunks); `None` once they cannot.
    bom_read: Option<usize>,
}

impl StreamConverter {
    pub fn new(from: WireFormat, to: WireFormat, opts: StreamOptions) -> Self {
        let max = opts.max_event_bytes.max(1024);
        let decoder: Box<dyn Decode> = match from {
            WireFormat::OpenAiChat => Box::new(openai_chat::decode::ChatDecoder::new()),
            WireFormat::OpenAiResponses => Box::new(responses_api::decode::ResponsesDecoder::new()),
            WireFormat::Anthropic => Box::new(anthropic::decode::AnthropicDecoder::json_mode(opts.json_mode)),
            WireFormat::Gemini => Box::new(gemini::decode::GeminiDecoder::new()),
        };
        let output = if from == to {
            match to {
                WireFormat::OpenAiChat if opts.strip_usage_chunk => Output::StripUsage,
                WireFormat::Gemini => Output::GeminiPending,
                _ => Output::Copy { events: 0 },
            }
        } else {
            Output::Translate(encoder(to, &opts))
        };
        let framer = match from {
            WireFormat::Gemini => Framer::Undetected,
            _ => Framer::Sse(SseParser::new(
                max,
                matches!(output, Output::StripUsage | Output::Copy { .. }),
            )),
        };
        let opts = StreamOptions {
            max_event_bytes: max,
            ..opts
        };
        Self {
            from,
            to,
            opts,
            framer,
            decoder,
            output,
            events: Vec::new(),
            accumulated: 0,
            ended: false,
            broken: false,
            content_seen: false,
            error_kind: None,
            bom_read: Some(0),
        }
    }

    /// Feeds upstream bytes and appends client bytes to `out`. Errs when an event exceeds `max_event_bytes`;
    /// the stream is then broken (call `abort`).
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        if let Some(read) = self.bom_read {
            let rest_of_bom = &sse_parser::BOM[read..];
            let same = chunk.iter().zip(rest_of_bom).take_while(|(a, b)| a == b).count();
            if same == rest_of_bom.len() {
                self.bom_read = None;
                chunk = &chunk[same..];
            } else if same == chunk.len() {
                self.bom_read = Some(read + same);
                return Ok(());
            } else {
                // Not a byte-order mark after all: what was held back is the stream's beginning.
                self.bom_read = None;
                if read > 0 {
                    self.push(&sse_parser::BOM[..read], out)?;
                }
            }
        }
        if self.broken {
            return Err(StreamError::EventTooLarge {
                limit: self.opts.max_event_bytes,
            });
        }
        if self.ended {
            return Ok(());
        }
        if matches!(self.framer, Framer::Undetected) {
            let Some(first) = chunk.iter().find(|b| !b.is_ascii_whitespace()) else {
                // Whitespace before the first event means nothing in either framing.
                return Ok(());
            };
            let max = self.opts.max_event_bytes;
            // A JSON array, or one whole object (a server that answered a stream request with
            // the whole answer): read alike, object by object; a whole answer may be as large as
            // any whole answer the gateway translates.
            let upstream_array = matches!(*first, b'[' | b'{');
            self.framer = if upstream_array {
                let max = if *first == b'{' {
                    WHOLE_ANSWER_LIMIT.max(max)
                } else {
                    max
                };
                Framer::Array(JsonArrayParser::new(max))
            } else {
                // Raw bytes are kept for the passthrough copy.
                Framer::Sse(SseParser::new(max, self.opts.gemini_json_array == upstream_array))
            };
            if matches!(self.output, Output::GeminiPending) {
                self.output = if upstream_array || self.opts.gemini_json_array {
                    Output::Reframe {
                        array: self.opts.gemini_json_array,
                        frames: 0,
                    }
                } else {
                    Output::Copy { events: 0 }
                };
            }
        }
        self.frame(Some(chunk), out)
    }

    /// Frames `chunk` into events and converts them; `None`: the upstream's body has ended, and
    /// an event left without its closing blank line is handed over if it is whole.
    fn frame(&mut self, chunk: Option<&[u8]>, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let limit = WHOLE_ANSWER_LIMIT.max(self.opts.max_event_bytes);
        let from = self.from;
        let Self {
            opts,
            framer,
            decoder,
            output,
            events,
            accumulated,
            ended,
            content_seen,
            error_kind,
            ..
        } = self;
        let tool_names = opts.tool_names.as_deref();
        let several_choices = opts.several_choices;
        let mut on_frame = |frame: Frame<'_>| {
            if *ended {
                return;
            }
            // A copied stream is only watched for its end and its usage: decoding every event into
            // JSON was most of the cost of passing a stream through.
            if !*content_seen && !frame.data.is_empty() && carries_content(from, frame.event, frame.data) {
                *content_seen = true;
            }
            let watching = matches!(output, Output::Copy { .. } | Output::StripUsage);
            let worth = !frame.data.is_empty()
                && (!watching
                    || worth_decoding(from, frame.event, frame.data)
                    || (several_choices && from == WireFormat::OpenAiChat && names_another_choice(frame.data)));
            if worth {
                decoder.decode(frame.event, frame.data, events);
                if error_kind.is_none() && decoder.errored() {
                    // An error event inside a 200 has no status of its own to go by.
                    *error_kind = Some(super::error_map::classify_error(from, 200, frame.data.as_bytes()).0);
                }
            }
            match output {
                Output::Translate(encoder) => {
                    if frame.event == Some("ping") {
                        encoder.keepalive(out);
                    }
                    for mut ev in events.drain(..) {
                        if let (Some(names), StreamEvent::ToolStart { name, .. }) = (tool_names, &mut ev) {
                            names.restore_name(name);
                        }
                        *accumulated += match &ev {
                            StreamEvent::Text(t) | StreamEvent::Refusal(t) | StreamEvent::Thinking(t) => t.len(),
                            StreamEvent::ToolArgs { delta, .. } => delta.len(),
                            StreamEvent::Image(Media::Base64 { data, .. }) => data.len(),
                            _ => 0,
                        };
                        if *accumulated > limit {
                            encoder.fail("The response is too large to translate", "response_too_large", out);
                            *ended = true;
                            return;
                        }
                        let is_error = matches!(ev, StreamEvent::Error { .. });
                        encoder.encode(ev, out);
                        if is_error {
                            *ended = true;
                            return;
                        }
                    }
                }
                Output::Copy { events: copied } => {
                    out.extend_from_slice(frame.raw);
                    *copied += u64::from(!frame.data.is_empty());
                    events.clear();
                }
                Output::StripUsage => {
                    // A usage chunk is always worth decoding: no second look at the others.
                    if !(worth && is_forced_usage_chunk(frame.data)) {
                        out.extend_from_slice(frame.raw);
                    }
                    events.clear();
                }
                Output::Reframe { array, frames } => {
                    if !frame.data.is_empty() {
                        write_gemini_frame(out, *array, frames, frame.data.as_bytes());
                    }
                    events.clear();
                }
                Output::GeminiPending => events.clear(),
            }
        };
        let result = match (framer, chunk) {
            (Framer::Sse(p), Some(chunk)) => p.push(chunk, &mut on_frame),
            (Framer::Sse(p), None) => {
                p.finish(&mut on_frame);
                Ok(())
            }
            (Framer::Array(p), Some(chunk)) => p.push(chunk, &mut on_frame),
            (Framer::Array(_), None) | (Framer::Undetected, _) => Ok(()),
        };
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// The upstream ended. A complete stream gets the client-format ending; one cut before its terminator gets
    /// an in-format error event, never a clean finish.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.ended && !self.broken {
            let _ = self.frame(None, out);
        }
        if self.decoder.completed() && !self.broken {
            self.close(None, out);
        } else {
            self.close(Some((CUT_MESSAGE, "stream_interrupted")), out);
        }
    }

    /// The upstream broke mid-stream: the in-format error event (§4.7). Idempotent with `finish`; a stream whose
    /// terminator was already seen ends cleanly.
    pub fn abort(&mut self, message: &str, out: &mut Vec<u8>) {
        if self.decoder.completed() && !self.broken {
            self.close(None, out);
        } else {
            self.close(Some((message, "stream_interrupted")), out);
        }
    }

    fn close(&mut self, error: Option<(&str, &str)>, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        // The upstream's own error event already told the client.
        let error = error.filter(|_| !self.decoder.errored());
        if matches!(self.output, Output::GeminiPending) {
            // Nothing came to tell the upstream's framing by: the error goes out in the client's.
            self.output = Output::Reframe {
                array: self.opts.gemini_json_array,
                frames: 0,
            };
        }
        match &mut self.output {
            Output::Translate(encoder) => match error {
                Some((message, code)) => encoder.fail(message, code, out),
                None => encoder.end(out),
            },
            Output::Copy { events } if self.to == WireFormat::OpenAiResponses => {
                if let Some((message, code)) = error {
                    // Responses events are numbered from 0: this one comes next.
                    let mut failed = super::error_map::responses_failed(message, code, Some(*events));
                    // Under the id the stream opened with (`response.created`), when it said one.
                    if let Some(id) = self.decoder.response_id() {
                        failed["response"]["id"] = id.into();
                    }
                    write_event(out, "response.failed", &failed);
                }
            }
            Output::Copy { .. } | Output::StripUsage | Output::GeminiPending => {
                // (GeminiPending was replaced above.)
                // Only whole events were copied: the error event starts on a boundary.
                if let Some((message, code)) = error {
                    out.extend_from_slice(&stream_error_event(self.to, message, code));
                }
            }
            Output::Reframe { array, frames } => {
                if let Some((message, code)) = error {
                    let v = super::error_map::gemini_stream_error(message, code);
                    let bytes = serde_json::to_vec(&v).unwrap_or_default();
                    write_gemini_frame(out, *array, frames, &bytes);
                }
                if *array {
                    out.extend_from_slice(if *frames == 0 { b"[]" } else { b"]" });
                }
            }
        }
    }

    /// The client has had nothing for a while (the upstream is silent): a keep-alive its format
    /// ignores (formats.md §4.8). Only whole events have been written, so it starts on a boundary.
    /// Gemini clients get none: their SDK reads every line of a stream as an event.
    pub fn keepalive(&mut self, out: &mut Vec<u8>) {
        // After the terminator (or the upstream's error event) nothing more belongs to the stream,
        // even if the upstream lingers.
        if self.ended || self.decoder.completed() || self.decoder.errored() {
            return;
        }
        match &mut self.output {
            Output::Translate(encoder) => encoder.keepalive(out),
            Output::Copy { .. } | Output::StripUsage if self.to != WireFormat::Gemini => {
                out.extend_from_slice(KEEPALIVE)
            }
            _ => {}
        }
    }

    /// Whether the upstream has sent any of the answer itself yet (text, reasoning, a tool call).
    pub fn content_seen(&self) -> bool {
        self.content_seen
    }

    /// Usage seen so far (complete once the stream completed).
    pub fn usage(&self) -> Option<Usage> {
        self.decoder.usage()
    }

    /// True once the upstream's own terminator/finish was seen.
    pub fn completed(&self) -> bool {
        self.decoder.completed()
    }

    /// True once the upstream sent an error event.
    pub fn errored(&self) -> bool {
        self.decoder.errored()
    }

    /// What the upstream's first error event said, once one came.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.error_kind
    }

    /// True once the upstream's last event was seen (see `Decode::terminated`).
    pub fn terminated(&self) -> bool {
        self.decoder.terminated()
    }

    /// True once the client's stream has had its ending: the upstream's last event, or an error
    /// event after which nothing more of the upstream's is passed on (an event too large).
    pub fn closed(&self) -> bool {
        self.ended
    }

    /// The upstream's id for a Responses answer (see `Decode::response_id`).
    pub fn response_id(&self) -> Option<&str> {
        self.decoder.response_id()
    }

    /// The formats this converter was built for.
    pub fn formats(&self) -> (WireFormat, WireFormat) {
        (self.from, self.to)
    }
}

/// The usage-only chunk OpenAI sends last when `include_usage` is on: `choices: []` with a `usage` object.
fn is_forced_usage_chunk(data: &str) -> bool {
    if USAGE_KEY.find(data.as_bytes()).is_none() {
        return false;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
        return false;
    };
    v.get("usage").is_some_and(serde_json::Value::is_object)
        && v.get("choices")
            .and_then(serde_json::Value::as_array)
            .is_none_or(Vec::is_empty)
}

fn write_gemini_frame(out: &mut Vec<u8>, array: bool, frames: &mut usize, data: &[u8]) {
    if array {
        out.extend_from_slice(if *frames == 0 { b"[" } else { b",\r\n" });
        out.extend_from_slice(data);
    } else {
        out.extend_from_slice(b"data: ");
        // A pretty-printed object (Google's JSON arrays are) would end the `data:` line at its
        // first line break; in JSON those are only whitespace between tokens.
        if memchr::memchr2(b'\n', b'\r', data).is_some() {
            out.extend(data.iter().filter(|b| !matches!(b, b'\n' | b'\r')));
        } else {
            out.extend_from_slice(data);
        }
        out.extend_from_slice(b"\r\n\r\n");
    }
    *frames += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_text_reasoning_or_a_tool_call_never_the_envelope() {
        use WireFormat::*;
        for (from, event, data, want) in [
            (
                OpenAiChat,
                None,
                r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
                false,
            ),
            (OpenAiChat, None, r#"{"choices":[{"delta":{"content": "hi"}}]}"#, true),
            (OpenAiChat, None, r#"{"choices":[{"delta":{"refusal":"No."}}]}"#, true),
            (
                OpenAiChat,
                None,
                r#"{"choices":[{"delta":{"role":"assistant","refusal":null}}]}"#,
                false,
            ),
            (
                OpenAiChat,
                None,
                r#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#,
                true,
            ),
            (
                OpenAiChat,
                None,
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#,
                true,
            ),
            (
                OpenAiChat,
                None,
                r#"{"choices":[{"delta":{"role":"assistant","tool_calls":null}}]}"#,
                false,
            ),
            (
                OpenAiChat,
                None,
                r#"{"choices":[{"delta":{"tool_calls":[]},"finish_reason":"tool_calls"}]}"#,
                false,
            ),
            (Anthropic, Some("message_start"), "{}", false),
            (Anthropic, Some("content_block_delta"), "{}", true),
            (OpenAiResponses, Some("response.created"), "{}", false),
            (OpenAiResponses, Some("response.output_text.delta"), "{}", true),
            (
                Gemini,
                None,
                r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}"#,
                true,
            ),
            (Gemini, None, r#"{"usageMetadata":{}}"#, false),
        ] {
            assert_eq!(carries_content(from, event, data), want, "{from:?} {event:?} {data}");
        }
    }

    #[test]
    fn converter_is_send() {
        fn send<T: Send>() {}
        send::<StreamConverter>();
    }

    #[test]
    fn whitespace_before_a_gemini_stream_is_ignored() {
        let mut c = StreamConverter::new(WireFormat::Gemini, WireFormat::OpenAiChat, StreamOptions::default());
        let mut out = Vec::new();
        c.push(b"\r\n  ", &mut out).unwrap();
        c.push(
            b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"}]},\"finishReason\":\"STOP\"}]}\r\n\r\n",
            &mut out,
        )
        .unwrap();
        c.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"content\":\"hi\""));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn a_whole_gemini_answer_to_a_stream_request_is_read_as_its_one_event() {
        let whole = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hi {there}"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2}}"#;
        // Translated, and passed to a Gemini client as SSE; split mid-object as a socket may.
        let mut c = StreamConverter::new(WireFormat::Gemini, WireFormat::OpenAiChat, StreamOptions::default());
        let mut out = Vec::new();
        let (a, b) = whole.split_at(40);
        c.push(a, &mut out).unwrap();
        c.push(b, &mut out).unwrap();
        assert!(c.completed());
        c.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"content\":\"hi {there}\""), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert_eq!(c.usage().map(|u| (u.input_tokens, u.output_tokens)), Some((3, 2)));

        let mut c = StreamConverter::new(WireFormat::Gemini, WireFormat::Gemini, StreamOptions::default());
        let mut out = Vec::new();
        c.push(whole, &mut out).unwrap();
        c.finish(&mut out);
        let mut expected = b"data: ".to_vec();
        expected.extend_from_slice(whole);
        expected.extend_from_slice(b"\r\n\r\n");
        assert_eq!(out, expected);
    }

    /// The client bytes of `chunks` from `from`, translated to `to`, and whether the converter saw
    /// the stream complete.
    fn convert(from: WireFormat, to: WireFormat, chunks: &[&[u8]]) -> (String, bool) {
        let mut c = StreamConverter::new(from, to, StreamOptions::default());
        let mut out = Vec::new();
        for chunk in chunks {
            c.push(chunk, &mut out).unwrap();
        }
        let completed = c.completed();
        c.finish(&mut out);
        (String::from_utf8(out).unwrap(), completed)
    }

    fn chat_chunk(delta: &str, finish: &str) -> Vec<u8> {
        format!("data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n").into_bytes()
    }

    #[test]
    fn a_last_event_without_its_blank_line_still_counts_when_whole() {
        let gemini_last: &[u8] =
            b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}]},\"finishReason\":\"STOP\"}]}";
        let first = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"}]}}]}\r\n\r\n";
        // Gemini's final event (its finishReason) with no line end at all, or one line end.
        for last in [gemini_last.to_vec(), [gemini_last, b"\r\n"].concat()] {
            let (text, _) = convert(WireFormat::Gemini, WireFormat::OpenAiChat, &[first, &last]);
            assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
            assert!(text.ends_with("data: [DONE]\n\n") && !text.contains("error"), "{text}");
            // Passed through: the client gets the event closed.
            let (text, _) = convert(WireFormat::Gemini, WireFormat::Gemini, &[first, &last]);
            assert!(
                text.ends_with("\"finishReason\":\"STOP\"}]}\n\n") || text.ends_with("}]}\r\n\n"),
                "{text:?}"
            );
        }
        // An OpenAI stream whose `[DONE]` has one line end: complete, in passthrough and translated.
        let chunk = chat_chunk(r#"{"content":"hi"}"#, r#""stop""#);
        let (text, _) = convert(
            WireFormat::OpenAiChat,
            WireFormat::OpenAiChat,
            &[&chunk, b"data: [DONE]\n"],
        );
        assert!(
            text.ends_with("data: [DONE]\n\n") && !text.contains("error"),
            "{text:?}"
        );
        let (text, _) = convert(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            &[&chunk, b"data: [DONE]"],
        );
        assert!(
            text.contains("message_stop") && !text.contains("event: error"),
            "{text}"
        );
        // A cut last event is no event: the stream ends in an error, and no half event reaches the client.
        let (text, _) = convert(WireFormat::Gemini, WireFormat::Gemini, &[first, &gemini_last[..60]]);
        assert!(!text.contains("\"text\":\"!\""), "{text}");
        assert!(text.contains("\"error\""), "{text}");
    }

    #[test]
    fn a_cut_responses_passthrough_fails_with_the_next_sequence_number() {
        let events: &[u8] = b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\"}}\n\n\
            event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"Hi\"}\n\n";
        let (text, completed) = convert(WireFormat::OpenAiResponses, WireFormat::OpenAiResponses, &[events]);
        assert!(!completed);
        let failed = text.rsplit("data: ").next().unwrap().trim();
        let v: serde_json::Value = serde_json::from_str(failed).unwrap();
        assert_eq!(v["type"], "response.failed", "{text}");
        assert_eq!(v["sequence_number"], 2, "{text}");
        assert_eq!(v["response"]["id"], "resp_1", "the stream's own response: {text}");
    }

    #[test]
    fn reasoning_summary_parts_are_separated() {
        let ev = |json: &str| format!("data: {json}\n\n").into_bytes();
        let chunks = [
            ev(r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1"}}"#),
            ev(r#"{"type":"response.reasoning_summary_part.added","summary_index":0}"#),
            ev(r#"{"type":"response.reasoning_summary_text.delta","summary_index":0,"delta":"First."}"#),
            ev(r#"{"type":"response.reasoning_summary_part.added","summary_index":1}"#),
            ev(r#"{"type":"response.reasoning_summary_text.delta","summary_index":1,"delta":"Next."}"#),
        ];
        let all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let (text, _) = convert(WireFormat::OpenAiResponses, WireFormat::OpenAiChat, &all);
        let thinking: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["reasoning_content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(thinking, "First.\n\nNext.", "{text}");
    }

    #[test]
    fn azure_s_placeholder_first_chunk_gives_no_empty_ids() {
        let azure = b"data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[]}\n\n";
        let hi = chat_chunk(r#"{"content":"Hi"}"#, r#""stop""#);
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &[azure, &hi]);
        assert!(text.contains(r#""id":"msg_"#) && !text.contains(r#""id":"""#), "{text}");
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::OpenAiResponses, &[azure, &hi]);
        assert!(
            !text.contains(r#""id":"""#) && !text.contains(r#""created_at":0"#),
            "{text}"
        );
    }

    #[test]
    fn an_empty_finish_reason_is_no_finish() {
        // Ollama and SGLang send `""` on every chunk until the real one.
        let chunks = [
            chat_chunk(r#"{"content":"Hel"}"#, r#""""#),
            chat_chunk(r#"{"content":"lo"}"#, r#""""#),
            chat_chunk("{}", r#""length""#),
            b"data: [DONE]\n\n".to_vec(),
        ];
        let all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let (text, completed) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &all);
        assert!(completed);
        assert_eq!(
            text.matches(r#""type":"content_block_start""#).count(),
            1,
            "one text block: {text}"
        );
        assert!(text.contains(r#""stop_reason":"max_tokens""#), "{text}");
        // Cut before its real finish, the stream is not complete, whatever the empty ones said.
        let (text, completed) = convert(WireFormat::OpenAiChat, WireFormat::OpenAiResponses, &all[..2]);
        assert!(!completed, "{text}");
        // Passed through, too.
        let (_, completed) = convert(WireFormat::OpenAiChat, WireFormat::OpenAiChat, &all[..2]);
        assert!(!completed);
    }

    #[test]
    fn an_error_that_is_only_a_message_keeps_it() {
        // TGI sends the message as the error itself.
        let (text, _) = convert(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            &[b"data: {\"error\":\"Input validation error: inputs too long\"}\n\n"],
        );
        assert!(text.contains("Input validation error: inputs too long"), "{text}");
    }

    #[test]
    fn a_streamed_refusal_is_the_answer_s_text() {
        let chunks = [
            chat_chunk(r#"{"role":"assistant","content":null,"refusal":""}"#, "null"),
            chat_chunk(r#"{"refusal":"I can't help with that."}"#, "null"),
            chat_chunk("{}", r#""stop""#),
        ];
        let all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &all);
        assert!(text.contains(r#""text":"I can't help with that.""#), "{text}");
    }

    #[test]
    fn a_tool_call_whose_id_changes_mid_call_stays_one_call() {
        // The first chunk names the call; later ones bring another id (or the first had none).
        for first_id in [r#""id":"A","#, ""] {
            let chunks = [
                chat_chunk(
                    &format!(
                        r#"{{"tool_calls":[{{"index":0,{first_id}"type":"function","function":{{"name":"f","arguments":""}}}}]}}"#
                    ),
                    "null",
                ),
                chat_chunk(
                    r#"{"tool_calls":[{"index":0,"id":"B","function":{"arguments":"{\"x\":"}}]}"#,
                    "null",
                ),
                chat_chunk(
                    r#"{"tool_calls":[{"index":0,"id":"C","function":{"arguments":"1}"}}]}"#,
                    "null",
                ),
                chat_chunk("{}", r#""tool_calls""#),
            ];
            let all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &all);
            assert_eq!(text.matches(r#""type":"tool_use""#).count(), 1, "{text}");
            assert!(
                text.contains(r#""partial_json":"{\"x\":""#) && text.contains(r#""partial_json":"1}""#),
                "{text}"
            );
        }
        // Parallel calls on new indexes, or a new call named on the same index, are still new calls.
        let chunks = [
            chat_chunk(
                r#"{"tool_calls":[{"index":0,"id":"A","function":{"name":"f","arguments":"{}"}}]}"#,
                "null",
            ),
            chat_chunk(
                r#"{"tool_calls":[{"index":0,"id":"B","function":{"name":"g","arguments":"{}"}}]}"#,
                "null",
            ),
            chat_chunk(
                r#"{"tool_calls":[{"index":1,"id":"C","function":{"name":"h","arguments":"{}"}}]}"#,
                "null",
            ),
            chat_chunk("{}", r#""tool_calls""#),
        ];
        let all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &all);
        assert_eq!(text.matches(r#""type":"tool_use""#).count(), 3, "{text}");
    }

    #[test]
    fn a_tool_call_named_after_its_first_chunk_is_one_call_with_its_name() {
        // DeepSeek or Kimi behind a router, MiniMax on vmlx: the id first, the name later (with the
        // same id, another one, or none); Command-A on vLLM: `"name": ""` first.
        for (first, second) in [
            (
                r#""id":"A","type":"function","function":{"arguments":""}"#,
                r#""id":"A","function":{"name":"get_weather","arguments":"{\"city\":"}"#,
            ),
            (
                r#""id":"A","type":"function","function":{"arguments":"{\"city\":"}"#,
                r#""id":"B","function":{"name":"get_weather"}"#,
            ),
            (
                r#""type":"function","function":{"name":"","arguments":""}"#,
                r#""function":{"name":"get_weather","arguments":"{\"city\":"}"#,
            ),
        ] {
            let chunks = [
                chat_chunk(&format!(r#"{{"tool_calls":[{{"index":0,{first}}}]}}"#), "null"),
                chat_chunk(&format!(r#"{{"tool_calls":[{{"index":0,{second}}}]}}"#), "null"),
                chat_chunk(
                    r#"{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}"#,
                    "null",
                ),
                chat_chunk("{}", r#""tool_calls""#),
            ];
            let all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &all);
            assert_eq!(text.matches(r#""type":"tool_use""#).count(), 1, "{text}");
            assert!(text.contains(r#""name":"get_weather""#), "{text}");
            let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Gemini, &all);
            assert_eq!(text.matches(r#""functionCall""#).count(), 1, "{text}");
            assert!(
                text.contains(r#""args":{"city":"Paris"}"#) && text.contains(r#""name":"get_weather""#),
                "{text}"
            );
        }
        // A call named after a later one started reaches the client in its place: numbered as
        // it starts, so Gemini's and Responses' encoders, which take calls in order, keep both.
        let chunks = [
            chat_chunk(
                r#"{"tool_calls":[{"index":0,"id":"A","function":{"arguments":""}},{"index":1,"id":"B","function":{"name":"g","arguments":"{\"y\":2}"}}]}"#,
                "null",
            ),
            chat_chunk(
                r#"{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"x\":1}"}}]}"#,
                "null",
            ),
            chat_chunk("{}", r#""tool_calls""#),
        ];
        let all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Gemini, &all);
        assert!(
            text.contains(r#""args":{"x":1}"#) && text.contains(r#""args":{"y":2}"#),
            "{text}"
        );
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::OpenAiResponses, &all);
        let done: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("data: ") && l.contains("function_call_arguments.done"))
            .collect();
        assert_eq!(done.len(), 2, "{text}");
        // A call no chunk names still reaches the client with its arguments, at the finish or at
        // `[DONE]` when no finish came.
        let unnamed = chat_chunk(
            r#"{"tool_calls":[{"index":0,"id":"A","function":{"arguments":"{\"x\":1}"}}]}"#,
            "null",
        );
        let (text, _) = convert(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            &[&unnamed, b"data: [DONE]\n\n"],
        );
        assert!(text.contains(r#""partial_json":"{\"x\":1}""#), "{text}");
        let finish = chat_chunk("{}", r#""tool_calls""#);
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &[&unnamed, &finish]);
        assert_eq!(text.matches(r#""type":"tool_use""#).count(), 1, "{text}");
        assert!(text.contains(r#""partial_json":"{\"x\":1}""#), "{text}");
    }

    #[test]
    fn responses_text_and_arguments_sent_only_whole_reach_a_translated_client_once() {
        let ev = |v: serde_json::Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap()).into_bytes();
        let created = ev(serde_json::json!({"type": "response.created", "response": {"id": "resp_1", "model": "m"}}));
        let completed = ev(serde_json::json!({"type": "response.completed",
            "response": {"id": "resp_1", "status": "completed", "usage": {"input_tokens": 1, "output_tokens": 2}}}));
        let call_added = ev(
            serde_json::json!({"type": "response.output_item.added", "output_index": 0,
            "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "add", "arguments": ""}}),
        );
        let args_delta = ev(serde_json::json!({"type": "response.function_call_arguments.delta",
            "item_id": "fc_1", "output_index": 0, "delta": "{\"a\":"}));
        let args_done = ev(serde_json::json!({"type": "response.function_call_arguments.done",
            "item_id": "fc_1", "output_index": 0, "arguments": "{\"a\":5}"}));
        let call_done = ev(
            serde_json::json!({"type": "response.output_item.done", "output_index": 0,
            "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "add", "arguments": "{\"a\":5}"}}),
        );
        // gpt-5.3-codex-spark: the arguments only in `.done`; or deltas first, then the whole.
        for with_delta in [false, true] {
            let mut all: Vec<&[u8]> = vec![&created, &call_added];
            if with_delta {
                all.push(&args_delta);
            }
            all.extend([args_done.as_slice(), &call_done, &completed]);
            let (text, _) = convert(WireFormat::OpenAiResponses, WireFormat::Anthropic, &all);
            let sent: String = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                .filter_map(|v| v["delta"]["partial_json"].as_str().map(str::to_string))
                .collect();
            assert_eq!(sent, r#"{"a":5}"#, "with deltas {with_delta}: {text}");
        }
        // xAI: a message's text only in its finished item; or deltas, then the part whole, then
        // the item: once either way.
        let msg_added = ev(
            serde_json::json!({"type": "response.output_item.added", "output_index": 0,
            "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
        );
        let text_delta = ev(serde_json::json!({"type": "response.output_text.delta",
            "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hel"}));
        let text_done = ev(serde_json::json!({"type": "response.output_text.done",
            "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "Hello"}));
        let msg_done = ev(
            serde_json::json!({"type": "response.output_item.done", "output_index": 0,
            "item": {"type": "message", "id": "msg_1", "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}}),
        );
        for all in [
            vec![created.as_slice(), &msg_added, &msg_done, &completed],
            vec![
                created.as_slice(),
                &msg_added,
                &text_delta,
                &text_done,
                &msg_done,
                &completed,
            ],
        ] {
            let (text, _) = convert(WireFormat::OpenAiResponses, WireFormat::OpenAiChat, &all);
            let said: String = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
                .collect();
            assert_eq!(said, "Hello", "{text}");
        }
    }

    #[test]
    fn an_image_sent_whole_in_one_event_passes_through_and_is_translated() {
        // Gemini image models: the image as base64 `inlineData`, one event of several MiB.
        let image = "A".repeat(12 << 20);
        let event = format!(
            "data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"inlineData\":{{\"mimeType\":\"image/png\",\"data\":\"{image}\"}}}}]}},\"finishReason\":\"STOP\",\"index\":0}}]}}\n\n"
        );
        let (text, completed) = convert(WireFormat::Gemini, WireFormat::Gemini, &[event.as_bytes()]);
        assert!(completed && text.len() > image.len(), "{}", &text[..200]);
        let (text, _) = convert(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            &[
                &chat_chunk(&format!(r#"{{"content":"{image}"}}"#), "null"),
                &chat_chunk("{}", r#""stop""#),
            ],
        );
        assert!(text.contains("message_stop") && text.len() > image.len());
    }

    #[test]
    fn a_streamed_image_reaches_every_client_and_comes_back() {
        use WireFormat::*;
        let data = |text: &str| -> Vec<serde_json::Value> {
            text.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect()
        };
        let picture = serde_json::json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}});
        let gemini = [
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Here:\"}]},\"index\":0}]}\r\n\r\n".to_string(),
            format!("data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{picture}]}},\"index\":0}}]}}\r\n\r\n"),
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"\"}]},\"finishReason\":\"STOP\",\"index\":0}]}\r\n\r\n".to_string(),
        ];
        let gemini: Vec<&[u8]> = gemini.iter().map(|c| c.as_bytes()).collect();
        for to in [OpenAiChat, OpenAiResponses, Anthropic] {
            let (text, completed) = convert(Gemini, to, &gemini);
            assert!(completed, "{to:?}: {text}");
            let events = data(&text);
            let shown = match to {
                OpenAiChat => events.iter().any(|v| {
                    v["choices"][0]["delta"]["images"][0]
                        == serde_json::json!({"index": 0, "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}})
                }),
                OpenAiResponses => events.iter().any(|v| {
                    v["type"] == "response.completed"
                        && v["response"]["output"][1]["type"] == "image_generation_call"
                        && v["response"]["output"][1]["result"] == "iVBORw0KGgo="
                }),
                _ => events.iter().any(|v| {
                    v["type"] == "content_block_start"
                        && v["content_block"]["type"] == "image"
                        && v["content_block"]["source"]["data"] == "iVBORw0KGgo="
                }),
            };
            assert!(shown, "{to:?}: {text}");
            // That client's stream, read as an upstream's, is the same picture for a Gemini client.
            let (back, _) = convert(to, Gemini, &[text.as_bytes()]);
            let parts: Vec<serde_json::Value> = data(&back)
                .iter()
                .flat_map(|v| {
                    v["candidates"][0]["content"]["parts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .collect();
            assert!(parts.contains(&picture), "{to:?}: {back}");
        }
    }

    #[test]
    fn a_chat_client_gets_a_stream_s_images_in_one_delta() {
        let part = |data: &str| {
            format!("data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"inlineData\":{{\"mimeType\":\"image/png\",\"data\":\"{data}\"}}}}]}},\"index\":0}}]}}\r\n\r\n")
        };
        let end = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"\"}]},\"finishReason\":\"STOP\",\"index\":0}]}\r\n\r\n";
        let (one, two) = (part("b25l"), part("dHdv"));
        let (text, _) = convert(
            WireFormat::Gemini,
            WireFormat::OpenAiChat,
            &[one.as_bytes(), two.as_bytes(), end.as_bytes()],
        );
        // The JS SDK keeps a delta's `images` whole, the last one only: all of them, together.
        let lists: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter_map(|v| v["choices"][0]["delta"].get("images").cloned())
            .collect();
        assert_eq!(lists.len(), 1, "{text}");
        let urls: Vec<&str> = lists[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["image_url"]["url"].as_str().unwrap())
            .collect();
        assert_eq!(urls, ["data:image/png;base64,b25l", "data:image/png;base64,dHdv"]);
        assert_eq!(lists[0][1]["index"], 1);
    }

    #[test]
    fn whitespace_alone_opens_no_text_block_for_an_anthropic_client() {
        let call = chat_chunk(
            r#"{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"a","arguments":"{}"}}]}"#,
            "null",
        );
        let (space, end) = (
            chat_chunk(r#"{"content":"\n\n"}"#, "null"),
            chat_chunk("{}", r#""tool_calls""#),
        );
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &[&space, &call, &end]);
        assert!(!text.contains(r#""type":"text""#), "{text}");
        assert_eq!(text.matches("event: content_block_start").count(), 1, "{text}");
        // Whitespace that text follows is kept, in the text's block.
        let hello = chat_chunk(r#"{"content":"Hello"}"#, "null");
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &[&space, &hello, &end]);
        assert!(text.contains(r#""text":"\n\nHello""#), "{text}");
    }

    #[test]
    fn a_refusal_stays_a_refusal_between_openai_formats() {
        let ev = |v: serde_json::Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap()).into_bytes();
        let data = |text: &str| -> Vec<serde_json::Value> {
            text.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect()
        };
        // Chat upstream → Responses client: a refusal part, its deltas and its `.done`.
        let chunks = [
            chat_chunk(r#"{"role":"assistant","content":"","refusal":null}"#, "null"),
            chat_chunk(r#"{"refusal":"I can't "}"#, "null"),
            chat_chunk(r#"{"refusal":"help."}"#, "null"),
            chat_chunk("{}", r#""stop""#),
        ];
        let all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::OpenAiResponses, &all);
        let events = data(&text);
        let deltas: String = events
            .iter()
            .filter(|v| v["type"] == "response.refusal.delta")
            .filter_map(|v| v["delta"].as_str())
            .collect();
        assert_eq!(deltas, "I can't help.", "{text}");
        assert!(
            events
                .iter()
                .any(|v| v["type"] == "response.refusal.done" && v["refusal"] == "I can't help."),
            "{text}"
        );
        assert!(
            !events.iter().any(|v| v["type"] == "response.output_text.delta"),
            "{text}"
        );
        let done = events.iter().find(|v| v["type"] == "response.completed").unwrap();
        assert_eq!(
            done["response"]["output"][0]["content"][0],
            serde_json::json!({"type": "refusal", "refusal": "I can't help."})
        );
        // Responses upstream → Chat client: `delta.refusal`, never `content`.
        let upstream = [
            ev(serde_json::json!({"type": "response.created", "response": {"id": "resp_1", "model": "m"}})),
            ev(
                serde_json::json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
            ),
            ev(
                serde_json::json!({"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0,
                "content_index": 0, "delta": "No."}),
            ),
            ev(
                serde_json::json!({"type": "response.refusal.done", "item_id": "msg_1", "output_index": 0,
                "content_index": 0, "refusal": "No."}),
            ),
            ev(serde_json::json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed"}})),
        ];
        let all: Vec<&[u8]> = upstream.iter().map(Vec::as_slice).collect();
        let (text, _) = convert(WireFormat::OpenAiResponses, WireFormat::OpenAiChat, &all);
        let events = data(&text);
        let refusal: String = events
            .iter()
            .filter_map(|v| v["choices"][0]["delta"]["refusal"].as_str())
            .collect();
        assert_eq!(refusal, "No.", "{text}");
        assert!(
            !events.iter().any(|v| v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())),
            "{text}"
        );
        // Anthropic and Gemini clients read it as the answer's text.
        let (text, _) = convert(WireFormat::OpenAiResponses, WireFormat::Gemini, &all);
        assert!(text.contains(r#""text":"No.""#), "{text}");
        let (text, _) = convert(WireFormat::OpenAiResponses, WireFormat::Anthropic, &all);
        assert!(text.contains(r#""text":"No.""#), "{text}");
    }

    #[test]
    fn a_json_mode_stream_is_the_tool_s_input_alone() {
        let ev = |v: serde_json::Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap()).into_bytes();
        let start = ev(
            serde_json::json!({"type": "message_start", "message": {"id": "msg_1", "model": "c",
            "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        );
        let text = [
            ev(
                serde_json::json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ev(
                serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Here it is:"}}),
            ),
            ev(serde_json::json!({"type": "content_block_stop", "index": 0})),
        ];
        let json_tool = [
            ev(
                serde_json::json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use",
                "id": "toolu_1", "name": crate::formats::anthropic::JSON_TOOL, "input": {}}}),
            ),
            ev(
                serde_json::json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
            ),
            ev(serde_json::json!({"type": "content_block_stop", "index": 1})),
        ];
        let end = |reason: &str| {
            [
                ev(
                    serde_json::json!({"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": 9}}),
                ),
                ev(serde_json::json!({"type": "message_stop"})),
            ]
        };
        let said = |chunks: Vec<&[u8]>| -> String {
            let opts = StreamOptions {
                json_mode: true,
                ..StreamOptions::default()
            };
            let mut c = StreamConverter::new(WireFormat::Anthropic, WireFormat::OpenAiChat, opts);
            let mut out = Vec::new();
            for chunk in chunks {
                c.push(chunk, &mut out).unwrap();
            }
            c.finish(&mut out);
            String::from_utf8(out)
                .unwrap()
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
                .collect()
        };
        // Text before the JSON tool is left out: the answer stays JSON.
        let tool_end = end("tool_use");
        let mut all: Vec<&[u8]> = vec![&start];
        all.extend(text.iter().chain(&json_tool).chain(&tool_end).map(Vec::as_slice));
        assert_eq!(said(all), r#"{"a":1}"#);
        // A JSON-mode request Claude answered in words alone (its own tools left the choice
        // `auto`): the words go out.
        let text_end = end("end_turn");
        let mut all: Vec<&[u8]> = vec![&start];
        all.extend(text.iter().chain(&text_end).map(Vec::as_slice));
        assert_eq!(said(all), "Here it is:");
    }

    #[test]
    fn whole_tool_calls_without_ids_on_one_index_stay_apart() {
        // Servers that send each call whole at index 0 and no id: another name, or the same name
        // once the arguments are whole, is another call; the same name repeated mid-arguments is not.
        let call = |name: &str, args: &str| {
            chat_chunk(
                &format!(r#"{{"tool_calls":[{{"index":0,"function":{{"name":"{name}","arguments":"{args}"}}}}]}}"#),
                "null",
            )
        };
        let chunks = [
            call("f", r#"{\"x\":1}"#),
            call("f", r#"{\"x\":2}"#),
            call("g", r#"{\"y\":"#),
            call("g", "3}"),
            chat_chunk("{}", r#""tool_calls""#),
        ];
        let all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &all);
        assert_eq!(text.matches(r#""type":"tool_use""#).count(), 3, "{text}");
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Gemini, &all);
        for args in [r#""args":{"x":1}"#, r#""args":{"x":2}"#, r#""args":{"y":3}"#] {
            assert!(text.contains(args), "{args} in {text}");
        }
    }

    /// A server that repeats the function's name on a trailing chunk with no arguments, after the
    /// call's arguments were whole, makes no second call (an agent would run the tool twice).
    #[test]
    fn a_name_repeated_without_arguments_after_a_whole_call_is_no_second_call() {
        // One tool-call chunk at index 0: `call` is what the call says (id, function).
        let piece = |call: &str| chat_chunk(&format!(r#"{{"tool_calls":[{{"index":0,{call}}}]}}"#), "null");
        let chunks = [
            piece(r#""id":"call_1","function":{"name":"f","arguments":""}"#),
            piece(r#""function":{"name":"f","arguments":"{\"a\":1}"}"#),
            piece(r#""function":{"name":"f","arguments":""}"#),
            chat_chunk("{}", r#""tool_calls""#),
        ];
        let all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &all);
        assert_eq!(text.matches(r#""type":"tool_use""#).count(), 1, "{text}");
        assert!(text.contains(r#"{\"a\":1}"#), "{text}");

        // The same name again followed by arguments (each call opened by its name, its arguments
        // after it, all at index 0 without ids) is a second call of that function.
        let chunks = [
            piece(r#""function":{"name":"f","arguments":""}"#),
            piece(r#""function":{"arguments":"{\"x\":1}"}"#),
            piece(r#""function":{"name":"f","arguments":""}"#),
            piece(r#""function":{"arguments":"{\"x\":2}"}"#),
            chat_chunk("{}", r#""tool_calls""#),
        ];
        let all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let (text, _) = convert(WireFormat::OpenAiChat, WireFormat::Gemini, &all);
        for args in [r#""args":{"x":1}"#, r#""args":{"x":2}"#] {
            assert!(text.contains(args), "{args} in {text}");
        }
        assert_eq!(text.matches(r#""name":"f""#).count(), 2, "{text}");
    }

    #[test]
    fn a_gemini_stream_that_ends_before_its_first_byte_fails_in_the_clients_framing() {
        for array in [true, false] {
            let opts = StreamOptions {
                gemini_json_array: array,
                ..StreamOptions::default()
            };
            let mut c = StreamConverter::new(WireFormat::Gemini, WireFormat::Gemini, opts);
            let mut out = Vec::new();
            c.finish(&mut out);
            let text = String::from_utf8(out).unwrap();
            let body = if array {
                text.as_str()
            } else {
                text.strip_prefix("data: ")
                    .and_then(|t| t.strip_suffix("\r\n\r\n"))
                    .unwrap_or("")
            };
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let error = if array { &v[0]["error"] } else { &v["error"] };
            assert!(error["message"].is_string(), "array={array}: {text}");
        }
    }

    #[test]
    fn a_snake_case_gemini_stream_passes_through_whole() {
        let first = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\r\n\r\n";
        let last = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}]},\"finish_reason\":\"STOP\"}],\"usage_metadata\":{\"prompt_token_count\":4,\"candidates_token_count\":2}}\r\n\r\n";
        let mut c = StreamConverter::new(WireFormat::Gemini, WireFormat::Gemini, StreamOptions::default());
        let mut out = Vec::new();
        c.push(first, &mut out).unwrap();
        c.push(last, &mut out).unwrap();
        assert!(c.completed());
        c.finish(&mut out);
        assert_eq!(
            out,
            [first.as_slice(), last].concat(),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(c.usage().map(|u| (u.input_tokens, u.output_tokens)), Some((4, 2)));
    }

    /// Google's JSON arrays are pretty-printed: each object becomes one `data:` line for an SSE
    /// client, its strings untouched.
    #[test]
    fn a_pretty_printed_gemini_array_reaches_an_sse_client_one_line_per_event() {
        let array = b"[{\n  \"candidates\": [\n    {\n      \"content\": {\"parts\": [{\"text\": \"a\\nb\"}]}\n    }\n  ]\n}\n,\r\n{\n  \"candidates\": [{\"content\": {\"parts\": [{\"text\": \"!\"}]}, \"finishReason\": \"STOP\"}]\n}\n]";
        let (text, completed) = convert(WireFormat::Gemini, WireFormat::Gemini, &[array]);
        assert!(completed, "{text}");
        let events: Vec<&str> = text.split("\r\n\r\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 2, "{text:?}");
        for e in &events {
            let data = e.strip_prefix("data: ").unwrap_or_else(|| panic!("{e:?}"));
            assert!(!data.contains('\n') && !data.contains('\r'), "{e:?}");
            serde_json::from_str::<serde_json::Value>(data).unwrap();
        }
        assert!(events[0].contains(r#""text": "a\nb""#), "escapes kept: {text}");
    }

    /// Mistral's reasoning models stream `delta.content` as parts: thinking, then text.
    #[test]
    fn content_streamed_as_parts_reaches_a_translated_client() {
        let thinking = chat_chunk(
            r#"{"content":[{"type":"thinking","thinking":[{"type":"text","text":"Hmm."}]}]}"#,
            "null",
        );
        let text = chat_chunk(r#"{"content":[{"type":"text","text":"Hi"}]}"#, r#""stop""#);
        let (out, completed) = convert(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            &[&thinking, &text, b"data: [DONE]\n\n"],
        );
        assert!(completed, "{out}");
        assert!(out.contains(r#""thinking":"Hmm.""#), "{out}");
        assert!(out.contains(r#""text":"Hi""#), "{out}");
    }

    /// A blocked prompt, in either spelling, is a content-filter finish, not a cut stream.
    #[test]
    fn a_blocked_prompt_in_snake_case_finishes_the_stream() {
        let blocked = b"data: {\"prompt_feedback\":{\"block_reason\":\"SAFETY\"}}\r\n\r\n";
        let (text, completed) = convert(WireFormat::Gemini, WireFormat::OpenAiChat, &[blocked]);
        assert!(
            completed && text.contains(r#""finish_reason":"content_filter""#),
            "{text}"
        );
        // Passed through to a Gemini client, without usage: still a whole stream, no error.
        for blocked in [
            blocked.as_slice(),
            b"data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"}}\r\n\r\n",
        ] {
            let (text, completed) = convert(WireFormat::Gemini, WireFormat::Gemini, &[blocked]);
            assert!(completed && !text.contains("\"error\""), "{text}");
        }
    }

    #[test]
    fn a_byte_order_mark_before_the_stream_is_dropped() {
        let gemini = b"\xEF\xBB\xBFdata: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]},\"finishReason\":\"STOP\"}]}\r\n\r\n";
        let (text, completed) = convert(WireFormat::Gemini, WireFormat::OpenAiChat, &[gemini]);
        assert!(completed && text.contains(r#""content":"Hi""#), "{text}");
        let (text, completed) = convert(WireFormat::Gemini, WireFormat::Gemini, &[gemini]);
        assert!(completed && text.starts_with("data: {"), "{text}");
        let array =
            b"\xEF\xBB\xBF[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]},\"finishReason\":\"STOP\"}]}]";
        let (text, completed) = convert(WireFormat::Gemini, WireFormat::Anthropic, &[array]);
        assert!(completed && text.contains(r#""text":"Hi""#), "{text}");
        let chat = [
            b"\xEF\xBB\xBF".as_slice(),
            &chat_chunk(r#"{"content":"Hi"}"#, r#""stop""#),
        ]
        .concat();
        let (text, completed) = convert(WireFormat::OpenAiChat, WireFormat::Anthropic, &[&chat]);
        assert!(completed && text.contains(r#""text":"Hi""#), "{text}");
        // A mark split across chunks, even one byte per chunk.
        let (text, completed) = convert(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            &[&chat[..1], &chat[1..2], &chat[2..5], &chat[5..]],
        );
        assert!(completed && text.contains(r#""text":"Hi""#), "{text}");
        // An error as the first event is still seen, for failover.
        let error = b"\xEF\xBB\xBFdata: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        assert!(matches!(
            first_event(WireFormat::OpenAiChat, error, false),
            FirstEvent::Error(_)
        ));
    }

    #[test]
    fn an_anthropic_json_mode_input_sent_whole_is_the_answer() {
        let events = [
            br#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","model":"c","usage":{"input_tokens":3,"output_tokens":0}}}

"#
            .as_slice(),
            br#"event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"json_tool_call","input":{"a":1}}}

"#,
            br#"event: content_block_stop
data: {"type":"content_block_stop","index":0}

"#,
            br#"event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":5}}

"#,
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        let (text, completed) = convert(WireFormat::Anthropic, WireFormat::OpenAiChat, &events);
        assert!(completed);
        assert!(text.contains(r#""content":"{\"a\":1}""#), "{text}");
    }

    #[test]
    fn passthrough_decodes_only_events_that_can_end_or_count() {
        let chat = |d: &str| worth_decoding(WireFormat::OpenAiChat, None, d);
        assert!(!chat(
            r#"{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#
        ));
        assert!(!chat(
            r#"{"choices":[{"delta":{"content":"say \"finish_reason\": \"x\""}}],"usage":null}"#
        ));
        assert!(chat(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#));
        assert!(chat(r#"{"choices":[{"delta":{},"finish_reason" :  "length"}]}"#));
        assert!(chat(r#"{"choices":[],"usage": {"prompt_tokens":1}}"#));
        assert!(chat(r#"{"error":{"message":"overloaded"}}"#));
        assert!(chat("[DONE]"));
        let gemini = |d: &str| worth_decoding(WireFormat::Gemini, None, d);
        assert!(!gemini(r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}"#));
        assert!(gemini(r#"{"candidates":[{"finishReason":"STOP"}]}"#));
        assert!(gemini(r#"{"usageMetadata":{"promptTokenCount":1}}"#));
        assert!(gemini(r#"{"candidates":[{"finish_reason":"STOP"}]}"#));
        assert!(gemini(r#"{"usage_metadata":{"prompt_token_count":1}}"#));
        assert!(worth_decoding(WireFormat::Anthropic, Some("message_delta"), "{}"));
        assert!(!worth_decoding(
            WireFormat::Anthropic,
            Some("content_block_delta"),
            "{}"
        ));
        assert!(worth_decoding(
            WireFormat::Anthropic,
            None,
            r#"{"type":"message_stop"}"#
        ));
        assert!(!worth_decoding(
            WireFormat::OpenAiResponses,
            Some("response.output_text.delta"),
            "{}"
        ));
        assert!(worth_decoding(
            WireFormat::OpenAiResponses,
            None,
            r#"{"type":"response.completed"}"#
        ));
    }
}
