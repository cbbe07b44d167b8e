//! The gateway's shared state behind one interface, `StateBackend`, with two implementations:
//! in-process (`LocalBackend`, the default: one replica, no server) and Redis (`RedisBackend`, when
//! `REDIS_URL` is set: every replica sees the same state). `State` is what the rest of the gateway
//! calls: it bounds every Redis call, falls back to the local backend while Redis is down or slow,
//! and counts those errors; the `StateService` keeps health, replicas and the snapshot in step.

mod context;
mod facade;
mod local;
mod redis;
mod scripts;
mod service;

use std::time::Duration;

use async_trait::async_trait;

pub use context::{redact, request_snippet, response_snippet, ContextEntry};
pub use facade::{State, StateSettings};
pub use local::LocalBackend;
pub use redis::RedisBackend;
pub use service::StateService;

use crate::routing::health::{HealthDelta, SharedHealth};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Redis answered with an error, or the connection failed. Never carries a URL or password.
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply from the state backend: {0}")]
    Reply(String),
}

/// What the request path asks the shared state before choosing an upstream: one round trip.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admission<'a> {
    /// A client key's rate-limit bucket and its allowance per second.
    pub limit: Option<(&'a str, u32)>,
    /// Its user's bucket, shared by all of the user's keys, and the user's allowance. A request
    /// goes on only when both buckets have a token, and a refused one spends neither.
    pub user_limit: Option<(&'a str, u32)>,
    /// The session id and the requested model, to read the session's binding.
    pub session: Option<(&'a str, &'a str)>,
    /// The key of the response the request continues (`session::response_key`) and the model:
    /// where that response was made, read beside the session's binding.
    pub pin: Option<(&'a str, &'a str)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Admitted {
    /// `Some(wait)` when the rate limit refused the request.
    pub limited: Option<Duration>,
    /// The upstream (`provider/model`) the session is bound to for this model.
    pub binding: Option<String>,
    /// The upstream the continued response was made by, when the gateway recorded it.
    pub pinned: Option<String>,
}

/// Bounds on session context kept per (client key, session).
#[derive(Debug, Clone, Copy)]
pub struct ContextLimits {
    pub max_entries: usize,
    pub ttl: Duration,
}

/// One interface for everything replicas share. Every method is one round trip to the backend.
#[async_trait]
pub trait StateBackend: Send + Sync {
    /// `local` or `redis`: the metric label.
    fn name(&self) -> &'static str;

    /// Takes a token from the client key's bucket (atomically) and reads the session's binding.
    async fn admit(&self, q: Admission<'_>) -> Result<Admitted, StateError>;

    /// Binds `session` to `upstream` for `model`, as decided at `at_ms` (Unix ms): a binding
    /// decided later is never replaced by it (one written back after an outage may be older than
    /// what another replica wrote meanwhile). The session's bindings live `ttl` after the last.
    async fn bind(
        &self,
        session: &str,
        model: &str,
        upstream: &str,
        at_ms: u64,
        ttl: Duration,
    ) -> Result<(), StateError>;

    /// Every binding of the session: (model, upstream), sorted by model.
    async fn bindings(&self, session: &str) -> Result<Vec<(String, String)>, StateError>;

    /// Drops every binding of the session; says whether there was one. A binding decided before
    /// `at_ms` (one another replica writes back after an outage) is refused for `ttl`: the drop
    /// holds on every replica.
    async fn unbind(&self, session: &str, at_ms: u64, ttl: Duration) -> Result<bool, StateError>;

    /// Appends a context entry (JSON) for this client key's session, keeping the newest `max_entries`.
    async fn push_context(
        &self,
        owner: &str,
        session: &str,
        entry: &str,
        limits: ContextLimits,
    ) -> Result<(), StateError>;

    /// The context entries (JSON, oldest first) this client key wrote for the session.
    async fn context(&self, owner: &str, session: &str) -> Result<Vec<String>, StateError>;

    /// Caches a provider's discovered model list for `ttl`.
    async fn put_models(&self, provider: &str, models: &[String], ttl: Duration) -> Result<(), StateError>;

    /// A provider's cached model list, if still fresh.
    async fn models(&self, provider: &str) -> Result<Option<Vec<String>>, StateError>;

    /// Folds this replica's health deltas into the shared view (atomically) and returns the view
    /// of every upstream. A batch is folded in once: sent again under the same `batch_id` (after
    /// a call that timed out but may have been applied), it only returns the view.
    async fn sync_health(
        &self,
        batch_id: &str,
        deltas: &[(String, HealthDelta)],
    ) -> Result<Vec<(String, SharedHealth)>, StateError>;

    /// Says this replica is alive; returns how many replicas are.
    async fn heartbeat(&self, replica: &str) -> Result<u32, StateError>;
    /// Gives up the connection for a new one (a failed probe: the old one may be dead without
    /// having been told).
    fn reconnect(&self) {}

    /// Tells every replica that the configuration changed.
    async fn publish_change(&self) -> Result<(), StateError>;

    /// A cheap liveness check.
    async fn ping(&self) -> Result<(), StateError>;
}

/// The key a session context is filed under for a client: the stored key's id, or the name of a
/// key from the config file, with its length: Redis keys join their parts with `:`, which a name
/// may hold (client `team` with session `x:1` and client `team:x` with session `1` must not meet).
pub fn context_owner(client: &crate::auth::ClientIdentity) -> String {
    let mut owner = String::new();
    push_owner(&mut owner, client);
    owner
}

fn push_owner(out: &mut String, client: &crate::auth::ClientIdentity) {
    use std::fmt::Write;
    let _ = match &client.key_id {
        Some(id) => write!(out, "k:{id}"),
        None => write!(out, "c{}:{}", client.name.len(), client.name),
    };
}

/// The field a session's binding for `model` is kept under: the client key's owner (as
/// `context_owner` writes it) and the model. A binding belongs to the key whose request made it: another key sending the
/// same session id neither follows nor moves it. (A response's pin is kept under the model alone:
/// its id is the answer's own, unguessable, and a continuation may come from any of the account's
/// keys.)
pub fn binding_field(client: &crate::auth::ClientIdentity, model: &str) -> String {
    let mut field = String::with_capacity(client.name.len() + model.len() + 8);
    push_owner(&mut field, client);
    field.push(' ');
    field.push_str(model);
    field
}

/// A `context_owner` as written: a stored key by id, or a config file client by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    Key(&'a str),
    Client(&'a str),
}

/// A binding field read back: its owner and model, or `None` for a field that is a model alone
/// (a response's pin, or a binding written before bindings had owners).
pub fn split_binding_field(field: &str) -> Option<(Owner<'_>, &str)> {
    if let Some(rest) = field.strip_prefix("k:") {
        let (id, model) = rest.split_once(' ')?;
        return Some((Owner::Key(id), model));
    }
    let (len, rest) = field.strip_prefix('c')?.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let name = rest.get(..len)?;
    let model = rest.get(len..)?.strip_prefix(' ')?;
    Some((Owner::Client(name), model))
}

#[cfg(test)]
mod tests;
