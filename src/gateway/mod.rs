//! The Pingora `ProxyHttp` implementation. Each hook is thin and hands its concern to the module that
//! owns it: `intake` (endpoint, auth, body, route), `failover` (attempts, retries, health),
//! `upstream_call` (what is sent upstream), `response` (headers, pass-through or translation of the
//! body), `respond` (answers we write ourselves), `logging` (the log line and metrics), `session`
//! (shared state: rate limit and binding pre-flight, session context).

pub(crate) mod cors;
mod ctx;
mod error;
mod failover;
mod headers;
mod intake;
mod logging;
mod respond;
mod response;
mod session;
mod upstream_call;

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, HeldResponse, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

pub use ctx::RequestCtx;
pub use error::GatewayError;
pub use failover::retry_loop_turns;
pub use session::{is_response_key, session_key};

use crate::app::App;
use ctx::Retry;
use failover::Phase;
use intake::Endpoint;

pub struct Gateway {
    app: Arc<App>,
}

impl Gateway {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// Writes a gateway error and tells Pingora the request is answered.
    async fn reject(&self, session: &mut Session, ctx: &mut RequestCtx, err: GatewayError) -> Result<bool> {
        // A client whose connection failed while it sent its request has left: its request is
        // counted as closed by the client, not as one the gateway refused.
        ctx.client_closed |= matches!(err, GatewayError::ClientRead(_));
        if let Err(e) = respond::error(session, ctx, &err).await {
            ctx.client_closed = true;
            return Err(e);
        }
        Ok(true)
    }

    async fn intake(&self, session: &mut Session, ctx: &mut RequestCtx) -> std::result::Result<bool, GatewayError> {
        // An error about the path itself (a wrong method, an unknown Gemini method) is said in the
        // format the path belongs to.
        ctx.client_format = intake::format_of_path(session.req_header().uri.path());
        // Every write to the client is bounded, the gateway's own answers (a model list, an error,
        // `100 Continue`) included: a client that stops reading must not hold its task forever.
        let write_timeout = self.app.settings.client_write_timeout_ms;
        session.set_write_timeout((write_timeout > 0).then(|| Duration::from_millis(write_timeout)));
        let origins = &self.app.settings.cors_origins;
        if !origins.is_empty() {
            ctx.cors_origin = cors::allowed_origin(origins, session);
            if cors::is_preflight(session) {
                ctx.uncounted = true;
                cors::answer_preflight(session, ctx)
                    .await
                    .map_err(|e| GatewayError::ClientRead(e.to_string()))?;
                return Ok(true);
            }
        }
        let endpoint = intake::classify(&session.req_header().method, &session.req_header().uri)?;
        match endpoint {
            Endpoint::Health => {
                ctx.uncounted = true;
                let body = Bytes::from_static(br#"{"status":"ok"}"#);
                respond::json(session, ctx, 200, body, &[])
                    .await
                    .map_err(|e| GatewayError::ClientRead(e.to_string()))?;
                Ok(true)
            }
            Endpoint::Models => {
                ctx.listing = true;
                // Its errors (a bad key, a rate limit) in the shape its answer would have.
                let format = intake::listing_format(session);
                if format == crate::formats::WireFormat::Anthropic {
                    ctx.client_format = Some(format);
                }
                intake::authenticate(session, &self.app, ctx)?;
                session::admit(&self.app, ctx).await?;
                let body = intake::model_listing(&self.app, ctx, format);
                respond::json(session, ctx, 200, body, &[])
                    .await
                    .map_err(|e| GatewayError::ClientRead(e.to_string()))?;
                Ok(true)
            }
            Endpoint::Context(id) => {
                intake::authenticate(session, &self.app, ctx)?;
                session::admit(&self.app, ctx).await?;
                let (status, body) = session::context(&self.app, ctx, &id).await;
                respond::json(session, ctx, status, body, &[])
                    .await
                    .map_err(|e| GatewayError::ClientRead(e.to_string()))?;
                Ok(true)
            }
            Endpoint::Proxy(call) => {
                ctx.client_format = Some(call.format);
                // Before anything can refuse it: its metrics are labelled by it.
                ctx.operation = call.operation;
                intake::authenticate(session, &self.app, ctx)?;
                let reading = Instant::now();
                let body = intake::read_body(session, self.app.settings.max_body_bytes).await;
                ctx.client_wait += reading.elapsed();
                let body = body?;
                intake::route(session, &self.app, ctx, &call, body)?;
                session::admit(&self.app, ctx).await?;
                session::start_capture(ctx);
                Ok(false)
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// No downstream modules. Pingora's default adds a response-compression module, disabled, that
    /// still costs an allocation and four calls per request; the gateway never compresses answers
    /// (it asks upstreams for uncompressed ones and passes bodies through or re-encodes them).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// A keep-alive connection remembers the key it was accepted with (see `auth::AcceptedKey`).
    fn persist_connection_context(&self, _session: &Session, ctx: &RequestCtx) -> Option<Box<dyn Any + Send + Sync>> {
        intake::connection_memory(ctx)
    }

    fn on_connection_reuse(&self, _session: &mut Session, ctx: &mut RequestCtx, prev: Box<dyn Any + Send + Sync>) {
        intake::recall_connection(ctx, prev);
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.app.metrics.active.inc();
        // A client may send its next request before this one's answer (RFC 9112 §9.3.2): Pingora
        // then keeps those bytes for the next request instead of failing this one. Idempotent, and
        // kept across the connection's requests.
        session.set_pipelining_enabled(true);
        ctx.request_id = intake::request_id(session);
        ctx.log_share = session::log_share(self.app.settings.log_body_bytes);
        match self.intake(session, ctx).await {
            Ok(answered) => Ok(answered),
            Err(err) => self.reject(session, ctx, err).await,
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        // While the next attempt is prepared (a pause before a retry, image URLs fetched for a
        // Gemini upstream) the client is watched as it is during one: nothing more is done for a
        // client that has left.
        let chosen = match unless_client_leaves(session, failover::next_peer(&self.app, ctx)).await {
            Ok(chosen) => chosen,
            Err(gone) => {
                ctx.client_closed = true;
                return Err(gone);
            }
        };
        match chosen {
            Ok(peer) => Ok(peer),
            Err(err) => {
                ctx.failure = Some(err);
                Error::e_explain(ErrorType::HTTPStatus(502), "no upstream left to try")
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let decision = failover::on_transport_error(ctx, &e, Phase::Connect, false);
        e.set_retry(decision != Retry::No);
        if decision == Retry::No && ctx.failure.is_none() {
            ctx.failure = Some(failover::exhausted(ctx, None));
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_call::shape_request(&self.app, ctx, req)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The body was read whole in request_filter; Pingora replays the raw bytes here on every
        // attempt. Hold them back and send the rewritten body at the end.
        let Some(attempt) = ctx.current.as_ref() else {
            return Ok(());
        };
        if end_of_stream {
            *body = Some(attempt.body.clone());
        } else if body.is_some() {
            *body = Some(Bytes::new());
        }
        Ok(())
    }

    fn hold_upstream_response(&self, resp: &ResponseHeader, ctx: &mut RequestCtx) -> bool {
        failover::hold_for_body(ctx, resp)
    }

    fn upstream_hold_limit(&self, resp: &ResponseHeader, ctx: &mut RequestCtx) -> Option<std::time::Duration> {
        failover::hold_limit(ctx, resp)
    }

    fn upstream_response_held(
        &self,
        resp: &ResponseHeader,
        body: &[u8],
        end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<HeldResponse> {
        Ok(failover::judge_held(ctx, resp, body, end))
    }

    fn downstream_keepalive_interval(&self, ctx: &mut RequestCtx) -> Option<Duration> {
        response::keepalive_interval(&self.app, ctx)
    }

    fn downstream_keepalive(&self, ctx: &mut RequestCtx) -> Option<Bytes> {
        response::keepalive(ctx)
    }

    fn upstream_response_complete(&self, ctx: &mut RequestCtx) -> Option<Duration> {
        response::end_grace(ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        let decision = failover::on_response(&self.app, ctx, resp);
        if decision == Retry::No || answer_started(session) {
            return Ok(());
        }
        let status = resp.status.as_u16();
        if ctx.started_attempts >= self.app.settings.max_attempts {
            ctx.failure = Some(failover::exhausted(ctx, None));
            ctx.status_retry = Some(Retry::No);
        } else {
            ctx.status_retry = Some(decision);
        }
        Error::e_explain(ErrorType::HTTPStatus(status), "retryable upstream status")
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response::on_header(&self.app, ctx, resp)?;
        response::fit_framing(session, resp);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        response::on_body(ctx, body, end_of_stream);
        session::pin_answer(&self.app, ctx, end_of_stream);
        session::capture(ctx, body);
        Ok(None)
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let written = answer_started(session);
        if failover::client_gone(&e) {
            failover::on_client_gone(ctx, written);
            e.set_retry(false);
            return e;
        }
        if failover::client_fault(&e) {
            failover::on_client_fault(ctx, &e);
            e.set_retry(false);
            return e;
        }
        let decision = match ctx.status_retry.take() {
            Some(d) => d,
            None => failover::on_transport_error(ctx, &e, Phase::Proxy { reused: client_reused }, written),
        };
        let retry = decision != Retry::No && !written;
        e.set_retry(retry);
        if !retry && !written && ctx.failure.is_none() {
            ctx.failure = Some(failover::exhausted(ctx, None));
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        if failover::client_gone(e) {
            // Nothing more can reach it (a stalled reader's socket is still full: another write
            // would wait as long again), and the upstream's answer was not at fault. What the
            // upstream reported of its tokens so far is still counted.
            response::keep_stream_usage(ctx);
            return FailToProxy {
                error_code: if answer_started(session) {
                    ctx.status.unwrap_or(0)
                } else {
                    0
                },
                can_reuse_downstream: false,
            };
        }
        if answer_started(session) {
            // Mid-response: the status is out; end a stream with an error event the client can
            // see. One whose end the upstream had sent, then kept its body open (a slow close,
            // pings after `[DONE]`), ends as it would have: its ending in the client's format
            // (`message_stop`, `[DONE]`…), then the end of the body.
            let ended = response::stream_ended(ctx);
            let event = response::abort_stream(ctx);
            if ended {
                ctx.stream_cut = false;
            }
            // The log line's copy of the answer ends as the client's does.
            session::capture(ctx, &event);
            if ended || event.is_some() {
                let _ = session.write_response_body(event, true).await;
            }
            return FailToProxy {
                error_code: ctx.status.unwrap_or(0),
                can_reuse_downstream: false,
            };
        }
        let err = ctx.failure.take().unwrap_or_else(|| failover::exhausted(ctx, None));
        let code = err.status();
        if respond::error(session, ctx, &err).await.is_err() {
            // The client left while its error was written: counted as such, as `reject` does.
            ctx.client_closed = true;
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: true,
        }
    }

    /// How Pingora's own log lines (a retried attempt's warning) name the request. Its default
    /// is the request line with its query, where a Gemini client may put its key (`?key=`).
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!("{} {}, request_id: {}", req.method, req.uri.path(), ctx.request_id)
    }

    fn request_refused(&self, status: u16, _error: Option<&Error>) {
        logging::log_refused(&self.app, status);
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // `logging` writes one line per request with everything that matters.
        true
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        // A retried attempt is in the request's line (its attempts), not a line of its own.
        true
    }

    async fn logging(&self, _session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        failover::confirm_probe(ctx);
        failover::give_back_probe(ctx);
        logging::log_request(&self.app, ctx, e);
        session::finish(&self.app, ctx);
    }
}

/// Whether the client has the answer's status: from then on nothing can be retried or replaced.
/// A `100 Continue` sent to a client that asked for one (curl with a large body) is not the
/// answer, though Pingora records it as the response written.
fn answer_started(session: &Session) -> bool {
    session.response_written().is_some_and(|h| !h.status.is_informational())
}

/// `work`'s output, or the error that ends the client's side first. Its request body has been read
/// whole, so its connection only stirs when it closes or sends what no request expects (as the
/// watch during an attempt in `pingora-proxy`'s loop reads it). Costs nothing when `work` is done
/// at its first poll.
async fn unless_client_leaves<T>(session: &mut Session, work: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::select! {
        biased;
        out = work => Ok(out),
        res = session.downstream_session.read_body_or_idle(true) => Err(match res {
            Err(e) => e.into_down(),
            Ok(_) => Error::explain(ErrorType::ConnectionClosed, "client sent data after its request body").into_down(),
        }),
    }
}
