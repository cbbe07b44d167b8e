//! Upstream providers: where they live, how to authenticate, and keeping that knowledge fresh off the
//! request path (DNS, model lists).

pub mod catalog;
mod discovery;
mod endpoint;
mod http_client;
mod media;
mod provider;

pub use catalog::{CatalogVersion, ModelCatalog};
pub use discovery::{fetch_raw_models, Discovery};
pub use endpoint::{check_extra_header, check_path, Endpoint};
pub use http_client::provider_client;
pub use media::{FetchError, MediaFetcher};
pub use provider::{KeyChoice, Provider, ProviderExtras, ProviderKey};
