//! A mock LLM provider over plain HTTP/1.1 speaking one API style: OpenAI Chat Completions (and
//! Responses), Responses only, Anthropic Messages or Gemini, with faults on demand: statuses, resets,
//! slow first bytes, streams cut, stalled or ending in an in-format error event.
//! Written on raw TCP so that faults (a reset mid-chunk, a silent socket) are exact.
//!
//! The bodies and SSE streams follow `../shared/docs/formats.md` §3, §4.1 and §5.1; the official SDKs
//! accept them as they are (`tests/mock_fidelity.rs` proves it), so a gateway test that fails against
//! a mock fails because of the gateway.
//!
//! Answers (see [`Reply`]): a text answer ("hello from NAME", streamed as "tok0 tok1 …"), a text plus
//! two parallel tool calls `get_weather({"city": "Paris"})` and `get_time({"tz": "CET"})`, the calls
//! alone, reasoning then the calls, or a text cut by the token limit. Every answer carries the usage
//! of [`usage`]. Requests are recorded whole (method, path with query, headers, body).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::shape::{violations, Api};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The API a mock speaks: its paths, bodies, streams, model list and error shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Like api.openai.com: `POST /v1/chat/completions`, `POST /v1/responses`, `GET /v1/models`.
    /// For compatibility with the first tests, any other POST path is answered as a chat completion.
    OpenAiChat,
    /// An OpenAI-compatible server without the Responses API: `/v1/responses` is a 404.
    ChatOnly,
    /// The Responses API only: `POST /v1/responses`, `GET /v1/models`; chat completions are a 404.
    Responses,
    /// `POST /v1/messages` (any query string), `GET /v1/models` in Anthropic's list shape.
    Anthropic,
    /// `POST /{v1beta,v1}/models/{model}:generateContent` and `:streamGenerateContent` (`?alt=sse`:
    /// SSE, otherwise a streamed JSON array), `GET /{v1beta,v1}/models`.
    Gemini,
}

impl Style {
    /// The gateway's `api_style` for a provider of this style.
    pub fn api_style(self) -> &'static str {
        match self {
            Style::OpenAiChat | Style::ChatOnly => "openai",
            Style::Responses => "responses",
            Style::Anthropic => "anthropic",
            Style::Gemini => "gemini",
        }
    }
}

/// How the mock answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A text answer: "hello from NAME", or streamed (when the request asks for a stream) as
    /// "tok0 tok1 tok2 tok3 tok4 ", finish reason stop / end_turn / STOP.
    Ok,
    /// "Let me check." then two parallel tool calls, `get_weather({"city": "Paris"})` and
    /// `get_time({"tz": "CET"})`; streamed, the text comes in two deltas and the arguments in several
    /// (Gemini: whole functionCall objects, one per chunk, then a chunk with finishReason STOP).
    ToolCalls,
    /// The same two tool calls without any text (content `null` / no text part).
    ToolCallsOnly,
    /// The text answer stopped by the token limit: length / max_tokens / MAX_TOKENS / incomplete.
    MaxTokens,
    /// Reasoning ("Let me think.", streamed in two deltas), then the two tool calls: an Anthropic
    /// `thinking` block with a signature, Gemini `thought: true` parts (the first call keeps its
    /// thoughtSignature), a Responses `reasoning` item with a summary and `encrypted_content`, and
    /// for OpenAI Chat the non-standard `reasoning_content` of DeepSeek / vLLM.
    Thinking,
    /// An error status. An empty `body` is replaced by the style's own error shape (§5.1).
    Status {
        status: u16,
        retry_after: Option<u64>,
        body: String,
    },
    /// This reply (a `Status`) with Anthropic's and OpenAI's `x-should-retry` header.
    ShouldRetry(bool, Box<Reply>),
    /// Close the connection without answering.
    Reset,
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// Stream this many events of the text answer, then end the body cleanly but without the
    /// terminator.
    StreamCut { after: usize },
    /// Stream this many events, then drop the socket mid-body.
    StreamAbort { after: usize },
    /// Stream this many events, then go silent with the socket open.
    StreamStall { after: usize },
    /// Stream this many events, then the style's own mid-stream error event (OpenAI `data:
    /// {"error":…}`, Anthropic `event: error` overloaded_error, Responses `response.failed`, Gemini
    /// `data: {"error":{"code":503,…}}`), then end the body.
    StreamError { after: usize },
    /// A 200 SSE body of exactly these events (each written as one chunk, verbatim: include the
    /// blank line).
    Sse(Vec<String>),
    /// A 200 HTML page, as a website, a captive portal or a proxy's login page answers.
    WebPage,
    /// A 200 JSON answer with nothing in it (`content-length: 0`), stream asked for or not.
    Empty,
    /// An OpenAI Chat completion (whatever the mock's style, never a stream) with ~4 KB of text,
    /// announced with its full `content-length`; the socket drops half-way through the body.
    CutShort,
    /// As `CutShort`, with this many bytes of text (past the gateway's 64 KiB hold, say).
    LargeCutShort(usize),
    /// As `CutShort`, but whole: the header and the first half of the body, then the rest after this
    /// pause (an upstream that is slow to finish an answer it has begun).
    SlowBody(Duration),
    /// As `SlowBody`, but after the pause the socket drops instead of the rest coming.
    SlowCut(Duration),
    /// An OpenAI Chat completion (whatever the mock's style, never a stream) whose text is this
    /// many bytes of "a long answer …".
    Large(usize),
    /// As `Sse`, labelled `text/plain` (servers that get the content type of a stream wrong).
    SsePlain(Vec<String>),
    /// This reply as a whole answer even when a stream was asked for (servers that ignore
    /// `stream: true`).
    Whole(Box<Reply>),
    /// This reply's stream as Gemini's JSON array (`application/json`) even when `?alt=sse` was
    /// asked (Gemini-compatible servers that ignore `alt`).
    JsonArray(Box<Reply>),
    /// These bytes verbatim (status line, headers, body), then the connection closes: a redirect,
    /// a header no well-behaved server sends, a body whose end only the close marks.
    Raw(String),
}

impl Reply {
    /// An error status with the body in the mock's own style.
    pub fn status(status: u16) -> Self {
        Reply::Status {
            status,
            retry_after: None,
            body: String::new(),
        }
    }

    /// An error status with this body.
    pub fn status_body(status: u16, body: impl Into<String>) -> Self {
        Reply::Status {
            status,
            retry_after: None,
            body: body.into(),
        }
    }

    /// An error status with a `retry-after` header, the body in the mock's own style.
    pub fn status_retry_after(status: u16, secs: u64) -> Self {
        Reply::Status {
            status,
            retry_after: Some(secs),
            body: String::new(),
        }
    }

    /// Anthropic's 529 as the API sends it when overloaded.
    pub fn overloaded() -> Self {
        Reply::Status {
            status: 529,
            retry_after: None,
            body: json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "req_mock_overloaded"}).to_string(),
        }
    }

    /// Gemini's answer to a bad key: 400 (not 401) `INVALID_ARGUMENT` with reason `API_KEY_INVALID`.
    pub fn gemini_bad_key() -> Self {
        Reply::Status {
            status: 400,
            retry_after: None,
            body: json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                             "metadata": {"service": "generativelanguage.googleapis.com"}}]}})
            .to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The request target as sent: path and query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// The path without the query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
    /// A query parameter (not percent-decoded).
    pub fn query(&self, name: &str) -> Option<&str> {
        let q = self.path.split_once('?')?.1;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
    /// The model asked for: the body's `model`, or for Gemini the `{model}` of the path.
    pub fn model(&self) -> Option<String> {
        if let Some(m) = self.json().get("model").and_then(Value::as_str) {
            return Some(m.to_string());
        }
        gemini_route(self.path_only()).map(|(m, _)| m)
    }
}

pub struct MockState {
    pub name: String,
    pub style: Style,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    requests: Mutex<Vec<Recorded>>,
    models: Vec<String>,
    /// Pause between stream events.
    pub event_gap: Mutex<Duration>,
    /// Silence between a stream's header and its first event (a model that thinks first).
    pub first_event_delay: Mutex<Duration>,
    /// Text deltas of a streamed text answer.
    pub events: usize,
    strict: AtomicBool,
    check_bodies: AtomicBool,
    page_cap: AtomicUsize,
    refuse_stream_options: Mutex<Option<String>>,
    /// Connections accepted so far.
    connections: AtomicUsize,
    /// The Responses ids this mock has given out; a request continuing from another is refused.
    issued: Mutex<Vec<String>>,
}

impl MockState {
    /// A Responses id of this mock's (also one "made before the gateway ran", for a test).
    pub fn issue_response_id(&self) -> String {
        let mut issued = self.issued.lock();
        let id = format!("resp_{}_{}", self.name, issued.len());
        issued.push(id.clone());
        id
    }
}

pub struct Mock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl Mock {
    /// An OpenAI-style mock (chat completions, Responses, model list).
    pub async fn start(name: &str, models: &[&str]) -> Mock {
        Self::start_style(name, models, Style::OpenAiChat).await
    }

    pub async fn start_style(name: &str, models: &[&str], style: Style) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(MockState {
            name: name.to_string(),
            style,
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::Ok),
            requests: Mutex::new(Vec::new()),
            models: models.iter().map(|m| m.to_string()).collect(),
            event_gap: Mutex::new(Duration::from_millis(5)),
            first_event_delay: Mutex::new(Duration::ZERO),
            events: 5,
            strict: AtomicBool::new(false),
            check_bodies: AtomicBool::new(true),
            page_cap: AtomicUsize::new(usize::MAX),
            refuse_stream_options: Mutex::new(None),
            connections: AtomicUsize::new(0),
            issued: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                st.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_conn(sock, st.clone()));
            }
        });
        Mock { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn style(&self) -> Style {
        self.state.style
    }

    /// Answers the next requests with these replies, then with the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock() = reply;
    }

    pub fn set_event_gap(&self, gap: Duration) {
        *self.state.event_gap.lock() = gap;
    }

    /// Streams answer their header at once and their first event after `delay`.
    pub fn set_first_event_delay(&self, delay: Duration) {
        *self.state.first_event_delay.lock() = delay;
    }

    /// When strict, requests without the style's credentials get the style's 401 (Gemini: 403), and
    /// Anthropic requests without `anthropic-version` a 400, as the real APIs do.
    pub fn set_strict(&self, strict: bool) {
        self.state.strict.store(strict, Ordering::Relaxed);
    }

    /// The model list gives at most `n` models a page, whatever the client asks (Anthropic and
    /// Gemini styles; the real APIs stop at 1000).
    pub fn set_page_cap(&self, n: usize) {
        self.state.page_cap.store(n, Ordering::Relaxed);
    }

    /// Mistral's 422 (`extra_forbidden` on `stream_options.include_usage`), for chat completions
    /// carrying `stream_options`.
    pub const MISTRAL_STREAM_OPTIONS: (u16, &str) = (
        422,
        r#"{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","stream_options","include_usage"],"msg":"Extra inputs are not permitted","input":true}]},"type":"invalid_request_error","param":null,"code":null}"#,
    );
    /// Azure OpenAI's older API versions: the field itself is unknown.
    pub const AZURE_STREAM_OPTIONS: (u16, &str) = (
        400,
        r#"{"error":{"message":"Unknown parameter: 'stream_options'.","type":"invalid_request_error","param":"stream_options","code":"unknown_parameter"}}"#,
    );

    /// Chat completions carrying `stream_options` get this refusal (status, body).
    pub fn set_refuse_stream_options(&self, refusal: Option<(u16, &str)>) {
        *self.state.refuse_stream_options.lock() = refusal.map(|(status, body)| format!("{status} {body}"));
    }

    /// On by default: a completion body the real API would refuse (`shape::violations`) gets the
    /// style's 400 naming every rule it breaks, so a translation bug fails the test that sent it.
    /// Off for tests that send such bodies on purpose.
    pub fn set_body_checks(&self, on: bool) {
        self.state.check_bodies.store(on, Ordering::Relaxed);
    }

    /// Completion requests received (model list fetches excluded).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .iter()
            .filter(|r| r.method == "POST")
            .cloned()
            .collect()
    }

    /// Every request received, model list fetches included.
    pub fn all_requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().clone()
    }

    /// The last completion request.
    pub fn last(&self) -> Option<Recorded> {
        self.requests().pop()
    }

    /// Connections the mock has accepted (a reused keep-alive connection counts once).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn hits(&self) -> usize {
        self.requests().len()
    }

    pub fn clear(&self) {
        self.state.requests.lock().clear();
    }
}

async fn serve_conn(mut sock: TcpStream, st: Arc<MockState>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let Some(req) = read_request(&mut sock, &mut buf).await else {
            return;
        };
        let is_post = req.method == "POST";
        st.requests.lock().push(req.clone());
        let route = route(st.style, &req);
        let reply = if let Some(refusal) = refuse(&st, &req, &route) {
            refusal
        } else if is_post {
            st.script
                .lock()
                .pop_front()
                .unwrap_or_else(|| st.default.lock().clone())
        } else {
            Reply::Ok
        };
        if !answer(&mut sock, &st, &req, &route, reply).await {
            return;
        }
    }
}

/// Reads one whole request (head, then `content-length` bytes of body) from `sock`; `buf` keeps what
/// arrived beyond it. `None` once the peer closes.
pub async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = parsed.parse(buf) {
            let headers: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).to_string()))
                .collect();
            let len = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            let method = parsed.method.unwrap_or("").to_string();
            let path = parsed.path.unwrap_or("").to_string();
            while buf.len() < head_len + len {
                let mut chunk = [0u8; 65536];
                let n = sock.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[head_len..head_len + len].to_vec();
            buf.drain(..head_len + len);
            return Some(Recorded {
                method,
                path,
                headers,
                body,
            });
        }
        let mut chunk = [0u8; 65536];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

// ---------------------------------------------------------------------------------------------
// Routing

/// What a request asks for, per the mock's style.
#[derive(Clone, Debug, PartialEq)]
enum Route {
    Chat {
        stream: bool,
        include_usage: bool,
    },
    Responses {
        stream: bool,
    },
    Messages {
        stream: bool,
    },
    /// `sse`: `?alt=sse`; a stream without it is a JSON array.
    Gemini {
        model: String,
        stream: bool,
        sse: bool,
    },
    Models,
    /// One Gemini model (`GET /v1beta/models/x`).
    GeminiModel(String),
    /// Anthropic's `/v1/messages/count_tokens`, Gemini's `:countTokens`.
    CountTokens,
    /// OpenAI's `/v1/embeddings`, Gemini's `:batchEmbedContents`.
    Embeddings,
    /// OpenAI's `/v1/responses/compact`.
    Compact,
    NotFound,
}

/// `/{v1beta,v1}/models/{model}:{method}` → (model, method).
fn gemini_route(path: &str) -> Option<(String, String)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, method) = rest.rsplit_once(':')?;
    Some((model.to_string(), method.to_string()))
}

fn route(style: Style, req: &Recorded) -> Route {
    let body = req.json();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let path = req.path_only();
    if req.method == "GET" {
        if style == Style::Gemini {
            if let Some(m) = path
                .strip_prefix("/v1beta/models/")
                .or_else(|| path.strip_prefix("/v1/models/"))
            {
                return Route::GeminiModel(m.to_string());
            }
        }
        return Route::Models;
    }
    let chat = || Route::Chat {
        stream,
        include_usage: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    match style {
        Style::OpenAiChat | Style::ChatOnly | Style::Responses if path.ends_with("/embeddings") => Route::Embeddings,
        Style::OpenAiChat | Style::Responses if path.ends_with("/responses/compact") => Route::Compact,
        Style::OpenAiChat if path.ends_with("/responses") => Route::Responses { stream },
        Style::OpenAiChat => chat(),
        Style::ChatOnly if path.ends_with("/chat/completions") => chat(),
        Style::Responses if path.ends_with("/responses") => Route::Responses { stream },
        Style::Anthropic if path.ends_with("/v1/messages") => Route::Messages { stream },
        Style::Anthropic if path.ends_with("/v1/messages/count_tokens") => Route::CountTokens,
        Style::Gemini => match gemini_route(path) {
            Some((model, m)) if m == "generateContent" => Route::Gemini {
                model,
                stream: false,
                sse: false,
            },
            Some((model, m)) if m == "streamGenerateContent" => Route::Gemini {
                model,
                stream: true,
                sse: req.query("alt") == Some("sse"),
            },
            Some((_, m)) if m == "countTokens" => Route::CountTokens,
            Some((_, m)) if m == "batchEmbedContents" => Route::Embeddings,
            _ => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

/// A reply that overrides the script: unknown paths, bodies the real API would refuse, and missing
/// credentials in strict mode.
fn refuse(st: &MockState, req: &Recorded, route: &Route) -> Option<Reply> {
    let error = |status: u16, message: &str| Reply::Status {
        status,
        retry_after: None,
        body: error_body(st.style, status, message),
    };
    if *route == Route::NotFound {
        return Some(error(
            404,
            &format!("mock {}: no route for {} {}", st.name, req.method, req.path),
        ));
    }
    // OpenAI keeps a response with the account that made it: another cannot continue from it.
    if let (Route::Responses { .. }, Some(prev)) = (route, req.json()["previous_response_id"].as_str()) {
        if !st.issued.lock().iter().any(|id| id == prev) {
            return Some(Reply::Status {
                status: 400,
                retry_after: None,
                body: json!({"error": {"message": format!("Previous response with id '{prev}' not found."),
                    "type": "invalid_request_error", "param": "previous_response_id",
                    "code": "previous_response_not_found"}})
                .to_string(),
            });
        }
    }
    let refusal = st.refuse_stream_options.lock().clone();
    if let Some((status, body)) = refusal.as_deref().and_then(|r| r.split_once(' ')) {
        if matches!(route, Route::Chat { .. }) && req.json().get("stream_options").is_some() {
            return Some(Reply::Status {
                status: status.parse().unwrap_or(400),
                retry_after: None,
                body: body.to_string(),
            });
        }
    }
    if st.check_bodies.load(Ordering::Relaxed) {
        let api = match route {
            Route::Chat { .. } => Some(Api::OpenAiChat),
            Route::Responses { .. } => Some(Api::Responses),
            Route::Messages { .. } => Some(Api::Anthropic),
            Route::Gemini { .. } => Some(Api::Gemini),
            Route::CountTokens if st.style == Style::Anthropic => Some(Api::AnthropicCount),
            Route::CountTokens => Some(Api::GeminiCount),
            Route::Embeddings if st.style == Style::Gemini => Some(Api::GeminiEmbeddings),
            Route::Embeddings => Some(Api::OpenAiEmbeddings),
            _ => None,
        };
        if let Some(api) = api {
            let body = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let broken = violations(api, &body);
            if !broken.is_empty() {
                return Some(error(400, &broken.join("; ")));
            }
        }
    }
    if !st.strict.load(Ordering::Relaxed) {
        return None;
    }
    let bearer = req.header("authorization").is_some_and(|v| v.starts_with("Bearer "));
    match st.style {
        Style::Anthropic if !bearer && req.header("x-api-key").is_none() => {
            Some(error(401, "x-api-key header is required"))
        }
        Style::Anthropic if req.header("anthropic-version").is_none() => {
            Some(error(400, "anthropic-version: header is required"))
        }
        Style::Gemini if !bearer && req.header("x-goog-api-key").is_none() && req.query("key").is_none() => {
            Some(error(403, "Method doesn't allow unregistered callers"))
        }
        Style::OpenAiChat | Style::ChatOnly | Style::Responses if !bearer => {
            Some(error(401, "You didn't provide an API key."))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Answers, independent of the format

#[derive(Clone, Copy, Debug, PartialEq)]
enum Finish {
    Stop,
    Tools,
    Length,
}

struct Call {
    /// 1-based, used in ids.
    n: usize,
    name: &'static str,
    /// The arguments as OpenAI serialises them, and in the pieces they are streamed in.
    args_chunks: &'static [&'static str],
}

impl Call {
    fn args(&self) -> String {
        self.args_chunks.concat()
    }
    fn args_value(&self) -> Value {
        serde_json::from_str(&self.args()).unwrap()
    }
}

const CALLS: [Call; 2] = [
    Call {
        n: 1,
        name: "get_weather",
        args_chunks: &["{\"ci", "ty\": \"Pa", "ris\"}"],
    },
    Call {
        n: 2,
        name: "get_time",
        args_chunks: &["{\"tz\": ", "\"CET\"}"],
    },
];

/// Gemini 3 sends a thought signature on the first functionCall of a turn.
pub const THOUGHT_SIGNATURE: &str = "bW9jay10aG91Z2h0LXNpZ25hdHVyZQ==";
/// The signature of Anthropic's thinking block.
pub const THINKING_SIGNATURE: &str = "EqQBCkgIARABGAIiQMockThinkingSignature";
/// The `encrypted_content` of the Responses reasoning item.
pub const ENCRYPTED_REASONING: &str = "gAAAAABmockEncryptedReasoning";

struct Answer {
    /// Reasoning text, in its deltas.
    thinking: Vec<String>,
    /// The text, in the deltas a stream sends it in (one piece when not streamed).
    text: Vec<String>,
    calls: &'static [Call],
    finish: Finish,
    /// The id a Responses answer gets (the mock's own, so a continuation can be checked).
    id: String,
}

impl Answer {
    fn of(st: &MockState, reply: &Reply, stream: bool) -> Answer {
        let hello = || {
            if stream {
                (0..st.events).map(|i| format!("tok{i} ")).collect()
            } else {
                vec![format!("hello from {}", st.name)]
            }
        };
        let check = || {
            if stream {
                vec!["Let me".to_string(), " check.".to_string()]
            } else {
                vec!["Let me check.".to_string()]
            }
        };
        let think = || {
            if stream {
                vec!["Let me".to_string(), " think.".to_string()]
            } else {
                vec!["Let me think.".to_string()]
            }
        };
        match reply {
            Reply::Thinking => Answer {
                thinking: think(),
                text: vec![],
                calls: &CALLS,
                finish: Finish::Tools,
                id: st.issue_response_id(),
            },
            Reply::ToolCalls => Answer {
                thinking: Vec::new(),
                text: check(),
                calls: &CALLS,
                finish: Finish::Tools,
                id: st.issue_response_id(),
            },
            Reply::ToolCallsOnly => Answer {
                thinking: Vec::new(),
                text: vec![],
                calls: &CALLS,
                finish: Finish::Tools,
                id: st.issue_response_id(),
            },
            Reply::MaxTokens => Answer {
                thinking: Vec::new(),
                text: hello(),
                calls: &[],
                finish: Finish::Length,
                id: st.issue_response_id(),
            },
            _ => Answer {
                thinking: Vec::new(),
                text: hello(),
                calls: &[],
                finish: Finish::Stop,
                id: st.issue_response_id(),
            },
        }
    }
    fn full_text(&self) -> Option<String> {
        (!self.text.is_empty()).then(|| self.text.concat())
    }
    fn full_thinking(&self) -> Option<String> {
        (!self.thinking.is_empty()).then(|| self.thinking.concat())
    }
}

/// The usage every answer reports, in each format's terms (§3.2): 25 prompt tokens of which 5 were
/// cached, 40 output tokens of which 10 were reasoning.
pub mod usage {
    pub const PROMPT: u64 = 25;
    pub const CACHED: u64 = 5;
    pub const COMPLETION: u64 = 40;
    pub const REASONING: u64 = 10;
    pub const TOTAL: u64 = PROMPT + COMPLETION;
    /// Anthropic's `input_tokens` excludes the cache read.
    pub const ANTHROPIC_INPUT: u64 = PROMPT - CACHED;
    /// Gemini's `candidatesTokenCount` excludes the thoughts.
    pub const GEMINI_CANDIDATES: u64 = COMPLETION - REASONING;
}

fn chat_usage() -> Value {
    json!({"prompt_tokens": usage::PROMPT, "completion_tokens": usage::COMPLETION, "total_tokens": usage::TOTAL,
           "prompt_tokens_details": {"cached_tokens": usage::CACHED, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": usage::REASONING, "audio_tokens": 0,
                                         "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

fn responses_usage() -> Value {
    json!({"input_tokens": usage::PROMPT, "input_tokens_details": {"cached_tokens": usage::CACHED},
           "output_tokens": usage::COMPLETION, "output_tokens_details": {"reasoning_tokens": usage::REASONING},
           "total_tokens": usage::TOTAL})
}

fn anthropic_usage(output_tokens: u64) -> Value {
    json!({"input_tokens": usage::ANTHROPIC_INPUT, "cache_creation_input_tokens": 0,
           "cache_read_input_tokens": usage::CACHED, "output_tokens": output_tokens, "service_tier": "standard"})
}

fn gemini_usage(done: bool) -> Value {
    let mut u = json!({"promptTokenCount": usage::PROMPT, "cachedContentTokenCount": usage::CACHED,
                       "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage::PROMPT}],
                       "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": usage::CACHED}],
                       "totalTokenCount": usage::PROMPT});
    if done {
        u["candidatesTokenCount"] = json!(usage::GEMINI_CANDIDATES);
        u["thoughtsTokenCount"] = json!(usage::REASONING);
        u["totalTokenCount"] = json!(usage::TOTAL);
    }
    u
}

fn sse(data: &Value) -> String {
    format!("data: {data}\n\n")
}

fn sse_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

// ---------------------------------------------------------------------------------------------
// OpenAI Chat Completions

fn chat_finish(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Tools => "tool_calls",
        Finish::Length => "length",
    }
}

fn chat_completion(a: &Answer, model: &str) -> Value {
    let mut message = json!({"role": "assistant", "content": a.full_text(), "refusal": null, "annotations": []});
    if let Some(t) = a.full_thinking() {
        message["reasoning_content"] = json!(t);
    }
    if !a.calls.is_empty() {
        message["tool_calls"] = a
            .calls
            .iter()
            .map(|c| json!({"id": format!("call_{}", c.n), "type": "function", "function": {"name": c.name, "arguments": c.args()}}))
            .collect();
    }
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": chat_finish(a.finish)}],
        "usage": chat_usage(), "service_tier": "default", "system_fingerprint": "fp_mock"
    })
}

/// Chunks as api.openai.com sends them: the role in the first delta, tool calls started with id,
/// name and empty arguments then continued by index, the finish reason in an empty delta, the usage
/// chunk (`choices: []`) only when asked for, `[DONE]`.
fn chat_stream(a: &Answer, model: &str, include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        sse(&c)
    };
    let mut out = Vec::new();
    let mut role_sent = false;
    for piece in &a.thinking {
        let mut delta = json!({"reasoning_content": piece, "content": null});
        if !role_sent {
            delta["role"] = json!("assistant");
            role_sent = true;
        }
        out.push(chunk(delta, None));
    }
    for piece in &a.text {
        let mut delta = json!({"content": piece});
        if !role_sent {
            delta["role"] = json!("assistant");
            role_sent = true;
        }
        out.push(chunk(delta, None));
    }
    for (k, c) in a.calls.iter().enumerate() {
        let mut delta = json!({"tool_calls": [{"index": k, "id": format!("call_{}", c.n), "type": "function",
                                               "function": {"name": c.name, "arguments": ""}}]});
        if !role_sent {
            delta["role"] = json!("assistant");
            delta["content"] = Value::Null;
            role_sent = true;
        }
        out.push(chunk(delta, None));
        for piece in c.args_chunks {
            out.push(chunk(
                json!({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    out.push(chunk(json!({}), Some(chat_finish(a.finish))));
    if include_usage {
        out.push(sse(
            &json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
                             "system_fingerprint": "fp_mock", "choices": [], "usage": chat_usage()}),
        ));
    }
    out.push("data: [DONE]\n\n".to_string());
    out
}

// ---------------------------------------------------------------------------------------------
// OpenAI Responses

fn message_item(text: &str, status: &str) -> Value {
    json!({"type": "message", "id": "msg_1", "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

fn call_item(c: &Call, args: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{}", c.n), "call_id": format!("call_{}", c.n),
           "name": c.name, "arguments": args, "status": status})
}

fn response_object(a: &Answer, model: &str, status: &str, output: Vec<Value>) -> Value {
    let incomplete = a.finish == Finish::Length && status != "in_progress";
    json!({
        "id": a.id, "object": "response", "created_at": 1,
        "status": if incomplete { "incomplete" } else { status },
        "model": model, "output": output, "error": null,
        "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": null, "max_output_tokens": null, "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": true, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": if status == "in_progress" { Value::Null } else { responses_usage() }, "metadata": {}
    })
}

fn reasoning_item(summary: &str) -> Value {
    let summary = if summary.is_empty() {
        json!([])
    } else {
        json!([{"type": "summary_text", "text": summary}])
    };
    json!({"type": "reasoning", "id": "rs_1", "summary": summary, "encrypted_content": ENCRYPTED_REASONING})
}

fn response_output(a: &Answer) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(t) = a.full_thinking() {
        out.push(reasoning_item(&t));
    }
    if let Some(t) = a.full_text() {
        out.push(message_item(&t, "completed"));
    }
    out.extend(a.calls.iter().map(|c| call_item(c, &c.args(), "completed")));
    out
}

fn responses_stream(a: &Answer, model: &str) -> Vec<String> {
    let created = response_object(a, model, "in_progress", vec![]);
    let mut evs = vec![
        json!({"type": "response.created", "response": created}),
        json!({"type": "response.in_progress", "response": created}),
    ];
    let mut index = 0;
    if let Some(summary) = a.full_thinking() {
        let part = |text: &str| json!({"type": "summary_text", "text": text});
        let ids = json!({"item_id": "rs_1", "output_index": index, "summary_index": 0});
        let with = |mut ev: Value, extra: Value| {
            for (k, v) in ids.as_object().unwrap().iter().chain(extra.as_object().unwrap()) {
                ev[k] = v.clone();
            }
            ev
        };
        evs.push(json!({"type": "response.output_item.added", "output_index": index, "item": reasoning_item("")}));
        evs.push(with(
            json!({"type": "response.reasoning_summary_part.added"}),
            json!({"part": part("")}),
        ));
        for piece in &a.thinking {
            evs.push(with(
                json!({"type": "response.reasoning_summary_text.delta"}),
                json!({"delta": piece}),
            ));
        }
        evs.push(with(
            json!({"type": "response.reasoning_summary_text.done"}),
            json!({"text": summary}),
        ));
        evs.push(with(
            json!({"type": "response.reasoning_summary_part.done"}),
            json!({"part": part(&summary)}),
        ));
        evs.push(json!({"type": "response.output_item.done", "output_index": index, "item": reasoning_item(&summary)}));
        index += 1;
    }
    if let Some(text) = a.full_text() {
        let mut item = message_item("", "in_progress");
        item["content"] = json!([]);
        let part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
        evs.push(json!({"type": "response.output_item.added", "output_index": index, "item": item}));
        evs.push(json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": index, "content_index": 0, "part": part}));
        for piece in &a.text {
            evs.push(json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": index, "content_index": 0, "delta": piece, "logprobs": []}));
        }
        let done = message_item(&text, "completed");
        evs.push(json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
        evs.push(json!({"type": "response.content_part.done", "item_id": "msg_1", "output_index": index, "content_index": 0, "part": done["content"][0]}));
        evs.push(json!({"type": "response.output_item.done", "output_index": index, "item": done}));
        index += 1;
    }
    for c in a.calls {
        let id = format!("fc_{}", c.n);
        evs.push(json!({"type": "response.output_item.added", "output_index": index, "item": call_item(c, "", "in_progress")}));
        for piece in c.args_chunks {
            evs.push(json!({"type": "response.function_call_arguments.delta", "item_id": id, "output_index": index, "delta": piece}));
        }
        evs.push(json!({"type": "response.function_call_arguments.done", "item_id": id, "output_index": index, "name": c.name, "arguments": c.args()}));
        evs.push(json!({"type": "response.output_item.done", "output_index": index, "item": call_item(c, &c.args(), "completed")}));
        index += 1;
    }
    let full = response_object(a, model, "completed", response_output(a));
    let terminal = if full["status"] == "incomplete" {
        "response.incomplete"
    } else {
        "response.completed"
    };
    evs.push(json!({"type": terminal, "response": full}));
    number_responses_events(evs, 0)
}

fn number_responses_events(evs: Vec<Value>, first: usize) -> Vec<String> {
    evs.into_iter()
        .enumerate()
        .map(|(n, mut ev)| {
            ev["sequence_number"] = json!(first + n);
            sse_event(ev["type"].as_str().unwrap_or(""), &ev)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages

fn anthropic_stop(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Tools => "tool_use",
        Finish::Length => "max_tokens",
    }
}

fn anthropic_message(a: &Answer, model: &str) -> Value {
    let mut content = Vec::new();
    if let Some(t) = a.full_thinking() {
        content.push(json!({"type": "thinking", "thinking": t, "signature": THINKING_SIGNATURE}));
    }
    if let Some(t) = a.full_text() {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in a.calls {
        content.push(
            json!({"type": "tool_use", "id": format!("toolu_0{}", c.n), "name": c.name, "input": c.args_value()}),
        );
    }
    json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": content,
           "stop_reason": anthropic_stop(a.finish), "stop_sequence": null, "usage": anthropic_usage(usage::COMPLETION)})
}

fn anthropic_stream(a: &Answer, model: &str) -> Vec<String> {
    let mut start = anthropic_message(a, model);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["usage"] = anthropic_usage(1);
    let mut out = vec![
        sse_event("message_start", &json!({"type": "message_start", "message": start})),
        sse_event("ping", &json!({"type": "ping"})),
    ];
    let mut index = 0;
    let block = |out: &mut Vec<String>, index: usize, start: Value, deltas: Vec<Value>| {
        out.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for d in deltas {
            out.push(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": d}),
            ));
        }
        out.push(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    };
    if !a.thinking.is_empty() {
        let deltas = a
            .thinking
            .iter()
            .map(|t| json!({"type": "thinking_delta", "thinking": t}))
            .chain(std::iter::once(
                json!({"type": "signature_delta", "signature": THINKING_SIGNATURE}),
            ))
            .collect();
        block(
            &mut out,
            index,
            json!({"type": "thinking", "thinking": "", "signature": ""}),
            deltas,
        );
        index += 1;
    }
    if !a.text.is_empty() {
        let deltas = a
            .text
            .iter()
            .map(|t| json!({"type": "text_delta", "text": t}))
            .collect();
        block(&mut out, index, json!({"type": "text", "text": ""}), deltas);
        index += 1;
    }
    for c in a.calls {
        // The API starts every tool input with an empty partial_json.
        let deltas = std::iter::once("")
            .chain(c.args_chunks.iter().copied())
            .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
            .collect();
        let start = json!({"type": "tool_use", "id": format!("toolu_0{}", c.n), "name": c.name, "input": {}});
        block(&mut out, index, start, deltas);
        index += 1;
    }
    let mut usage = anthropic_usage(usage::COMPLETION);
    usage.as_object_mut().unwrap().remove("service_tier");
    out.push(sse_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": anthropic_stop(a.finish), "stop_sequence": null}, "usage": usage}),
    ));
    out.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    out
}

// ---------------------------------------------------------------------------------------------
// Gemini

fn gemini_finish(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::Tools => "STOP",
        Finish::Length => "MAX_TOKENS",
    }
}

fn gemini_call_part(c: &Call) -> Value {
    let mut part = json!({"functionCall": {"name": c.name, "args": c.args_value()}});
    if c.n == 1 {
        part["thoughtSignature"] = json!(THOUGHT_SIGNATURE);
    }
    part
}

fn gemini_chunk(model: &str, parts: Vec<Value>, finish: Option<Finish>) -> Value {
    let mut cand = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(f) = finish {
        cand["finishReason"] = json!(gemini_finish(f));
    }
    json!({"candidates": [cand], "usageMetadata": gemini_usage(finish.is_some()), "modelVersion": model, "responseId": "mock-response-id"})
}

fn gemini_response(a: &Answer, model: &str) -> Value {
    let mut parts: Vec<Value> = a
        .full_thinking()
        .map(|t| json!({"text": t, "thought": true}))
        .into_iter()
        .collect();
    parts.extend(a.full_text().map(|t| json!({"text": t})));
    parts.extend(a.calls.iter().map(gemini_call_part));
    gemini_chunk(model, parts, Some(a.finish))
}

/// The chunks of a stream: one per text delta (the last text chunk carries the finish reason when
/// there are no calls), then each functionCall whole in its own chunk, then — as newer models do — an
/// empty text part with finishReason STOP and the final usage.
fn gemini_stream_chunks(a: &Answer, model: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for t in &a.thinking {
        out.push(gemini_chunk(model, vec![json!({"text": t, "thought": true})], None));
    }
    for (i, t) in a.text.iter().enumerate() {
        let last = i + 1 == a.text.len() && a.calls.is_empty();
        out.push(gemini_chunk(model, vec![json!({"text": t})], last.then_some(a.finish)));
    }
    for c in a.calls {
        out.push(gemini_chunk(model, vec![gemini_call_part(c)], None));
    }
    if !a.calls.is_empty() {
        out.push(gemini_chunk(model, vec![json!({"text": ""})], Some(a.finish)));
    }
    out
}

/// Gemini's SSE, with the real API's CRLF framing.
fn gemini_sse(chunks: Vec<Value>) -> Vec<String> {
    chunks.into_iter().map(|c| format!("data: {c}\r\n\r\n")).collect()
}

/// Without `alt=sse`: one JSON array, written element by element.
fn gemini_array(chunks: Vec<Value>) -> Vec<String> {
    let mut out: Vec<String> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| format!("{}{c}", if i == 0 { "[" } else { "\r\n,\r\n" }))
        .collect();
    out.push("]".to_string());
    out
}

// ---------------------------------------------------------------------------------------------
// Errors and model lists

/// The style's error body for a status (§5.1, §5.2).
pub fn error_body(style: Style, status: u16, message: &str) -> String {
    match style {
        Style::OpenAiChat | Style::ChatOnly | Style::Responses => {
            let (kind, code) = match status {
                400 | 413 => ("invalid_request_error", Value::Null),
                401 => ("invalid_request_error", json!("invalid_api_key")),
                403 => ("permission_error", Value::Null),
                404 => ("invalid_request_error", json!("model_not_found")),
                429 => ("requests", json!("rate_limit_exceeded")),
                503 => ("service_unavailable_error", json!("server_is_overloaded")),
                408 | 504 => ("timeout", Value::Null),
                _ => ("server_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string()
        }
        Style::Anthropic => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                402 => "billing_error",
                403 => "permission_error",
                404 => "not_found_error",
                409 => "conflict_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                504 => "timeout_error",
                529 | 503 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"}).to_string()
        }
        Style::Gemini => {
            let kind = match status {
                400 | 413 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                409 => "ABORTED",
                429 => "RESOURCE_EXHAUSTED",
                502 | 503 | 529 => "UNAVAILABLE",
                408 | 504 => "DEADLINE_EXCEEDED",
                _ => "INTERNAL",
            };
            json!({"error": {"code": status, "message": message, "status": kind}}).to_string()
        }
    }
}

/// The event a stream ends with when the upstream fails mid-way (§4.7).
fn stream_error_event(style: Style, route: &Route, a: &Answer, model: &str, seq: usize) -> String {
    match (style, route) {
        (_, Route::Responses { .. }) => {
            let mut failed = response_object(a, model, "failed", vec![]);
            failed["status"] = json!("failed");
            failed["usage"] = Value::Null;
            failed["error"] = json!({"code": "server_error", "message": "mock: the model failed mid-stream"});
            number_responses_events(vec![json!({"type": "response.failed", "response": failed})], seq).remove(0)
        }
        (Style::Anthropic, _) => sse_event(
            "error",
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        (Style::Gemini, Route::Gemini { sse: false, .. }) => format!(
            "\r\n,\r\n{}",
            json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})
        ),
        (Style::Gemini, _) => format!(
            "data: {}\r\n\r\n",
            json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})
        ),
        _ => sse(
            &json!({"error": {"message": "mock: the model failed mid-stream", "type": "server_error", "param": null, "code": null}}),
        ),
    }
}

/// The model list, in pages as the real APIs give them: Anthropic 20 a page unless `limit` says
/// (`after_id` for the next), Gemini 50 unless `pageSize` says (`pageToken`: here the index of the
/// page's first model), both at most 1000 and at most `page_cap`.
fn models_body(st: &MockState, req: &Recorded) -> Value {
    let page_of = |size_param: &str, default: usize, start: usize| {
        let size = req
            .query(size_param)
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(default)
            .clamp(1, 1000)
            .min(st.page_cap.load(Ordering::Relaxed));
        let end = (start + size).min(st.models.len());
        (&st.models[start.min(end)..end], end < st.models.len())
    };
    match st.style {
        Style::Anthropic => {
            let start = req
                .query("after_id")
                .and_then(|id| st.models.iter().position(|m| m == id))
                .map_or(0, |i| i + 1);
            let (page, more) = page_of("limit", 20, start);
            let data: Vec<_> = page
                .iter()
                .map(|m| json!({"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}))
                .collect();
            json!({"data": data, "has_more": more, "first_id": page.first(), "last_id": page.last()})
        }
        Style::Gemini => {
            let start = req.query("pageToken").and_then(|t| t.parse().ok()).unwrap_or(0);
            let (page, more) = page_of("pageSize", 50, start);
            let models: Vec<_> = page.iter().map(|m| gemini_model(m)).collect();
            let mut body = json!({ "models": models });
            if more {
                body["nextPageToken"] = (start + page.len()).to_string().into();
            }
            body
        }
        _ => {
            let data: Vec<_> = st
                .models
                .iter()
                .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": st.name}))
                .collect();
            json!({"object": "list", "data": data})
        }
    }
}

/// The mock's embedding of a text: its words, its characters, and a constant, so a test can tell
/// which text each vector is of.
pub fn mock_vector(text: &str) -> Vec<f64> {
    vec![text.split_whitespace().count() as f64, text.chars().count() as f64, 0.5]
}

/// The mock's token count of a prompt: the words of its strings, but for the names the formats
/// differ in (`model`, `role`, `type`), so one prompt counts the same in either format.
pub fn prompt_tokens(body: &Value) -> u64 {
    match body {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(items) => items.iter().map(prompt_tokens).sum(),
        Value::Object(members) => members
            .iter()
            .filter(|(k, _)| !["model", "role", "type"].contains(&k.as_str()))
            .map(|(_, v)| prompt_tokens(v))
            .sum(),
        _ => 0,
    }
}

fn gemini_model(m: &str) -> Value {
    json!({"name": format!("models/{m}"), "version": "001", "displayName": m, "description": "mock model",
           "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
           "supportedGenerationMethods": ["generateContent", "countTokens"]})
}

// ---------------------------------------------------------------------------------------------
// The wire

async fn write_head(sock: &mut TcpStream, status: u16, content_type: &str, len: Option<usize>, extra: &str) -> bool {
    let framing = match len {
        Some(n) => format!("content-length: {n}\r\n"),
        None => "transfer-encoding: chunked\r\n".to_string(),
    };
    let head = format!("HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n{framing}{extra}\r\n");
    sock.write_all(head.as_bytes()).await.is_ok()
}

async fn write_chunk(sock: &mut TcpStream, data: &str) -> bool {
    sock.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await
        .is_ok()
}

async fn write_json(sock: &mut TcpStream, status: u16, body: &str, extra: &str) -> bool {
    write_head(sock, status, "application/json", Some(body.len()), extra).await
        && sock.write_all(body.as_bytes()).await.is_ok()
}

/// An OpenAI Chat completion whose text is `len` bytes of "a long answer …".
fn long_completion(st: &MockState, model: &str, len: usize) -> String {
    let a = Answer::of(st, &Reply::Ok, false);
    let mut v = chat_completion(&a, model);
    let text: String = "a long answer ".chars().cycle().take(len).collect();
    v["choices"][0]["message"]["content"] = text.into();
    v.to_string()
}

/// Makes the coming close an RST instead of a FIN.
#[allow(deprecated)] // SO_LINGER 0 does not block on drop; it is exactly the reset we want.
fn reset(sock: &TcpStream) {
    let _ = sock.set_linger(Some(Duration::ZERO));
}

/// Answers one request; false when the connection must close.
async fn answer(sock: &mut TcpStream, st: &MockState, req: &Recorded, route: &Route, reply: Reply) -> bool {
    let model = req.model().unwrap_or_else(|| "none".to_string());
    let mut reply = reply;
    let mut should_retry = None;
    let mut whole = false;
    let mut json_array = false;
    let reply = loop {
        reply = match reply {
            Reply::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                *inner
            }
            Reply::ShouldRetry(v, inner) => {
                should_retry = Some(v);
                *inner
            }
            Reply::Whole(inner) => {
                whole = true;
                *inner
            }
            Reply::JsonArray(inner) => {
                json_array = true;
                *inner
            }
            r => break r,
        };
    };
    // Anthropic answers carry a request id, errors included.
    let request_id = if st.style == Style::Anthropic {
        "request-id: req_mock\r\n"
    } else {
        ""
    };
    let stream = !whole
        && match route {
            Route::Chat { stream, .. } | Route::Responses { stream } | Route::Messages { stream } => *stream,
            Route::Gemini { stream, .. } => *stream,
            _ => false,
        };
    match reply {
        Reply::Delay(..) | Reply::ShouldRetry(..) | Reply::Whole(..) | Reply::JsonArray(..) => unreachable!(),
        Reply::Reset => {
            reset(sock);
            false
        }
        Reply::Raw(bytes) => {
            let _ = sock.write_all(bytes.as_bytes()).await;
            let _ = sock.shutdown().await;
            false
        }
        Reply::Status {
            status,
            retry_after,
            body,
        } => {
            let mut extra = retry_after.map(|s| format!("retry-after: {s}\r\n")).unwrap_or_default();
            extra.push_str(request_id);
            if let Some(v) = should_retry {
                extra.push_str(&format!("x-should-retry: {v}\r\n"));
            }
            let body = if body.is_empty() {
                error_body(st.style, status, &format!("mock status {status}"))
            } else {
                body
            };
            write_json(sock, status, &body, &extra).await
        }
        _ if req.method == "GET" => {
            let body = match route {
                Route::GeminiModel(m) => gemini_model(m.strip_prefix("models/").unwrap_or(m)),
                _ => models_body(st, req),
            };
            write_json(sock, 200, &body.to_string(), request_id).await
        }
        _ if *route == Route::Compact => {
            let body = req.json();
            let items = match &body["input"] {
                Value::Array(items) => items.len(),
                Value::String(_) => 1,
                _ => 0,
            };
            let v = if items == 0 || !body["model"].is_string() {
                return write_json(
                    sock,
                    400,
                    &error_body(st.style, 400, "input and model are required"),
                    request_id,
                )
                .await;
            } else {
                json!({"id": st.issue_response_id(), "object": "response.compaction", "created_at": 1,
                       "output": [{"type": "compaction", "id": "cmp_1", "encrypted_content": format!("compacted {items} items of {model}")}],
                       "usage": responses_usage()})
            };
            write_json(sock, 200, &v.to_string(), request_id).await
        }
        _ if *route == Route::Embeddings => {
            let body = req.json();
            let v = match st.style {
                Style::Gemini => {
                    let embeddings: Vec<Value> = body["requests"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(
                            |r| json!({"values": mock_vector(r["content"]["parts"][0]["text"].as_str().unwrap_or(""))}),
                        )
                        .collect();
                    json!({ "embeddings": embeddings })
                }
                _ => {
                    let texts: Vec<String> = match &body["input"] {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(a) => a.iter().map(|t| t.as_str().unwrap_or("").to_string()).collect(),
                        _ => Vec::new(),
                    };
                    let words: u64 = texts.iter().map(|t| t.split_whitespace().count() as u64).sum();
                    let data: Vec<Value> = texts
                        .iter()
                        .enumerate()
                        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": mock_vector(t)}))
                        .collect();
                    json!({"object": "list", "data": data, "model": model,
                           "usage": {"prompt_tokens": words, "total_tokens": words}})
                }
            };
            write_json(sock, 200, &v.to_string(), request_id).await
        }
        _ if *route == Route::CountTokens => {
            let count = prompt_tokens(&req.json());
            let body = match st.style {
                Style::Anthropic => json!({ "input_tokens": count }),
                _ => {
                    json!({ "totalTokens": count, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": count}] })
                }
            };
            write_json(sock, 200, &body.to_string(), request_id).await
        }
        Reply::Sse(events) => write_stream(sock, st, "text/event-stream", &events, events.len(), "done").await,
        Reply::SsePlain(events) => write_stream(sock, st, "text/plain", &events, events.len(), "done").await,
        r @ (Reply::CutShort | Reply::LargeCutShort(_)) => {
            let len = match r {
                Reply::LargeCutShort(len) => len,
                _ => 4200,
            };
            let body = long_completion(st, &model, len);
            let half = &body.as_bytes()[..body.len() / 2];
            let _ = write_head(sock, 200, "application/json", Some(body.len()), request_id).await
                && sock.write_all(half).await.is_ok()
                && sock.flush().await.is_ok();
            tokio::time::sleep(Duration::from_millis(50)).await;
            reset(sock);
            false
        }
        Reply::SlowBody(pause) => {
            let body = long_completion(st, &model, 4096);
            let (first, rest) = body.as_bytes().split_at(body.len() / 2);
            write_head(sock, 200, "application/json", Some(body.len()), request_id).await
                && sock.write_all(first).await.is_ok()
                && sock.flush().await.is_ok()
                && {
                    tokio::time::sleep(pause).await;
                    sock.write_all(rest).await.is_ok()
                }
        }
        Reply::SlowCut(pause) => {
            let body = long_completion(st, &model, 4096);
            let half = &body.as_bytes()[..body.len() / 2];
            let _ = write_head(sock, 200, "application/json", Some(body.len()), request_id).await
                && sock.write_all(half).await.is_ok()
                && sock.flush().await.is_ok();
            tokio::time::sleep(pause).await;
            reset(sock);
            false
        }
        Reply::Empty => write_json(sock, 200, "", request_id).await,
        Reply::Large(len) => write_json(sock, 200, &long_completion(st, &model, len), request_id).await,
        Reply::WebPage => {
            let page = "<!doctype html><html><head><title>Sign in</title></head><body>Welcome</body></html>";
            write_head(sock, 200, "text/html; charset=utf-8", Some(page.len()), request_id).await
                && sock.write_all(page.as_bytes()).await.is_ok()
        }
        ref r @ (Reply::Ok | Reply::ToolCalls | Reply::ToolCallsOnly | Reply::MaxTokens | Reply::Thinking)
            if !stream =>
        {
            let a = Answer::of(st, r, false);
            let v = match route {
                Route::Responses { .. } => response_object(&a, &model, "completed", response_output(&a)),
                Route::Messages { .. } => anthropic_message(&a, &model),
                Route::Gemini { .. } => gemini_response(&a, &model),
                _ => chat_completion(&a, &model),
            };
            write_json(sock, 200, &v.to_string(), request_id).await
        }
        reply => {
            let a = Answer::of(st, &reply, true);
            let (mut events, content_type) = match route {
                Route::Responses { .. } => (responses_stream(&a, &model), "text/event-stream"),
                Route::Messages { .. } => (anthropic_stream(&a, &model), "text/event-stream"),
                Route::Gemini { sse, .. } if !sse || json_array => {
                    (gemini_array(gemini_stream_chunks(&a, &model)), "application/json")
                }
                Route::Gemini { .. } => (gemini_sse(gemini_stream_chunks(&a, &model)), "text/event-stream"),
                Route::Chat { include_usage, .. } => (chat_stream(&a, &model, *include_usage), "text/event-stream"),
                // A stream fault on a route without streams: the chat stream, as before styles.
                _ => (chat_stream(&a, &model, false), "text/event-stream"),
            };
            let (limit, ending) = match reply {
                Reply::StreamCut { after } => (after, "cut"),
                Reply::StreamAbort { after } => (after, "abort"),
                Reply::StreamStall { after } => (after, "stall"),
                Reply::StreamError { after } => {
                    let after = after.min(events.len());
                    events.insert(after, stream_error_event(st.style, route, &a, &model, after));
                    (after + 1, "done")
                }
                _ => (events.len(), "done"),
            };
            write_stream(sock, st, content_type, &events, limit, ending).await
        }
    }
}

async fn write_stream(
    sock: &mut TcpStream,
    st: &MockState,
    content_type: &str,
    events: &[String],
    limit: usize,
    ending: &str,
) -> bool {
    let mut extra = "cache-control: no-cache\r\n".to_string();
    if st.style == Style::Anthropic {
        extra.push_str("request-id: req_mock\r\n");
    }
    if !write_head(sock, 200, content_type, None, &extra).await {
        return false;
    }
    let gap = *st.event_gap.lock();
    let _ = sock.flush().await;
    let first_delay = *st.first_event_delay.lock();
    tokio::time::sleep(first_delay).await;
    for ev in events.iter().take(limit) {
        if !write_chunk(sock, ev).await {
            return false;
        }
        let _ = sock.flush().await;
        tokio::time::sleep(gap).await;
    }
    match ending {
        "abort" => {
            // Let the events reach the gateway first: an RST purges unread data in the kernel.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = sock.write_all(b"40\r\ndata: {\"partial").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            reset(sock);
            false
        }
        "stall" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            false
        }
        _ => sock.write_all(b"0\r\n\r\n").await.is_ok(),
    }
}
