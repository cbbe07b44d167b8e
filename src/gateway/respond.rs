//! Answers the gateway writes itself: local endpoints and errors.

use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::error::GatewayError;

/// Writes a complete JSON response with the request id and the `extra` headers.
pub async fn json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header(super::headers::names::X_REQUEST_ID, ctx.request_id.header())?;
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    super::cors::expose(&mut resp, ctx)?;
    ctx.status = Some(status);
    if ctx.log_share > 0 {
        // The answer the log line shows is this one.
        let kept = body.len().min(ctx.log_share);
        ctx.capture = Some(bytes::BytesMut::from(&body[..kept]));
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Writes `err` in the client's format.
pub async fn error(session: &mut Session, ctx: &mut RequestCtx, err: &GatewayError) -> pingora::Result<()> {
    let (status, body) = err.render(ctx.client_format(), Some(ctx.request_id.as_str()));
    ctx.error_code = Some(err.code());
    let mut extra = Vec::new();
    if let Some(secs) = err.retry_after(ctx.upstream_retry_after) {
        extra.push(("retry-after", secs.to_string()));
    }
    if let GatewayError::MethodNotAllowed { allow, .. } = err {
        extra.push(("allow", allow.to_string()));
    }
    // A client told to go ahead with its body (or that sent it unasked) may still be sending it.
    let body_coming =
        !session.is_body_done() && (session.response_written().is_some() || !super::intake::expects_continue(session));
    let client_failed = matches!(
        err,
        GatewayError::ClientRead(_) | GatewayError::BodyTimeout(_) | GatewayError::MalformedBody(_)
    );
    if client_failed || matches!(err, GatewayError::BodyTooLarge { .. }) {
        // The rest of the body was not read (or its framing is broken, so where it ends is
        // unknown: what follows must not be read as the next request): the connection cannot
        // carry another request.
        session.set_keepalive(None);
    } else {
        // The client's upload time, not the gateway's (overhead metric).
        let started = std::time::Instant::now();
        drain_small_body(session).await;
        ctx.client_wait += started.elapsed();
    }
    json(session, ctx, status, body, &extra).await?;
    if body_coming && !client_failed {
        // The request is answered: reading and dropping the rest of its body is no part of its
        // latency.
        ctx.answered_at = Some(std::time::Instant::now());
        linger(session).await;
    }
    Ok(())
}

/// Longest the rest of a refused request's body is read and dropped after the answer.
const LINGER: Duration = Duration::from_secs(5);

/// Closing a connection with request bytes unread makes the kernel reset it, which can discard the
/// answer on its way and fails the client's upload: a client still sending a body its answer did
/// not wait for (a bad key, a body over the limit) would see "connection reset" instead of the
/// error, and an SDK would send the whole body again. Its rest is read and dropped first, for a
/// while (as nginx's lingering close), and the connection then ends.
async fn linger(session: &mut Session) {
    if session.is_body_done() {
        return;
    }
    session.set_keepalive(None);
    let _ = tokio::time::timeout(LINGER, session.drain_request_body()).await;
}

/// Largest unread request body read and dropped before an error answer, so that the keep-alive
/// connection can carry the client's next request (Pingora closes a connection whose request body
/// was not read to the end); a larger, chunked or slow one ends the connection instead.
const DRAIN_LIMIT: usize = 64 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

async fn drain_small_body(session: &mut Session) {
    if session.is_body_done() {
        return;
    }
    // A client waiting for `100 Continue` before it sends its body (curl) would not send it: the
    // answer goes at once, and the connection ends with it.
    if session.response_written().is_none() && super::intake::expects_continue(session) {
        session.set_keepalive(None);
        return;
    }
    let small = session
        .get_header(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n <= DRAIN_LIMIT);
    if small {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, session.drain_request_body()).await;
    }
}
