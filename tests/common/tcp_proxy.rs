//! A TCP relay the test controls: `cut()` makes the service behind it stop answering (connections
//! are accepted and held, nothing is forwarded, as a hung server would), `restore()` drops the held
//! connections and forwards again. Lets a test take Redis or PostgreSQL away from one gateway
//! without touching the real server other tests use.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Control {
    cut: AtomicBool,
    /// Connections are closed and refused, as when the server process is stopped.
    refuse: AtomicBool,
    /// Bumped on every cut and restore: connections of an older generation close.
    generation: AtomicU64,
    /// Connections of a generation below this one stay open and silent for good (`vanish`).
    silent_below: AtomicU64,
    /// Milliseconds each piece of the service's answer waits before it is forwarded (a far
    /// server).
    delay_ms: AtomicU64,
}

pub struct TcpRelay {
    pub port: u16,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpRelay {
    pub async fn start(target: SocketAddr) -> TcpRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let control = Arc::new(Control::default());
        let c = control.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(relay(sock, target, c.clone()));
            }
        });
        TcpRelay { port, control, task }
    }

    /// The service stops answering: live connections go silent, new ones are held unanswered.
    pub fn cut(&self) {
        self.control.cut.store(true, Ordering::SeqCst);
        self.control.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The service is down: connections are closed, new ones refused.
    pub fn stop(&self) {
        self.control.refuse.store(true, Ordering::SeqCst);
        self.control.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The host behind the address vanished without a word and another took its place (a VM
    /// lost, a failover behind the same name): live connections stay open and silent for good,
    /// as no reset ever reaches them; new ones are forwarded.
    pub fn vanish(&self) {
        let next = self.control.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.control.silent_below.store(next, Ordering::SeqCst);
    }

    /// Every piece of the service's answers waits this long before it is forwarded.
    pub fn set_delay(&self, delay: Duration) {
        self.control.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The service is back: held connections are closed (clients reconnect), new ones forwarded.
    pub fn restore(&self) {
        self.control.cut.store(false, Ordering::SeqCst);
        self.control.refuse.store(false, Ordering::SeqCst);
        self.control.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, target: SocketAddr, c: Arc<Control>) {
    let generation = c.generation.load(Ordering::SeqCst);
    let current = || c.generation.load(Ordering::SeqCst) == generation;
    if c.refuse.load(Ordering::SeqCst) {
        return;
    }
    if c.cut.load(Ordering::SeqCst) {
        // Hold the connection without a word until the next restore.
        while current() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut a, mut b) = ([0u8; 16384], [0u8; 16384]);
    loop {
        if !current() {
            if generation < c.silent_below.load(Ordering::SeqCst) {
                // Silent for good (the relay's tasks end with the test).
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if c.cut.load(Ordering::SeqCst) {
                // Cut mid-connection: stay open and silent until restored, then close.
                while c.cut.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            return;
        }
        tokio::select! {
            r = client.read(&mut a) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => if !current() || server.write_all(&a[..n]).await.is_err() { continue },
            },
            r = server.read(&mut b) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let delay = c.delay_ms.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    if !current() || client.write_all(&b[..n]).await.is_err() { continue }
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}
