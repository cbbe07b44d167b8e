//! Per-request state. It survives Pingora's retry loop, so it carries the plan, what was tried and
//! the attempt in progress; per-attempt state is reset when the next attempt starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::error::GatewayError;
use super::intake::Operation;
use crate::app::Snapshot;
use crate::auth::{AcceptedKey, ClientIdentity};
use crate::formats::request::Inspected;
use crate::formats::{ErrorKind, FetchedMedia, StreamConverter, StreamOptions, ToolNames, Usage, WireFormat};
use crate::routing::{Candidate, RoutePlan};
use crate::upstream::{KeyChoice, Provider};

/// What one upstream attempt came to, for the client's error summary and the logs. No secrets.
/// Serialised as `{provider, model, status?, error?}`.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub provider: Arc<str>,
    pub model: Arc<str>,
    pub end: AttemptEnd,
    /// What happened, in words (a transport error's type, a status's judgement, why it was skipped).
    pub note: Option<String>,
}

impl AttemptRecord {
    /// The upstream's status, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self.end {
            AttemptEnd::Answered(status) => Some(status),
            _ => None,
        }
    }

    /// A rate limit stopped it: the upstream's 429, or the gateway's budget for its keys.
    pub fn rate_limited(&self) -> bool {
        matches!(self.end, AttemptEnd::Answered(429) | AttemptEnd::KeysAtLimit(_))
    }
}

impl serde::Serialize for AttemptRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("provider", &*self.provider)?;
        map.serialize_entry("model", &*self.model)?;
        if let Some(status) = self.status() {
            map.serialize_entry("status", &status)?;
        }
        if let Some(note) = &self.note {
            map.serialize_entry("error", note)?;
        }
        map.end()
    }
}

/// A request's id: the client's `x-request-id` when it is sane, else a fresh one. Kept as the
/// header value it is sent as (upstream, and back to the client), made once.
#[derive(Debug, Clone)]
pub struct RequestId(http::HeaderValue);

impl RequestId {
    /// A fresh id: 128 random bits in hex.
    pub fn fresh() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bits = rand::random::<u128>();
        let mut text = [0u8; 32];
        for digit in text.iter_mut().rev() {
            *digit = HEX[(bits & 0xf) as usize];
            bits >>= 4;
        }
        Self(http::HeaderValue::from_bytes(&text).unwrap_or_else(|_| http::HeaderValue::from_static("-")))
    }

    /// The client's id, when it is one: visible ASCII, 1 to 128 bytes.
    pub fn given(value: &http::HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let sane = !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic);
        sane.then(|| Self(value.clone()))
    }

    pub fn header(&self) -> http::HeaderValue {
        self.0.clone()
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self(http::HeaderValue::from_static(""))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt is asked again at once, as the same attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redo {
    /// It reached no upstream (another address, a stale pooled connection): it keeps the key
    /// whose budget it spent.
    Unsent,
    /// The upstream answered it (it refused what the gateway added): the second call spends a
    /// key's budget again.
    Answered,
}

/// How an attempt ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The upstream answered with this status (or the one its body stood for).
    Answered(u16),
    /// Not sent: no usable API key for the candidate.
    NoKey,
    /// Not sent: every key of the candidate in rotation is at its QPS limit; the first has budget
    /// again after this long.
    KeysAtLimit(Duration),
    /// Not sent: the candidate's host did not resolve.
    NotSent,
    /// Not sent: the candidate cannot take this request at all (no faithful translation, media
    /// not fetched); it says nothing of the candidate's health or capacity.
    CannotTake,
    /// Opening the connection failed.
    Connect,
    /// Connecting, reading or writing timed out.
    Timeout,
    /// The connection failed otherwise (reset, closed, broken mid-answer).
    Transport,
    /// The client left while the attempt was in flight.
    ClientClosed,
}

impl AttemptEnd {
    /// A transport error's kind, from Pingora's error type.
    pub fn of_transport(etype: &pingora::ErrorType) -> Self {
        use pingora::ErrorType::*;
        match etype {
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => AttemptEnd::Timeout,
            ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure | TLSHandshakeFailure => {
                AttemptEnd::Connect
            }
            _ => AttemptEnd::Transport,
        }
    }
}

/// The attempt in flight.
pub struct Attempt {
    pub candidate: usize,
    /// The address connected to (a host may have several).
    pub addr: std::net::SocketAddr,
    pub key: Option<KeyChoice>,
    pub started: Instant,
    /// The format the upstream is spoken to in.
    pub format: WireFormat,
    /// The body sent upstream: the client's with `model` rewritten, or translated.
    pub body: Bytes,
    /// Path and query of the upstream call.
    pub path: String,
    /// The gateway added `stream_options.include_usage`: strip the usage chunk for the client.
    pub injected_usage: bool,
    /// Tool names renamed for this upstream, to give back in its answer.
    pub tool_names: Option<Arc<ToolNames>>,
    /// The answer comes through Anthropic's JSON-mode tool.
    pub json_mode: bool,
    /// Its end is in `RequestCtx::attempts` already.
    pub recorded: bool,
}

/// How the response body travels to the client.
pub enum ResponseMode {
    /// Untouched (same format, or an error in the client's own format).
    Pass,
    /// Untouched, with a bounded copy kept to read usage at the end.
    Observe(BodyBuf),
    /// A whole JSON answer, buffered and translated at the end.
    Translate(BodyBuf),
    /// An upstream error body, buffered and re-rendered in the client's format, or, `as_sent`,
    /// passed on in the upstream's (the client's own); either way without the provider's keys.
    Error { status: u16, body: BodyBuf, as_sent: bool },
    /// An SSE stream through a stateful converter (also same-format: it watches for the end and usage).
    Stream(Box<StreamConverter>),
    /// A whole answer to a client that asked for a stream (the upstream ignored `stream: true`),
    /// buffered and replayed as the client's stream at the end.
    Restream(Box<StreamOptions>, BodyBuf),
}

/// A bounded copy of a response body. An answer that arrives in one piece (the usual case for a
/// small JSON answer) is kept by reference, not copied.
#[derive(Debug, Default)]
pub struct BodyBuf {
    first: Option<Bytes>,
    rest: BytesMut,
    overflowed: bool,
    /// Past the limit, the last [`TAIL`] bytes or more (at most twice that): where an answer's
    /// usage is.
    tail: Vec<u8>,
}

/// How much of the end of an answer past the limit is kept.
const TAIL: usize = 64 * 1024;

impl BodyBuf {
    /// Keeps `chunk` while the whole stays within `limit`; once it would not, the body is marked
    /// incomplete, and only its tail is kept from then on.
    pub fn keep(&mut self, chunk: &Option<Bytes>, limit: usize) {
        let Some(chunk) = chunk.as_ref().filter(|c| !c.is_empty()) else {
            return;
        };
        if self.overflowed || self.len() + chunk.len() > limit {
            if !self.overflowed {
                // What was kept is of no more use whole: its end starts the tail (the usage may
                // begin there), and the rest is let go.
                self.overflowed = true;
                let kept = self.as_slice();
                self.tail = kept[kept.len().saturating_sub(TAIL)..].to_vec();
                self.first = None;
                self.rest = BytesMut::new();
            }
            self.tail.extend_from_slice(chunk);
            if self.tail.len() > 2 * TAIL {
                self.tail.drain(..self.tail.len() - TAIL);
            }
            return;
        }
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(chunk.clone()),
            first => {
                if let Some(first) = first {
                    self.rest.reserve(first.len() + chunk.len());
                    self.rest.extend_from_slice(&first);
                }
                self.rest.extend_from_slice(chunk);
            }
        }
    }

    /// Whether every chunk was kept.
    pub fn complete(&self) -> bool {
        !self.overflowed
    }

    fn len(&self) -> usize {
        self.first.as_ref().map_or(self.rest.len(), Bytes::len)
    }

    pub fn as_slice(&self) -> &[u8] {
        self.first.as_deref().unwrap_or(&self.rest)
    }

    /// What was kept, taken out as it is (no copy).
    pub fn take(&mut self) -> Bytes {
        match self.first.take() {
            Some(first) => first,
            None => std::mem::take(&mut self.rest).freeze(),
        }
    }

    /// The end of a body that went past the limit (see [`Self::keep`]); empty for one that did not.
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }
}

/// What the failover logic decided about the attempt that just failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try another candidate (or another key of the same one).
    Next,
    /// Once, after a short backoff, on the same upstream.
    Same,
    /// Give up: return what we have.
    No,
}

/// What the body of an answer said before its header went on: an error kind its status did not
/// tell (Gemini's bad key is a 400, a stream can open with an error event under a 200, some servers
/// answer an error object under a 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldVerdict {
    pub kind: ErrorKind,
    pub source: HeldSource,
    /// A retry delay the body carried (Gemini `RetryInfo`), seconds.
    pub retry_after: Option<u64>,
    /// The error body names `stream_options` (an upstream that may refuse the field the gateway
    /// adds), and whether it names `include_usage`, the member the gateway adds.
    pub names_stream_options: bool,
    pub names_include_usage: bool,
    /// The error body says the response the request continues is not this upstream's (OpenAI's
    /// `previous_response_not_found`).
    pub names_previous_response: bool,
    /// The error body says a thinking block's signature is invalid (Claude, given thinking another
    /// Anthropic-style vendor signed).
    pub names_thinking_signature: bool,
}

/// Where a held answer's error was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldSource {
    /// The body of an error status.
    ErrorBody,
    /// The first event of a 2xx stream.
    FirstEvent,
    /// A whole 2xx answer that is an error object.
    Answer,
    /// A whole 2xx answer that answers nothing (what it is): judged as `response::no_answer`.
    NoAnswer(&'static str),
}

impl HeldVerdict {
    /// The status the failover logic judges the answer by.
    pub fn status(&self, actual: u16) -> u16 {
        use ErrorKind::*;
        match (self.source, self.kind) {
            // An error object under a 2xx (a whole answer, or a stream's first event) has no status
            // of its own worth keeping: a stream that opens with the client's mistake is no
            // success (no latency sample, no probe verdict), and one whose model is not there
            // passes to another upstream.
            (HeldSource::Answer | HeldSource::FirstEvent, kind)
            | (_, kind @ (Authentication | Billing | PermissionDenied | RateLimited)) => kind.status(),
            _ => actual,
        }
    }
}

pub struct RequestCtx {
    pub request_id: RequestId,
    pub started: Instant,
    /// The format the client is answered in (`None` before the endpoint is known).
    pub client_format: Option<WireFormat>,
    /// The format of the request body (differs for Claude- or Gemini-style bodies on `/v1/chat/completions`).
    pub request_format: WireFormat,
    pub client: Option<ClientIdentity>,
    /// The key this keep-alive connection had accepted on its previous request.
    pub accepted_key: Option<Arc<AcceptedKey>>,
    pub snapshot: Option<Arc<Snapshot>>,
    /// The client's body as received.
    pub body: Bytes,
    /// `model` and `stream` of bodies that carry them (not Gemini's).
    pub inspected: Option<Inspected>,
    /// The model the client asked for.
    pub model: String,
    /// SSE was asked for: in the body, with `Accept: text/event-stream`, or by the Gemini method.
    pub stream: bool,
    /// A Gemini client asked for `alt=sse` (else a streamed JSON array).
    pub gemini_sse: bool,
    /// An answer, or the prompt's token count.
    pub operation: Operation,
    /// The client asked for the OpenAI usage chunk.
    pub include_usage: bool,
    /// `X-Session-Id` (or Claude Code's session header), at most 256 characters.
    pub session_id: Option<String>,
    /// The field the session's binding for the requested model is read and written under
    /// (`state::binding_field`), made once at admission.
    pub binding_field: Option<String>,
    /// A Responses request's `previous_response_id`, as the key its response's upstream is bound
    /// under (`session::response_key`): a request without a session goes there.
    pub response_pin: Option<String>,
    /// The upstream (`provider/model`) the session is bound to for this model, from shared state.
    pub binding: Option<String>,
    /// The first bytes of the answer, kept for the session context.
    pub capture: Option<BytesMut>,
    /// Answer bytes `capture` keeps for the log line: one more than it shows (`log_body_bytes`,
    /// so it can tell the answer went on); 0 when it shows none. A session's context keeps more.
    pub log_share: usize,
    pub plan: Option<RoutePlan>,
    /// Candidates that are done for this request.
    pub excluded: Vec<usize>,
    /// Keys refused during this request, as (candidate, key index).
    pub refused_keys: Vec<(usize, usize)>,
    pub attempts: Vec<AttemptRecord>,
    pub started_attempts: usize,
    pub current: Option<Attempt>,
    /// Set when the next attempt goes to the same candidate after a transient error.
    pub retry_same: Option<usize>,
    /// The retry on the same candidate goes without a pause, as the same attempt.
    pub redo: Option<Redo>,
    /// A stale pooled connection was sent again (once a request).
    pub stale_redone: bool,
    /// Attempts made again on another address of the same host after a connect failure.
    pub addr_redos: u8,
    /// The run of failures the last recorded success ended (continued if that answer breaks).
    pub failures_before_success: u32,
    /// The candidate whose open circuit this request claimed the probe of, and when (it gives the
    /// slot back if it ends, or moves on, without a verdict on that upstream).
    pub claimed_probe: Option<(usize, std::time::Instant)>,
    /// The probe's upstream answered with a success: its circuit closes once the answer has come
    /// whole (`failover::confirm_probe`).
    pub probe_answered: bool,
    pub same_retry_used: bool,
    /// The provider this request asks again without the `stream_options` the gateway adds, after
    /// a refusal that named it: learned for the provider only when that asks succeeds.
    pub stream_usage_unasked: Option<Arc<str>>,
    /// An Anthropic upstream refused a thinking signature of this request's conversation (thinking
    /// another vendor signed): every Anthropic attempt from then on goes without its thinking.
    pub thinking_dropped: bool,
    /// The Responses answer's id is bound to its upstream already (`session::pin_answer`).
    pub answer_pinned: bool,
    /// The retry decision `upstream_response_filter` made for `error_while_proxy` to apply.
    pub status_retry: Option<Retry>,
    /// Latest `Retry-After` an upstream sent, seconds.
    pub upstream_retry_after: Option<u64>,
    /// What the held beginning of the current answer said (see `failover::judge_held`).
    pub held_verdict: Option<HeldVerdict>,
    /// The status and kind an error body the upstream answered with said (when it was held and
    /// read), for the client's header and body to agree.
    pub answer_error: Option<(u16, crate::formats::ErrorKind)>,
    /// The current answer is a stream that opened with an error event: its end without a
    /// terminator is the error's, judged when it came, not a cut.
    pub opened_with_error: bool,
    /// The current answer is held (see `failover::hold_for_body`).
    pub hold: Option<super::failover::Hold>,
    /// The error to render in `fail_to_proxy`.
    pub failure: Option<GatewayError>,
    /// Why the last candidates could not take the request at all (e.g. untranslatable).
    pub convert_error: Option<String>,
    /// The candidates that could not take the request at all (no faithful translation, media not
    /// fetched): a 400 is the answer only when every candidate is one of them.
    pub cannot_take: Vec<usize>,
    /// The images fetched for a Gemini upstream, or why they could not be (once per request).
    pub fetched_media: Option<Result<Arc<FetchedMedia>, String>>,
    pub response: ResponseMode,
    /// A whole answer translated while it was held (to judge whether it can be), with its usage:
    /// what `Translate` sends at the end instead of translating it again.
    pub translated_answer: Option<(bytes::Bytes, Option<Usage>)>,
    /// Tokens the serving upstream reported.
    pub usage: Option<Usage>,
    /// Status sent to the client.
    pub status: Option<u16>,
    pub served_by: Option<Arc<str>>,
    pub stream_cut: bool,
    /// The client went away before its answer was complete (nginx's 499).
    pub client_closed: bool,
    /// A load balancer's `GET /health` or a browser's CORS preflight: neither logged nor counted.
    pub uncounted: bool,
    /// The page origin a browser request came from, when CORS allows it (named in the answer).
    pub cors_origin: Option<http::HeaderValue>,
    /// The answer is an SSE stream (counted in the open-streams gauge).
    pub streaming_response: bool,
    /// Time spent waiting on upstreams (failed attempts, backoff, and the serving attempt).
    pub upstream_wait: Duration,
    /// The gateway's own time on a stream's pieces while the upstream was still sending (framing,
    /// watching, translating): inside `upstream_wait`'s span, but not the upstream's.
    pub stream_work: Duration,
    /// Time spent waiting on the client: its request body arriving (or drained after an error),
    /// and the last of the answer written to it.
    pub client_wait: Duration,
    /// Upstream time to response header of the serving attempt.
    pub ttfb: Option<Duration>,
    /// When the serving upstream's last response byte reached the gateway: what follows (the last
    /// filtering, a translation) is the gateway's own time again, until `answer_handed`.
    pub upstream_done: Option<Instant>,
    /// When the body filter handed the end of the answer on, to be written to the client.
    pub answer_handed: Option<Instant>,
    /// When a refused request's answer was written, when the rest of its body is then read and
    /// dropped (its latency ends here).
    pub answered_at: Option<Instant>,
    /// A model listing (`/models`), answered by the gateway itself: labelled apart from answers.
    pub listing: bool,
    /// Time from the request's start to the first stream bytes sent to the client.
    pub first_token: Option<Duration>,
    /// The code of an error the gateway answered itself.
    pub error_code: Option<&'static str>,
}

/// The candidate an attempt went to. A free function, for code that holds another field of the
/// context mutably (the response mode) while it asks.
pub fn candidate_of<'a>(attempt: &Option<Attempt>, plan: &'a Option<RoutePlan>) -> Option<&'a Candidate> {
    let (a, p) = attempt.as_ref().zip(plan.as_ref())?;
    p.candidates.get(a.candidate)
}

impl RequestCtx {
    /// When this request claimed candidate `idx`'s probe slot, while it holds it.
    pub fn probe_claim(&self, idx: usize) -> Option<std::time::Instant> {
        self.claimed_probe.filter(|(i, _)| *i == idx).map(|(_, at)| at)
    }

    /// Whether an OpenAI Chat stream to `provider` asks for its usage (`stream_options`).
    pub fn asks_stream_usage(&self, provider: &Provider) -> bool {
        !provider.refuses_stream_usage() && self.stream_usage_unasked.as_deref() != Some(&*provider.id)
    }

    /// The candidate the current attempt went to.
    pub fn candidate(&self) -> Option<&Candidate> {
        candidate_of(&self.current, &self.plan)
    }

    /// The keys of candidate `idx` refused during this request.
    pub fn refused_keys_of(&self, idx: usize) -> Vec<usize> {
        self.refused_keys
            .iter()
            .filter(|(c, _)| *c == idx)
            .map(|(_, k)| *k)
            .collect()
    }

    pub fn new() -> Self {
        Self {
            request_id: RequestId::default(),
            started: Instant::now(),
            client_format: None,
            request_format: WireFormat::OpenAiChat,
            client: None,
            accepted_key: None,
            snapshot: None,
            body: Bytes::new(),
            inspected: None,
            model: String::new(),
            stream: false,
            gemini_sse: false,
            operation: Operation::Generate,
            include_usage: false,
            session_id: None,
            binding_field: None,
            response_pin: None,
            binding: None,
            capture: None,
            log_share: 0,
            plan: None,
            excluded: Vec::new(),
            refused_keys: Vec::new(),
            attempts: Vec::new(),
            started_attempts: 0,
            current: None,
            retry_same: None,
            redo: None,
            stale_redone: false,
            addr_redos: 0,
            failures_before_success: 0,
            claimed_probe: None,
            probe_answered: false,
            same_retry_used: false,
            stream_usage_unasked: None,
            thinking_dropped: false,
            answer_pinned: false,
            status_retry: None,
            upstream_retry_after: None,
            held_verdict: None,
            answer_error: None,
            opened_with_error: false,
            hold: None,
            failure: None,
            convert_error: None,
            cannot_take: Vec::new(),
            fetched_media: None,
            response: ResponseMode::Pass,
            translated_answer: None,
            usage: None,
            status: None,
            served_by: None,
            stream_cut: false,
            client_closed: false,
            uncounted: false,
            cors_origin: None,
            streaming_response: false,
            upstream_wait: Duration::ZERO,
            stream_work: Duration::ZERO,
            client_wait: Duration::ZERO,
            ttfb: None,
            upstream_done: None,
            answer_handed: None,
            answered_at: None,
            listing: false,
            first_token: None,
            error_code: None,
        }
    }

    /// The client's format; OpenAI Chat until the endpoint is known.
    pub fn client_format(&self) -> WireFormat {
        self.client_format.unwrap_or(WireFormat::OpenAiChat)
    }

    /// The key the request's upstream is hashed by when nothing is bound: its session, else the
    /// response it continues.
    pub fn sticky_key(&self) -> Option<&str> {
        self.session_id.as_deref().or(self.response_pin.as_deref())
    }

    /// The `api` label of the request's metrics: the client's format, and a count of tokens apart
    /// (Claude Code's editors send dozens at start-up, which would skew the format's latency).
    pub fn api_label(&self) -> &'static str {
        match (self.client_format, self.operation) {
            _ if self.listing => "models",
            (None, _) => "none",
            (Some(WireFormat::Anthropic), Operation::CountTokens) => "anthropic_count_tokens",
            (Some(WireFormat::Gemini), Operation::CountTokens) => "gemini_count_tokens",
            (Some(_), Operation::Embeddings) => "openai_embeddings",
            (Some(_), Operation::Compact) => "openai_responses_compact",
            (Some(f), _) => f.label(),
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `api` label a request can have has its timings cached (`Metrics::api_timings`).
    #[test]
    fn every_api_label_is_a_known_one() {
        use crate::formats::WireFormat;
        let formats = [
            None,
            Some(WireFormat::OpenAiChat),
            Some(WireFormat::OpenAiResponses),
            Some(WireFormat::Anthropic),
            Some(WireFormat::Gemini),
        ];
        let operations = [
            Operation::Generate,
            Operation::CountTokens,
            Operation::Embeddings,
            Operation::Compact,
        ];
        for (format, operation, listing) in formats
            .into_iter()
            .flat_map(|f| operations.map(|o| (f, o)))
            .flat_map(|(f, o)| [(f, o, false), (f, o, true)])
        {
            let ctx = RequestCtx {
                client_format: format,
                operation,
                listing,
                ..RequestCtx::new()
            };
            assert!(
                crate::metrics::API_LABELS.contains(&ctx.api_label()),
                "{}",
                ctx.api_label()
            );
        }
    }

    #[test]
    fn body_buf_past_its_limit_keeps_the_end_only() {
        let mut buf = BodyBuf::default();
        buf.keep(&Some(Bytes::from_static(b"{\"data\":[1,2],\"us")), 16);
        buf.keep(&Some(Bytes::from_static(b"age\":{\"n\":1}}")), 16);
        assert!(!buf.complete());
        assert!(buf.as_slice().is_empty(), "the kept part is let go");
        // The usage that began in the kept part is whole in the tail.
        assert_eq!(buf.tail(), b"{\"data\":[1,2],\"usage\":{\"n\":1}}");
        let piece = Bytes::from(vec![b'x'; 10_000]);
        for _ in 0..40 {
            buf.keep(&Some(piece.clone()), 16);
        }
        buf.keep(&Some(Bytes::from_static(b"end")), 16);
        assert!(buf.tail().len() <= 2 * TAIL && buf.tail().len() >= TAIL);
        assert!(buf.tail().ends_with(b"xxend"));
    }

    #[test]
    fn body_buf_keeps_one_piece_by_reference_and_stops_at_the_limit() {
        let one = Bytes::from_static(b"{\"a\":1}");
        let mut buf = BodyBuf::default();
        buf.keep(&Some(one.clone()), 64);
        assert_eq!(buf.as_slice().as_ptr(), one.as_ptr(), "a single piece is not copied");

        buf.keep(&Some(Bytes::from_static(b"more")), 64);
        assert_eq!(buf.as_slice(), b"{\"a\":1}more");
        assert!(buf.complete());

        // Over the limit: marked incomplete, and a later piece that would fit is not appended
        // (it goes to the tail).
        buf.keep(&Some(Bytes::from(vec![b'x'; 60])), 64);
        buf.keep(&Some(Bytes::from_static(b"!")), 64);
        assert!(!buf.complete());
        assert!(buf.as_slice().is_empty());
        assert!(buf.tail().starts_with(b"{\"a\":1}more") && buf.tail().ends_with(b"x!"));
    }
}
