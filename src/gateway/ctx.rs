//! Per-request state. It survives Pingora's retry loop, so it carries the plan, what was tried and
//! the attempt in progress; per-attempt state is reset when the next attempt starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::error::GatewayError;
use crate::app::Snapshot;
use crate::auth::ClientIdentity;
use crate::formats::request::Inspected;
use crate::formats::sse::StreamWatch;
use crate::formats::ClientApi;
use crate::routing::RoutePlan;
use crate::upstream::KeyChoice;

/// What one upstream attempt came to, for the client's error summary and the logs. No secrets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRecord {
    pub provider: Arc<str>,
    pub model: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The attempt in flight.
pub struct Attempt {
    pub candidate: usize,
    pub key: Option<KeyChoice>,
    pub started: Instant,
    /// The body sent upstream: the client's, with `model` rewritten.
    pub body: Bytes,
}

/// What the failover logic decided about the attempt that just failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try another candidate (or another key of the same one).
    Next,
    /// Once, after a short backoff, on the same upstream.
    Same,
    /// Give up: return what we have.
    No,
}

pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    pub api: Option<ClientApi>,
    pub client: Option<ClientIdentity>,
    pub snapshot: Option<Arc<Snapshot>>,
    /// The client's body as received.
    pub body: Bytes,
    pub inspected: Option<Inspected>,
    /// SSE was asked for, in the body or with `Accept: text/event-stream`.
    pub stream: bool,
    pub session_id: Option<String>,
    pub plan: Option<RoutePlan>,
    /// Candidates that are done for this request.
    pub excluded: Vec<usize>,
    /// Keys refused during this request, as (candidate, key index).
    pub refused_keys: Vec<(usize, usize)>,
    pub attempts: Vec<AttemptRecord>,
    pub started_attempts: usize,
    pub current: Option<Attempt>,
    /// Set when the next attempt goes to the same candidate after a transient error.
    pub retry_same: Option<usize>,
    pub same_retry_used: bool,
    /// The retry decision `upstream_response_filter` made for `error_while_proxy` to apply.
    pub status_retry: Option<Retry>,
    /// Latest `Retry-After` an upstream sent, seconds.
    pub upstream_retry_after: Option<u64>,
    /// The error to render in `fail_to_proxy`.
    pub failure: Option<GatewayError>,
    pub watch: Option<StreamWatch>,
    /// Status sent to the client.
    pub status: Option<u16>,
    pub served_by: Option<Arc<str>>,
    pub stream_cut: bool,
    /// The answer is an SSE stream (counted in the open-streams gauge).
    pub streaming_response: bool,
    /// Time spent waiting on upstreams (failed attempts, backoff, and the serving attempt).
    pub upstream_wait: Duration,
    /// Upstream time to response header of the serving attempt.
    pub ttfb: Option<Duration>,
    /// Time from the request's start to the first stream bytes sent to the client.
    pub first_token: Option<Duration>,
    /// The code of an error the gateway answered itself.
    pub error_code: Option<&'static str>,
}

impl RequestCtx {
    pub fn new() -> Self {
        Self {
            request_id: String::new(),
            started: Instant::now(),
            api: None,
            client: None,
            snapshot: None,
            body: Bytes::new(),
            inspected: None,
            stream: false,
            session_id: None,
            plan: None,
            excluded: Vec::new(),
            refused_keys: Vec::new(),
            attempts: Vec::new(),
            started_attempts: 0,
            current: None,
            retry_same: None,
            same_retry_used: false,
            status_retry: None,
            upstream_retry_after: None,
            failure: None,
            watch: None,
            status: None,
            served_by: None,
            stream_cut: false,
            streaming_response: false,
            upstream_wait: Duration::ZERO,
            ttfb: None,
            first_token: None,
            error_code: None,
        }
    }

    pub fn api(&self) -> ClientApi {
        self.api.unwrap_or(ClientApi::ChatCompletions)
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
