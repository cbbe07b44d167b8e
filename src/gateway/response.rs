//! The response on its way to the client: the headers every answer carries, and the body passed
//! through, observed for usage, or translated into the client's format (streams through a stateful
//! converter that also turns a cut stream into an in-format error event).

use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use super::ctx::{candidate_of, Attempt, BodyBuf, RequestCtx, RequestId, ResponseMode};
use super::failover::StreamBreak;
use super::headers::names;
use super::intake::Operation;
use crate::app::App;
use crate::formats::stream::events::KEEPALIVE;
use crate::formats::{
    answer_as_stream, convert_error, convert_response_named, count_tokens, embeddings, error_map,
    estimate_input_tokens, extract_usage, extract_usage_at_end, responses_api, ConvertError, ErrorKind,
    StreamConverter, StreamOptions, ToolNames, Usage, WireFormat,
};
use crate::routing::RoutePlan;

/// Most of a same-format answer kept to read its usage; beyond it usage is not counted.
const OBSERVE_LIMIT: usize = 8 * 1024 * 1024;
/// Most of a whole answer buffered for translation.
const TRANSLATE_LIMIT: usize = crate::formats::stream::WHOLE_ANSWER_LIMIT;

/// Whether the answer's `content-type` is of this media type (compared without regard to case,
/// as media types are).
fn content_type_is(resp: &ResponseHeader, media_type: &str) -> bool {
    resp.headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .get(..media_type.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(media_type.as_bytes()))
    })
}

/// An SSE answer.
pub(super) fn is_event_stream(resp: &ResponseHeader) -> bool {
    content_type_is(resp, "text/event-stream")
}

/// A JSON answer.
pub(super) fn is_json(resp: &ResponseHeader) -> bool {
    content_type_is(resp, "application/json")
}

/// An answer read as SSE: labelled so, or a successful answer to a stream request whose label says
/// neither SSE nor JSON (`text/plain`, none), as some OpenAI-compatible servers send their SSE.
pub(super) fn reads_as_sse(ctx: &RequestCtx, resp: &ResponseHeader) -> bool {
    is_event_stream(resp) || (ctx.stream && resp.status.is_success() && !is_json(resp))
}

/// A stream asked of a Gemini upstream: not held to its end, nor replayed as a whole answer; the
/// stream converter reads it as it comes, as SSE, a JSON array (`application/json`) or one whole
/// object.
pub(super) fn gemini_stream(ctx: &RequestCtx, upstream: WireFormat) -> bool {
    ctx.stream && upstream == WireFormat::Gemini
}

/// What a success that answers nothing is: a web page (what a website, a captive portal or the
/// login page of a proxy in between answers, never an LLM API), an empty body (every call the
/// gateway proxies asks for content), or a compressed one the gateway cannot read. A redirect is none either: no LLM API redirects a call, and
/// relaying one would point the client at the provider (or a portal) itself.
pub(super) fn no_answer(resp: &ResponseHeader) -> Option<&'static str> {
    if resp.status.is_redirection() {
        Some("a redirect (3xx)")
    } else if !resp.status.is_success() {
        None
    } else if content_type_is(resp, "text/html") {
        Some("a web page (text/html)")
    } else if resp
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        // The gateway asks for `identity`: it reads every answer (usage, errors, translation).
        Some("a compressed body (content-encoding) though none was asked for")
    } else if resp.status == http::StatusCode::NO_CONTENT
        || resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|n| n.as_bytes() == b"0")
    {
        Some("an empty body")
    } else {
        None
    }
}

/// Whether `on_header` will send this success on as a stream (SSE, a Gemini stream, or a whole
/// answer to a stream request replayed as one).
pub fn streamed(ctx: &RequestCtx, upstream: WireFormat, resp: &ResponseHeader) -> bool {
    resp.status.is_success()
        && (reads_as_sse(ctx, resp) || gemini_stream(ctx, upstream) || (ctx.stream && is_json(resp)))
}

/// Whether `on_header` will translate this answer whole (`ResponseMode::Translate`): a success
/// that is no stream, to a client of another format that asked for none (or got no JSON).
pub fn translated_whole(ctx: &RequestCtx, upstream: WireFormat, resp: &ResponseHeader) -> bool {
    resp.status.is_success()
        && upstream != ctx.client_format()
        && !reads_as_sse(ctx, resp)
        && !gemini_stream(ctx, upstream)
        && !(ctx.stream && is_json(resp))
}

/// Adds `x-request-id` and `x-apiproxy-provider`, and decides how the body travels.
pub fn on_header(app: &App, ctx: &mut RequestCtx, resp: &mut ResponseHeader) -> pingora::Result<()> {
    // An upstream's `103 Early Hints` or unasked-for `100` is no answer: the real one follows.
    if resp.status.is_informational() {
        return Ok(());
    }
    let provider = ctx.candidate().map(|c| c.provider.id.clone());
    let value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| Error::explain(ErrorType::InternalError, "invalid header value"))
    };
    let request_id = ctx.request_id.header();
    let served_by = match &provider {
        Some(id) => Some(value(id)?),
        None => None,
    };
    // The upstream's head as the client gets it.
    super::headers::edit_response(resp, |head| {
        super::headers::drop_upstream_only(&mut head.headers);
        head.headers.insert(names::X_REQUEST_ID, request_id);
        if let Some(id) = served_by {
            head.headers.insert(names::X_APIPROXY_PROVIDER, id);
        }
    });
    super::cors::expose(resp, ctx)?;
    ctx.served_by = provider;
    let Some(attempt) = ctx.current.as_ref() else {
        ctx.status = Some(resp.status.as_u16());
        return Ok(());
    };
    let (upstream, client) = (attempt.format, ctx.client_format());
    let status = resp.status.as_u16();
    let is_sse = reads_as_sse(ctx, resp);
    // Read as a stream whatever its framing: SSE, a JSON array, or one whole object.
    let gemini_stream = gemini_stream(ctx, upstream);
    // A whole JSON answer to a stream request: the upstream ignored `stream: true`.
    let restream = ctx.stream && !is_sse && !gemini_stream && is_json(resp);
    ctx.response = if !resp.status.is_success() {
        // The provider's own status, whatever the client's format maps it to (formats.md §5.2).
        // (Already there when the failover logic re-labelled an error object sent under a 200.)
        if !resp.headers.contains_key("x-gateway-upstream-status") {
            resp.insert_header("x-gateway-upstream-status", status)?;
        }
        if upstream == client && is_json(resp) {
            // Held to its end (error bodies are small) for the keys an upstream may echo; its
            // length may change with them.
            set_chunked(resp)?;
            ResponseMode::Error {
                status,
                body: BodyBuf::default(),
                as_sent: true,
            }
        } else {
            // The provider's error, re-rendered in the client's format (e.g. 529 -> 503 for OpenAI);
            // in its own format too when it is no JSON (a proxy's HTML 413, a wrong `base_url`'s
            // 404 page): the client's SDK reads errors as JSON.
            let (status, kind) = ctx
                .answer_error
                .unwrap_or_else(|| (status, ErrorKind::from_status(status)));
            let mapped = error_map::client_status(client, status, kind);
            resp.set_status(mapped)?;
            set_json(resp)?;
            ResponseMode::Error {
                status,
                body: BodyBuf::default(),
                as_sent: false,
            }
        }
    } else if is_sse || restream || gemini_stream {
        let opts = StreamOptions {
            model: ctx.model.clone(),
            include_usage: ctx.include_usage,
            strip_usage_chunk: upstream == WireFormat::OpenAiChat
                && !ctx.include_usage
                && (attempt.injected_usage || upstream != ctx.request_format),
            input_tokens_estimate: estimate_input_tokens(&ctx.body),
            gemini_json_array: client == WireFormat::Gemini && !ctx.gemini_sse,
            tool_names: attempt.tool_names.clone(),
            several_choices: ctx.inspected.as_ref().is_some_and(|i| i.several_choices),
            json_mode: attempt.json_mode,
            ..StreamOptions::default()
        };
        // Chunked, so each event is flushed as it arrives; and no buffering by a proxy in front
        // of the gateway (nginx honours this header).
        set_chunked(resp)?;
        resp.insert_header("x-accel-buffering", HeaderValue::from_static("no"))?;
        // A translated stream, a whole answer the client gets as the stream it asked for, a
        // stream under another label, or SSE reframed as the JSON array a Gemini client asked for.
        if !is_event_stream(resp) || upstream != client || opts.gemini_json_array {
            let content_type = if opts.gemini_json_array {
                "application/json"
            } else {
                "text/event-stream"
            };
            resp.insert_header("content-type", HeaderValue::from_static(content_type))?;
            resp.insert_header("cache-control", HeaderValue::from_static("no-cache"))?;
        }
        if !ctx.streaming_response {
            ctx.streaming_response = true;
            app.metrics.open_streams.inc();
        }
        if restream {
            ResponseMode::Restream(Box::new(opts), BodyBuf::default())
        } else {
            ResponseMode::Stream(Box::new(StreamConverter::new(upstream, client, opts)))
        }
    } else if upstream == client {
        ResponseMode::Observe(BodyBuf::default())
    } else {
        set_json(resp)?;
        ResponseMode::Translate(BodyBuf::default())
    };
    ctx.status = Some(resp.status.as_u16());
    Ok(())
}

/// A body the gateway writes itself: chunked JSON, uncompressed (an upstream's compressed error
/// is unreadable to it, and replaced).
fn set_json(resp: &mut ResponseHeader) -> pingora::Result<()> {
    set_chunked(resp)?;
    resp.remove_header(&http::header::CONTENT_ENCODING);
    resp.insert_header("content-type", HeaderValue::from_static("application/json"))?;
    Ok(())
}

/// Chunked framing: without a length and without this, an HTTP/1 client would get a close-delimited
/// body and lose keep-alive (HTTP/2 framing drops the header itself).
fn set_chunked(resp: &mut ResponseHeader) -> pingora::Result<()> {
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.insert_header("transfer-encoding", HeaderValue::from_static("chunked"))?;
    Ok(())
}

/// The answer as the client's HTTP version can read it. The gateway speaks HTTP/1.1 whatever the
/// upstream's status line said (an HTTP/1.0 upstream's answer would otherwise reach the client as
/// `HTTP/1.0` with chunked framing, which HTTP/1.1 clients refuse). An HTTP/1.0 client knows no
/// chunked framing: its answer without a length ends when the connection closes.
pub fn fit_framing(session: &mut Session, resp: &mut ResponseHeader) {
    if resp.status.is_informational() || session.is_http2() {
        return;
    }
    resp.set_version(http::Version::HTTP_11);
    let http10_client = session.req_header().version == http::Version::HTTP_10;
    if http10_client && resp.headers.contains_key(http::header::TRANSFER_ENCODING) {
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        resp.remove_header(&http::header::CONTENT_LENGTH);
        session.set_keepalive(None);
    }
}

/// Passes, observes or translates one piece of the body.
pub fn on_body(ctx: &mut RequestCtx, body: &mut Option<Bytes>, end_of_stream: bool) {
    let Some(upstream) = ctx.current.as_ref().map(|a| a.format) else {
        return;
    };
    if end_of_stream && ctx.upstream_done.is_none() {
        // The upstream's part is over; what follows is the gateway's own time (overhead metric).
        ctx.upstream_done = Some(std::time::Instant::now());
    }
    let client = ctx.client_format();
    let mut cut = false;
    let mut error_kind = None;
    match &mut ctx.response {
        ResponseMode::Pass => {}
        ResponseMode::Observe(buf) => {
            buf.keep(body, OBSERVE_LIMIT);
            if end_of_stream {
                ctx.usage = match buf.complete() {
                    true => extract_usage(upstream, buf.as_slice()),
                    // Embeddings of many texts, say: the usage is read where it ends.
                    false => extract_usage_at_end(upstream, buf.tail()),
                };
            }
        }
        ResponseMode::Translate(buf) => {
            if ctx.translated_answer.is_none() {
                buf.keep(body, TRANSLATE_LIMIT);
            }
            *body = None;
            if end_of_stream {
                let out = if let Some((out, usage)) = ctx.translated_answer.take() {
                    // Translated while it was held (`failover::judge_held`).
                    ctx.usage = usage;
                    out
                } else if buf.complete() {
                    let names = ctx.current.as_ref().and_then(|a| a.tool_names.as_deref());
                    let (op, asked) = (ctx.operation, &ctx.body);
                    match translate_answer(op, asked, upstream, client, buf.as_slice(), &ctx.model, names) {
                        Ok((out, usage)) => {
                            ctx.usage = usage;
                            out
                        }
                        Err(e) => error_body(
                            client,
                            &format!("The upstream answer could not be translated: {e}"),
                            &ctx.request_id,
                        ),
                    }
                } else {
                    error_body(client, "The upstream answer is too large to translate", &ctx.request_id)
                };
                *body = Some(out);
            }
        }
        ResponseMode::Error {
            status,
            body: buf,
            as_sent,
        } => {
            buf.keep(body, OBSERVE_LIMIT);
            *body = None;
            if end_of_stream {
                let rendered = error_for_client(upstream, client, *status, buf, *as_sent, &ctx.request_id);
                *body = Some(without_keys(&ctx.current, &ctx.plan, rendered));
            }
        }
        ResponseMode::Restream(opts, buf) => {
            buf.keep(body, TRANSLATE_LIMIT);
            *body = None;
            if end_of_stream {
                let answer = match buf.complete() {
                    true => Ok(buf.as_slice()),
                    false => Err("The upstream answer is too large to translate"),
                };
                let replayed = answer_as_stream(upstream, client, answer, opts);
                if replayed.content {
                    // The client's first token leaves now, with the rest of the answer.
                    ctx.first_token = Some(ctx.started.elapsed());
                }
                ctx.usage = replayed.usage;
                *body = Some(Bytes::from(replayed.out));
            }
        }
        ResponseMode::Stream(conv) => {
            // Before the upstream's end, this is the gateway's time inside the wait on it.
            let working_since = (!end_of_stream).then(std::time::Instant::now);
            // A passed-through piece leaves about as large as it came: room for it at once, not
            // grown by doubling (a few reallocations and copies per piece).
            let mut out = Vec::with_capacity(body.as_ref().map_or(0, |b| b.len()) + 256);
            if let Some(b) = body.take() {
                if conv.push(&b, &mut out).is_err() {
                    conv.abort("The upstream sent an event larger than the gateway accepts", &mut out);
                    cut = true;
                }
            }
            if end_of_stream {
                // A complete stream gets its proper ending; one without its terminator an error
                // event. Judged after `finish`, which hands over a last event that came whole
                // without its closing blank line (a Gemini finish chunk, `response.completed`).
                conv.finish(&mut out);
                // An error event mid-answer breaks it too, though an OpenAI-style upstream may
                // still close with `[DONE]` (vLLM, OpenRouter): the answer is not whole.
                error_kind = conv.error_kind();
                if (!conv.completed() || error_kind.is_some()) && !ctx.opened_with_error {
                    cut = true;
                }
                ctx.usage = conv.usage();
            }
            // After `finish` too: a short answer's only content may be that last event.
            if ctx.first_token.is_none() && conv.content_seen() {
                ctx.first_token = Some(ctx.started.elapsed());
            }
            if !out.is_empty() {
                let out = Bytes::from(out);
                // An error event may echo the key, as an error body may (looked for only once
                // the upstream has sent one).
                *body = Some(match conv.errored() {
                    true => without_keys(&ctx.current, &ctx.plan, out),
                    false => out,
                });
            }
            if let Some(since) = working_since {
                ctx.stream_work += since.elapsed();
            }
        }
    }
    if cut {
        let how = error_kind.map_or(StreamBreak::Cut, StreamBreak::Error);
        super::failover::on_stream_cut(ctx, how);
    }
    if end_of_stream {
        super::failover::confirm_probe(ctx);
        // What follows is writing the last of the answer to the client: its time, not ours. (What
        // came before, since the upstream finished, was the gateway's: judging, usage, filters.)
        ctx.answer_handed = Some(std::time::Instant::now());
    }
}

/// A whole answer of the upstream's format in the client's: a model's answer, or a token count.
/// `request` is what the client asked (embeddings come in the encoding it chose), `names` the tool
/// names renamed for the upstream.
pub(super) fn translate_answer(
    operation: Operation,
    request: &[u8],
    upstream: WireFormat,
    client: WireFormat,
    body: &[u8],
    model: &str,
    names: Option<&ToolNames>,
) -> Result<(Bytes, Option<Usage>), ConvertError> {
    match operation {
        Operation::Generate => convert_response_named(upstream, client, body, model, names),
        Operation::CountTokens => count_tokens::answer(upstream, client, body).map(|out| (out, None)),
        Operation::Embeddings => embeddings::from_gemini(body, request, model),
        // Only ever passed through (`upstream_call::endpoint`).
        Operation::Compact => Err(ConvertError::Unsupported(format!(
            "a compaction is not translated ({} to {})",
            upstream.label(),
            client.label()
        ))),
    }
}

/// How long a streamed answer may leave the client without bytes (formats.md §4.8); other answers
/// get no keep-alives.
pub fn keepalive_interval(app: &App, ctx: &RequestCtx) -> Option<Duration> {
    let every = app.settings.stream_keepalive_ms;
    (every > 0 && matches!(ctx.response, ResponseMode::Stream(_) | ResponseMode::Restream(..)))
        .then(|| Duration::from_millis(every))
}

/// A keep-alive in the client's format, when its stream stands between two events.
pub fn keepalive(ctx: &mut RequestCtx) -> Option<Bytes> {
    let client = ctx.client_format();
    match &mut ctx.response {
        ResponseMode::Stream(conv) => {
            let mut out = Vec::new();
            conv.keepalive(&mut out);
            (!out.is_empty()).then(|| Bytes::from(out))
        }
        // Nothing of the stream is out yet; Gemini clients read every line as an event.
        ResponseMode::Restream(..) if client != WireFormat::Gemini => Some(Bytes::from_static(KEEPALIVE)),
        _ => None,
    }
}

fn error_body(client: WireFormat, message: &str, request_id: &RequestId) -> Bytes {
    crate::formats::error_response(client, 502, ErrorKind::Upstream, message, Some(request_id.as_str())).1
}

/// The upstream broke mid-stream: the in-format error event that ends the client's stream, once.
/// Whether the stream going to the client has had its end: the converter read the upstream's
/// terminator (`[DONE]`, `message_stop`…), so an upstream that keeps its body open after it broke
/// nothing the client gets.
pub fn stream_ended(ctx: &RequestCtx) -> bool {
    matches!(&ctx.response, ResponseMode::Stream(conv) if conv.completed())
}

/// How long an upstream that sent its stream's terminator may take to end its body before the
/// client's answer is ended without it (the connection is then dropped, not reused). A well-behaved
/// upstream's end comes with the terminator or just after; one that keeps the body open would hold
/// the client until the read timeout (`idle_ms`), and SDKs that read to the body's end (Anthropic's)
/// would wait with it.
const STREAM_END_GRACE: Duration = Duration::from_millis(250);

/// `Some(grace)` once the upstream's stream has had its last event, or the client's stream its
/// ending (a stream cut for an event too large: the upstream's further tokens would be read and
/// dropped, and the client held open, until the upstream ended).
pub fn end_grace(ctx: &RequestCtx) -> Option<Duration> {
    matches!(&ctx.response, ResponseMode::Stream(conv) if conv.terminated() || conv.closed())
        .then_some(STREAM_END_GRACE)
}

/// The upstream's id of a Responses answer passed through (whole or streamed), which a later
/// request may continue from; `None` for every other answer.
pub fn answer_id(ctx: &RequestCtx) -> Option<String> {
    let upstream = ctx.current.as_ref()?.format;
    if upstream != WireFormat::OpenAiResponses || ctx.client_format() != upstream {
        return None;
    }
    match &ctx.response {
        ResponseMode::Stream(conv) => conv.response_id().map(str::to_string),
        ResponseMode::Observe(buf) if buf.complete() => responses_api::request::answer_id(buf.as_slice()),
        _ => None,
    }
}

/// An upstream's error body as the client gets it: as it came when the client speaks the
/// upstream's format, else re-rendered in the client's.
fn error_for_client(
    upstream: WireFormat,
    client: WireFormat,
    status: u16,
    buf: &mut BodyBuf,
    as_sent: bool,
    request_id: &RequestId,
) -> Bytes {
    // One too large to hold whole (a 422 echoing a large request) is said in the gateway's words.
    if as_sent && buf.complete() {
        buf.take()
    } else {
        convert_error(upstream, client, status, buf.as_slice(), Some(request_id.as_str())).1
    }
}

/// `body` without the keys of the provider the attempt called (see `Provider::scrub_keys`).
fn without_keys(attempt: &Option<Attempt>, plan: &Option<RoutePlan>, body: Bytes) -> Bytes {
    match candidate_of(attempt, plan).and_then(|c| c.provider.scrub_keys(&body)) {
        Some(clean) => Bytes::from(clean),
        None => body,
    }
}

/// A stream its client left: the tokens the upstream reported so far (a long prompt's input and
/// cache reads are paid for all the same).
pub fn keep_stream_usage(ctx: &mut RequestCtx) {
    if let ResponseMode::Stream(conv) = &ctx.response {
        if let Some(usage) = conv.usage() {
            ctx.usage = Some(usage);
        }
    }
}

pub fn abort_stream(ctx: &mut RequestCtx) -> Option<Bytes> {
    let client = ctx.client_format();
    let upstream = ctx.current.as_ref().map_or(client, |a| a.format);
    let mut out = Vec::new();
    match &mut ctx.response {
        ResponseMode::Stream(conv) => {
            conv.abort("The upstream stream broke before it was complete", &mut out);
            ctx.usage = conv.usage();
        }
        ResponseMode::Restream(opts, _) => {
            let cut = Err("The upstream answer broke before it was complete");
            out = answer_as_stream(upstream, client, cut, opts).out;
        }
        ResponseMode::Error { status, body, .. } => {
            // An error body that broke off (its status is out): rendered from what came of it,
            // rather than ending the client's answer with no body at all (nor half a document).
            let rendered = convert_error(
                upstream,
                client,
                *status,
                body.as_slice(),
                Some(ctx.request_id.as_str()),
            )
            .1;
            let rendered = without_keys(&ctx.current, &ctx.plan, rendered);
            ctx.response = ResponseMode::Pass;
            return Some(rendered);
        }
        ResponseMode::Translate(_) => {
            // A whole answer to translate (too large to hold to its end) that broke off: nothing of
            // it went out but the header, so the client gets an error body in its format rather
            // than an empty one under its 200.
            out = error_body(
                client,
                "The upstream answer broke before it was complete",
                &ctx.request_id,
            )
            .to_vec();
        }
        _ => return None,
    }
    ctx.stream_cut = true;
    ctx.response = ResponseMode::Pass;
    (!out.is_empty()).then(|| Bytes::from(out))
}
