//! `apiproxy health`: asks a running gateway's proxy port for `/health`, so that a container's
//! health check needs no HTTP client in the image. It reads the same configuration and environment
//! as the gateway, so it probes the port the gateway listens on.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A health check that takes longer than this in all is a failure, as a hung gateway is.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("`{0}` is not an address like 0.0.0.0:8000")]
    Address(String),
    #[error("{addr}: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error("{addr} answered {status_line:?}")]
    Unhealthy { addr: SocketAddr, status_line: String },
}

/// Where to reach a gateway that listens on `listen`: a wildcard address is reached on loopback.
fn probe_address(listen: &str) -> Result<SocketAddr, ProbeError> {
    let mut at: SocketAddr = listen.parse().map_err(|_| ProbeError::Address(listen.to_string()))?;
    if at.ip().is_unspecified() {
        at.set_ip(match at.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(at)
}

/// `Ok` when the gateway listening on `listen` answers `/health` with a 200.
pub fn probe(listen: &str) -> Result<(), ProbeError> {
    let addr = probe_address(listen)?;
    let io = |source| ProbeError::Io { addr, source };
    let deadline = Instant::now() + PROBE_TIMEOUT;
    // What is left of the one deadline, for the next step (a zero timeout is refused).
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        (!left.is_zero())
            .then_some(left)
            .ok_or_else(|| io(std::io::ErrorKind::TimedOut.into()))
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?).map_err(io)?;
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(io)?;
    // The status line is all that is judged: read until it has come.
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        match stream.read(&mut buf).map_err(io)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let status_line = String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or_default())
        .trim_end()
        .to_string();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(ProbeError::Unhealthy { addr, status_line }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listens_are_probed_on_loopback() {
        assert_eq!(
            probe_address("0.0.0.0:8000").unwrap(),
            "127.0.0.1:8000".parse().unwrap()
        );
        assert_eq!(probe_address("[::]:8000").unwrap(), "[::1]:8000".parse().unwrap());
        assert_eq!(
            probe_address("10.1.2.3:9000").unwrap(),
            "10.1.2.3:9000".parse().unwrap()
        );
        assert!(probe_address("localhost").is_err());
    }
}
