//! Password hashing with argon2 (PHC strings). Hashing is slow on purpose; call these from
//! `spawn_blocking`.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::secrets::{SecretError, Secrets};

pub const MIN_PASSWORD_LEN: usize = 12;

pub fn hash(secrets: &Secrets, password: &str) -> Result<String, SecretError> {
    let salt_bytes: [u8; 16] = secrets.random()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| SecretError::Random)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| SecretError::Random)
}

/// A valid hash of nothing anyone knows, to verify against when a user does not exist, so a wrong
/// name costs as long as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::encode_b64(b"apiproxy-no-user")
            .unwrap_or_else(|_| SaltString::from_b64("c2FsdHNhbHQ").expect("valid salt"));
        Argon2::default()
            .hash_password(b"no user has this password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// False for a wrong password and for a hash that cannot be parsed.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A random password for generated accounts: 144 bits, base64url.
pub fn generate(secrets: &Secrets) -> Result<String, SecretError> {
    let bytes: [u8; 18] = secrets.random()?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_verifies() {
        let s = Secrets::from_root(b"0123456789abcdef0123456789abcdef");
        let pw = generate(&s).unwrap();
        assert!(pw.len() >= MIN_PASSWORD_LEN);
        let h = hash(&s, &pw).unwrap();
        assert!(h.starts_with("$argon2"));
        assert!(verify(&pw, &h));
        assert!(!verify("wrong password!", &h));
        assert!(!verify(&pw, "not a hash"));
    }
}
