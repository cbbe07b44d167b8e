//! Opening PostgreSQL connections, with TLS as libpq's `sslmode` asks for it.
//!
//! tokio-postgres reads `sslmode` as `disable`, `prefer` or `require` only, and leaves what a
//! certificate must prove to the TLS connector. Managed databases (RDS, Cloud SQL, Supabase, Neon)
//! expect the libpq forms, `verify-ca` and `verify-full` with `sslrootcert`, so this module reads
//! those parameters itself and builds the rustls verifier each mode means, as libpq does:
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (the default) | when the server offers it | no |
//! | `require` | always | no; as `verify-ca` when `sslrootcert` names a file |
//! | `verify-ca` | always | chains to `sslrootcert`'s CA |
//! | `verify-full` | always | chains to a trusted root and names the host |
//!
//! The trusted roots are `sslrootcert` (a PEM file) or, when it is absent or `system`, the
//! operating system's. As in libpq 16, `sslrootcert=system` makes `verify-full` the default and
//! allows no weaker mode, and `verify-ca` needs a file: a chain to a public root proves nothing
//! about whose server it is. (libpq's `allow` tries without TLS first; here it is `prefer`.)

use std::sync::Arc;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;

/// What the server's certificate must prove before the connection is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CertCheck {
    /// Encryption only (libpq's `prefer` and `require`): anyone on the path who can answer TLS is
    /// believed.
    None,
    /// The chain ends at a trusted root; the name is not compared (`verify-ca`).
    Chain,
    /// The chain ends at a trusted root and the certificate names the host (`verify-full`).
    ChainAndName,
}

/// A parsed `DATABASE_URL` for PostgreSQL: how to reach the server and how to secure the link.
pub(crate) struct PgTarget {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl PgTarget {
    /// Reads the URL and, for the verifying modes, the trusted roots: a bad mode, an unreadable
    /// `sslrootcert` or a parameter this driver cannot honour is a start-up error, not a
    /// connection that quietly checks less than it was told to.
    pub(crate) fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |m: String| StoreError::Url(m);
        let (base, query) = split_query(url);
        let mut mode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            // Percent-decoded only, as tokio-postgres and libpq read URLs (`+` is a plus).
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(text)
                    .decode_utf8()
                    .map(|t| t.into_owned())
                    .map_err(|_| bad(format!("{raw_key}: not UTF-8 once percent-decoded")))
            };
            match decode(raw_key)?.as_str() {
                "sslmode" => mode = Some(decode(raw_value)?),
                "sslrootcert" => root_cert = Some(decode(raw_value)?),
                // libpq's default; rustls sends the host name whenever it is one.
                "sslsni" if raw_value == "1" => {}
                key @ ("sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" | "sslsni") => {
                    return Err(bad(format!(
                        "{key} is not supported (client certificates, revocation lists and SNI off are \
                         not); the server's certificate is checked with sslmode and sslrootcert"
                    )))
                }
                _ => kept.push(pair),
            }
        }
        // libpq 16: with the system's roots, `verify-full` is the default and the only mode.
        let system = root_cert.as_deref() == Some("system");
        let default_mode = if system { "verify-full" } else { "prefer" };
        let (ssl_mode, mut check) = match mode.as_deref().unwrap_or(default_mode) {
            "disable" => (SslMode::Disable, CertCheck::None),
            "allow" | "prefer" => (SslMode::Prefer, CertCheck::None),
            "require" => (SslMode::Require, CertCheck::None),
            "verify-ca" => (SslMode::Require, CertCheck::Chain),
            "verify-full" => (SslMode::Require, CertCheck::ChainAndName),
            other => {
                return Err(bad(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        };
        if system && check != CertCheck::ChainAndName {
            return Err(bad(
                "sslrootcert=system needs sslmode=verify-full: the system's roots vouch for any public name".into(),
            ));
        }
        // Against the system's public roots a certificate for any name would pass the chain alone.
        if check == CertCheck::Chain && root_cert.is_none() {
            return Err(bad(
                "sslmode=verify-ca needs sslrootcert=/path/to/ca.pem (the CA that signed the server's \
                 certificate); with the system's roots, use sslmode=verify-full"
                    .into(),
            ));
        }
        // libpq: with a root certificate file at hand, `require` checks the chain as `verify-ca`.
        if ssl_mode == SslMode::Require && check == CertCheck::None && root_cert.is_some() {
            check = CertCheck::Chain;
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
        // An `sslmode` the driver found where this reading did not (the two disagree on where
        // the query starts) would be overridden below: refused rather than weakened.
        if config.get_ssl_mode() != SslMode::Prefer {
            return Err(bad(
                "sslmode is given where it cannot be read safely; percent-encode `?`, `&` and `@` in \
                 the user name and password"
                    .into(),
            ));
        }
        config.ssl_mode(ssl_mode);
        let roots = match check {
            CertCheck::None => RootCertStore::empty(),
            CertCheck::Chain | CertCheck::ChainAndName => trusted_roots(root_cert.as_deref())?,
        };
        let tls = MakeRustlsConnect::new(client_config(check, roots)?);
        Ok(Self { config, tls })
    }

    /// Opens one connection; its driver task runs on the current runtime. A statement on it that
    /// waits for a lock gives up (`lock_timeout`) before the gateway gives up on the operation
    /// (`OP_TIMEOUT`): PostgreSQL does not notice a client that left while its statement waits,
    /// so a write the admin was told was not saved would otherwise land once the lock is free.
    pub(crate) async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| ConnectionError::BadConnection(with_causes(&e)))?;
        let mut conn = AsyncPgConnection::try_from_client_and_connection(client, connection).await?;
        diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, &set_lock_timeout())
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }
}

/// The session's `lock_timeout`: a second short of the operation's limit.
pub(crate) fn set_lock_timeout() -> String {
    let ms = super::OP_TIMEOUT
        .saturating_sub(std::time::Duration::from_secs(1))
        .as_millis();
    format!("SET lock_timeout = {ms}")
}

/// The URL before its query, and the query. tokio-postgres reads the user name and password up to
/// the first `@`, and a password may hold an unencoded `?`: the query is looked for after it.
fn split_query(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[after_scheme..]
        .find('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    match url[authority_end..].find('?') {
        Some(i) => (&url[..authority_end + i], &url[authority_end + i + 1..]),
        None => (url, ""),
    }
}

/// tokio-postgres says "error performing TLS handshake" and keeps why (the certificate's fault)
/// in its source: the operator needs the why.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `sslrootcert`'s certificates, or the system's when it is absent or `system` (libpq 16's word).
fn trusted_roots(root_cert: Option<&str>) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(StoreError::Url(
                    "sslmode asks for the server's certificate to be verified, but no system root \
                     certificates were found; name them with sslrootcert=/path/to/ca.pem"
                        .into(),
                ));
            }
        }
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| StoreError::Url(format!("sslrootcert {path}: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Url(format!(
                    "sslrootcert {path}: no usable certificate in it"
                )));
            }
        }
    }
    Ok(roots)
}

fn client_config(check: CertCheck, roots: RootCertStore) -> Result<rustls::ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Url(format!("TLS: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        CertCheck::None => Arc::new(EncryptionOnly(provider)),
        CertCheck::Chain | CertCheck::ChainAndName => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| StoreError::Url(format!("TLS: {e}")))?;
            if check == CertCheck::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// libpq's `prefer`/`require` without a root file: the certificate is not judged, the handshake's
/// signatures still are (so the session is keyed to the certificate the server showed).
#[derive(Debug)]
struct EncryptionOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full web-PKI check, except that a certificate for another name is accepted.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> Result<SslMode, String> {
        PgTarget::parse(url)
            .map(|t| t.config.get_ssl_mode())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_libpq_modes() {
        assert_eq!(mode("postgres://u@h/db"), Ok(SslMode::Prefer));
        assert_eq!(mode("postgres://u@h/db?sslmode=disable"), Ok(SslMode::Disable));
        assert_eq!(mode("postgres://u@h/db?sslmode=allow"), Ok(SslMode::Prefer));
        assert_eq!(
            mode("postgres://u@h/db?application_name=x&sslmode=require"),
            Ok(SslMode::Require)
        );
        // The other parameters still reach the driver.
        let t = PgTarget::parse("postgres://u@h:6543/db?sslmode=require&application_name=gw").unwrap();
        assert_eq!(t.config.get_application_name(), Some("gw"));
        assert_eq!(t.config.get_ports(), &[6543]);
    }

    #[test]
    fn the_system_s_roots_only_verify_names() {
        assert_eq!(mode("postgres://u@h/db?sslrootcert=system"), Ok(SslMode::Require));
        assert_eq!(mode("postgres://u@h/db?sslmode=verify-full"), Ok(SslMode::Require));
        for weak in ["require", "verify-ca", "prefer"] {
            let e = mode(&format!("postgres://u@h/db?sslmode={weak}&sslrootcert=system")).unwrap_err();
            assert!(
                e.contains("sslrootcert=system needs sslmode=verify-full"),
                "{weak}: {e}"
            );
        }
        let e = mode("postgres://u@h/db?sslmode=verify-ca").unwrap_err();
        assert!(e.contains("verify-ca needs sslrootcert"), "{e}");
        assert_eq!(mode("postgres://u@h/db?sslsni=1&sslmode=require"), Ok(SslMode::Require));
        assert!(mode("postgres://u@h/db?sslsni=0")
            .unwrap_err()
            .contains("sslsni is not supported"));
    }

    /// A password with an unencoded `?` does not hide the query from this reading (tokio-postgres
    /// reads the credentials up to `@`); `+` in a value is a plus.
    #[test]
    fn the_query_is_read_where_the_driver_reads_it() {
        let t = PgTarget::parse("postgres://u:pa?ss@h/db?sslmode=require").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.config.get_password(), Some(&b"pa?ss"[..]));
        let e = mode("postgres://u@h/db?sslmode=verify-full&sslrootcert=/certs/ca+bundle.pem").unwrap_err();
        assert!(e.contains("sslrootcert /certs/ca+bundle.pem"), "{e}");
        let e = mode("postgres://u@h/db?sslrootcert=/certs/ca%20bundle.pem&sslmode=verify-ca").unwrap_err();
        assert!(e.contains("sslrootcert /certs/ca bundle.pem"), "{e}");
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let e = mode("postgres://u@h/db?sslmode=verify_full").unwrap_err();
        assert!(e.contains("sslmode=verify_full is not one of"), "{e}");
        let e = mode("postgres://u@h/db?sslmode=require&sslcert=/c.pem&sslkey=/k.pem").unwrap_err();
        assert!(e.contains("sslcert is not supported"), "{e}");
        let e = mode("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").unwrap_err();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = mode(&format!(
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ))
        .unwrap_err();
        assert!(e.contains("no usable certificate"), "{e}");
    }
}
