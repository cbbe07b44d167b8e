//! The gateway's configuration: a YAML file, `${VAR}` secrets from the environment, and environment
//! overrides for the process-level settings. Everything is validated before anything starts.

mod load;
mod model;

pub use load::{load, ConfigError};
pub use model::*;
