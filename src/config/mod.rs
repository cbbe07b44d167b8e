//! The gateway's configuration: a YAML file, `${VAR}` secrets from the environment, and environment
//! overrides for the process-level settings. Everything is validated before anything starts.

mod load;
mod log_filter;
mod model;

pub use load::{check_retryable_statuses, load, repeated_upstream, ConfigError, REPEATED_UPSTREAM};
pub use log_filter::log_filter;
pub use model::*;
