//! Client authentication on the proxy port. Keys are held only as HMAC tags and compared in constant
//! time; the presented key may come as `Authorization: Bearer <key>`, `X-API-Key: <key>`, or the
//! original product's `Bearer <base64(key)>`.

use std::sync::Arc;

use base64::Engine;
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::config::ClientConfig;

/// Who is calling: the configured name of the key, safe to log and to use as a metrics label.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub name: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")]
    Missing,
    #[error("Invalid API key")]
    Invalid,
}

struct StoredKey {
    name: Arc<str>,
    tag: hmac::Tag,
}

pub struct ClientKeys {
    mac: hmac::Key,
    keys: Vec<StoredKey>,
}

impl ClientKeys {
    /// `mac` keys the tags; it never leaves the process.
    pub fn new(mac: hmac::Key, clients: &[ClientConfig]) -> Self {
        let keys = clients
            .iter()
            .map(|c| StoredKey {
                name: c.name.as_str().into(),
                tag: hmac::sign(&mac, c.key.as_bytes()),
            })
            .collect();
        Self { mac, keys }
    }

    /// A key for this process only, from the system's secure random source.
    pub fn random_mac_key() -> hmac::Key {
        let rng = ring::rand::SystemRandom::new();
        hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            // The OS random source failing is not recoverable in any meaningful way.
            panic!("system random source unavailable")
        })
    }

    /// Checks the credential found in the request headers.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        x_api_key: Option<&[u8]>,
    ) -> Result<ClientIdentity, AuthError> {
        let presented = x_api_key
            .or_else(|| authorization.and_then(bearer_token))
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Missing)?;
        if let Some(id) = self.lookup(presented) {
            return Ok(id);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(presented)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(presented))
            .ok();
        decoded.and_then(|d| self.lookup(&d)).ok_or(AuthError::Invalid)
    }

    /// Compares against every key without stopping early, so timing says nothing about which matched.
    fn lookup(&self, presented: &[u8]) -> Option<ClientIdentity> {
        let tag = hmac::sign(&self.mac, presented);
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.tag.as_ref().ct_eq(tag.as_ref())) {
                found = Some(ClientIdentity { name: k.name.clone() });
            }
        }
        found
    }
}

fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ClientKeys {
        ClientKeys::new(
            ClientKeys::random_mac_key(),
            &[ClientConfig {
                name: "dev".into(),
                key: "secret-key-1".into(),
            }],
        )
    }

    #[test]
    fn accepts_every_documented_form() {
        let k = keys();
        assert_eq!(
            &*k.authenticate(Some(b"Bearer secret-key-1"), None).unwrap().name,
            "dev"
        );
        assert_eq!(
            &*k.authenticate(Some(b"bearer   secret-key-1 "), None).unwrap().name,
            "dev"
        );
        assert_eq!(&*k.authenticate(None, Some(b"secret-key-1")).unwrap().name, "dev");
        let b64 = base64::engine::general_purpose::STANDARD.encode("secret-key-1");
        assert_eq!(
            &*k.authenticate(Some(format!("Bearer {b64}").as_bytes()), None)
                .unwrap()
                .name,
            "dev"
        );
    }

    #[test]
    fn refuses_wrong_or_missing() {
        let k = keys();
        assert_eq!(k.authenticate(None, None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            k.authenticate(Some(b"Basic abc"), None).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            k.authenticate(Some(b"Bearer secret-key-2"), None).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(k.authenticate(Some(b"Bearer "), None).unwrap_err(), AuthError::Missing);
    }
}
