//! The patched keep-alive pool of Pingora's connector (vendor/pingora-core, PATCHED.md change 5):
//! idle upstream connections are parked without a task each, and must still never be handed out
//! once the server closed them or their idle timeout passed.

use std::time::Duration;

use pingora::connectors::TransportConnector;
use pingora::upstreams::peer::{HttpPeer, Peer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A server that accepts connections and closes the first one when told to.
async fn server() -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (close, closed) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (first, _) = listener.accept().await.unwrap();
        let _ = closed.await;
        drop(first);
        // Later connections stay open until the test ends.
        let mut open = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    (addr, close)
}

#[tokio::test(flavor = "multi_thread")]
async fn open_connections_are_reused_and_closed_ones_are_not() {
    let (addr, close) = server().await;
    let connector = TransportConnector::new(None);
    let peer = HttpPeer::new(addr, false, String::new());

    let stream = connector.new_stream(&peer).await.unwrap();
    connector.release_stream(stream, peer.reuse_hash(), None);
    let stream = connector
        .reused_stream(&peer)
        .await
        .expect("an open parked connection is handed out again");
    connector.release_stream(stream, peer.reuse_hash(), None);

    // The server closes it while it is parked: the pool must notice without a task watching it.
    close.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        connector.reused_stream(&peer).await.is_none(),
        "a connection the server closed was handed out"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout_is_honoured() {
    let (addr, _close) = server().await;
    let connector = TransportConnector::new(None);
    let peer = HttpPeer::new(addr, false, String::new());

    let stream = connector.new_stream(&peer).await.unwrap();
    connector.release_stream(stream, peer.reuse_hash(), Some(Duration::from_millis(50)));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        connector.reused_stream(&peer).await.is_none(),
        "a connection past its idle timeout was handed out"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_pool_closes_its_oldest_connection() {
    let (addr, _close) = server().await;
    let connector = TransportConnector::new(Some(pingora::connectors::ConnectorOptions::new(2)));
    let peer = HttpPeer::new(addr, false, String::new());

    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(connector.new_stream(&peer).await.unwrap());
    }
    for stream in streams {
        connector.release_stream(stream, peer.reuse_hash(), None);
    }
    // Capacity two: two come back, the third was closed when the pool overflowed.
    assert!(connector.reused_stream(&peer).await.is_some());
    assert!(connector.reused_stream(&peer).await.is_some());
    assert!(connector.reused_stream(&peer).await.is_none());
}
