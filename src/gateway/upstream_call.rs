//! What goes to the upstream on one attempt: the format it is spoken to in, the body (the client's own
//! bytes with the model rewritten in place, or a translation), the path, and the headers.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

use super::ctx::RequestCtx;
use super::headers::names;
use super::intake::Operation;
use crate::app::App;
use crate::config::ApiStyle;
use crate::formats::request::{injects_usage, rewrite, Rewrite};
use crate::formats::{anthropic, count_tokens, embeddings, gemini};
use crate::formats::{convert_request_named, media_to_fetch, RequestOptions, ToolNames, WireFormat};
use crate::upstream::Provider;

/// Anthropic requires a version header; this is the one the translation targets.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// What the client sent that never goes upstream: its credentials for the gateway and the account
/// they name (an OpenAI organization or project, a Google billing project: the provider's key
/// belongs to another, and the provider would refuse the key), framing the gateway redoes,
/// `expect` (the whole body is sent at once: nothing to wait for), the page a browser client runs
/// on (Anthropic answers a request with an `Origin` 401, which would bench the provider's keys;
/// `mask` settings still send one of the operator's choosing), a protocol upgrade (an answer is
/// HTTP, never a WebSocket the provider's key opened; Pingora's own clean-up sets `Connection:
/// Upgrade` again for one), and Anthropic's beta flags for any other upstream. One pass over the
/// request's few headers, rather than a lookup for each name here.
fn client_only(name: &HeaderName, anthropic_upstream: bool) -> bool {
    match name.as_str() {
        "authorization"
        | "x-api-key"
        | "x-goog-api-key"
        | "openai-organization"
        | "openai-project"
        | "x-goog-user-project"
        | "cookie"
        | "transfer-encoding"
        | "accept-encoding"
        | "anthropic-version"
        | "expect"
        | "origin"
        | "referer"
        | "upgrade"
        | "connection"
        | "sec-websocket-key"
        | "sec-websocket-version"
        | "sec-websocket-extensions"
        | "sec-websocket-protocol" => true,
        "anthropic-beta" => !anthropic_upstream,
        _ => false,
    }
}
/// Anthropic requires `max_tokens`; used when the client did not say.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// One attempt's request, ready to send.
pub struct UpstreamCall {
    pub format: WireFormat,
    pub body: Bytes,
    pub path: String,
    pub injected_usage: bool,
    /// Tool names renamed because the upstream would refuse them (translated requests only).
    pub tool_names: Option<Arc<ToolNames>>,
    /// The answer comes through Anthropic's JSON-mode tool (translated requests only).
    pub json_mode: bool,
}

/// Where `provider` takes the operation, for a request that arrived in `request` format: the
/// format it is spoken to in and the path. `None` when its API has no such endpoint (a token count
/// for an OpenAI-style upstream, embeddings for Anthropic).
pub fn endpoint(
    operation: Operation,
    provider: &Provider,
    request: WireFormat,
    model: &str,
    stream: bool,
) -> Option<(WireFormat, String)> {
    let format = provider.upstream_format(request);
    match operation {
        Operation::Generate => Some((format, provider.path_for(format, model, stream))),
        Operation::CountTokens => Some((format, provider.count_path_for(format, model)?)),
        // Any OpenAI-compatible API takes OpenAI's shape.
        Operation::Embeddings => {
            let format = match format {
                WireFormat::OpenAiResponses => WireFormat::OpenAiChat,
                f => f,
            };
            Some((format, provider.embeddings_path_for(format, model)?))
        }
        Operation::Compact => Some((format, provider.compact_path_for(format)?)),
    }
}

/// Builds the call to `provider` for physical `model`. `Err` says why this upstream cannot take the
/// request at all (it cannot be translated faithfully into the upstream's format).
pub fn build(ctx: &RequestCtx, provider: &Provider, model: &str) -> Result<UpstreamCall, String> {
    let Some((format, path)) = endpoint(ctx.operation, provider, ctx.request_format, model, ctx.stream) else {
        // Such candidates were left out of the plan (`intake::route`).
        return Err(format!("{} has no endpoint for this request", provider.id));
    };
    let same = format == ctx.request_format;
    let body = match ctx.operation {
        Operation::Generate => return generation(ctx, provider, model, format, path),
        // Anthropic to Anthropic: the client's count as it came, with the model rewritten. (A
        // Gemini count may name the model inside: `count_tokens::request` sets it.)
        Operation::CountTokens if same && format == WireFormat::Anthropic => with_model(ctx, model),
        Operation::CountTokens => {
            let opts = request_options(ctx, provider, model, format);
            count_tokens::request(ctx.request_format, format, &ctx.body, &opts).map_err(|e| e.to_string())?
        }
        Operation::Embeddings if same => with_model(ctx, model),
        Operation::Embeddings => embeddings::gemini_request(&ctx.body, model).map_err(|e| e.to_string())?,
        // Native Responses only (`endpoint`): the client's body, with the model rewritten and what
        // other vendors left in the conversation taken out, as for an answer.
        Operation::Compact => without_other_vendors_marks(format, with_model(ctx, model)),
    };
    Ok(UpstreamCall {
        format,
        body,
        path,
        injected_usage: false,
        tool_names: None,
        json_mode: false,
    })
}

/// An OpenAI-style body without what other vendors left in the conversation, which OpenAI would
/// refuse: tool-call ids that carry a Gemini signature (an earlier turn served by Gemini), and for
/// Responses the reasoning and image items the gateway wrote from another vendor's.
fn without_other_vendors_marks(format: WireFormat, mut body: Bytes) -> Bytes {
    if let Some(cleaned) = crate::formats::ir::without_smuggled_signatures(&body) {
        body = Bytes::from(cleaned);
    }
    if format == WireFormat::OpenAiResponses {
        if let Some(cleaned) = crate::formats::responses_api::request::without_foreign_items(&body) {
            body = Bytes::from(cleaned);
        }
    }
    body
}

/// The client's body with only its model changed (as it came when the model is not in it).
fn with_model(ctx: &RequestCtx, model: &str) -> Bytes {
    let edit = Rewrite {
        model,
        force_stream: false,
        ask_usage: false,
    };
    match &ctx.inspected {
        Some(inspected) => rewrite(&ctx.body, inspected, &edit),
        None => ctx.body.clone(),
    }
}

/// A model's answer: the client's bytes when the formats match, else a translation.
fn generation(
    ctx: &RequestCtx,
    provider: &Provider,
    model: &str,
    format: WireFormat,
    path: String,
) -> Result<UpstreamCall, String> {
    let same = format == ctx.request_format;
    match (&ctx.inspected, same) {
        // Same format: the client's bytes, with only the model (and stream flags) spliced in.
        (Some(inspected), true) => {
            let edit = Rewrite {
                model,
                force_stream: ctx.stream,
                // An OpenAI stream reports usage only when asked; ask, and strip the chunk later
                // (unless the upstream refuses the field).
                ask_usage: ctx.stream && format == WireFormat::OpenAiChat && ctx.asks_stream_usage(provider),
            };
            let mut body = rewrite(&ctx.body, inspected, &edit);
            if format == WireFormat::Gemini {
                // A Gemini-shaped body on `/v1/chat/completions`: model and stream go in the path.
                if let Some(cleaned) = gemini::request::without_openai_fields(&ctx.body) {
                    body = Bytes::from(cleaned);
                }
                if let Some(signed) = gemini::request::with_signed_calls(&body) {
                    body = Bytes::from(signed);
                }
            }
            if matches!(format, WireFormat::OpenAiChat | WireFormat::OpenAiResponses) {
                body = without_other_vendors_marks(format, body);
            }
            if format == WireFormat::Anthropic {
                // Reasoning another vendor streamed to this client, replayed without a signature;
                // an image a Gemini model made, given back in the model's turn.
                if let Some(cleaned) = anthropic::request::without_refused_blocks(&body) {
                    body = Bytes::from(cleaned);
                }
                body = without_refused_thinking(ctx, body);
            }
            Ok(UpstreamCall {
                format,
                body,
                path,
                injected_usage: injects_usage(inspected, &edit),
                tool_names: None,
                json_mode: false,
            })
        }
        // Gemini to Gemini: the model lives in the path; the body passes as it came, but for tool
        // calls another vendor made, which Gemini 3 takes only with a thought signature.
        (None, true) => Ok(UpstreamCall {
            format,
            body: gemini::request::with_signed_calls(&ctx.body).map_or_else(|| ctx.body.clone(), Bytes::from),
            path,
            injected_usage: false,
            tool_names: None,
            json_mode: false,
        }),
        (_, false) => {
            let opts = request_options(ctx, provider, model, format);
            let translated =
                convert_request_named(ctx.request_format, format, &ctx.body, &opts).map_err(|e| e.to_string())?;
            let body = match format {
                WireFormat::Anthropic => without_refused_thinking(ctx, translated.body),
                _ => translated.body,
            };
            Ok(UpstreamCall {
                format,
                body,
                path,
                // The translation asks OpenAI upstreams for usage itself; the converter decides what the
                // client sees from what the client asked.
                injected_usage: false,
                tool_names: translated.tool_names.map(Arc::new),
                json_mode: translated.json_mode,
            })
        }
    }
}

/// An Anthropic body without its thinking blocks, once an Anthropic upstream refused a signature
/// in them (see `failover::on_response`): the conversation carries thinking another vendor
/// signed, which every Claude upstream refuses alike.
fn without_refused_thinking(ctx: &RequestCtx, body: Bytes) -> Bytes {
    if !ctx.thinking_dropped {
        return body;
    }
    anthropic::request::without_thinking(&body).map_or(body, Bytes::from)
}

/// How to translate the client's body for `provider`'s `model` in `format`.
fn request_options(ctx: &RequestCtx, provider: &Provider, model: &str, format: WireFormat) -> RequestOptions {
    RequestOptions {
        model: model.to_string(),
        stream: ctx.stream,
        default_max_tokens: DEFAULT_MAX_TOKENS,
        fetched_media: match (&ctx.fetched_media, format) {
            (Some(Ok(media)), WireFormat::Gemini) => Some(media.clone()),
            _ => None,
        },
        stream_usage: ctx.asks_stream_usage(provider),
        replay_reasoning: provider.wants_reasoning_back(),
    }
}

/// Fetches, once per request, the images and files named by URL that `provider` cannot fetch itself
/// (a Gemini upstream), so that `build` sends them inline. `Err` says why this upstream cannot take
/// the request. The time spent counts as waiting on upstreams, not as the gateway's overhead.
pub async fn fetch_media(app: &App, ctx: &mut RequestCtx, provider: &Provider) -> Result<(), String> {
    if ctx.operation == Operation::Embeddings {
        // Texts only: a URL in one is text to embed.
        return Ok(());
    }
    let format = provider.upstream_format(ctx.request_format);
    if ctx.fetched_media.is_none() {
        let urls = media_to_fetch(ctx.request_format, format, &ctx.body).map_err(|e| e.to_string())?;
        if urls.is_empty() {
            if format == WireFormat::Gemini {
                // The body was read for URLs once; later Gemini attempts need not read it again.
                ctx.fetched_media = Some(Ok(Arc::default()));
            }
            return Ok(());
        }
        let started = std::time::Instant::now();
        let fetched = app.media.fetch_all(&urls).await;
        ctx.upstream_wait += started.elapsed();
        ctx.fetched_media = Some(fetched.map(Arc::new).map_err(|e| e.to_string()));
    }
    match (&ctx.fetched_media, format) {
        (Some(Err(reason)), WireFormat::Gemini) => Err(reason.clone()),
        _ => Ok(()),
    }
}

/// Rewrites the request header for the attempt: path, host, credentials, version and extra headers.
pub fn shape_request(app: &App, ctx: &RequestCtx, req: &mut RequestHeader) -> pingora::Result<()> {
    let (Some(attempt), Some(plan)) = (ctx.current.as_ref(), ctx.plan.as_ref()) else {
        return Error::e_explain(ErrorType::InternalError, "no attempt in progress");
    };
    let provider = &plan.candidates[attempt.candidate].provider;
    let uri: http::Uri = attempt
        .path
        .parse()
        .map_err(|_| Error::explain(ErrorType::InternalError, "invalid upstream path"))?;
    let request_id = ctx.request_id.header();
    super::headers::edit_request(req, |head| {
        use http::header::{ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST};
        head.uri = uri;
        let h = &mut head.headers;
        let anthropic = provider.style == ApiStyle::Anthropic;
        while let Some(name) = h.keys().find(|n| client_only(n, anthropic)).cloned() {
            h.remove(&name);
        }
        // The body was read as JSON (and maybe translated): it goes as JSON, whatever the client
        // labelled it (`curl -d` says form data, which a FastAPI upstream such as vLLM refuses).
        let labelled_json = h
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if attempt.format != ctx.request_format || !labelled_json {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        h.insert(HOST, provider.authority.clone());
        if let Some(key) = &attempt.key {
            h.insert(provider.auth_header(), key.header.clone());
        }
        if anthropic {
            h.insert(names::ANTHROPIC_VERSION, HeaderValue::from_static(ANTHROPIC_VERSION));
        }
        // Uncompressed, so streams can be watched and translated.
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        for (name, value) in app.mask_headers.iter().chain(provider.extra_headers.iter()) {
            h.insert(name.clone(), value.clone());
        }
        h.insert(CONTENT_LENGTH, HeaderValue::from(attempt.body.len()));
        h.insert(names::X_REQUEST_ID, request_id);
    });
    Ok(())
}
