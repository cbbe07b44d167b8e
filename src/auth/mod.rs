//! Who is calling. Client API keys on the proxy port (`client`, minted by `keys`); passwords
//! (`password`) and JWTs (`jwt`) for people on the admin port.

pub mod client;
pub mod jwt;
pub mod keys;
pub mod password;

pub use client::{AcceptedKey, AuthError, ClientIdentity, ClientKeys, StoredClientKey};
