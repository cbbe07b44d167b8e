//! Keeping the request path's snapshot in step with the database: merging the database's items
//! into the config file's (`merge`), and rebuilding after admin writes or when another replica
//! changed something (`sync`).

pub mod merge;
pub mod settings;
pub mod sync;

pub use merge::DbState;
pub use settings::{ProviderSettings, SettingsError};
pub use sync::{commit, reload, reload_if_changed, StoreService};
