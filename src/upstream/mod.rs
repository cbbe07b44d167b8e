//! Upstream providers: where they live, how to authenticate, and keeping that knowledge fresh off the
//! request path (DNS, model lists).

mod catalog;
mod discovery;
mod endpoint;
mod provider;

pub use catalog::ModelCatalog;
pub use discovery::Discovery;
pub use endpoint::Endpoint;
pub use provider::{KeyChoice, Provider, ProviderKey};
