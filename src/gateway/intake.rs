//! The request side of `request_filter`: which endpoint, who is calling, the body, and the route.
//! Everything here happens before any upstream is contacted.

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use pingora::proxy::Session;

use super::ctx::{RequestCtx, RequestId};
use super::error::GatewayError;
use crate::app::App;
use crate::auth::AcceptedKey;
use crate::formats::request::{inspect, inspect_chat, BodyError};
use crate::formats::WireFormat;
use crate::routing::Candidate;

/// Longest pause allowed between two pieces of a request body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest a whole request body may take: a client trickling a byte a minute would otherwise
/// hold its connection and task for ever.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// What the client asked for, by method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    /// The model list, in the shape of the API it is asked through (see `model_listing`).
    Models,
    /// `GET /context/{session_id}`.
    Context(String),
    Proxy(ClientCall),
}

/// A model call in one of the four client formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCall {
    pub format: WireFormat,
    /// Gemini names the model and the streaming in the path.
    pub gemini: Option<GeminiCall>,
    pub operation: Operation,
}

/// What the call asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operation {
    /// An answer (`/chat/completions`, `/responses`, `/messages`, `:generateContent`).
    #[default]
    Generate,
    /// The prompt's size in tokens (`/messages/count_tokens`, `:countTokens`): Claude Code asks
    /// before its turns to decide when to compact. Only Anthropic and Gemini upstreams count.
    CountTokens,
    /// Vectors for texts (`/embeddings`, OpenAI's shape): OpenAI-compatible and Gemini upstreams.
    Embeddings,
    /// A conversation compacted by the model (`/responses/compact`: Codex's remote compaction):
    /// native OpenAI Responses upstreams only, as they are.
    Compact,
}

impl Operation {
    /// What the operation is, for a client told no upstream of its model can do it.
    pub fn unserved(self) -> &'static str {
        match self {
            Operation::Generate => "serves this request",
            Operation::CountTokens => "counts tokens (only Anthropic- and Gemini-style providers do)",
            Operation::Embeddings => "serves embeddings (only OpenAI-compatible and Gemini providers do)",
            Operation::Compact => "compacts a conversation (only native OpenAI Responses providers do)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeminiCall {
    pub model: String,
    pub stream: bool,
    /// `?alt=sse`: SSE; without it a stream is a JSON array.
    pub sse: bool,
}

fn call(format: WireFormat, operation: Operation) -> Endpoint {
    Endpoint::Proxy(ClientCall {
        format,
        gemini: None,
        operation,
    })
}

/// `/{v1beta,v1}/models/{model}:{generateContent,streamGenerateContent,countTokens}`.
fn gemini_call(path: &str, query: Option<&str>) -> Option<(GeminiCall, Operation)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, method) = rest.rsplit_once(':')?;
    let (stream, operation) = match method {
        "generateContent" => (false, Operation::Generate),
        "streamGenerateContent" => (true, Operation::Generate),
        "countTokens" => (false, Operation::CountTokens),
        _ => return None,
    };
    // `provider/model` arrives as two segments or with its slash escaped (`openai%2Fgpt-4o`).
    let model = percent_encoding::percent_decode_str(model).decode_utf8().ok()?;
    if model.is_empty() || model.len() > crate::formats::request::MAX_MODEL_BYTES {
        return None;
    }
    let sse = query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
    let call = GeminiCall {
        model: model.to_string(),
        stream,
        sse,
    };
    Some((call, operation))
}

/// The API a path belongs to, by its prefix, for errors about the path itself; `None` (OpenAI's
/// shape) for paths of no API.
pub fn format_of_path(path: &str) -> Option<WireFormat> {
    // The same prefixes `classify` takes, with and without `/v1`.
    let unversioned = path.strip_prefix("/v1").filter(|p| p.starts_with('/')).unwrap_or(path);
    // `/v1/models/{model}:{method}` is Gemini's only with Gemini's methods: an OpenAI model id
    // may hold `:` too (`ft:gpt-4o:org:id`).
    let gemini_method = |p: &str| {
        p.rsplit_once(':').is_some_and(|(_, m)| {
            [
                "generateContent",
                "streamGenerateContent",
                "countTokens",
                "embedContent",
                "batchEmbedContents",
            ]
            .contains(&m)
        })
    };
    if unversioned.starts_with("/messages") {
        Some(WireFormat::Anthropic)
    } else if path.starts_with("/v1beta/") || (path.starts_with("/v1/models/") && gemini_method(path)) {
        Some(WireFormat::Gemini)
    } else if unversioned.starts_with("/responses") {
        Some(WireFormat::OpenAiResponses)
    } else {
        None
    }
}

pub fn classify(method: &Method, uri: &http::Uri) -> Result<Endpoint, GatewayError> {
    let path = uri.path();
    let path_only = path.trim_end_matches('/');
    let (endpoint, allowed) = match path_only {
        "/health" => (Endpoint::Health, Method::GET),
        "/models" | "/v1/models" | "/v1beta/models" => (Endpoint::Models, Method::GET),
        p if p.starts_with("/context/") && p.len() > "/context/".len() => {
            // As the client sent it in `X-Session-Id`: percent-encoded in a path.
            let id = percent_encoding::percent_decode_str(&p["/context/".len()..]).decode_utf8_lossy();
            (
                Endpoint::Context(super::session::session_key(&id).to_string()),
                Method::GET,
            )
        }
        "/v1/chat/completions" | "/chat/completions" => {
            (call(WireFormat::OpenAiChat, Operation::Generate), Method::POST)
        }
        "/v1/responses" | "/responses" => (call(WireFormat::OpenAiResponses, Operation::Generate), Method::POST),
        "/v1/messages" | "/messages" => (call(WireFormat::Anthropic, Operation::Generate), Method::POST),
        "/v1/responses/compact" | "/responses/compact" => {
            (call(WireFormat::OpenAiResponses, Operation::Compact), Method::POST)
        }
        "/v1/embeddings" | "/embeddings" => (call(WireFormat::OpenAiChat, Operation::Embeddings), Method::POST),
        "/v1/messages/count_tokens" | "/messages/count_tokens" => {
            (call(WireFormat::Anthropic, Operation::CountTokens), Method::POST)
        }
        _ => match gemini_call(path_only, uri.query()) {
            Some((g, operation)) => (
                Endpoint::Proxy(ClientCall {
                    format: WireFormat::Gemini,
                    gemini: Some(g),
                    operation,
                }),
                Method::POST,
            ),
            None => {
                return Err(GatewayError::NotFound {
                    path: path.chars().take(200).collect(),
                })
            }
        },
    };
    if *method != allowed && !(allowed == Method::GET && *method == Method::HEAD) {
        return Err(GatewayError::MethodNotAllowed {
            method: method.to_string(),
            path: path_only.to_string(),
            allow: if allowed == Method::GET { "GET, HEAD" } else { "POST" },
        });
    }
    Ok(endpoint)
}

/// The client's request id when it is sane, else a fresh one.
pub fn request_id(session: &Session) -> RequestId {
    session
        .req_header()
        .headers
        .get(super::headers::names::X_REQUEST_ID)
        .and_then(RequestId::given)
        .unwrap_or_else(RequestId::fresh)
}

/// Checks the client key against the snapshot (its rate limit is taken in `session::admit`,
/// together with the session's binding: one round trip to shared state).
pub fn authenticate(session: &Session, app: &App, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
    let snapshot = ctx.snapshot.get_or_insert_with(|| app.snapshot()).clone();
    let auth = session.get_header(http::header::AUTHORIZATION).map(|v| v.as_bytes());
    // Anthropic clients send `x-api-key`, Gemini clients `x-goog-api-key` or `?key=`.
    // Percent-decoded: a key with `+`, `/` or `=` is sent encoded in a URL.
    let query_key: Option<Vec<u8>> = session
        .req_header()
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("key=")))
        .map(|k| percent_encoding::percent_decode_str(k).collect());
    // An empty header hides no other way of sending the key.
    let header = |name: &str| session.get_header(name).map(|v| v.as_bytes()).filter(|v| !v.is_empty());
    let key = header("x-api-key")
        .or_else(|| header("x-goog-api-key"))
        .or(query_key.as_deref());
    let client = snapshot
        .clients
        .authenticate_remembering(auth, key, &mut ctx.accepted_key)?;
    ctx.client = Some(client);
    Ok(())
}

/// What a keep-alive connection carries to its next request: the key it had accepted.
pub fn connection_memory(ctx: &RequestCtx) -> Option<Box<dyn Any + Send + Sync>> {
    let key = ctx.accepted_key.clone()?;
    Some(Box::new(key))
}

/// Takes back what the connection's previous request left (see `connection_memory`).
pub fn recall_connection(ctx: &mut RequestCtx, memory: Box<dyn Any + Send + Sync>) {
    if let Ok(key) = memory.downcast::<Arc<AcceptedKey>>() {
        ctx.accepted_key = Some(*key);
    }
}

/// The API a model listing is asked through, whose shape its answer and its errors take:
/// Gemini's for `/v1beta/models` (google-genai's `models.list`), Anthropic's when the request
/// carries `anthropic-version` (Claude Code's model discovery), else OpenAI's.
pub fn listing_format(session: &Session) -> WireFormat {
    if session.req_header().uri.path().starts_with("/v1beta/") {
        WireFormat::Gemini
    } else if session.get_header("anthropic-version").is_some() {
        WireFormat::Anthropic
    } else {
        WireFormat::OpenAiChat
    }
}

/// The `/models` body for the authenticated client, in `format` (see [listing_format]):
/// everything, or for a key limited to some providers, the models it can route to (the snapshot
/// it was authenticated against decides).
pub fn model_listing(app: &App, ctx: &mut RequestCtx, format: WireFormat) -> Bytes {
    let openai = match ctx.client.as_ref().and_then(|c| c.allowed_providers.clone()) {
        None => app.catalog.listing(),
        Some(allowed) => {
            let snapshot = ctx.snapshot.get_or_insert_with(|| app.snapshot());
            snapshot.routes.listing_for(&allowed, &app.catalog, &app.health)
        }
    };
    match format {
        WireFormat::Gemini | WireFormat::Anthropic => crate::upstream::catalog::listing_as(&openai, format),
        _ => openai,
    }
}

/// Whether the client asked to be told to send its body (`Expect: 100-continue`).
pub fn expects_continue(session: &Session) -> bool {
    session
        .get_header(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads the whole body (it is needed to route on `model`, and is replayed on failover).
pub async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let declared = session
        .get_header(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    if let Some(coding) = session
        .get_header(http::header::CONTENT_ENCODING)
        .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        let shown: String = String::from_utf8_lossy(coding.as_bytes()).chars().take(40).collect();
        return Err(GatewayError::CompressedBody(shown));
    }
    // A client that asked whether to send its body (curl does for large ones) is told to.
    if expects_continue(session) {
        session
            .downstream_session
            .write_continue_response()
            .await
            .map_err(|e| GatewayError::ClientRead(e.etype().as_str().to_string()))?;
    }
    // Pingora replays the buffered body to every upstream attempt (see vendor/pingora-core).
    session.enable_retry_buffering();
    // A client that stops sending mid-body must not hold the request open forever.
    session.set_read_timeout(Some(BODY_READ_TIMEOUT));
    // The pieces are only counted: Pingora's retry buffer keeps them (small ones copied together),
    // and joins a body of several once; routing reads that same copy.
    let mut len = 0usize;
    let deadline = tokio::time::Instant::now() + BODY_DEADLINE;
    loop {
        let read = tokio::time::timeout_at(deadline, session.read_request_body()).await;
        match read.map_err(|_| GatewayError::BodyTimeout(BODY_DEADLINE))? {
            Ok(Some(chunk)) => {
                len += chunk.len();
                if len > limit {
                    return Err(GatewayError::BodyTooLarge { limit });
                }
            }
            Ok(None) => break,
            // A client silent for the whole read timeout is a timeout too.
            Err(e) if matches!(e.etype(), pingora::ErrorType::ReadTimedout) => {
                return Err(GatewayError::BodyTimeout(BODY_READ_TIMEOUT))
            }
            Err(e) => {
                let what = e.etype().as_str().to_string();
                return Err(match what.as_str() {
                    "InvalidChunk" | "InvalidTrailerEnd" => GatewayError::MalformedBody(what),
                    _ => GatewayError::ClientRead(what),
                });
            }
        }
    }
    // The buffer holds the whole body: its capacity is the largest `max_body_bytes` allowed
    // (`MAX_BODY_LIMIT`), and `limit` was checked above. An empty body leaves it empty.
    let body = session.get_retry_buffer().unwrap_or_default();
    debug_assert_eq!(body.len(), len, "the retry buffer holds the whole body");
    Ok(body)
}

/// Parses the body and resolves its model to a plan.
pub fn route(
    session: &Session,
    app: &App,
    ctx: &mut RequestCtx,
    call: &ClientCall,
    body: Bytes,
) -> Result<(), GatewayError> {
    // Kept before it is judged: a refused body is the one its log line may show.
    ctx.body = body.clone();
    match &call.gemini {
        Some(g) => {
            require_object(&body)?;
            ctx.request_format = call.format;
            ctx.model = g.model.clone();
            ctx.stream = g.stream;
            ctx.gemini_sse = g.sse;
        }
        None => {
            // `/v1/chat/completions` also takes Claude-style and Gemini-style bodies; the answer stays OpenAI.
            let (inspected, format) = match (call.format, call.operation) {
                (WireFormat::OpenAiChat, Operation::Generate) => inspect_chat(&body)?,
                (f, _) => (inspect(&body)?, f),
            };
            ctx.request_format = format;
            let wants_sse = session
                .get_header(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/event-stream"));
            ctx.model = inspected.model.clone();
            // A count is one number, never a stream. `Accept: text/event-stream` asks for one only
            // when the body does not say (`"stream": false` in it wins).
            ctx.stream = inspected.stream.unwrap_or(wants_sse) && call.operation == Operation::Generate;
            ctx.include_usage = inspected.include_usage;
            ctx.inspected = Some(inspected);
        }
    }
    let snapshot: Arc<_> = ctx.snapshot.get_or_insert_with(|| app.snapshot()).clone();
    let mut plan = snapshot.routes.plan(&ctx.model, &app.catalog, &app.health)?;
    if let Some(allowed) = ctx.client.as_ref().and_then(|c| c.allowed_providers.as_ref()) {
        plan = plan.restricted_to(allowed)?;
    }
    if call.operation != Operation::Generate {
        // Only upstreams whose API has the endpoint: every API answers, not every API counts
        // tokens or embeds. None: the model cannot do it here (a 404, never a made-up answer).
        let (operation, format) = (call.operation, ctx.request_format);
        let serves =
            |c: &Candidate| super::upstream_call::endpoint(operation, &c.provider, format, &c.model, false).is_some();
        plan = plan.filtered(serves).ok_or_else(|| GatewayError::Unserved {
            model: ctx.model.clone(),
            operation,
        })?;
    }
    if call.operation == Operation::CountTokens {
        plan = plan.with_detached_health();
    }
    // Claude Code names its sessions itself: a natural stickiness key.
    ctx.session_id = ["x-session-id", "x-claude-code-session-id"]
        .iter()
        .find_map(|h| {
            session
                .get_header(*h)
                .and_then(|v| v.to_str().ok())
                // The `response:` keys hold the pins of Responses answers (`session::response_key`):
                // a client naming its session so would move another client's continuations.
                .filter(|s| !s.is_empty() && !super::session::is_response_key(s))
        })
        .map(|s| super::session::session_key(s).to_string());
    if let Some(inspected) = ctx.inspected.as_ref().filter(|_| {
        ctx.request_format == WireFormat::OpenAiResponses
            && matches!(call.operation, Operation::Generate | Operation::Compact)
    }) {
        ctx.response_pin = inspected
            .previous_response_id
            .as_deref()
            .map(super::session::response_key);
    }
    ctx.plan = Some(plan);
    Ok(())
}

/// A Gemini body has no model to read, but must still be a JSON object.
fn require_object(body: &[u8]) -> Result<(), BodyError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(BodyError::NotAnObject),
        Err(e) => Err(BodyError::InvalidJson(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_about_a_path_are_said_in_the_format_it_belongs_to() {
        for (path, want) in [
            ("/messages", Some(WireFormat::Anthropic)),
            ("/v1/messages/count_tokens", Some(WireFormat::Anthropic)),
            ("/responses", Some(WireFormat::OpenAiResponses)),
            ("/v1beta/models/x:countTokens", Some(WireFormat::Gemini)),
            ("/v1/models/gem:streamGenerateContent", Some(WireFormat::Gemini)),
            // An OpenAI fine-tuned model's id holds `:`; its retrieval is OpenAI's.
            ("/v1/models/ft:gpt-4o:org:id", None),
            ("/v1/chat/completions", None),
            ("/v1messages", None),
        ] {
            assert_eq!(format_of_path(path), want, "{path}");
        }
    }

    #[test]
    fn classifies_paths() {
        let c = |m: &Method, p: &str| classify(m, &p.parse().unwrap());
        assert_eq!(c(&Method::GET, "/health").unwrap(), Endpoint::Health);
        assert_eq!(c(&Method::GET, "/v1/models").unwrap(), Endpoint::Models);
        assert_eq!(
            c(&Method::POST, "/v1/chat/completions").unwrap(),
            call(WireFormat::OpenAiChat, Operation::Generate)
        );
        assert_eq!(
            c(&Method::POST, "/v1/responses/").unwrap(),
            call(WireFormat::OpenAiResponses, Operation::Generate)
        );
        assert_eq!(
            c(&Method::POST, "/v1/messages?beta=true").unwrap(),
            call(WireFormat::Anthropic, Operation::Generate)
        );
        let Endpoint::Proxy(g) = c(
            &Method::POST,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            g.gemini,
            Some(GeminiCall {
                model: "gemini-2.0-flash".into(),
                stream: true,
                sse: true
            })
        );
        let Endpoint::Proxy(g) = c(&Method::POST, "/v1/models/m:generateContent").unwrap() else {
            panic!()
        };
        assert_eq!(
            g.gemini,
            Some(GeminiCall {
                model: "m".into(),
                stream: false,
                sse: false
            })
        );
        // `provider/model`, as two segments or escaped.
        for path in [
            "/v1beta/models/openai/gpt-4o:generateContent",
            "/v1beta/models/openai%2Fgpt-4o:generateContent",
        ] {
            let Endpoint::Proxy(g) = c(&Method::POST, path).unwrap() else {
                panic!("{path}")
            };
            assert_eq!(g.gemini.unwrap().model, "openai/gpt-4o", "{path}");
        }
        assert_eq!(
            c(&Method::POST, "/v1beta/models/%FF:generateContent")
                .unwrap_err()
                .status(),
            404
        );
        let Endpoint::Proxy(g) = c(&Method::POST, "/v1beta/models/m:countTokens").unwrap() else {
            panic!()
        };
        assert_eq!((g.format, g.operation), (WireFormat::Gemini, Operation::CountTokens));
        assert!(!g.gemini.unwrap().stream);
        let Endpoint::Proxy(a) = c(&Method::POST, "/v1/messages/count_tokens?beta=true").unwrap() else {
            panic!()
        };
        assert_eq!((a.format, a.operation), (WireFormat::Anthropic, Operation::CountTokens));
        assert_eq!(
            c(&Method::POST, "/v1beta/models/m:embedContent").unwrap_err().status(),
            404
        );
        assert_eq!(c(&Method::GET, "/v1/messages/count_tokens").unwrap_err().status(), 405);
        let Endpoint::Proxy(e) = c(&Method::POST, "/v1/embeddings").unwrap() else {
            panic!()
        };
        assert_eq!((e.format, e.operation), (WireFormat::OpenAiChat, Operation::Embeddings));
        assert_eq!(c(&Method::GET, "/v1/chat/completions").unwrap_err().status(), 405);
        assert_eq!(c(&Method::GET, "/nope").unwrap_err().status(), 404);
        assert_eq!(
            c(&Method::GET, "/context/abc").unwrap(),
            Endpoint::Context("abc".into())
        );
        assert_eq!(c(&Method::GET, "/context/").unwrap_err().status(), 404);
        assert_eq!(c(&Method::POST, "/context/abc").unwrap_err().status(), 405);
    }
}
