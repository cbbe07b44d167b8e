//! Upstream TLS: rustls with certificate and host-name verification on. A test CA signs the mock's
//! certificate; the gateway trusts it only through `server.ca_file`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Pki {
    ca_pem: String,
    /// (certificate chain, key) for the host names given.
    leaf: (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
}

fn pki(names: &[&str]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "APIProxy test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let leaf = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf: (
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        ),
    }
}

/// What an HTTPS upstream saw: connections opened (a handshake attempted) and requests answered.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    answered: AtomicUsize,
}

/// An HTTPS upstream answering every request with a chat completion.
async fn tls_upstream(pki: &Pki) -> (SocketAddr, Arc<Seen>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(pki.leaf.0.clone(), pki.leaf.1.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counts.connections.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let counts = counts.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut req = httparse::Request::new(&mut headers);
                    if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
                        let len = req
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= head + len {
                            break;
                        }
                    }
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                // A model list for discovery, a completion for anything else.
                let body = if buf.starts_with(b"GET ") {
                    r#"{"object":"list","data":[{"id":"listed-m","object":"model"}]}"#
                } else {
                    r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello over tls"},"finish_reason":"stop"}]}"#
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                counts.answered.fetch_add(1, Ordering::SeqCst);
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, seen)
}

/// A refused upstream certificate: the gateway reached the upstream and tried a handshake, sent
/// no request, and says so.
async fn assert_refused_at_handshake(gw: &Gateway, seen: &Seen) {
    let r = gw.chat(chat_body("m")).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    let error = v["error"]["attempts"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.to_ascii_lowercase().contains("tls"), "{v}");
    assert!(
        seen.connections.load(Ordering::SeqCst) >= 1,
        "no handshake was attempted"
    );
    assert_eq!(seen.answered.load(Ordering::SeqCst), 0, "a request went through");
}

async fn gateway(addr: SocketAddr, ca_file: Option<&std::path::Path>) -> Gateway {
    let server = ca_file.map_or(String::new(), |p| format!("server: {{ca_file: \"{}\"}}\n", p.display()));
    let yaml = format!(
        "{server}providers:\n  - {{id: tls, base_url: \"https://localhost:{}\", models: [m], api_keys: [\"sk-tls-secret\"]}}\n",
        addr.port()
    );
    Gateway::start(&yaml).await
}

#[tokio::test(flavor = "multi_thread")]
async fn verified_tls_upstream_works() {
    let pki = pki(&["localhost"]);
    let (addr, seen) = tls_upstream(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let gw = gateway(addr, Some(&ca)).await;
    let r = gw.chat(chat_body("m")).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    assert_eq!(
        r.json::<Value>().await.unwrap()["choices"][0]["message"]["content"],
        "hello over tls"
    );
    assert_eq!(seen.answered.load(Ordering::SeqCst), 1);
}

/// A provider behind the private CA without a static model list: its list is discovered through
/// the same trust, so zero-config routes reach it.
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_behind_the_private_ca_is_discovered() {
    let pki = pki(&["localhost"]);
    let (addr, _seen) = tls_upstream(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let yaml = format!(
        "server: {{ca_file: \"{}\"}}\nproviders:\n  - {{id: tls, base_url: \"https://localhost:{}\", api_keys: [\"sk-tls-secret\"]}}\n",
        ca.display(),
        addr.port()
    );
    let gw = Gateway::start(&yaml).await;
    let r = gw.chat(chat_body("listed-m")).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    assert_eq!(
        r.json::<Value>().await.unwrap()["choices"][0]["message"]["content"],
        "hello over tls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_certificate_is_refused() {
    let pki = pki(&["localhost"]);
    let (addr, seen) = tls_upstream(&pki).await;
    // The system roots do not include the test CA.
    let gw = gateway(addr, None).await;
    assert_refused_at_handshake(&gw, &seen).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_host_name_is_refused() {
    // A certificate from the trusted CA, but for another name.
    let pki = pki(&["api.example.test"]);
    let (addr, seen) = tls_upstream(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let gw = gateway(addr, Some(&ca)).await;
    assert_refused_at_handshake(&gw, &seen).await;
}

/// What the PostgreSQL relay saw: TLS sessions it completed and connections that stayed in clear.
#[derive(Default)]
struct PgSeen {
    encrypted: AtomicUsize,
    clear: AtomicUsize,
}

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A PostgreSQL front that answers the client's SSLRequest with `S` and TLS under `pki`'s leaf
/// certificate (as a server with `ssl = on` does), then relays the decrypted protocol to the local
/// PostgreSQL in clear. The certificates are the test's own, so every `sslmode` outcome is checked
/// whatever certificate the local server has. Without `pki`, a server with `ssl = off`: `N`.
async fn pg_tls_front(pki: Option<&Pki>) -> (u16, Arc<PgSeen>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let acceptor = pki.map(|pki| {
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(pki.leaf.0.clone(), pki.leaf.1.clone_key())
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(PgSeen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (acceptor, counts) = (acceptor.clone(), counts.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 8];
                if client.read_exact(&mut first).await.is_err() {
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else {
                    return;
                };
                if let (true, Some(acceptor)) = (first == SSL_REQUEST, acceptor.as_ref()) {
                    if client.write_all(b"S").await.is_err() {
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    counts.encrypted.fetch_add(1, Ordering::SeqCst);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                } else if first == SSL_REQUEST {
                    // No TLS here: the client goes on in clear (its startup message next) or leaves.
                    if client.write_all(b"N").await.is_ok() {
                        counts.clear.fetch_add(1, Ordering::SeqCst);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                } else {
                    counts.clear.fetch_add(1, Ordering::SeqCst);
                    if server.write_all(&first).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// `DATABASE_URL`'s `sslmode` and `sslrootcert` mean what they mean to libpq: encryption when
/// asked, the chain checked from `verify-ca` on (or `require` with a root file), the host name
/// too at `verify-full`; a connection that cannot be made as asked is refused, never downgraded.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_tls_follows_sslmode() {
    use apiproxy::store::{DatabaseUrl, Store};
    let pki = pki(&["localhost"]);
    let other = self::pki(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let (ca, wrong_ca) = (dir.path().join("ca.pem"), dir.path().join("other-ca.pem"));
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&wrong_ca, &other.ca_pem).unwrap();
    let (port, seen) = pg_tls_front(Some(&pki)).await;
    let (name, _) = fresh_pg_database().await;
    let url = |host: &str, params: String| format!("postgres://postgres@{host}:{port}/{name}?{params}");
    let open = |url: String| async move {
        let url = DatabaseUrl::parse(&url).unwrap();
        match Store::open(&url).await {
            Ok(store) => Ok(store.backend()),
            Err(e) => Err(e.to_string()),
        }
    };
    let sessions = || seen.encrypted.load(Ordering::SeqCst);

    // Verified end to end: the chain ends at sslrootcert and the certificate names the host.
    let before = sessions();
    let full = url("localhost", format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    assert_eq!(open(full.clone()).await, Ok("postgres"));
    assert!(sessions() > before, "no TLS session was made");

    // The certificate names localhost, not 127.0.0.1: verify-full refuses, verify-ca accepts.
    let e = open(url(
        "127.0.0.1",
        format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    ))
    .await
    .unwrap_err();
    assert!(e.contains("certificate not valid for name \"127.0.0.1\""), "{e}");
    let ca_only = url("127.0.0.1", format!("sslmode=verify-ca&sslrootcert={}", ca.display()));
    assert_eq!(open(ca_only).await, Ok("postgres"));

    // A chain to another root is refused, whether sslrootcert names it or the system roots are
    // used; `require` with a root file checks the chain as libpq does.
    for params in [
        format!("sslmode=verify-ca&sslrootcert={}", wrong_ca.display()),
        "sslmode=verify-full".to_string(),
        format!("sslmode=require&sslrootcert={}", wrong_ca.display()),
    ] {
        let e = open(url("localhost", params.clone())).await.unwrap_err();
        // (A machine without system roots is refused before the handshake.)
        let no_roots = !params.contains("sslrootcert") && e.contains("no system root certificates");
        assert!(e.contains("invalid peer certificate") || no_roots, "{params}: {e}");
    }

    // `require` and the default `prefer` encrypt without judging the certificate.
    for params in ["sslmode=require", "application_name=apiproxy-tls-test"] {
        let before = sessions();
        assert_eq!(open(url("127.0.0.1", params.into())).await, Ok("postgres"), "{params}");
        assert!(sessions() > before, "{params}: no TLS session");
    }
    // `disable` stays in clear.
    let (clear_before, sessions_before) = (seen.clear.load(Ordering::SeqCst), sessions());
    assert_eq!(open(url("127.0.0.1", "sslmode=disable".into())).await, Ok("postgres"));
    assert!(seen.clear.load(Ordering::SeqCst) > clear_before);
    assert_eq!(sessions(), sessions_before);

    // The gateway itself runs on the verified connection: the first admin is written and read
    // back at login through it.
    let before = sessions();
    let gw = Gateway::start_with_env("", &[("DATABASE_URL", full.as_str())]).await;
    assert!(!gw.admin().await.token.is_empty());
    assert!(sessions() > before, "the gateway's connections were not encrypted");
    drop(gw);
    drop_pg_database(&name).await;
}

/// A server without TLS: the default `prefer` goes on in clear (as libpq does), `require` and
/// stronger refuse to.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_without_tls_is_used_in_clear_only_when_allowed() {
    use apiproxy::store::{DatabaseUrl, Store};
    let (port, seen) = pg_tls_front(None).await;
    let (name, _) = fresh_pg_database().await;
    let open = |params: &str| {
        let url = format!("postgres://postgres@127.0.0.1:{port}/{name}?{params}");
        async move {
            match Store::open(&DatabaseUrl::parse(&url).unwrap()).await {
                Ok(store) => Ok(store.backend()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    assert_eq!(open("application_name=in-clear").await, Ok("postgres"));
    assert!(seen.clear.load(Ordering::SeqCst) > 0);
    assert_eq!(seen.encrypted.load(Ordering::SeqCst), 0);
    let e = open("sslmode=require").await.unwrap_err();
    assert!(e.contains("TLS"), "{e}");
    drop_pg_database(&name).await;
}
