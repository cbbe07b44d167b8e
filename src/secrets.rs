//! `SECRET_KEY` and the keys derived from it. One root secret, and an HKDF-derived key per purpose
//! (client-key HMAC, provider-key encryption, JWT signing), so no key is ever used for two jobs and
//! none of them is the root itself.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Shortest accepted `SECRET_KEY`, in bytes.
const MIN_SECRET_LEN: usize = 32;
const SECRET_FILE: &str = "secret_key";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("SECRET_KEY must be at least {MIN_SECRET_LEN} characters")]
    TooShort,
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("the system random source failed")]
    Random,
    #[error("a stored secret cannot be decrypted with this SECRET_KEY")]
    Decrypt,
}

/// Where the root secret came from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOrigin {
    Environment,
    File,
    Generated,
}

/// The derived keys. Holds no copy of the root secret.
pub struct Secrets {
    client_mac: hmac::Key,
    /// The keys of the secret before a rotation (`SECRET_KEY_PREVIOUS`): provider keys sealed and
    /// client keys tagged under it stay readable and valid while it is given (admin tokens signed
    /// under it do not: see `auth::jwt::Tokens`).
    previous: Option<Box<Previous>>,
    provider_aead: LessSafeKey,
    jwt: [u8; 32],
    rng: SystemRandom,
}

struct Previous {
    client_mac: hmac::Key,
    provider_aead: LessSafeKey,
}

/// Which secret opened a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    Current,
    /// Sealed under `SECRET_KEY_PREVIOUS`: `apiproxy rotate-secret` seals it again.
    Previous,
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// A fresh random root secret: 256 bits, base64url.
pub fn generate_secret() -> Result<String, SecretError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| SecretError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

impl Secrets {
    pub fn from_root(root: &[u8]) -> Self {
        let prk = root_prk(root);
        let client_mac = client_mac(&prk);
        let provider_aead = provider_aead(&prk);
        let jwt = jwt_key(&prk);
        Self {
            client_mac,
            previous: None,
            provider_aead,
            jwt,
            rng: SystemRandom::new(),
        }
    }

    /// `SECRET_KEY` from the environment, else the one kept in `data_dir`, else a new one written
    /// there with 0600 permissions.
    pub fn load(env_value: Option<&str>, data_dir: &Path) -> Result<(Self, SecretOrigin), SecretError> {
        if let Some(v) = env_value.filter(|v| !v.is_empty()) {
            if v.len() < MIN_SECRET_LEN {
                return Err(SecretError::TooShort);
            }
            return Ok((Self::from_root(v.as_bytes()), SecretOrigin::Environment));
        }
        let path = data_dir.join(SECRET_FILE);
        let file_err = |path: &PathBuf, e: std::io::Error| SecretError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let v = text.trim();
                if v.len() < MIN_SECRET_LEN {
                    return Err(SecretError::File {
                        path: path.display().to_string(),
                        message: format!("shorter than {MIN_SECRET_LEN} characters"),
                    });
                }
                Ok((Self::from_root(v.as_bytes()), SecretOrigin::File))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(|e| file_err(&data_dir.to_path_buf(), e))?;
                let secret = generate_secret()?;
                write_private(&path, &secret).map_err(|e| file_err(&path, e))?;
                Ok((Self::from_root(secret.as_bytes()), SecretOrigin::Generated))
            }
            Err(e) => Err(file_err(&path, e)),
        }
    }

    /// Also opens provider keys sealed, and accepts client keys tagged, under `previous`: the root
    /// secret before a rotation.
    pub fn with_previous(mut self, previous: &[u8]) -> Self {
        let prk = root_prk(previous);
        self.previous = Some(Box::new(Previous {
            client_mac: client_mac(&prk),
            provider_aead: provider_aead(&prk),
        }));
        self
    }

    /// The key that turns client API keys into stored tags.
    pub fn client_mac(&self) -> &hmac::Key {
        &self.client_mac
    }

    /// The client-key HMAC of the secret before a rotation, when it is given.
    pub fn previous_client_mac(&self) -> Option<&hmac::Key> {
        self.previous.as_ref().map(|p| &p.client_mac)
    }

    pub fn jwt_key(&self) -> &[u8] {
        &self.jwt
    }

    /// Hex HMAC-SHA256 tag of a client key, as stored.
    pub fn client_key_tag(&self, key: &[u8]) -> String {
        hex(hmac::sign(&self.client_mac, key).as_ref())
    }

    /// Encrypts `plaintext` bound to `context` (the row id): base64(nonce ‖ ciphertext ‖ tag).
    pub fn encrypt(&self, plaintext: &str, context: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut buf = plaintext.as_bytes().to_vec();
        self.provider_aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SecretError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(STANDARD.encode(out))
    }

    pub fn decrypt(&self, sealed: &str, context: &str) -> Result<String, SecretError> {
        self.open(sealed, context).map(|(plain, _)| plain)
    }

    /// Decrypts with the current secret, else with the previous one, and says which opened it.
    pub fn open(&self, sealed: &str, context: &str) -> Result<(String, Opened), SecretError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| SecretError::Decrypt)?;
        if let Some(plain) = open_with(&self.provider_aead, bytes.clone(), context) {
            return Ok((plain, Opened::Current));
        }
        self.previous
            .as_ref()
            .and_then(|p| open_with(&p.provider_aead, bytes, context))
            .map(|plain| (plain, Opened::Previous))
            .ok_or(SecretError::Decrypt)
    }

    /// Random bytes for keys, passwords and salts.
    pub fn random<const N: usize>(&self) -> Result<[u8; N], SecretError> {
        let mut b = [0u8; N];
        self.rng.fill(&mut b).map_err(|_| SecretError::Random)?;
        Ok(b)
    }
}

fn root_prk(root: &[u8]) -> hkdf::Prk {
    hkdf::Salt::new(hkdf::HKDF_SHA256, b"apiproxy/secret-key/v1").extract(root)
}

/// `nonce ‖ ciphertext ‖ tag` opened with `key`, bound to `context`.
fn open_with(key: &LessSafeKey, mut bytes: Vec<u8>, context: &str) -> Option<String> {
    if bytes.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
        return None;
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[..NONCE_LEN]);
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut bytes[NONCE_LEN..],
        )
        .ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

fn jwt_key(prk: &hkdf::Prk) -> [u8; 32] {
    let mut jwt = [0u8; 32];
    prk.expand(&[b"admin-jwt-signing"], Len(32))
        .and_then(|okm| okm.fill(&mut jwt))
        .expect("HKDF length is valid");
    jwt
}

fn provider_aead(prk: &hkdf::Prk) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::from(
        prk.expand(&[b"provider-api-key-aead"], &AES_256_GCM)
            .expect("HKDF length is valid"),
    ))
}

fn client_mac(prk: &hkdf::Prk) -> hmac::Key {
    // `expand` only fails for lengths above 255 hash blocks; ours are 32 bytes.
    hmac::Key::from(
        prk.expand(&[b"client-api-key-hmac"], hmac::HMAC_SHA256)
            .expect("HKDF length is valid"),
    )
}

/// Checks a root secret's length (`SECRET_KEY_PREVIOUS`, or a value about to be used).
pub fn check_secret(value: &str) -> Result<(), SecretError> {
    match value.len() < MIN_SECRET_LEN {
        true => Err(SecretError::TooShort),
        false => Ok(()),
    }
}

/// A masked form of a provider key or header secret for people, showing at most a quarter of it:
/// its first 3 and last 4 characters from 28 characters on (every vendor's API key), its last 4
/// from 16, nothing of a shorter value.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    let tail = |n: usize| chars[chars.len() - n..].iter().collect::<String>();
    match chars.len() {
        0..16 => "…".to_string(),
        16..28 => format!("…{}", tail(4)),
        _ => format!("{}…{}", chars[..3].iter().collect::<String>(), tail(4)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_and_are_stable() {
        let a = Secrets::from_root(b"0123456789abcdef0123456789abcdef");
        let b = Secrets::from_root(b"0123456789abcdef0123456789abcdef");
        let c = Secrets::from_root(b"another-secret-another-secret-xx");
        assert_eq!(a.client_key_tag(b"k"), b.client_key_tag(b"k"));
        assert_ne!(a.client_key_tag(b"k"), c.client_key_tag(b"k"));
        assert_ne!(a.jwt_key(), c.jwt_key());
    }

    #[test]
    fn aead_round_trip_is_bound_to_context() {
        let s = Secrets::from_root(b"0123456789abcdef0123456789abcdef");
        let sealed = s.encrypt("sk-secret-value", "row-1").unwrap();
        assert!(!sealed.contains("sk-secret"));
        assert_ne!(sealed, s.encrypt("sk-secret-value", "row-1").unwrap(), "random nonces");
        assert_eq!(s.decrypt(&sealed, "row-1").unwrap(), "sk-secret-value");
        assert!(s.decrypt(&sealed, "row-2").is_err());
        let other = Secrets::from_root(b"another-secret-another-secret-xx");
        assert!(other.decrypt(&sealed, "row-1").is_err());
    }

    #[test]
    fn the_previous_secret_opens_what_it_sealed_and_tags_what_it_tagged() {
        let old = Secrets::from_root(b"old-secret-old-secret-old-secret");
        let sealed = old.encrypt("sk-value", "row-1").unwrap();
        let new = Secrets::from_root(b"new-secret-new-secret-new-secret");
        assert!(new.decrypt(&sealed, "row-1").is_err());
        assert!(new.previous_client_mac().is_none());
        let rolled =
            Secrets::from_root(b"new-secret-new-secret-new-secret").with_previous(b"old-secret-old-secret-old-secret");
        assert_eq!(
            rolled.open(&sealed, "row-1").unwrap(),
            ("sk-value".into(), Opened::Previous)
        );
        let resealed = rolled.encrypt("sk-value", "row-1").unwrap();
        assert_eq!(
            new.open(&resealed, "row-1").unwrap(),
            ("sk-value".into(), Opened::Current)
        );
        assert!(rolled.decrypt(&sealed, "row-2").is_err(), "still bound to its row");
        let tag = |mac: &hmac::Key| hex(hmac::sign(mac, b"apx-key").as_ref());
        assert_eq!(
            tag(rolled.previous_client_mac().unwrap()),
            old.client_key_tag(b"apx-key")
        );
    }

    #[test]
    fn generated_secret_is_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let (a, origin) = Secrets::load(None, dir.path()).unwrap();
        assert_eq!(origin, SecretOrigin::Generated);
        let (b, origin) = Secrets::load(None, dir.path()).unwrap();
        assert_eq!(origin, SecretOrigin::File);
        assert_eq!(a.client_key_tag(b"x"), b.client_key_tag(b"x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            Secrets::load(Some("short"), dir.path()),
            Err(SecretError::TooShort)
        ));
    }

    #[test]
    fn masks() {
        assert_eq!(mask("sk-abcdefghijklmnopqrstuvw1234"), "sk-…1234");
        // No more than a quarter of a shorter secret: 4 of 16 characters, not 7.
        assert_eq!(mask("sk-abcdefghi1234"), "…1234");
        assert_eq!(mask("short"), "…");
    }
}
