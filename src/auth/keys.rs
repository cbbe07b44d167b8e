//! Minting client API keys: 256 random bits, shown once, stored as an HMAC tag plus a short prefix
//! that lets people tell their keys apart.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::secrets::{SecretError, Secrets};

const KEY_PREFIX: &str = "apx-";
/// Characters of the key kept for display (the `apx-` marker and 8 random characters).
const DISPLAY_LEN: usize = 12;

/// A freshly minted key. `secret` goes to the caller once and is then dropped.
pub struct MintedKey {
    pub secret: String,
    pub tag_hex: String,
    pub prefix: String,
}

pub fn mint(secrets: &Secrets) -> Result<MintedKey, SecretError> {
    let random: [u8; 32] = secrets.random()?;
    let secret = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    Ok(MintedKey {
        tag_hex: secrets.client_key_tag(secret.as_bytes()),
        prefix: secret[..DISPLAY_LEN].to_string(),
        secret,
    })
}

/// How long a key lives. Upper-case names (`MONTH`, as the original gateway took them) are
/// accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expiry {
    #[serde(alias = "WEEK")]
    Week,
    #[serde(alias = "MONTH")]
    Month,
    #[serde(alias = "YEAR")]
    Year,
    #[serde(alias = "NEVER")]
    Never,
}

impl Expiry {
    /// The expiry time in Unix seconds counted from `now`; `None` for never.
    pub fn from(self, now: i64) -> Option<i64> {
        const DAY: i64 = 86_400;
        match self {
            Expiry::Week => Some(now + 7 * DAY),
            Expiry::Month => Some(now + 30 * DAY),
            Expiry::Year => Some(now + 365 * DAY),
            Expiry::Never => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_long_random_and_tagged() {
        let s = Secrets::from_root(b"0123456789abcdef0123456789abcdef");
        let a = mint(&s).unwrap();
        let b = mint(&s).unwrap();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.len() >= KEY_PREFIX.len() + 43, "256 bits");
        assert_eq!(a.tag_hex, s.client_key_tag(a.secret.as_bytes()));
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(Expiry::Week.from(0), Some(604_800));
        assert_eq!(Expiry::Never.from(5), None);
    }
}
