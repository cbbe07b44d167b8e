//! Assembling the process: logging, the shared `App`, and the Pingora services (proxy, admin,
//! background discovery) with their listeners.

use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpSocket;

use crate::admin::AdminApp;
use crate::app::App;
use crate::auth::jwt::TokenTtl;
use crate::config::{log_filter, Config, LogFormat, ServerSettings};
use crate::gateway::Gateway;
use crate::live::StoreService;
use crate::log_line::{JsonLine, PlainLine, Timestamp};
use crate::secrets::{check_secret, SecretOrigin, Secrets};
use crate::state::{StateService, StateSettings};
use crate::store::DatabaseUrl;
use crate::upstream::Discovery;

/// Storage and secret settings, from the environment only (they never belong in a config file).
pub(crate) struct StorageEnv {
    pub database_url: DatabaseUrl,
    pub data_dir: PathBuf,
    pub secret_key: Option<String>,
    /// The secret before a rotation (see `rotate`).
    pub previous_secret_key: Option<String>,
    pub ttl: TokenTtl,
}

/// The longest token lifetime taken (10 years): a longer one would overflow the expiry's sum.
const MAX_TOKEN_TTL_S: i64 = 10 * 365 * 24 * 3600;

pub(crate) fn storage_env() -> Result<StorageEnv, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let data_dir = PathBuf::from(var("APIPROXY_DATA_DIR").unwrap_or_else(|| "data".into()));
    // The embedded database lives with the generated secret: a data folder moved to a volume
    // takes both (the default, `data`, gives `sqlite://data/apiproxy.db`). A database an earlier
    // version kept in `data/` while the data folder was elsewhere stays in use where it is.
    let url = var("DATABASE_URL").unwrap_or_else(|| {
        let (here, before) = (data_dir.join("apiproxy.db"), PathBuf::from("data/apiproxy.db"));
        let path = if !here.exists() && before.exists() && here != before {
            eprintln!(
                "apiproxy: using the database at {} (where earlier versions kept it); move it to {} \
                 or set DATABASE_URL",
                before.display(),
                here.display()
            );
            before
        } else {
            here
        };
        format!("sqlite://{}", path.display())
    });
    let database_url = DatabaseUrl::parse(&url).map_err(|e| e.to_string())?;
    let mut ttl = TokenTtl::default();
    for (name, slot) in [
        ("JWT_ACCESS_TTL_S", &mut ttl.access_s),
        ("JWT_REFRESH_TTL_S", &mut ttl.refresh_s),
        ("JWT_SIGN_IN_TTL_S", &mut ttl.sign_in_s),
    ] {
        if let Some(v) = var(name) {
            *slot = v
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_TOKEN_TTL_S).contains(n))
                .ok_or_else(|| {
                    format!("{name}: `{v}` is not a number of seconds from 1 to {MAX_TOKEN_TTL_S} (10 years)")
                })?;
        }
    }
    Ok(StorageEnv {
        database_url,
        data_dir,
        secret_key: var("SECRET_KEY"),
        previous_secret_key: var("SECRET_KEY_PREVIOUS"),
        ttl,
    })
}

/// `LOG_LEVEL` picks the filter, `LOG_FORMAT` text or JSON lines, `LOG_TIMEZONE` the clock.
fn init_tracing(s: &ServerSettings) {
    let filter = log_filter(&s.log_level)
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| "info".into());
    let tz = || s.log_timezone.as_deref().and_then(|tz| tz.parse().ok());
    let terminal = std::io::stdout().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(terminal)
        .with_timer(Timestamp(tz()));
    let _ = match s.log_format {
        LogFormat::Json => builder
            .json()
            .event_format(JsonLine {
                timer: Timestamp(tz()),
                in_span: tracing_subscriber::fmt::format()
                    .json()
                    .with_target(false)
                    .with_timer(Timestamp(tz())),
            })
            .try_init(),
        // Colours for a person at a terminal; elsewhere the same line, written without styling.
        LogFormat::Text if terminal => builder.try_init(),
        LogFormat::Text => builder.event_format(PlainLine { timer: Timestamp(tz()) }).try_init(),
    };
}

/// Pingora binds each service's port inside that service and, while the port stays taken, retries
/// for 30 s and then ends only that service: the process would run on without its admin port (no
/// metrics, no health) or without the proxy. A port in use ends the start instead, naming it.
fn check_free(place: &str, addr: &str) -> Result<(), String> {
    let at: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{place}: `{addr}` is not an address like 0.0.0.0:8000"))?;
    let socket = if at.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    // The same options as Pingora's own listener, so this bind succeeds exactly when that one will.
    let bound = socket
        .and_then(|s| s.set_reuseaddr(true).map(|()| s))
        .and_then(|s| s.bind(at));
    match bound {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "{place}: {addr} is already in use (another apiproxy, or another program, listens there)"
        )),
        Err(e) => Err(format!("{place}: cannot listen on {addr}: {e}")),
    }
}

/// What `run` would refuse of the environment, checked without starting anything (`--check`):
/// the database URL and token lifetimes, the secrets' lengths and the Redis settings. (The
/// browser-mask values, file or `MASK_*`, are checked with the configuration.)
pub fn check_environment() -> Result<(), String> {
    let env = storage_env()?;
    for (name, value) in [
        ("SECRET_KEY", &env.secret_key),
        ("SECRET_KEY_PREVIOUS", &env.previous_secret_key),
    ] {
        if let Some(v) = value {
            crate::secrets::check_secret(v).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    StateSettings::from_env(&|k| std::env::var(k).ok())?;
    Ok(())
}

/// Below this many descriptors a busy gateway runs out: each request in flight holds its client's
/// connection and its upstream's, plus the pooled ones.
const OPEN_FILES_WANTED: u64 = 16_384;

/// Raises the soft open-file limit to the hard one, as nginx's `worker_rlimit_nofile` would: a
/// shell's or systemd's default soft limit of 1,024 holds only ~500 streams before accepts fail.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < OPEN_FILES_WANTED => tracing::warn!(
            limit = n,
            "the open-file limit is low for a gateway (each request in flight holds two); raise the hard limit (ulimit -Hn, LimitNOFILE=)"
        ),
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// Runs the gateway until the process is told to stop. Returns only on a start-up error.
pub fn run(config: Config) -> Result<(), String> {
    init_tracing(&config.server);
    raise_open_file_limit();
    let env = storage_env()?;
    let (mut secrets, origin) =
        Secrets::load(env.secret_key.as_deref(), &env.data_dir).map_err(|e| format!("SECRET_KEY: {e}"))?;
    if let Some(previous) = &env.previous_secret_key {
        check_secret(previous).map_err(|e| format!("SECRET_KEY_PREVIOUS: {e}"))?;
        secrets = secrets.with_previous(previous.as_bytes());
    }
    match origin {
        SecretOrigin::Environment => {}
        SecretOrigin::File => tracing::warn!(
            dir = %env.data_dir.display(),
            "SECRET_KEY is not set: using the one generated earlier in the data folder; set SECRET_KEY in production"
        ),
        SecretOrigin::Generated => tracing::warn!(
            dir = %env.data_dir.display(),
            "SECRET_KEY is not set: generated one and kept it in the data folder (0600); set SECRET_KEY in production"
        ),
    }
    let state = StateSettings::from_env(&|k| std::env::var(k).ok())?;
    let s = &config.server;
    check_free("server.listen", &s.listen)?;
    check_free("server.admin_listen", &s.admin_listen)?;
    let app = App::new(&config, Arc::new(secrets), env.ttl, state)?;

    let conf = ServerConf {
        threads: s.threads,
        // LLM streams are long; a shutdown waits briefly for them, then ends.
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(10),
        upstream_keepalive_pool_size: 256,
        max_retries: crate::gateway::retry_loop_turns(s.max_attempts),
        ca_file: s.ca_file.clone(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // The store opens the database, migrates it and builds the first snapshot; everything else waits.
    let store = server.add_service(background_service(
        "store",
        StoreService::new(app.clone(), env.database_url),
    ));
    // Shared state (Redis) is opened inside Pingora's runtime; it never blocks start-up for long.
    let state = server.add_service(background_service("state", StateService::new(app.clone())));
    let discovery = server.add_service(background_service("discovery", Discovery::new(app.clone())));
    discovery.add_dependency(&store);
    discovery.add_dependency(&state);

    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, Gateway::new(app.clone()), "apiproxy");
    proxy.add_tcp(&s.listen);
    let proxy = server.add_service(proxy);
    // Serve only once DNS and model lists are known, so zero-config routes work from the first request.
    proxy.add_dependency(&discovery);

    let mut admin = Service::new("admin".to_string(), AdminApp::new(app.clone()));
    admin.add_tcp(&s.admin_listen);
    let admin = server.add_service(admin);
    admin.add_dependency(&store);

    tracing::info!(
        listen = %s.listen,
        admin = %s.admin_listen,
        providers = app.snapshot().routes.providers().len(),
        state = app.state.backend_name(),
        "apiproxy starting"
    );
    server.run_forever()
}
