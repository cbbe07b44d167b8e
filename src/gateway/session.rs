//! Shared state on the request path: the one pre-flight round trip (client rate limit and the
//! session's binding), recording where a session was served and what was said (session context)
//! after the answer, and serving `GET /context/{session_id}`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::ctx::RequestCtx;
use super::error::GatewayError;
use super::intake::Operation;
use crate::app::App;
use crate::routing::health::unix_ms;
use crate::state::{binding_field, context_owner, request_snippet, response_snippet, Admission, ContextEntry};

/// Most response bytes kept to make a session-context snippet from.
const CAPTURE_LIMIT: usize = 16 * 1024;
/// Longest session id honoured (longer ones are cut).
const MAX_SESSION_ID: usize = 256;

/// The key a Responses answer's upstream is bound under, for the requests that continue from it
/// (`previous_response_id`): it lives with that upstream's account, and another answers 400.
pub fn response_key(response_id: &str) -> String {
    format!("{RESPONSE_KEY_PREFIX}{response_id}")
}

const RESPONSE_KEY_PREFIX: &str = "response:";

/// Whether a binding's key is a response's (`response_key`), whose binding pins its
/// continuations to one upstream in any tier, rather than a session's.
pub fn is_response_key(key: &str) -> bool {
    key.starts_with(RESPONSE_KEY_PREFIX)
}

/// A session id as the gateway keys it, wherever it comes from (a header, `/context/…`, the admin
/// API): cut to `MAX_SESSION_ID` characters.
pub fn session_key(raw: &str) -> &str {
    match raw.char_indices().nth(MAX_SESSION_ID) {
        Some((end, _)) => &raw[..end],
        None => raw,
    }
}

/// The pre-flight: takes a token from the client key's bucket and reads the bindings of the
/// session and of the response it continues for the requested model, in one round trip (none
/// when nothing applies).
pub async fn admit(app: &App, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
    let mut limit = ctx
        .client
        .as_ref()
        .and_then(|c| Some((c.key_id.clone()?, c.rate_limit_rps?)));
    let mut user_limit = ctx.client.as_ref().and_then(|c| c.user_limit.clone());
    // Token counts draw on buckets of their own, at the same rates: Claude Code counts dozens of
    // times as it starts, and that must not starve the conversation it counts for.
    if ctx.operation == Operation::CountTokens {
        for (bucket, _) in limit.iter_mut().chain(user_limit.iter_mut()) {
            *bucket = format!("{bucket}:count_tokens").into();
        }
    }
    let (routed, model) = (ctx.plan.is_some(), ctx.model.as_str());
    ctx.binding_field = ctx
        .client
        .as_ref()
        .filter(|_| ctx.session_id.is_some())
        .map(|client| binding_field(client, model));
    let q = Admission {
        limit: limit.as_ref().map(|(id, rps)| (&**id, *rps)),
        user_limit: user_limit.as_ref().map(|(bucket, rps)| (&**bucket, *rps)),
        session: ctx
            .session_id
            .as_deref()
            .zip(ctx.binding_field.as_deref())
            .filter(|_| routed),
        pin: ctx.response_pin.as_deref().filter(|_| routed).map(|p| (p, model)),
    };
    let admitted = app.state.admit(q).await;
    if let Some(retry_after) = admitted.limited {
        return Err(GatewayError::RateLimited { retry_after });
    }
    // The response it continues lives only where it was made: no other upstream, in any tier,
    // can answer (another would refuse with a 400 no client retries; this one's 429 or 503 can
    // be). That holds over the session's binding, which a failover since may have moved.
    if let Some(made_by) = admitted.pinned.as_deref() {
        ctx.plan = ctx.plan.take().map(|plan| plan.pinned_to(made_by));
    }
    // The session's binding where there is one (it is not in a plan narrowed to the maker, and
    // the plan then holds the maker alone; it still is when the maker has left the plan).
    ctx.binding = admitted.binding.or(admitted.pinned);
    Ok(())
}

/// Keeps the first bytes of the answer for the session context and the log line.
pub fn capture(ctx: &mut RequestCtx, body: &Option<Bytes>) {
    if ctx.capture.is_none() {
        return;
    }
    let limit = if for_context(ctx) {
        ctx.log_share.max(CAPTURE_LIMIT)
    } else {
        ctx.log_share
    };
    let (Some(buf), Some(chunk)) = (ctx.capture.as_mut(), body.as_ref()) else {
        return;
    };
    let room = limit.saturating_sub(buf.len());
    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
}

/// The answer bytes to keep for a log line that shows `log_body_bytes` of it: one more, which
/// tells the line the answer went on; none when it shows none.
pub fn log_share(log_body_bytes: usize) -> usize {
    if log_body_bytes > 0 {
        log_body_bytes + 1
    } else {
        0
    }
}

/// Whether the answer goes into the session's context (a token count is no exchange).
fn for_context(ctx: &RequestCtx) -> bool {
    ctx.session_id.is_some() && ctx.operation == Operation::Generate
}

/// Starts capturing when the answer goes into the session's context, or when the log line shows
/// bodies.
pub fn start_capture(ctx: &mut RequestCtx) {
    if ctx.capture.is_none() && (for_context(ctx) || ctx.log_share > 0) {
        ctx.capture = Some(BytesMut::new());
    }
}

/// After the answer: binds the session to the upstream that served it (so every replica sends
/// its next request there, failover included) and appends the exchange to its context. An answer
/// the upstream broke off binds nothing: the session's next request is placed as before. Runs in
/// the background: the client never waits for it.
/// A token count and embeddings neither bind (they follow the session's binding, skipping
/// upstreams without the endpoint) nor add to the context; a compaction binds (the conversation
/// goes on from the compacted state the upstream that made it can read) but is no exchange. A
/// Responses answer's upstream is bound under its id too, for the request that continues from it.
pub fn finish(app: &Arc<App>, ctx: &mut RequestCtx) {
    let generated = ctx.operation == Operation::Generate;
    if !generated && ctx.operation != Operation::Compact {
        return;
    }
    let status = ctx.status.unwrap_or(0);
    // A stream that opened with an error (the client's own mistake, passed on as the stream it
    // is) answered nothing: it binds nothing.
    let answered = !ctx.stream_cut && !ctx.opened_with_error;
    let served_by = ctx
        .candidate()
        .filter(|_| ctx.served_by.is_some() && (200..300).contains(&status) && answered);
    // `store: false`: nothing can continue from the answer. Read only for an answer that binds.
    let unstored = ctx.inspected.as_ref().is_some_and(|i| i.unstored);
    let answer_id = match served_by {
        Some(_) if generated && !unstored && !ctx.answer_pinned => super::response::answer_id(ctx),
        _ => None,
    };
    // The response it continued is bound again to where it was answered: that upstream read it
    // (found by asking the route's upstreams in turn when no binding was held), and the binding
    // lives on for as long as the conversation does.
    let continued = ctx.response_pin.clone().filter(|_| served_by.is_some());
    if answer_id.is_none() && ctx.session_id.is_none() && continued.is_none() {
        return;
    }
    let served = served_by.map(|c| format!("{}/{}", c.provider.id, c.model));
    let session = ctx.session_id.clone().zip(ctx.binding_field.take());
    let snippets = app.state.settings.snippet_chars;
    let entry = ctx
        .client
        .as_ref()
        .filter(|_| generated && ctx.served_by.is_some() && session.is_some())
        .map(|client| {
            let captured = ctx.capture.take().unwrap_or_default();
            let entry = ContextEntry {
                at_ms: unix_ms(),
                request_id: ctx.request_id.to_string(),
                model: ctx.model.clone(),
                provider: ctx.served_by.as_deref().map(str::to_string),
                status,
                request: request_snippet(&ctx.body, snippets),
                // What the context keeps does not depend on how much the log line shows.
                response: response_snippet(&captured[..captured.len().min(CAPTURE_LIMIT)], snippets),
            };
            (context_owner(client), serde_json::to_string(&entry).unwrap_or_default())
        });
    if served.is_none() && entry.is_none() {
        return;
    }
    let model = ctx.model.clone();
    let app = app.clone();
    tokio::spawn(async move {
        if let Some(upstream) = &served {
            if let Some(id) = answer_id {
                app.state.bind(&response_key(&id), &model, upstream).await;
            }
            if let Some(pin) = &continued {
                app.state.bind(pin, &model, upstream).await;
            }
            if let Some((session, field)) = &session {
                app.state.bind(session, field, upstream).await;
            }
        }
        if let (Some((owner, entry)), Some((session, _))) = (entry, &session) {
            app.state.push_context(&owner, session, &entry).await;
        }
    });
}

/// Binds a Responses answer's id to its upstream as soon as the id passes (a stream's
/// `response.created`; a whole answer's end), before the client has the answer: a tool loop sends
/// its continuation the moment it has `response.completed`, maybe to another replica, and would
/// otherwise be placed before `logging` bound it. Called for each piece of the body; done once. A
/// whole answer is read for its id at its end only (before, it is no document yet).
pub fn pin_answer(app: &Arc<App>, ctx: &mut RequestCtx, end_of_stream: bool) {
    if ctx.answer_pinned || ctx.operation != Operation::Generate || ctx.served_by.is_none() || ctx.opened_with_error {
        return;
    }
    if !end_of_stream && !matches!(ctx.response, super::ctx::ResponseMode::Stream(_)) {
        return;
    }
    if !ctx.status.is_some_and(|s| (200..300).contains(&s)) || ctx.inspected.as_ref().is_some_and(|i| i.unstored) {
        return;
    }
    let Some(id) = super::response::answer_id(ctx) else {
        return;
    };
    let Some(upstream) = ctx.candidate().map(|c| format!("{}/{}", c.provider.id, c.model)) else {
        return;
    };
    ctx.answer_pinned = true;
    let (app, model) = (app.clone(), ctx.model.clone());
    tokio::spawn(async move {
        app.state.bind(&response_key(&id), &model, &upstream).await;
    });
}

/// `GET /context/{session_id}`: the exchanges this client key had in the session, oldest first.
/// Another key's sessions answer 404, exactly as unknown ones do.
pub async fn context(app: &App, ctx: &RequestCtx, session: &str) -> (u16, Bytes) {
    let Some(client) = ctx.client.as_ref() else {
        return (401, Bytes::new());
    };
    let entries: Vec<Value> = app
        .state
        .context(&context_owner(client), session)
        .await
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    if entries.is_empty() {
        let body = json!({"error": {
            "message": "No context stored for this session and API key",
            "type": "invalid_request_error", "param": null, "code": "session_not_found"}});
        return (404, Bytes::from(body.to_string()));
    }
    let body = json!({"object": "session.context", "session_id": session, "entries": entries});
    (200, Bytes::from(body.to_string()))
}
