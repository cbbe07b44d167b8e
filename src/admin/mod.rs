//! The admin service on its own port (`APIPROXY_ADMIN_LISTEN`): health, Prometheus metrics, the
//! OpenAPI document, and the JSON REST API for users, API keys, providers, logical models and
//! routing. It never shares a port with client traffic.
//!
//! `router` holds the route table; `guard` checks tokens; `handlers` do the work; `http` holds the
//! request, reply and error types.

pub mod guard;
pub mod handlers;
pub mod http;
pub mod openapi;
pub mod router;
pub mod throttle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use parking_lot::Mutex;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use self::http::{parse_query, ApiError, Reply, Req};
use self::router::{Access, Op, Resolved, RouteSpec, Router};
use crate::app::App;
use crate::formats::error_map::whole_secs_up;
use handlers as h;

/// Admin request bodies are small JSON documents.
const MAX_BODY: usize = 1024 * 1024;

/// A provider's raw model list: when it was fetched, and from which build of the provider (any
/// change of configuration builds it anew, so the list is fetched again; a build no longer in use
/// is not kept alive by the cache, nor are its keys).
pub type RawModels = (Instant, std::sync::Weak<crate::upstream::Provider>, Value);

/// What the admin handlers share.
pub struct AdminState {
    pub app: Arc<App>,
    /// For live provider probes and raw model lists.
    pub http: reqwest::Client,
    /// Raw model lists by provider, with when they were fetched.
    /// Raw model lists by provider id.
    pub raw_models: Mutex<HashMap<String, RawModels>>,
    /// What users who are not admins may still change this second.
    pub changes: throttle::ChangeBudget,
    /// Usernames whose logins failed again and again.
    pub logins: throttle::LoginFailures,
}

pub struct AdminApp {
    state: AdminState,
    router: Router,
    openapi: Vec<u8>,
}

impl AdminApp {
    pub fn new(app: Arc<App>) -> Self {
        let router = Router::new();
        let openapi = openapi::document(router.specs()).to_string().into_bytes();
        let http = crate::upstream::provider_client(&app.settings, Duration::from_secs(10)).unwrap_or_else(|e| {
            // Checked at start-up by discovery's own client (same settings); never a client that
            // would follow redirects with a provider's key.
            tracing::error!(error = %e, "cannot build the admin API's provider client");
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default()
        });
        Self {
            state: AdminState {
                app,
                http,
                raw_models: Mutex::new(HashMap::new()),
                changes: throttle::ChangeBudget::default(),
                logins: throttle::LoginFailures::default(),
            },
            router,
            openapi,
        }
    }

    async fn handle(&self, spec: &RouteSpec, req: &Req) -> Result<Reply, ApiError> {
        let app = &*self.state.app;
        let caller = match spec.access {
            Access::Public => None,
            Access::User | Access::Admin => Some(guard::authenticate(app, req).await?),
        };
        if spec.access == Access::Admin && !caller.as_ref().is_some_and(|c| c.is_admin()) {
            return Err(ApiError::Forbidden("this endpoint needs the admin role"));
        }
        if let Some(user) = caller.as_ref().filter(|c| !c.is_admin() && is_change(&req.method)) {
            self.state
                .changes
                .take(&user.user_id)
                .map_err(|wait| ApiError::TooManyChanges {
                    retry_after: whole_secs_up(wait.as_secs_f64()).unwrap_or(1).max(1),
                })?;
        }
        // Routes marked User or Admin always have a caller here.
        let who = || caller.as_ref().ok_or(ApiError::Unauthorized("missing bearer token"));
        match spec.op {
            Op::Health => Ok(Reply::ok(json!({"status": "ok"}))),
            Op::Metrics => {
                // Two scrapes at once (an HA Prometheus pair): one must not render the gauges
                // while the other has them cleared.
                let body = {
                    let _scrape = app.metrics.scrape.lock();
                    refresh_upstream_gauges(app);
                    app.metrics.retain_clients(&app.snapshot().clients.names());
                    app.metrics.render()
                };
                Ok(Reply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body,
                    allow: None,
                    retry_after: None,
                })
            }
            Op::OpenApi => Ok(Reply {
                status: 200,
                content_type: "application/json",
                body: self.openapi.clone(),
                allow: None,
                retry_after: None,
            }),
            Op::AdminInit => h::system::admin_init(app, req).await,
            Op::SecretGenerate => h::system::secret_generate(app, req).await,
            Op::Login => h::auth::login(app, req, &self.state.logins).await,
            Op::Refresh => h::auth::refresh(app, req).await,
            Op::Logout => h::auth::logout(app, req, who()?).await,
            Op::Revoke => h::auth::revoke(app, req).await,
            Op::UsersList => h::users::list(app).await,
            Op::UserCreate => h::users::create(app, req).await,
            Op::UserGet => h::users::get(app, req).await,
            Op::UserUpdate => h::users::update(app, req, who()?).await,
            Op::UserDisable => h::users::disable(app, req, who()?).await,
            Op::KeysList => h::api_keys::list(app, req, who()?).await,
            Op::KeyCreate => h::api_keys::create(app, req, who()?).await,
            Op::KeyUpdate => h::api_keys::update(app, req, who()?).await,
            Op::KeyDelete => h::api_keys::delete(app, req, who()?).await,
            Op::ProvidersList => h::providers::list(app).await,
            Op::ProviderCreate => h::providers::create(app, req).await,
            Op::ProviderGet => h::providers::get(app, req).await,
            Op::ProviderUpdate => h::providers::update(app, req).await,
            Op::ProviderDelete => h::providers::delete(app, req).await,
            Op::ProviderModels => h::providers::models(&self.state, req).await,
            Op::ProviderHealth => h::providers::health(&self.state, req).await,
            Op::ProviderMetrics => h::providers::metrics(app, req).await,
            Op::ProviderKeysList => h::provider_keys::list(app, req).await,
            Op::ProviderKeyCreate => h::provider_keys::create(app, req).await,
            Op::ProviderKeyUpdate => h::provider_keys::update(app, req).await,
            Op::ProviderKeyDelete => h::provider_keys::delete(app, req).await,
            Op::LogicalList => h::logical::list(app).await,
            Op::LogicalCreate => h::logical::create(app, req).await,
            Op::LogicalGet => h::logical::get(app, req).await,
            Op::LogicalUpdate => h::logical::update(app, req).await,
            Op::LogicalDelete => h::logical::delete(app, req).await,
            Op::LogicalUpstreams => h::logical::upstreams(app, req).await,
            Op::RoutingDecide => h::routing::decide(app, req).await,
            Op::SessionGet => h::routing::session_get(app, req).await,
            Op::SessionDelete => h::routing::session_delete(app, req).await,
        }
    }

    async fn serve(&self, session: &mut ServerSession) -> Reply {
        let header = session.req_header();
        let method = header.method.clone();
        let path = header.uri.path().to_string();
        let query = parse_query(header.uri.query());
        let bearer = header
            .headers
            .get(::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
            });
        let (spec, params) = match self.router.resolve(&method, &path) {
            Resolved::Found(spec, params) => (spec, params),
            Resolved::WrongMethod { allow } => return ApiError::MethodNotAllowed { allow }.reply(),
            Resolved::NotFound => return ApiError::NotFound(format!("no admin endpoint at {path}")).reply(),
        };
        if let Err(e) = not_cross_site(&method, header) {
            return e.reply();
        }
        let mut body = BytesMut::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return ApiError::bad("body", format!("larger than {MAX_BODY} bytes")).reply();
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => return ApiError::bad("body", "could not be read").reply(),
            }
        }
        let req = Req {
            method,
            path,
            query,
            params: params.into_iter().collect(),
            bearer,
            body: body.freeze(),
            peer: session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
        };
        match self.handle(spec, &req).await {
            Ok(reply) => reply,
            Err(e) => e.reply(),
        }
    }
}

/// A request that changes something (every method but the reading ones).
fn is_change(method: &::http::Method) -> bool {
    !matches!(
        *method,
        ::http::Method::GET | ::http::Method::HEAD | ::http::Method::OPTIONS
    )
}

/// Refuses a change a web page could make in an operator's browser (a form or a `no-cors` fetch
/// to the admin port on localhost, say, to create the first admin before the operator does): a
/// browser names the page's origin (`Origin`, `Sec-Fetch-Site`) on such a request, and it must be
/// the admin service's own. Clients that are not browsers (curl, SDKs) send neither.
fn not_cross_site(method: &::http::Method, header: &pingora::http::RequestHeader) -> Result<(), ApiError> {
    let refused = Err(ApiError::Forbidden("cross-site requests to the admin API are refused"));
    let text = |name: &str| header.headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    if !is_change(method) {
        // A page whose name an attacker re-points at this port (DNS rebinding) reads it as its
        // own origin (`/metrics` names every client key): a read a page made counts only when it
        // names the port by address or as localhost. An address typed or bookmarked
        // (`Sec-Fetch-Site: none`) is the operator's own.
        let page_made = text("sec-fetch-site").is_some_and(|s| !s.eq_ignore_ascii_case("none"));
        if page_made && !text("host").is_some_and(host_is_address) {
            return refused;
        }
        return Ok(());
    }
    if text("sec-fetch-site")
        .is_some_and(|s| s.eq_ignore_ascii_case("cross-site") || s.eq_ignore_ascii_case("same-site"))
    {
        return refused;
    }
    if let Some(origin) = text("origin") {
        let own = text("host").is_some_and(|host| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| o.eq_ignore_ascii_case(host))
        });
        // A page whose name an attacker re-points at this port (DNS rebinding) is its own origin:
        // a browser's change counts only when it names the port by address or as localhost.
        if !own || !text("host").is_some_and(host_is_address) {
            return refused;
        }
    }
    Ok(())
}

/// Whether a `Host` header names an IP address or localhost (with or without a port).
fn host_is_address(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> ::http::Response<Vec<u8>> {
        let started = Instant::now();
        let reply = self.serve(session).await;
        let req = session.req_header();
        // Method, path and status only: paths carry ids, never secrets; bodies are never logged.
        if req.uri.path() != "/health" && req.uri.path() != "/metrics" {
            tracing::info!(
                method = %req.method,
                path = %req.uri.path(),
                status = reply.status,
                ms = started.elapsed().as_millis() as u64,
                "admin request"
            );
        }
        let mut resp = ::http::Response::builder().status(reply.status);
        if let Some(allow) = &reply.allow {
            resp = resp.header(::http::header::ALLOW, allow.as_str());
        }
        if let Some(secs) = reply.retry_after {
            resp = resp.header(::http::header::RETRY_AFTER, secs);
        }
        resp.header(::http::header::CONTENT_TYPE, reply.content_type)
            .header(::http::header::CONTENT_LENGTH, reply.body.len())
            .header(::http::header::CACHE_CONTROL, "no-store")
            .body(reply.body)
            .unwrap_or_else(|_| ::http::Response::new(Vec::new()))
    }
}

/// Upstream health lives in the health registry; copy it into the gauges at scrape time.
fn refresh_upstream_gauges(app: &App) {
    let snap = app.snapshot();
    // A provider deleted or renamed since the last scrape, or a model no route leads to any more
    // (taken out of a logical model, gone from the provider's list), leaves no series behind.
    app.metrics.clear_upstreams();
    let now = std::time::Instant::now();
    let routed: std::collections::HashSet<(&str, &str)> = snap
        .routes
        .logical_ids()
        .filter_map(|id| snap.routes.logical(id))
        .flat_map(|plan| plan.candidates.iter())
        .map(|c| (&*c.provider.id, &*c.model))
        .collect();
    for (provider, model, view) in app.health.all(now) {
        let Some(p) = snap.routes.provider(&provider) else {
            continue;
        };
        // Names clients made up (a provider's unlisted ones) are no labels: only their shared entry.
        let live = &*model == crate::routing::health::UNLISTED_SHARED
            || routed.contains(&(&*provider, &*model))
            || app.catalog.providers_for(&model).contains(&provider);
        if live {
            app.metrics.set_upstream(&provider, &model, p.weight, &view);
        }
    }
    // Computed as the router computes it, for each logical model's upstreams.
    for route in snap.routes.logical_ids() {
        let Some(plan) = snap.routes.logical(route) else {
            continue;
        };
        for (scored, _) in crate::routing::select::score(plan, &[], now) {
            let c = &plan.candidates[scored.index];
            app.metrics
                .route_weight
                .with_label_values(&[route, &c.provider.id, &c.model])
                .set(scored.effective_weight);
        }
    }
}
