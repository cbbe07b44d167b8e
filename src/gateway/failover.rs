//! Attempts and failover: choosing the next upstream, shaping the request for it, and deciding after
//! each failure whether to try again, where, and what health to record. Pingora's hooks
//! (`upstream_peer`, `fail_to_connect`, `error_while_proxy`, `upstream_response_filter`) call these.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::HeldResponse;
use pingora::{Error, ErrorSource, ErrorType};

use rand::Rng;

use super::ctx::{Attempt, AttemptEnd, AttemptRecord, HeldSource, HeldVerdict, Redo, RequestCtx, ResponseMode, Retry};
use super::error::GatewayError;
use super::upstream_call;
use crate::app::App;
use crate::formats::stream::{ANSWER_ERROR_WITHIN, WHOLE_ANSWER_LIMIT as TRANSLATE_LIMIT};
use crate::formats::{answer_error, classify_error, error_map, first_event, ErrorKind, FirstEvent, WireFormat};
use crate::routing::health::{Availability, UpstreamHealth, MAX_RETRY_AFTER_SECS};
use crate::routing::{choose, choose_dry, Exhausted, Failure, RoutePlan, Sticky};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The error to show when nothing more can be tried; `resting` when the selector found every
/// candidate out of rotation.
pub fn exhausted(ctx: &RequestCtx, resting: Option<Exhausted>) -> GatewayError {
    // No upstream was asked because none could take the request in its format: say why. Not when
    // one that could was passed by (resting, no key, not resolved): that is an outage, not a 400.
    let candidates = ctx.plan.as_ref().map_or(0, |p| p.candidates.len());
    if let (Some(reason), 0) = (&ctx.convert_error, ctx.started_attempts) {
        if ctx.cannot_take.len() >= candidates {
            return GatewayError::Untranslatable(reason.clone());
        }
    }
    // Rate limits only: every candidate rests after one, or every answer this request got was one
    // (an upstream's 429, or the gateway's own budget for the candidate's keys).
    let all_limited = !ctx.attempts.is_empty() && ctx.attempts.iter().all(AttemptRecord::rate_limited);
    let keys_wait = ctx
        .attempts
        .iter()
        .filter_map(|a| match a.end {
            AttemptEnd::KeysAtLimit(wait) => Some(wait),
            _ => None,
        })
        .min();
    // The selector knows every candidate; without it (the attempt limit came first), the answers.
    // It counts a candidate whose keys are at their limit as available: such a candidate rests too.
    let rate_limited = match resting {
        None => all_limited,
        Some(r) => {
            r.rate_limited
                || ((keys_wait.is_some() || !ctx.cannot_take.is_empty())
                    && ctx.plan.as_ref().is_some_and(|plan| every_candidate_rests(ctx, plan)))
        }
    };
    let retry_after = match (resting.and_then(|r| r.retry_after), keys_wait) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    GatewayError::Exhausted {
        model: ctx.model.clone(),
        attempts: ctx.attempts.clone(),
        retry_after,
        rate_limited,
    }
}

/// Whether every candidate of `plan` that could take the request is cooling down after a 429 or
/// had its keys at their rate limit in this request (and there is one).
fn every_candidate_rests(ctx: &RequestCtx, plan: &RoutePlan) -> bool {
    let now = Instant::now();
    let mut could_take = plan
        .candidates
        .iter()
        .enumerate()
        .filter(|(i, _)| !ctx.cannot_take.contains(i))
        .map(|(_, c)| c)
        .peekable();
    could_take.peek().is_some()
        && could_take.all(|c| {
            matches!(c.health.availability(now), Availability::RateLimited { .. })
                || ctx.attempts.iter().any(|a| {
                    matches!(a.end, AttemptEnd::KeysAtLimit(_)) && a.provider == c.provider.id && a.model == c.model
                })
        })
}

/// Picks the next upstream and builds its peer; `Err` when every candidate is spent.
pub async fn next_peer(app: &App, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>, GatewayError> {
    let Some(plan) = ctx.plan.clone() else {
        return Err(exhausted(ctx, None));
    };
    loop {
        if ctx.started_attempts >= app.settings.max_attempts {
            return Err(exhausted(ctx, None));
        }
        // A redo of an attempt that reached no upstream (another address, a stale pooled
        // connection: never recorded) is the same attempt, and keeps the key whose budget it spent.
        let mut redo_key = None;
        let idx = match ctx.retry_same.take() {
            Some(idx) if ctx.redo.is_some() => {
                let unsent = ctx.redo.take() == Some(Redo::Unsent);
                redo_key = ctx
                    .current
                    .as_ref()
                    .filter(|a| a.candidate == idx && !a.recorded && unsent)
                    .and_then(|a| a.key.clone());
                idx
            }
            Some(idx) => {
                // A transient error: one more try on the same upstream after a short, jittered pause.
                let pause = ms(rand::rng().random_range(50..150));
                // Counted first: a client that leaves during it ends the request here.
                ctx.upstream_wait += pause;
                tokio::time::sleep(pause).await;
                idx
            }
            None => {
                let now = Instant::now();
                give_back_probe(ctx);
                match choose(&plan, &ctx.excluded, sticky(ctx), now) {
                    Ok(idx) => {
                        ctx.claimed_probe = plan.candidates[idx].health.probe_claimed_at(now).then_some((idx, now));
                        idx
                    }
                    Err(e) => return Err(exhausted(ctx, Some(e))),
                }
            }
        };
        let candidate = &plan.candidates[idx];
        let provider = &candidate.provider;
        let refused = ctx.refused_keys_of(idx);
        if !provider.can_send_without(&refused) {
            skip(ctx, idx, AttemptEnd::NoKey, "no usable API key");
            continue;
        }
        let Some(addr) = provider.addr() else {
            skip(ctx, idx, AttemptEnd::NotSent, "host not resolved");
            continue;
        };
        if let Err(reason) = upstream_call::fetch_media(app, ctx, provider).await {
            cannot_take(ctx, idx, reason);
            continue;
        }
        let call = match upstream_call::build(ctx, provider, &candidate.model) {
            Ok(call) => call,
            Err(reason) => {
                cannot_take(ctx, idx, reason);
                continue;
            }
        };
        // Taken last (after a media fetch that may take seconds, and the checks that may pass this
        // candidate by): a key's rate budget is spent only on a request about to be sent. (One
        // with no key in rotation was passed by above, before the fetch.)
        let key = if redo_key.is_some() {
            redo_key
        } else if provider.has_keys() {
            match provider.pick_key(&refused, app.state.replicas()) {
                Some(k) => Some(k),
                None => {
                    match provider.key_budget_wait(&refused, app.state.replicas()) {
                        Some(wait) => skip(
                            ctx,
                            idx,
                            AttemptEnd::KeysAtLimit(wait),
                            "every API key at its rate limit",
                        ),
                        None => skip(ctx, idx, AttemptEnd::NoKey, "no usable API key"),
                    }
                    continue;
                }
            }
        } else {
            None
        };

        let t = provider.timeouts;
        let mut peer = HttpPeer::new(addr, provider.endpoint.tls, provider.endpoint.host.clone());
        peer.options.connection_timeout = Some(ms(t.connect_ms));
        peer.options.total_connection_timeout = Some(ms(t.connect_ms.saturating_mul(2)));
        // Pingora's read timeout applies to every read: the wait for the header and each gap in the
        // body. A stream must never be silent longer than idle_ms, nor keep us waiting for its first
        // byte longer than first_byte_ms.
        peer.options.read_timeout = Some(ms(if ctx.stream {
            t.idle_ms.min(t.first_byte_ms)
        } else {
            t.first_byte_ms
        }));
        peer.options.write_timeout = Some(ms(t.first_byte_ms));
        peer.options.idle_timeout = Some(Duration::from_secs(60));

        ctx.started_attempts += 1;
        ctx.current = Some(Attempt {
            candidate: idx,
            addr,
            key,
            started: Instant::now(),
            format: call.format,
            body: call.body,
            path: call.path,
            injected_usage: call.injected_usage,
            tool_names: call.tool_names,
            json_mode: call.json_mode,
            recorded: false,
        });
        ctx.status_retry = None;
        ctx.probe_answered = false;
        // A held attempt that was refused at its end stamped its own.
        ctx.upstream_done = None;
        // A hold left by an attempt that broke while held would date this attempt's header.
        ctx.hold = None;
        ctx.held_verdict = None;
        ctx.answer_error = None;
        ctx.opened_with_error = false;
        ctx.response = ResponseMode::Pass;
        return Ok(Box::new(peer));
    }
}

fn sticky(ctx: &RequestCtx) -> Option<Sticky<'_>> {
    ctx.sticky_key().map(|session| Sticky {
        session,
        binding: ctx.binding.as_deref(),
    })
}

/// Passes a candidate by without sending anything; a probe slot this request claimed for it is
/// given back.
fn skip(ctx: &mut RequestCtx, idx: usize, end: AttemptEnd, why: &str) {
    give_back_probe(ctx);
    record(ctx, idx, end, Some(why.to_string()));
    ctx.excluded.push(idx);
}

/// Passes by a candidate that cannot take this request at all (no faithful translation, media
/// not fetched), keeping the reason for the client.
fn cannot_take(ctx: &mut RequestCtx, idx: usize, reason: String) {
    skip(ctx, idx, AttemptEnd::CannotTake, &reason);
    ctx.cannot_take.push(idx);
    ctx.convert_error = Some(reason);
}

fn record(ctx: &mut RequestCtx, idx: usize, end: AttemptEnd, note: Option<String>) {
    if let Some(c) = ctx.plan.as_ref().and_then(|p| p.candidates.get(idx)) {
        ctx.attempts.push(AttemptRecord {
            provider: c.provider.id.clone(),
            model: c.model.clone(),
            end,
            note,
        });
    }
    if let Some(current) = ctx.current.as_mut().filter(|a| a.candidate == idx) {
        current.recorded = true;
    }
}

/// `Retry-After` in seconds from now: delay-seconds (fractions rounded up) or an HTTP date, at most
/// [MAX_RETRY_AFTER_SECS]; garbage is treated as absent.
fn retry_after_secs(resp: &ResponseHeader) -> Option<u64> {
    let v = resp.headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let secs = match v.parse::<f64>() {
        Ok(s) => error_map::whole_secs_up(s)?.min(MAX_RETRY_AFTER_SECS),
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            // A date already past (a skewed upstream clock) says nothing: the default cool-down.
            let wait = at.duration_since(std::time::SystemTime::now()).ok()?;
            // A date's second is whole: round up what is left of it.
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).min(MAX_RETRY_AFTER_SECS)
        }
    };
    Some(secs)
}

/// Anthropic's and OpenAI's `x-should-retry`: the provider's own word on whether asking it again
/// can help. `false` spares the same upstream a second try (other candidates are still tried);
/// `true` makes a client error it would otherwise hand back (4xx) worth one.
fn should_retry(resp: &ResponseHeader) -> Option<bool> {
    match resp.headers.get("x-should-retry")?.as_bytes() {
        b"true" => Some(true),
        b"false" => Some(false),
        _ => None,
    }
}

/// Most of an answer's body held back from the client while it is judged.
const HOLD_LIMIT: usize = 64 * 1024;
/// Longest an answer is held: a stream that sends only keep-alives (some OpenAI-compatible
/// servers send comments for a long time before the first chunk), or a whole answer that trickles,
/// goes on after this, with its first piece that arrives later.
const HOLD_WAIT: Duration = Duration::from_secs(5);
/// Longest a stream is held once its envelope has come with nothing of the answer yet: an
/// upstream that fails after opening (Anthropic's `overloaded_error` after `message_start`) says
/// so at once, while a model that reasons silently may not speak for long.
const ENVELOPE_WAIT: Duration = Duration::from_secs(1);
/// Most pieces of body an answer is held for (each is judged from the start of the body).
const HOLD_PIECES: u32 = 256;

/// Whether to read the beginning of this answer before it goes on (see `judge_held`): error
/// statuses whose meaning is in the body, and successes, which can be an error object, open a
/// stream with an error event, or break off before their end.
pub fn hold_for_body(ctx: &mut RequestCtx, resp: &ResponseHeader) -> bool {
    let hold = ctx.current.is_some() && matches!(resp.status.as_u16(), 200..=299 | 400 | 402 | 422 | 429);
    if hold {
        ctx.hold = Some(Hold {
            since: Instant::now(),
            pieces: 0,
            envelope: false,
        });
    }
    hold
}

/// How long a stream may be held with nothing more arriving: after `HOLD_WAIT` it goes on as it
/// stands (its header, then keep-alives while the upstream stays silent), after `ENVELOPE_WAIT`
/// once its envelope has come (asked again after each piece; only ever shortens the hold). A whole
/// answer has no keep-alives to gain and is judged when its next piece comes (or its end), so it
/// keeps no timer.
pub fn hold_limit(ctx: &RequestCtx, resp: &ResponseHeader) -> Option<Duration> {
    let format = ctx.current.as_ref()?.format;
    let wait = match ctx.hold {
        Some(Hold { envelope: true, .. }) => ENVELOPE_WAIT,
        _ => HOLD_WAIT,
    };
    super::response::streamed(ctx, format, resp).then_some(wait)
}

/// An answer being held: since when (its header's arrival), how many times it has been judged,
/// and whether a stream's envelope has come.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    since: Instant,
    pieces: u32,
    envelope: bool,
}

/// Reads what is held of an answer: a stream's first event, a whole JSON success or error body,
/// the beginning of another whole success (all up to `HOLD_LIMIT`). What it says is kept for
/// `on_response`, which runs as the answer is released.
pub fn judge_held(ctx: &mut RequestCtx, resp: &ResponseHeader, body: &[u8], end: bool) -> HeldResponse {
    let Some(format) = ctx.current.as_ref().map(|a| a.format) else {
        return HeldResponse::Release;
    };
    ctx.translated_answer = None;
    if end {
        // The upstream's part is over: judging and translating what it sent is the gateway's own
        // time (the overhead metric), not time waiting on the upstream.
        ctx.upstream_done = Some(Instant::now());
    }
    // A whole answer the client gets translated reaches it only once read to its end: held to its
    // end, one that breaks off is retried, never relayed as a 200 with a broken body.
    let translated = super::response::translated_whole(ctx, format, resp);
    let complete = end
        || body.len() >= if translated { TRANSLATE_LIMIT } else { HOLD_LIMIT }
        || (!translated
            && ctx.hold.as_mut().is_none_or(|h| {
                h.pieces += 1;
                h.pieces >= HOLD_PIECES || h.since.elapsed() >= HOLD_WAIT
            }));
    let verdict = |kind, source| {
        Some(HeldVerdict {
            kind,
            source,
            retry_after: None,
            names_stream_options: false,
            names_include_usage: false,
            names_previous_response: false,
            names_thinking_signature: false,
        })
    };
    ctx.held_verdict = if resp.status.is_success() && super::response::reads_as_sse(ctx, resp) {
        match first_event(format, body, complete) {
            FirstEvent::Pending => return HeldResponse::More,
            FirstEvent::Envelope if !complete => {
                if let Some(hold) = ctx.hold.as_mut() {
                    hold.envelope = true;
                }
                return HeldResponse::More;
            }
            // The stream ended after its envelope. Ended properly (a finish, `message_stop`), it
            // is an empty answer, given as it is; cut before it said anything, it is no answer,
            // and nothing of it has reached the client: another upstream is asked.
            FirstEvent::Envelope if end && !crate::formats::stream::completes(format, body) => verdict(
                ErrorKind::Upstream,
                HeldSource::NoAnswer("a stream cut after its envelope"),
            ),
            FirstEvent::Envelope => None,
            // The stream ended without one event (an empty chunked body, only pings): no answer,
            // so another upstream is tried and this one is not counted healthy.
            FirstEvent::NoEvent if end => verdict(ErrorKind::Upstream, HeldSource::NoAnswer("a stream with no event")),
            // Held as long as a hold may be with no event yet: released to be streamed.
            FirstEvent::NoEvent | FirstEvent::Content => None,
            FirstEvent::Error(kind) => verdict(kind, HeldSource::FirstEvent),
        }
    } else if resp.status.is_success()
        && (translated || super::response::is_json(resp) && !super::response::gemini_stream(ctx, format))
    {
        // A whole JSON answer is held until its end (within the hold's limits): one that breaks
        // off half-way fails its attempt with nothing sent, so it is retried instead of reaching
        // the client as half a document; and an error object under the 200 is judged whole.
        if !complete {
            return HeldResponse::More;
        }
        match answer_error(format, body, true) {
            FirstEvent::Error(kind) => verdict(kind, HeldSource::Answer),
            _ if end => whole_json_answered_nothing(resp, body)
                .or_else(|| {
                    (translated && !translate_held(ctx, format, body)).then_some("an answer that could not be read")
                })
                .and_then(|what| verdict(ErrorKind::Upstream, HeldSource::NoAnswer(what))),
            _ => None,
        }
    } else if resp.status.is_success()
        && super::response::gemini_stream(ctx, format)
        && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
    {
        // A Gemini stream sent as a JSON array (a server that ignores `alt=sse`): it streams on as
        // it comes, its first element not held back for bytes that could never say "error".
        None
    } else if resp.status.is_success() {
        // Any other whole answer: an error object says so in its first bytes (`{"error"`,
        // Anthropic's `{"type":"error"`, a Responses object's `"status":"failed","error"`), so an
        // answer whose beginning names no error goes on at once; one that may be an error is read
        // whole.
        match answer_error(format, body, complete) {
            _ if body.len() < ANSWER_ERROR_WITHIN && !complete => return HeldResponse::More,
            FirstEvent::Pending | FirstEvent::Envelope => return HeldResponse::More,
            FirstEvent::Content | FirstEvent::NoEvent => None,
            FirstEvent::Error(kind) => verdict(kind, HeldSource::Answer),
        }
    } else if complete {
        Some(HeldVerdict {
            kind: classify_error(format, resp.status.as_u16(), body).0,
            source: HeldSource::ErrorBody,
            retry_after: error_map::retry_after_secs(body),
            names_stream_options: memchr::memmem::find(body, b"stream_options").is_some(),
            names_include_usage: memchr::memmem::find(body, b"include_usage").is_some(),
            names_previous_response: ctx.response_pin.is_some() && says_previous_response_not_found(body),
            names_thinking_signature: format == WireFormat::Anthropic && says_thinking_signature_invalid(body),
        })
    } else {
        return HeldResponse::More;
    };
    HeldResponse::Release
}

/// What a whole JSON success, read to its end, is when it answers nothing: empty (a body without
/// `content-length` that ended at once), or cut short where only the connection's close marks its end
/// (neither a length nor chunks: a cut looks like the end, so the document itself must be whole).
/// Translates a whole answer held to its end for the client (kept for `response::on_body`);
/// false when it cannot be read (`{"choices": []}`, not JSON), which is then no answer: tried
/// elsewhere instead of reaching the client as an error under a 200.
fn translate_held(ctx: &mut RequestCtx, format: WireFormat, body: &[u8]) -> bool {
    let names = ctx.current.as_ref().and_then(|a| a.tool_names.clone());
    let (op, asked, client) = (ctx.operation, &ctx.body, ctx.client_format());
    match super::response::translate_answer(op, asked, format, client, body, &ctx.model, names.as_deref()) {
        Ok(answer) => {
            ctx.translated_answer = Some(answer);
            true
        }
        Err(_) => false,
    }
}

fn whole_json_answered_nothing(resp: &ResponseHeader, body: &[u8]) -> Option<&'static str> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some("an empty body");
    }
    let framed = resp.headers.contains_key(http::header::CONTENT_LENGTH)
        || resp.headers.contains_key(http::header::TRANSFER_ENCODING);
    (!framed && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err())
        .then_some("a JSON body cut short (no length; the connection closed)")
}

/// Whether a candidate other than the `passed` ones could take the request now: one in rotation
/// that `next_peer` would not pass by unasked (no key left in rotation for this request, no
/// address, a request it cannot be sent: tried here by building its call, as `next_peer` would).
/// Health alone would send a held 403 or 404 on to a candidate only to skip it, and the client
/// would get a 502 instead of the upstream's answer. (Keys at their rate budget, and media a
/// Gemini upstream would fail to fetch, are found only by trying.) Only on these rare answers.
fn others_can_answer(ctx: &RequestCtx, plan: &RoutePlan, passed: impl Iterator<Item = usize>, now: Instant) -> bool {
    let mut passed: Vec<usize> = passed.collect();
    while let Ok(i) = choose_dry(plan, &passed, None, now) {
        let candidate = &plan.candidates[i];
        let provider = &candidate.provider;
        let askable = provider.can_send_without(&ctx.refused_keys_of(i))
            && provider.addr().is_some()
            && upstream_call::build(ctx, provider, &candidate.model).is_ok();
        if askable {
            return true;
        }
        passed.push(i);
    }
    false
}

/// Whether an OpenAI error body's code is `previous_response_not_found` (read only for a
/// continuation's error).
fn says_previous_response_not_found(body: &[u8]) -> bool {
    // Parsed (a third time, after the error's kind and retry advice) only when it may say so.
    memchr::memmem::find(body, b"previous_response_not_found").is_some()
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/code")?
                    .as_str()
                    .map(|c| c == "previous_response_not_found")
            })
            .unwrap_or(false)
}

/// Whether the client's own body carried `stream_options` (same format only: a translated body is
/// the gateway's).
fn client_sent_stream_options(ctx: &RequestCtx, attempt_format: WireFormat) -> bool {
    attempt_format == ctx.request_format && memchr::memmem::find(&ctx.body, b"\"stream_options\"").is_some()
}

/// The attempt on candidate `idx` asked again at once as the same attempt: not counted against
/// `max_attempts`; one that reached no upstream keeps its key (`Redo`).
fn redo_at_once(ctx: &mut RequestCtx, idx: usize, why: Redo) -> Retry {
    ctx.started_attempts = ctx.started_attempts.saturating_sub(1);
    ctx.retry_same = Some(idx);
    ctx.redo = Some(why);
    Retry::Same
}

/// Claude's words for a thinking block whose signature it cannot verify
/// ("messages.1.content.0: Invalid `signature` in `thinking` block").
fn says_thinking_signature_invalid(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"Invalid `signature` in `thinking` block").is_some()
        || memchr::memmem::find(body, b"Invalid signature in thinking block").is_some()
}

/// Judges the upstream's response status (and what its held body said) and records health; says
/// whether to try again.
pub fn on_response(app: &App, ctx: &mut RequestCtx, resp: &mut ResponseHeader) -> Retry {
    let (Some(attempt), Some(plan)) = (ctx.current.as_ref(), ctx.plan.clone()) else {
        return Retry::No;
    };
    let idx = attempt.candidate;
    let attempt_format = attempt.format;
    let injected_usage = attempt.injected_usage;
    let key = attempt.key.clone();
    // Time to the header: a held answer's header came when its hold began.
    let latency = match ctx.hold.take() {
        Some(h) => h.since.saturating_duration_since(attempt.started),
        None => attempt.started.elapsed(),
    };
    // All of it the upstream's: its header, and the body held to be judged.
    let attempt_time = attempt.started.elapsed();
    let candidate = &plan.candidates[idx];
    let provider = &candidate.provider;
    let probe = ctx.probe_claim(idx);
    let held = ctx.held_verdict.take();
    // A success that answers nothing: a web page (a `base_url` that points at a website, a captive
    // portal, the login page of a proxy in between) or an empty body. A bad gateway, never relayed.
    let no_answer = super::response::no_answer(resp).or(match held {
        Some(HeldVerdict {
            source: HeldSource::NoAnswer(what),
            ..
        }) => Some(what),
        _ => None,
    });
    let status = match held {
        _ if no_answer.is_some() => 502,
        Some(v) => v.status(resp.status.as_u16()),
        None => resp.status.as_u16(),
    };
    if let Some(v) = held.filter(|v| v.source == HeldSource::ErrorBody) {
        // An error body that goes on to the client is rendered, header and body alike, as what
        // it said (Gemini's bad key under a 400 is a 401, Claude's low credit under a 400 billing).
        ctx.answer_error = Some((status, v.kind));
    }
    ctx.opened_with_error = held.is_some_and(|v| v.source == HeldSource::FirstEvent);
    let now = Instant::now();
    // Only errors carry advice on retrying (and a success need not pay for the lookups).
    let error = status >= 400;
    let retry_after = error
        .then(|| retry_after_secs(resp))
        .flatten()
        .or(held.and_then(|v| v.retry_after))
        .map(|s| s.min(MAX_RETRY_AFTER_SECS));
    let should_retry = error.then(|| should_retry(resp)).flatten();
    if retry_after.is_some() {
        ctx.upstream_retry_after = retry_after;
    }
    // The gateway asked this OpenAI Chat stream for its usage, and the upstream refuses the field
    // (Mistral: 422 `extra_forbidden` on `stream_options.include_usage`; it reports usage
    // unasked): asked again at once without it, the same attempt; and from then on once that
    // answer succeeds. (The upstream may echo a client's own unknown field that merely contains
    // the name; that refusal comes back without the gateway's field too, and teaches nothing.)
    // The refusal is of the gateway's field when it names the member the gateway adds (Mistral:
    // `"loc":["body","stream_options","include_usage"]`), or names the field where the client
    // sent none (Azure's older API versions: "Unknown parameter: 'stream_options'").
    let refused_stream_usage = matches!(status, 400 | 422)
        && attempt_format == WireFormat::OpenAiChat
        && ctx.stream
        && (injected_usage || attempt_format != ctx.request_format)
        && ctx.asks_stream_usage(provider)
        && held.is_some_and(|v| {
            v.source == HeldSource::ErrorBody
                && v.names_stream_options
                // Only now, on such an error, is the client's body looked at.
                && (v.names_include_usage || !client_sent_stream_options(ctx, attempt_format))
        });
    // Claude refuses a thinking signature another Anthropic-style vendor (GLM, Kimi, MiniMax) made
    // in an earlier turn of the conversation, and would refuse every turn after it: asked again at
    // once with the conversation's thinking taken out, the same attempt.
    let refused_thinking = status == 400
        && attempt_format == WireFormat::Anthropic
        && !ctx.thinking_dropped
        && held.is_some_and(|v| v.source == HeldSource::ErrorBody && v.names_thinking_signature);
    let not_this_upstream_s_response = status == 400
        && held.is_some_and(|v| v.source == HeldSource::ErrorBody && v.names_previous_response)
        && ctx.started_attempts < app.settings.max_attempts
        && {
            // Only a native Responses upstream can take a continuation (the others refuse
            // `previous_response_id` before it is sent).
            let other_apis = plan.candidates.iter().enumerate().filter(|(_, c)| {
                c.provider.upstream_format(WireFormat::OpenAiResponses) != WireFormat::OpenAiResponses
            });
            let passed = ctx.excluded.iter().copied().chain([idx]);
            others_can_answer(ctx, &plan, passed.chain(other_apis.map(|(i, _)| i)), now)
        };
    let decision = match status {
        _ if refused_thinking => {
            ctx.thinking_dropped = true;
            redo_at_once(ctx, idx, Redo::Answered)
        }
        _ if refused_stream_usage => {
            ctx.stream_usage_unasked = Some(provider.id.clone());
            redo_at_once(ctx, idx, Redo::Answered)
        }
        _ if no_answer.is_some() => {
            candidate.health.record_attempt_failure(probe, Failure::Broken, now);
            ctx.excluded.push(idx);
            Retry::Next
        }
        // A continuation of a response the gateway holds no binding for (made before it ran, or
        // the binding expired or was lost with the state): this upstream's account did not make
        // it, so the route's other Responses upstreams are asked, within the attempt budget, and
        // the one that answers is bound to it. Healthy. The last refusal is the client's.
        400 if not_this_upstream_s_response => {
            ctx.excluded.push(idx);
            Retry::Next
        }
        401..=403 => {
            // Our provider key is bad or out of credit (401, 402): out of rotation; or it may not
            // do this request (403: a model, a region or a feature its project lacks, which any
            // client can ask for, so it benches no key for others; a 402 that says this request
            // costs more than the balance covers): refused for this request only. Either way the
            // next key or candidate is tried.
            let this_request_only = status == 403
                || held.is_some_and(|v| v.source == HeldSource::ErrorBody && v.kind == ErrorKind::InvalidRequest);
            match key {
                Some(k) => {
                    if !this_request_only {
                        provider.pause_key(k.index);
                        // A reload since the request began installed the provider anew.
                        let current = app.snapshot();
                        if let Some(now) = current.routes.provider(&provider.id) {
                            if !Arc::ptr_eq(now, provider) {
                                now.pause_key_of(provider, k.index);
                            }
                        }
                    }
                    ctx.refused_keys.push((idx, k.index));
                    // No other key to try this candidate with: done for this request (not picked
                    // again only to be passed by as "no key").
                    if !provider.has_key_in_rotation(&ctx.refused_keys_of(idx)) {
                        ctx.excluded.push(idx);
                    }
                }
                None => ctx.excluded.push(idx),
            }
            let last_attempt = ctx.started_attempts >= app.settings.max_attempts;
            if this_request_only && (last_attempt || !others_can_answer(ctx, &plan, ctx.excluded.iter().copied(), now))
            {
                // Refused by the last upstream that could answer, or by the last attempt (a model
                // its project may not use, a `max_tokens` the balance does not cover): its own
                // answer goes to the client, which no SDK retries, rather than a 502 every SDK
                // would send again.
                Retry::No
            } else {
                Retry::Next
            }
        }
        // This upstream does not serve the model (any more), or not at this path; another
        // candidate of the route may. The upstream is not unhealthy for it.
        404 if ctx.started_attempts < app.settings.max_attempts
            && others_can_answer(ctx, &plan, ctx.excluded.iter().copied().chain([idx]), now) =>
        {
            ctx.excluded.push(idx);
            Retry::Next
        }
        429 => {
            let retry_after = retry_after.map(Duration::from_secs);
            candidate
                .health
                .record_attempt_failure(probe, Failure::RateLimited { retry_after }, now);
            ctx.excluded.push(idx);
            Retry::Next
        }
        s if provider.is_retryable(s) => {
            candidate.health.record_attempt_failure(probe, Failure::Broken, now);
            if s == 500 && !ctx.same_retry_used && should_retry != Some(false) && may_retry_same(&candidate.health, now)
            {
                ctx.same_retry_used = true;
                ctx.retry_same = Some(idx);
                Retry::Same
            } else {
                ctx.excluded.push(idx);
                Retry::Next
            }
        }
        // The upstream says an error it would otherwise hand back (a 409 lock, a 408…) is worth
        // another try: once more on the same upstream, then the error goes to the client.
        s if (400..500).contains(&s) && should_retry == Some(true) && !ctx.same_retry_used => {
            ctx.same_retry_used = true;
            ctx.retry_same = Some(idx);
            Retry::Same
        }
        s if s >= 500 => {
            candidate.health.record_attempt_failure(probe, Failure::Broken, now);
            Retry::No
        }
        // The client's own mistake (400, 413, 422…): the upstream answered, but said nothing of
        // how it generates.
        s if s >= 400 => {
            ctx.failures_before_success = candidate.health.record_refusal();
            Retry::No
        }
        _ => {
            if ctx.stream_usage_unasked.as_deref() == Some(&*provider.id) {
                // Asked without the field, it answers: the field was what it refused.
                provider.set_refuses_stream_usage();
            }
            // A probe's circuit closes once its answer has come whole (`confirm_probe`).
            ctx.probe_answered = ctx.claimed_probe.is_some_and(|(i, _)| i == idx);
            ctx.failures_before_success = match ctx.probe_answered {
                true => candidate.health.record_probe_answer(latency),
                false => candidate.health.record_success(latency),
            };
            Retry::No
        }
    };
    let note = match held {
        _ if let Some(what) = no_answer => Some(format!("answered {} with {what}", resp.status.as_u16())),
        _ if not_this_upstream_s_response => Some("not where the continued response was made".to_string()),
        Some(v) if v.source == HeldSource::FirstEvent => Some(format!("{:?} error as the first stream event", v.kind)),
        Some(v) if v.source == HeldSource::Answer => {
            Some(format!("{:?} error as a {} answer", v.kind, resp.status.as_u16()))
        }
        _ => None,
    };
    if !refused_stream_usage && !refused_thinking {
        // Asked again without the gateway's field, or without the thinking it refused, it is the
        // same attempt (and keeps its key).
        record(ctx, idx, AttemptEnd::Answered(status), note);
    }
    if let Some(v) = held.filter(|v| decision == Retry::No && v.source == HeldSource::Answer) {
        // An error object under a 2xx goes to the client as the error it is, with its status.
        let sent = resp.status.as_u16();
        let _ = resp.set_status(error_map::client_status(attempt_format, status, v.kind));
        let _ = resp.insert_header("x-gateway-upstream-status", sent);
    }
    if decision == Retry::No {
        ctx.ttfb = Some(latency);
    } else {
        ctx.upstream_wait += attempt_time;
        // An answer left for another attempt still shows how long its upstream took to give it
        // (the slow 429s and 5xx are the ones to see); the request's own answer is observed with
        // the request.
        app.metrics
            .upstream_ttfb
            .with_label_values(&[&candidate.provider.id])
            .observe(latency.as_secs_f64());
    }
    decision
}

/// Where a transport error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    /// After connecting; `reused` says whether the upstream connection came from the pool.
    Proxy {
        reused: bool,
    },
}

/// How an answer whose header counted as a success broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamBreak {
    /// It ended without its proper end: no terminator, an event too large.
    Cut,
    /// The upstream said an error mid-answer, of this kind.
    Error(ErrorKind),
    /// Reading it failed after bytes had reached the client (a reset, a timeout).
    Transport(ErrorType),
}

/// An answer that broke once the client had bytes of it: the attempt whose header counted as a
/// success is a failure after all (the same attempt, not a second one), and a failure of its
/// upstream unless the error was the request's own. Counted once however many ways it breaks.
pub fn on_stream_cut(ctx: &mut RequestCtx, how: StreamBreak) {
    if ctx.stream_cut {
        return;
    }
    ctx.stream_cut = true;
    let (Some(plan), Some(idx)) = (ctx.plan.as_ref(), ctx.current.as_ref().map(|a| a.candidate)) else {
        return;
    };
    let upstream_s = !matches!(how, StreamBreak::Error(kind) if kind.is_request_s_own());
    if let Some(c) = plan.candidates.get(idx).filter(|_| upstream_s) {
        let probe = ctx.probe_claim(idx);
        c.health.record_cut(ctx.failures_before_success, Instant::now(), probe);
    }
    // Recorded as a transport error that cuts a stream is (so attempts and requests say the same).
    let (end, note) = match &how {
        StreamBreak::Transport(etype) => (
            AttemptEnd::of_transport(etype),
            format!("{} mid-response", etype.as_str()),
        ),
        StreamBreak::Error(kind) => (AttemptEnd::Transport, format!("{kind:?} error event mid-stream")),
        StreamBreak::Cut => (AttemptEnd::Transport, "the stream ended before it was complete".into()),
    };
    match ctx.attempts.last_mut().filter(|r| r.status().is_some()) {
        Some(answered) => (answered.end, answered.note) = (end, Some(note)),
        None if matches!(how, StreamBreak::Transport(_)) => record(ctx, idx, end, Some(note)),
        None => {}
    }
}

/// The answer of the probe this request holds came whole (neither cut nor left by its client): its
/// upstream's circuit closes. Called at the answer's end, and again when the request ends (an
/// upstream that keeps its body open after its last event ends the answer without the former).
pub fn confirm_probe(ctx: &mut RequestCtx) {
    if !ctx.probe_answered || ctx.stream_cut || ctx.client_closed {
        return;
    }
    let Some((idx, claimed_at)) = ctx.claimed_probe.take() else {
        return;
    };
    if let Some(c) = ctx.plan.as_ref().and_then(|p| p.candidates.get(idx)) {
        c.health.confirm_probe(claimed_at);
    }
}

/// Gives back the probe slot this request claimed, unless a verdict on that upstream (a success
/// or a failure) was recorded meanwhile. Called when the request moves to another candidate and
/// when it ends: a probe that was answered with, say, a 401, or whose client left, must not keep the
/// upstream out of rotation for another whole wait.
pub fn give_back_probe(ctx: &mut RequestCtx) {
    let Some((idx, claimed_at)) = ctx.claimed_probe.take() else {
        return;
    };
    if let Some(c) = ctx.plan.as_ref().and_then(|p| p.candidates.get(idx)) {
        c.health.release_probe(claimed_at, Instant::now());
    }
}

/// The client went away (see `client_gone`) while an attempt was in flight: the attempt is recorded
/// as the client's doing, its wait as upstream time; no health record, nothing to retry. An attempt
/// already recorded (its answer came, then writing it to the client failed; or the client left in
/// the pause before a retry) is not counted twice.
pub fn on_client_gone(ctx: &mut RequestCtx, response_started: bool) {
    ctx.client_closed = true;
    let Some(attempt) = ctx.current.as_ref() else {
        return;
    };
    if !response_started && !attempt.recorded {
        ctx.upstream_wait += attempt.started.elapsed();
        let idx = attempt.candidate;
        record(ctx, idx, AttemptEnd::ClientClosed, Some("client closed".to_string()));
    }
}

/// Whether the error is the client's connection failing, closing or stalling (a client that stops
/// reading times out the gateway's writes), or sending bytes after its body where Pingora cannot
/// keep them as a pipelined request (its `ConnectError` "Sent data after end of body"):
/// nobody is left to take the answer, so nothing is retried, and no upstream is blamed.
pub fn client_gone(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::ConnectionClosed
                | ErrorType::ReadTimedout
                | ErrorType::WriteTimedout
                | ErrorType::ConnectError
        )
}

/// Whether the error is the client's request itself, found only once an upstream was chosen (a
/// header Pingora refuses to forward, a malformed body): no upstream is blamed, nothing is retried,
/// and the client is told (see `on_client_fault`).
pub fn client_fault(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream && !client_gone(e)
}

/// The attempt ends as the client's doing: no health record (which a client could otherwise
/// use to open every circuit of a model), the probe slot given back, a 400 for the client.
pub fn on_client_fault(ctx: &mut RequestCtx, e: &Error) {
    if let Some(attempt) = ctx.current.as_ref() {
        ctx.upstream_wait += attempt.started.elapsed();
    }
    give_back_probe(ctx);
    let what = e
        .context
        .as_ref()
        .map_or_else(|| e.etype().as_str().to_string(), |c| c.to_string());
    ctx.failure = Some(GatewayError::Unforwardable(what));
}

/// Most other addresses of a host one request tries after connect failures.
const MAX_ADDR_REDOS: u8 = 4;

/// How many turns Pingora's retry loop needs for `max_attempts` attempts: the redos that are no
/// new attempt take a turn each. A stream asked again without `stream_options` (at most once per
/// attempt: once per provider that refuses it), refused addresses, one stale pooled connection,
/// one conversation asked again without its thinking. Too few turns ended a request with a 502
/// while attempts were left.
pub fn retry_loop_turns(max_attempts: usize) -> usize {
    2 * max_attempts + usize::from(MAX_ADDR_REDOS) + 2
}

/// A reused upstream connection that fails sooner than this after the request was sent is taken
/// for one the upstream had closed before it came (a stale pooled socket).
const STALE_WITHIN: Duration = Duration::from_millis(500);

/// Judges a transport error (connect, timeout, reset) and records health; says whether to try again.
pub fn on_transport_error(ctx: &mut RequestCtx, e: &Error, phase: Phase, response_started: bool) -> Retry {
    let Some(attempt) = ctx.current.as_ref() else {
        return Retry::No;
    };
    let idx = attempt.candidate;
    let Some(plan) = ctx.plan.clone() else {
        return Retry::No;
    };
    if !response_started {
        ctx.upstream_wait += attempt.started.elapsed();
    }
    let health = &plan.candidates[idx].health;
    let now = Instant::now();
    let etype = e.etype().clone();
    if response_started && super::response::stream_ended(ctx) {
        // The stream had its end; the upstream then kept its body open (a slow close, pings after
        // `[DONE]`) until the read timed out: the answer was whole, nobody is blamed.
        if let Some(answered) = ctx.attempts.last_mut() {
            answered.note = Some(format!("{} after the stream's end", etype.as_str()));
        }
        return Retry::No;
    }
    if response_started {
        // Bytes already reached the client: nothing can be retried. The stream is reported as cut
        // (once: after a cut for an event too large, the failed read is the same broken answer).
        on_stream_cut(ctx, StreamBreak::Transport(etype));
        return Retry::No;
    }
    if phase == Phase::Connect
        && ctx.addr_redos < MAX_ADDR_REDOS
        && plan.candidates[idx].provider.addr_failed(attempt.addr)
    {
        // One address of several refused (an IPv6 one without a route, one server down): the
        // host's next address, at once, as the same attempt. The upstream is blamed only when
        // every address failed.
        ctx.addr_redos += 1;
        return redo_at_once(ctx, idx, Redo::Unsent);
    }
    let at_once = attempt.started.elapsed() < STALE_WITHIN;
    if let (Phase::Proxy { reused: true }, true, false) = (phase, at_once, ctx.stale_redone) {
        if matches!(e.retry, pingora::RetryType::ReusedOnly) {
            // A pooled connection the upstream had already closed: not the upstream's fault, and
            // no attempt (nothing reached a model). It goes again at once, on a new connection,
            // outside the `max_attempts` budget; once a request, and only when the connection
            // failed at once: one that closes after a while (a worker killed by its own timeout,
            // a server crashing on this prompt) may have done the work, and is judged as a reset.
            ctx.stale_redone = true;
            return redo_at_once(ctx, idx, Redo::Unsent);
        }
    }
    health.record_attempt_failure(ctx.probe_claim(idx), Failure::Broken, now);
    record(
        ctx,
        idx,
        AttemptEnd::of_transport(&etype),
        Some(etype.as_str().to_string()),
    );
    let reset = matches!(
        etype,
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    );
    if phase != Phase::Connect && reset && !ctx.same_retry_used && may_retry_same(health, now) {
        ctx.same_retry_used = true;
        ctx.retry_same = Some(idx);
        return Retry::Same;
    }
    ctx.excluded.push(idx);
    Retry::Next
}

/// Whether one more try on the same upstream may follow a failure just recorded: only while it
/// is still in rotation. Not when this failure opened its circuit, nor when the attempt was the
/// probe of an open circuit (a failed probe opens it again). The next candidate is asked instead.
fn may_retry_same(health: &UpstreamHealth, now: Instant) -> bool {
    matches!(health.availability(now), Availability::Available { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_client_s_own_connection_errors_mean_it_is_gone() {
        for etype in [
            ErrorType::ReadError,
            ErrorType::WriteError,
            ErrorType::ConnectionClosed,
            ErrorType::ReadTimedout,
            ErrorType::WriteTimedout,
            ErrorType::ConnectError,
        ] {
            assert!(
                client_gone(&Error::new_down(etype.clone())),
                "{etype:?} from the client"
            );
            // The same errors on the upstream's side are the upstream's.
            assert!(
                !client_gone(&Error::new_up(etype.clone())),
                "{etype:?} from the upstream"
            );
        }
        assert!(!client_gone(&Error::new_down(ErrorType::HTTPStatus(502))));
        assert!(!client_gone(&Error::new_down(ErrorType::ConnectTimedout)));
    }

    #[test]
    fn an_attempt_already_recorded_is_not_counted_again_when_the_client_leaves() {
        let attempt = |recorded| Attempt {
            candidate: 0,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            key: None,
            started: Instant::now() - Duration::from_secs(1),
            format: crate::formats::WireFormat::OpenAiChat,
            body: bytes::Bytes::new(),
            path: String::new(),
            injected_usage: false,
            tool_names: None,
            json_mode: false,
            recorded,
        };
        let mut ctx = RequestCtx::new();
        ctx.current = Some(attempt(true));
        on_client_gone(&mut ctx, false);
        assert!(ctx.client_closed);
        assert_eq!(
            ctx.upstream_wait,
            Duration::ZERO,
            "its wait was counted when it was recorded"
        );
        let mut ctx = RequestCtx::new();
        ctx.current = Some(attempt(false));
        on_client_gone(&mut ctx, false);
        assert!(ctx.upstream_wait >= Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date_and_bounded() {
        let of = |v: &str| {
            let mut resp = ResponseHeader::build(429, None).unwrap();
            resp.insert_header("retry-after", v.to_string()).unwrap();
            retry_after_secs(&resp)
        };
        assert_eq!(of("7"), Some(7));
        assert_eq!(of(" 1.2 "), Some(2));
        assert_eq!(of("0"), Some(0));
        // Absurd values would keep the upstream out for ever (or overflow the clock).
        assert_eq!(of("1e19"), Some(MAX_RETRY_AFTER_SECS));
        assert_eq!(of("99999999999999999999"), Some(MAX_RETRY_AFTER_SECS));
        let in_a_minute = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        assert!(matches!(of(&in_a_minute), Some(59..=60)), "{:?}", of(&in_a_minute));
        assert_eq!(of("Wed, 21 Oct 2015 07:28:00 GMT"), None, "a date passed says nothing");
        for garbage in ["-3", "NaN", "inf", "soon", ""] {
            assert_eq!(of(garbage), None, "{garbage:?}");
        }
    }
}
