//! One log line and the metrics per request.

use std::time::Instant;

use pingora::Error;

use super::ctx::{AttemptEnd, AttemptRecord, RequestCtx};
use crate::app::App;
use crate::metrics::status_class;
use crate::routing::RouteKind;

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
    match a.end {
        AttemptEnd::Answered(401..=403) => "auth",
        AttemptEnd::Answered(429) => "rate_limited",
        AttemptEnd::Answered(s) if s >= 500 => "server_error",
        AttemptEnd::Answered(_) => "status",
        AttemptEnd::Timeout => "timeout",
        AttemptEnd::Connect => "connect",
        AttemptEnd::NoKey => "no_key",
        AttemptEnd::KeysAtLimit(_) => "key_rate_limit",
        AttemptEnd::NotSent | AttemptEnd::CannotTake => "not_sent",
        AttemptEnd::Transport | AttemptEnd::ClientClosed => "transport",
    }
}

/// A request Pingora refused before the gateway saw it (an unreadable head: 400; a `CONNECT`:
/// 405): counted and logged like one the gateway refused, with what little is known of it.
pub fn log_refused(app: &App, status: u16) {
    let m = &app.metrics;
    let code = if status == 405 {
        "method_not_allowed"
    } else {
        "malformed_request"
    };
    m.requests
        .with_label_values(&["none", "none", "none", "none", status_class(status), "rejected"])
        .inc();
    m.client_errors.with_label_values(&[code]).inc();
    tracing::info!(request_id = %"-", status, outcome = %"rejected", error = %code, "request");
}

pub fn log_request(app: &App, ctx: &mut RequestCtx, e: Option<&Error>) {
    let m = &app.metrics;
    if ctx.uncounted {
        m.active.dec();
        return;
    }
    if let (Some(_), Some(attempt)) = (ctx.ttfb, ctx.current.as_ref()) {
        let waited_until = ctx.upstream_done.unwrap_or_else(Instant::now);
        ctx.upstream_wait += waited_until
            .saturating_duration_since(attempt.started)
            .saturating_sub(ctx.stream_work);
    }
    if let Some(handed) = ctx.answer_handed {
        ctx.client_wait += handed.elapsed();
    }
    let api = ctx.api_label();
    let status = ctx.status.unwrap_or(0);
    // A stream that opened with an error event went out under a 200: it is counted by what it
    // said (the status its attempt is recorded with), not as an answer.
    let counted_status = match (ctx.opened_with_error, ctx.attempts.last().map(|a| &a.end)) {
        (true, Some(&AttemptEnd::Answered(said))) => said,
        _ => status,
    };
    let outcome = match counted_status {
        _ if ctx.client_closed => "client_closed",
        _ if ctx.stream_cut => "stream_cut",
        200..=399 => "ok",
        400..=499 if ctx.served_by.is_some() => "upstream_client_error",
        // Every upstream failed, rate-limited, or resting with its circuit open (nothing tried):
        // the upstreams' doing, not a refusal of the client's request.
        _ if ctx.error_code == Some("all_upstreams_failed") => "upstream_error",
        400..=499 => "rejected",
        _ if ctx.attempts.is_empty() && ctx.served_by.is_none() => "error",
        _ => "upstream_error",
    };
    let elapsed = match ctx.answered_at {
        Some(at) => at.saturating_duration_since(ctx.started),
        None => ctx.started.elapsed(),
    };
    let provider = ctx.served_by.as_deref().unwrap_or("none");
    let (route, model) = route_labels(ctx);
    m.requests
        .with_label_values(&[api, route, &model, provider, status_class(counted_status), outcome])
        .inc();
    let (duration, overhead) = m.api_timings(api);
    duration.observe(elapsed.as_secs_f64());
    overhead.observe(
        elapsed
            .saturating_sub(ctx.upstream_wait + ctx.client_wait)
            .as_secs_f64(),
    );
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
    if let Some(u) = &ctx.usage {
        let client = ctx.client.as_ref().map_or("none", |c| &*c.name);
        for (kind, n) in [
            ("input", u.input_tokens),
            ("output", u.output_tokens),
            ("cached_input", u.cached_input_tokens),
            ("cache_creation", u.cache_creation_input_tokens),
            ("reasoning", u.reasoning_tokens),
        ] {
            if n > 0 {
                m.tokens.with_label_values(&[&model, provider, client, kind]).inc_by(n);
            }
        }
    }
    // The gateway's refusals of the client's request; every upstream failing is the upstreams'
    // doing (its outcome says so), not a client error.
    if let (Some(code), None, false) = (ctx.error_code, ctx.served_by.as_ref(), ctx.client_closed) {
        if code != "all_upstreams_failed" {
            m.client_errors.with_label_values(&[code]).inc();
        }
    }
    let last = ctx.attempts.len().saturating_sub(1);
    for (i, a) in ctx.attempts.iter().enumerate() {
        let result = match a.end {
            AttemptEnd::Answered(status) => status_class(status),
            AttemptEnd::ClientClosed => "client_closed",
            AttemptEnd::NoKey | AttemptEnd::KeysAtLimit(_) | AttemptEnd::NotSent | AttemptEnd::CannotTake => "skipped",
            AttemptEnd::Connect | AttemptEnd::Timeout | AttemptEnd::Transport => "transport_error",
        };
        m.attempts.with_label_values(&[&a.provider, result]).inc();
        // Every attempt but the last was followed by another one: on the same upstream (a retry) or
        // on another (a failover, a skipped candidate's included: the request moved on from it).
        if i < last {
            let next = &ctx.attempts[i + 1];
            let counter = if next.provider == a.provider && next.model == a.model {
                &m.retries
            } else {
                &m.failovers
            };
            counter.with_label_values(&[failover_reason(a)]).inc();
        }
    }
    // Last: once the gauges say the request is over, everything it counts has been counted.
    m.active.dec();
    if ctx.streaming_response {
        m.open_streams.dec();
    }
    // Bodies only when asked for (`log_body_bytes`); absent fields are left out of the line.
    let shown = app.settings.log_body_bytes;
    let request_body = (shown > 0 && !ctx.body.is_empty()).then(|| body_start(&ctx.body, shown));
    let response_body = ctx
        .capture
        .as_deref()
        .filter(|_| shown > 0)
        .map(|b| body_start(b, shown));
    tracing::info!(
        request_id = %ctx.request_id,
        client = ctx.client.as_ref().map_or("-", |c| &*c.name),
        // Names are the owners' to choose and may repeat: the stored key's id tells them apart.
        key_id = ctx.client.as_ref().and_then(|c| c.key_id.as_deref()).unwrap_or("-"),
        api,
        // The client's model: read from the body, or from the path (Gemini).
        model = ctx
            .inspected
            .as_ref()
            .map(|i| i.model.as_str())
            .or(Some(ctx.model.as_str()).filter(|m| !m.is_empty()))
            .unwrap_or("-"),
        provider = ctx.served_by.as_deref().unwrap_or("-"),
        // The model the provider was asked for: a logical model's, after any failover.
        upstream_model = ctx
            .candidate()
            .filter(|_| ctx.served_by.is_some())
            .map_or("-", |c| &*c.model),
        attempts = ctx.attempts.len(),
        tokens_in = ctx.usage.as_ref().map_or(0, |u| u.input_tokens),
        tokens_out = ctx.usage.as_ref().map_or(0, |u| u.output_tokens),
        status,
        outcome,
        latency_ms = elapsed.as_millis() as u64,
        // The error the client was told of (`model_not_found`, `all_upstreams_failed`…), else
        // the proxy's own for the request.
        error = ctx.error_code.or(e.map(|e| e.etype().as_str())).unwrap_or("-"),
        request_body,
        response_body,
        "request"
    );
}

/// The first `limit` bytes of a body as text, cut at a character, with `…` when there was more,
/// and what looks like a key or token redacted (as in session context snippets): a prompt may
/// carry a pasted key or an `.env` file.
fn body_start(body: &[u8], limit: usize) -> String {
    crate::state::redact(&body_text(body, limit))
}

fn body_text(body: &[u8], limit: usize) -> String {
    let cut = &body[..body.len().min(limit)];
    let text = match std::str::from_utf8(cut) {
        Ok(t) => t.to_string(),
        // A character cut in two at the limit is left out; other invalid bytes are replaced.
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&cut[..e.valid_up_to()]).into_owned(),
        Err(_) => String::from_utf8_lossy(cut).into_owned(),
    };
    if body.len() > limit {
        text + "…"
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pingora::ErrorType;

    use super::*;

    fn reason(end: AttemptEnd) -> &'static str {
        failover_reason(&AttemptRecord {
            provider: Arc::from("p"),
            model: Arc::from("m"),
            end,
            note: None,
        })
    }

    #[test]
    fn a_body_is_cut_at_a_character() {
        assert_eq!(body_text(b"short", 48), "short");
        assert_eq!(body_text(b"exactly", 7), "exactly");
        assert_eq!(
            body_text("caf\u{e9} au lait".as_bytes(), 4),
            "caf…",
            "é cut in two is left out"
        );
        assert_eq!(body_text("caf\u{e9} au lait".as_bytes(), 5), "caf\u{e9}…");
        assert_eq!(body_text(b"a\xffb", 8), "a\u{fffd}b");
    }

    #[test]
    fn a_logged_body_loses_what_looks_like_a_key() {
        let body = br#"{"messages":[{"role":"user","content":"OPENAI_API_KEY=sk-proj-9f8e7d6c5b4a3f2e1d0c please"}]}"#;
        let shown = body_start(body, 4096);
        assert!(!shown.contains("9f8e7d6c5b4a"), "{shown}");
        assert!(
            shown.contains("OPENAI_API_KEY=[REDACTED]") && shown.contains("please"),
            "{shown}"
        );
    }

    #[test]
    fn transport_errors_and_skips_get_their_own_reasons() {
        let of = |t: ErrorType| reason(AttemptEnd::of_transport(&t));
        for t in [
            ErrorType::ConnectTimedout,
            ErrorType::ReadTimedout,
            ErrorType::WriteTimedout,
        ] {
            assert_eq!(of(t.clone()), "timeout", "{t:?}");
        }
        for t in [
            ErrorType::ConnectRefused,
            ErrorType::ConnectError,
            ErrorType::TLSHandshakeFailure,
        ] {
            assert_eq!(of(t.clone()), "connect", "{t:?}");
        }
        // A connection closed under a request is a broken connection, not a failed connect.
        for t in [ErrorType::ConnectionClosed, ErrorType::ReadError, ErrorType::WriteError] {
            assert_eq!(of(t.clone()), "transport", "{t:?}");
        }
        assert_eq!(reason(AttemptEnd::NoKey), "no_key");
        assert_eq!(reason(AttemptEnd::NotSent), "not_sent");
        assert_eq!(reason(AttemptEnd::Answered(429)), "rate_limited");
        assert_eq!(reason(AttemptEnd::Answered(402)), "auth");
        assert_eq!(reason(AttemptEnd::Answered(529)), "server_error");
        assert_eq!(reason(AttemptEnd::Answered(404)), "status");
    }
}
