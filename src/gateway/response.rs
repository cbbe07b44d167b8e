//! The response side: headers every answer carries, watching streams so a cut one ends in an error
//! event, and the one log line (and metrics) per request.

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::Error;

use super::ctx::RequestCtx;
use crate::app::App;
use crate::formats::errors::stream_error_event;
use crate::formats::sse::StreamWatch;
use crate::metrics::status_class;

/// Adds `x-request-id` and `x-apiproxy-provider`, and arms the stream watch for SSE answers.
pub fn on_header(ctx: &mut RequestCtx, resp: &mut ResponseHeader) -> pingora::Result<()> {
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

pub fn log_request(app: &App, ctx: &RequestCtx, e: Option<&Error>) {
    let m = &app.metrics;
    m.active.dec();
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
    m.requests
        .with_label_values(&[api, status_class(status), outcome])
        .inc();
    m.duration.with_label_values(&[api]).observe(elapsed.as_secs_f64());
    for a in &ctx.attempts {
        let result = match a.status {
            Some(s) => status_class(s),
            None => "transport_error",
        };
        m.attempts.with_label_values(&[&a.provider, result]).inc();
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
