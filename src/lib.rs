//! APIProxy: an AI gateway on Pingora. One OpenAI-compatible endpoint in front of many LLM
//! providers, with routing, failover and session stickiness. See ARCHITECTURE.md for the request's
//! path through the Pingora hooks.

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod formats;
pub mod gateway;
pub mod health_probe;
pub mod limit;
pub mod live;
pub mod log_line;
pub mod metrics;
pub mod rotate;
pub mod routing;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod upstream;
