//! A stored provider's settings beyond its own columns (the `settings` JSON). Header values are
//! sealed at rest as provider keys are: a provider that authenticates with a header of its own
//! (`api-key`, a proxy's token) carries its secret there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Paths, Timeouts};
use crate::secrets::{Opened, SecretError, Secrets};

/// A stored provider's settings, header values in the clear (in memory only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderSettings {
    pub timeouts: Timeouts,
    pub retryable_status_codes: Vec<u16>,
    pub headers: BTreeMap<String, String>,
    pub paths: Paths,
    /// See `ProviderConfig::responses_api`.
    pub responses_api: bool,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            retryable_status_codes: vec![408, 429, 500, 502, 503, 504, 529],
            headers: BTreeMap::new(),
            paths: Paths::default(),
            responses_api: true,
        }
    }
}

/// The stored form: `headers` stays empty and each value sits in `sealed_headers`, bound to its
/// provider and header name. Rows written before values were sealed keep them in `headers`; they
/// are read as they are and sealed at the next write or `rotate-secret`.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    settings: ProviderSettings,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    sealed_headers: BTreeMap<String, String>,
    /// New at every seal, so every write changes the stored text, headers or not: a provider
    /// `PUT` compares it to what it read (`ProviderWrite::read_settings`) to see another write
    /// landed meanwhile, whichever columns that one changed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    revision: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings: {0}")]
    Json(#[from] serde_json::Error),
    /// Never the value: only which header could not be opened.
    #[error("header `{0}` opens with neither SECRET_KEY nor SECRET_KEY_PREVIOUS")]
    Sealed(String),
    #[error("{0}")]
    Secret(#[from] SecretError),
}

/// What a sealed header value is bound to, so it cannot be moved to another provider or header.
fn context(provider_id: &str, header: &str) -> String {
    format!("provider/{provider_id}/header/{header}")
}

impl ProviderSettings {
    /// The `settings` JSON to store, header values sealed.
    pub fn seal(&self, provider_id: &str, secrets: &Secrets) -> Result<String, SettingsError> {
        let mut settings = self.clone();
        let sealed_headers = std::mem::take(&mut settings.headers)
            .into_iter()
            .map(|(name, value)| {
                let sealed = secrets.encrypt(&value, &context(provider_id, &name))?;
                Ok((name, sealed))
            })
            .collect::<Result<_, SettingsError>>()?;
        Ok(serde_json::to_string(&Stored {
            settings,
            sealed_headers,
            revision: format!("{:016x}", rand::random::<u64>()),
        })?)
    }

    /// Reads stored settings, opening their header values.
    pub fn open(json: &str, provider_id: &str, secrets: &Secrets) -> Result<Self, SettingsError> {
        Self::open_noting(json, provider_id, secrets).map(|(settings, _)| settings)
    }

    /// As `open`, and whether the stored form should be written again under the current secret (a
    /// value sealed under the previous one, or left in the clear by an older version).
    fn open_noting(json: &str, provider_id: &str, secrets: &Secrets) -> Result<(Self, bool), SettingsError> {
        let Stored {
            mut settings,
            sealed_headers,
            ..
        } = serde_json::from_str(json)?;
        let mut stale = !settings.headers.is_empty();
        for (name, sealed) in sealed_headers {
            let (value, opened) = secrets
                .open(&sealed, &context(provider_id, &name))
                .map_err(|_| SettingsError::Sealed(name.clone()))?;
            stale |= opened == Opened::Previous;
            settings.headers.insert(name, value);
        }
        Ok((settings, stale))
    }

    /// Reads stored settings without their header values: for a write that replaces every header,
    /// when the stored ones were sealed under a secret no longer at hand (they cannot be read, and
    /// the provider would stay out of routing until they are replaced).
    pub fn open_without_headers(json: &str) -> Result<Self, SettingsError> {
        let Stored { mut settings, .. } = serde_json::from_str(json)?;
        settings.headers.clear();
        Ok(settings)
    }

    /// The stored form sealed again under the current secret, or `None` when it already is.
    pub fn reseal(json: &str, provider_id: &str, secrets: &Secrets) -> Result<Option<String>, SettingsError> {
        match Self::open_noting(json, provider_id, secrets)? {
            (settings, true) => settings.seal(provider_id, secrets).map(Some),
            (_, false) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(root: &str) -> Secrets {
        Secrets::from_root(root.as_bytes())
    }

    fn with_header(name: &str, value: &str) -> ProviderSettings {
        let mut s = ProviderSettings::default();
        s.headers.insert(name.into(), value.into());
        s
    }

    #[test]
    fn header_values_are_sealed_and_bound_to_their_provider_and_name() {
        let keys = secrets("root-a-root-a-root-a-root-a-root-a");
        let stored = with_header("api-key", "azure-secret-42").seal("p", &keys).unwrap();
        assert!(!stored.contains("azure-secret-42"), "{stored}");
        let opened = ProviderSettings::open(&stored, "p", &keys).unwrap();
        assert_eq!(opened.headers["api-key"], "azure-secret-42");
        assert_eq!(
            opened.retryable_status_codes,
            ProviderSettings::default().retryable_status_codes
        );
        assert!(matches!(
            ProviderSettings::open(&stored, "q", &keys),
            Err(SettingsError::Sealed(name)) if name == "api-key"
        ));
        let moved = stored.replace("\"api-key\"", "\"x-other\"");
        assert!(ProviderSettings::open(&moved, "p", &keys).is_err());
        assert!(ProviderSettings::reseal(&stored, "p", &keys).unwrap().is_none());
    }

    /// The compare-and-swap of a provider `PUT` holds for a provider without headers too: a write
    /// that changed only `base_url` or `weight` still changed the stored settings.
    #[test]
    fn every_seal_writes_a_new_text() {
        let keys = secrets("root-a-root-a-root-a-root-a-root-a");
        let plain = ProviderSettings::default();
        let (first, second) = (plain.seal("p", &keys).unwrap(), plain.seal("p", &keys).unwrap());
        assert_ne!(first, second);
        let same = |stored: &str| serde_json::to_value(ProviderSettings::open(stored, "p", &keys).unwrap()).unwrap();
        assert_eq!(same(&first), same(&second));
    }

    #[test]
    fn values_in_the_clear_or_under_the_previous_secret_are_sealed_again() {
        let old = secrets("root-old-root-old-root-old-root-old");
        let rolled =
            secrets("root-new-root-new-root-new-root-new").with_previous(b"root-old-root-old-root-old-root-old");
        let legacy = r#"{"headers":{"api-key":"clear-value"},"responses_api":false}"#;
        let opened = ProviderSettings::open(legacy, "p", &old).unwrap();
        assert_eq!(
            (opened.headers["api-key"].as_str(), opened.responses_api),
            ("clear-value", false)
        );
        let sealed = ProviderSettings::reseal(legacy, "p", &old).unwrap().unwrap();
        assert!(!sealed.contains("clear-value"), "{sealed}");

        let resealed = ProviderSettings::reseal(&sealed, "p", &rolled).unwrap().unwrap();
        let new_only = secrets("root-new-root-new-root-new-root-new");
        assert_eq!(
            ProviderSettings::open(&resealed, "p", &new_only).unwrap().headers["api-key"],
            "clear-value"
        );
        assert!(ProviderSettings::open(&sealed, "p", &new_only).is_err());
    }
}
