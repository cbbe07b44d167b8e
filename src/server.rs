//! Assembling the process: logging, the shared `App`, and the Pingora services (proxy, admin,
//! background discovery) with their listeners.

use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::app::App;
use crate::config::{Config, LogFormat, ServerSettings};
use crate::gateway::Gateway;
use crate::upstream::Discovery;

/// Log timestamps in `LOG_TIMEZONE`, or in local time.
struct Timestamp(Option<chrono_tz::Tz>);

impl tracing_subscriber::fmt::time::FormatTime for Timestamp {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f%:z";
        match self.0 {
            Some(tz) => write!(w, "{}", chrono::Utc::now().with_timezone(&tz).format(FORMAT)),
            None => write!(w, "{}", chrono::Local::now().format(FORMAT)),
        }
    }
}

/// `LOG_LEVEL` picks the filter, `LOG_FORMAT` text or JSON lines, `LOG_TIMEZONE` the clock.
fn init_tracing(s: &ServerSettings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&s.log_level).unwrap_or_else(|_| "info".into());
    let timer = Timestamp(s.log_timezone.as_deref().and_then(|tz| tz.parse().ok()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_timer(timer);
    let _ = match s.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs the gateway until the process is told to stop. Returns only on a start-up error.
pub fn run(config: Config) -> Result<(), String> {
    init_tracing(&config.server);
    let app = App::new(&config)?;
    if config.clients.is_empty() {
        tracing::warn!("no client keys are configured: every proxied request will be refused with 401");
    }
    let s = &config.server;

    let conf = ServerConf {
        threads: s.threads,
        // LLM streams are long; a shutdown waits briefly for them, then ends.
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(10),
        upstream_keepalive_pool_size: 256,
        max_retries: 16,
        ca_file: s.ca_file.clone(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let discovery = server.add_service(background_service("discovery", Discovery::new(app.clone())));

    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, Gateway::new(app.clone()), "apiproxy");
    proxy.add_tcp(&s.listen);
    let proxy = server.add_service(proxy);
    // Serve only once DNS and model lists are known, so zero-config routes work from the first request.
    proxy.add_dependency(&discovery);

    let mut admin = Service::new("admin".to_string(), AdminApp::new(app.clone()));
    admin.add_tcp(&s.admin_listen);
    server.add_service(admin);

    tracing::info!(
        listen = %s.listen,
        admin = %s.admin_listen,
        providers = app.snapshot().routes.providers().len(),
        "apiproxy starting"
    );
    server.run_forever()
}
