//! The response side: headers every answer carries, watching streams so a cut one ends in an error
//! event, and the one log line (and metrics) per request.

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::Error;

use super::ctx::{AttemptRecord, RequestCtx};
use crate::app::App;
use crate::formats::errors::stream_error_event;
use crate::formats::sse::StreamWatch;
use crate::metrics::status_class;
use crate::routing::RouteKind;

/// Adds `x-request-id` and `x-apiproxy-provider`, and arms the stream watch for SSE answers.
pub fn on_header(app: &App, ctx: &mut RequestCtx, resp: &mut ResponseHeader) -> pingora::Result<()> {
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    let provider = ctx
        .current
        .as_ref()
        .zip(ctx.plan.as_ref())
        .map(|(a, p)| p.candidates[a.candidate].provider.id.clone());
    if let Some(id) = &provider {
        resp.insert_header("x-apiproxy-provider", &**id)?;
    }
    ctx.served_by = provider;
    ctx.status = Some(resp.status.as_u16());
    let is_sse = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if resp.status.is_success() && is_sse {
        // Chunked, so each event is flushed as it arrives.
        resp.remove_header(&http::header::CONTENT_LENGTH);
        ctx.watch = Some(StreamWatch::new(ctx.api()));
        if !ctx.streaming_response {
            ctx.streaming_response = true;
            app.metrics.open_streams.inc();
        }
    }
    Ok(())
}

/// Passes the body through untouched, watching streams; a stream that ends without its terminator
/// gets an error event appended instead of looking finished.
pub fn on_body(ctx: &mut RequestCtx, body: &mut Option<Bytes>, end_of_stream: bool) {
    let Some(watch) = ctx.watch.as_mut() else {
        return;
    };
    if let Some(b) = body.as_ref() {
        watch.observe(b);
        if ctx.first_token.is_none() && !b.is_empty() {
            ctx.first_token = Some(ctx.started.elapsed());
        }
    }
    if end_of_stream && !watch.finished() {
        if let Some(event) = cut_stream_event(ctx) {
            *body = Some(match body.take() {
                Some(b) if !b.is_empty() => {
                    let mut joined = BytesMut::with_capacity(b.len() + event.len());
                    joined.extend_from_slice(&b);
                    joined.extend_from_slice(&event);
                    joined.freeze()
                }
                _ => event,
            });
        }
    }
}

/// The error event for a stream that did not finish; `None` when there is no unfinished stream.
/// Ends the watch and marks the stream as cut, so the event is produced once.
pub fn cut_stream_event(ctx: &mut RequestCtx) -> Option<Bytes> {
    let api = ctx.api();
    let watch = ctx.watch.take()?;
    if watch.finished() {
        return None;
    }
    let event = stream_error_event(
        api,
        "The upstream stream ended before it was complete",
        "stream_interrupted",
        watch.at_boundary(),
    );
    ctx.stream_cut = true;
    Some(event)
}

/// The bounded `route` and `model` labels of a request.
fn route_labels(ctx: &RequestCtx) -> (&'static str, String) {
    match ctx.plan.as_ref() {
        None => ("none", "none".into()),
        Some(p) => match p.kind {
            RouteKind::Logical => ("logical", p.label.to_string()),
            RouteKind::ZeroConfig => ("zero_config", p.label.to_string()),
            // The physical name after `provider/` is the client's to choose: not a label.
            RouteKind::ProviderPrefixed => (
                "provider_prefixed",
                p.candidates
                    .first()
                    .map_or("none".into(), |c| format!("{}/*", c.provider.id)),
            ),
        },
    }
}

/// Why an attempt that was followed by another failed, as a bounded label.
fn failover_reason(a: &AttemptRecord) -> &'static str {
    match (a.status, a.error.as_deref()) {
        (Some(401 | 403), _) => "auth",
        (Some(429), _) => "rate_limited",
        (Some(s), _) if s >= 500 => "server_error",
        (Some(_), _) => "status",
        (None, Some(e)) if e.contains("Timedout") => "timeout",
        (None, Some(e)) if e.starts_with("Connect") => "connect",
        (None, Some("no usable API key")) => "no_key",
        (None, _) => "transport",
    }
}

pub fn log_request(app: &App, ctx: &mut RequestCtx, e: Option<&Error>) {
    let m = &app.metrics;
    m.active.dec();
    if ctx.streaming_response {
        m.open_streams.dec();
    }
    if let (Some(_), Some(attempt)) = (ctx.ttfb, ctx.current.as_ref()) {
        ctx.upstream_wait += attempt.started.elapsed();
    }
    let api = ctx.api.map_or("none", |a| a.label());
    let status = ctx.status.unwrap_or(0);
    let outcome = match status {
        _ if ctx.stream_cut => "stream_cut",
        200..=399 => "ok",
        400..=499 if ctx.served_by.is_some() => "upstream_client_error",
        400..=499 => "rejected",
        _ if ctx.attempts.is_empty() && ctx.served_by.is_none() => "error",
        _ => "upstream_error",
    };
    let elapsed = ctx.started.elapsed();
    let provider = ctx.served_by.as_deref().unwrap_or("none");
    let (route, model) = route_labels(ctx);
    m.requests
        .with_label_values(&[api, route, &model, provider, status_class(status), outcome])
        .inc();
    m.duration.with_label_values(&[api]).observe(elapsed.as_secs_f64());
    m.overhead
        .with_label_values(&[api])
        .observe(elapsed.saturating_sub(ctx.upstream_wait).as_secs_f64());
    if let Some(ttfb) = ctx.ttfb {
        m.upstream_ttfb
            .with_label_values(&[provider])
            .observe(ttfb.as_secs_f64());
    }
    if let (Some(t), true) = (ctx.first_token, ctx.streaming_response) {
        m.time_to_first_token
            .with_label_values(&[provider])
            .observe(t.as_secs_f64());
    }
    if let (Some(code), None) = (ctx.error_code, ctx.served_by.as_ref()) {
        m.client_errors.with_label_values(&[code]).inc();
    }
    let last = ctx.attempts.len().saturating_sub(1);
    for (i, a) in ctx.attempts.iter().enumerate() {
        let result = a.status.map_or("transport_error", status_class);
        m.attempts.with_label_values(&[&a.provider, result]).inc();
        // Every attempt but the last was followed by another one.
        if i < last {
            m.failovers.with_label_values(&[failover_reason(a)]).inc();
        }
    }
    tracing::info!(
        request_id = %ctx.request_id,
        client = ctx.client.as_ref().map_or("-", |c| &*c.name),
        api,
        model = ctx.inspected.as_ref().map_or("-", |i| i.model.as_str()),
        provider = ctx.served_by.as_deref().unwrap_or("-"),
        attempts = ctx.attempts.len(),
        status,
        outcome,
        latency_ms = elapsed.as_millis() as u64,
        error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
        "request"
    );
}
