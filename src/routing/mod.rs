//! Routing: which upstreams may serve a model, how healthy each is, and which one to try next.

pub mod health;
pub mod select;
pub mod table;

pub use health::{Failure, HealthPolicy, HealthRegistry};
pub use select::{choose, choose_dry, score, Exhausted, Scored, Sticky};
pub use table::{Candidate, RouteError, RouteKind, RoutePlan, RouteTable};
