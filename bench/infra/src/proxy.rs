//! A userspace TCP proxy in the migration stream's way that behaves like a link: every chunk it
//! forwards is held for a latency (± jitter, order kept), and the source → destination
//! direction of *all* its connections shares one token bucket (multifd channels split the
//! rate, as they would on one wire). Like a link it holds no deep queue: it reads from the
//! source only as fast as the rate lets bytes through, its receive buffer is about one
//! bandwidth × delay product, and the chunks in flight are at most that product — so the
//! source's own view of its throughput (QEMU's bandwidth estimate, and from it the moment it
//! stops the guest) is what a real link of that rate and latency would show. (A deep queue here
//! once let QEMU believe in a fast link, stop the guest, and then wait seconds for the queue to
//! drain: 3-5 s of downtime against a 300 ms limit, where tbf at the same rate gave ~300 ms.)
//! This kernel has no netem; the proxy works on any machine.

use rand::Rng;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How the proxy shapes the stream.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Shape {
    pub latency: Duration,
    pub jitter: Duration,
    /// Bytes per second, source → destination, for all connections together (None: as fast
    /// as it goes).
    pub rate: Option<u64>,
}

impl Shape {
    /// The bytes a link of this rate and latency holds in flight (a window's worth when the
    /// rate is not capped), and never less than a few chunks.
    fn in_flight(&self) -> usize {
        let bdp = match self.rate {
            Some(r) => (r as f64 * (self.latency + self.jitter).as_secs_f64()) as usize,
            None => UNCAPPED_WINDOW,
        };
        bdp.clamp(4 * CHUNK, UNCAPPED_WINDOW)
    }
}

/// A running proxy; it stops (and closes its connections) when dropped.
#[derive(Debug)]
pub struct Proxy {
    pub listen: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What is read and paced at once: small, so that pacing is smooth at low rates.
const CHUNK: usize = 16 * 1024;
/// What an uncapped path holds in flight (about a TCP window on this kernel).
const UNCAPPED_WINDOW: usize = 4 << 20;

/// The link's one token bucket: when it is free again, and how far behind the present it may
/// be (its depth: the tokens saved up while idle, as tbf's burst).
#[derive(Debug)]
struct Bucket {
    rate: f64,
    depth: Duration,
    free_at: Mutex<Instant>,
}

impl Bucket {
    /// tbf's burst for the same rate (`LinkShape::rate`): 10 ms of it, at least 16 KiB. It also
    /// absorbs a timer that wakes a little late, which would otherwise lower the rate.
    fn new(rate: u64) -> Self {
        let burst = (rate / 100).max(16 * 1024);
        Self {
            rate: rate as f64,
            depth: Duration::from_secs_f64(burst as f64 / rate as f64),
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// Reserves the link for `n` bytes; returns when they have passed it.
    fn pass(&self, n: usize) -> Instant {
        let mut free = self.free_at.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let start = (*free).max(now.checked_sub(self.depth).unwrap_or(now));
        *free = start + Duration::from_secs_f64(n as f64 / self.rate);
        *free
    }
}

/// Forwards `from` to `to`: a chunk is read only once the bucket lets the previous one through
/// (backpressure reaches the sender, as on a link), and released `latency ± jitter` later
/// (never before the previous one).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shape: Shape,
    bucket: Option<Arc<Bucket>>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(shape.in_flight().div_ceil(CHUNK));
    let reader = tokio::spawn(async move {
        let mut last = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.truncate(n);
            if let Some(b) = &bucket {
                tokio::time::sleep_until(b.pass(n)).await;
            }
            let jitter = if shape.jitter.is_zero() {
                0.0
            } else {
                rand::thread_rng().gen_range(-1.0..1.0) * shape.jitter.as_secs_f64()
            };
            let delay = Duration::from_secs_f64((shape.latency.as_secs_f64() + jitter).max(0.0));
            let release = (Instant::now() + delay).max(last);
            last = release;
            if tx.send((release, buf)).await.is_err() {
                break;
            }
        }
    });
    while let Some((release, buf)) = rx.recv().await {
        tokio::time::sleep_until(release).await;
        if to.write_all(&buf).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

/// Starts a proxy on `listen_ip` (a free port) that forwards every connection to `to`.
pub async fn start(listen_ip: std::net::IpAddr, to: SocketAddr, shape: Shape) -> std::io::Result<Proxy> {
    let socket = if listen_ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // Set on the listener, so that accepted connections start with it (and advertise a window
    // no larger than what a link of this rate and latency holds).
    socket.set_recv_buffer_size(shape.in_flight().min(u32::MAX as usize) as u32)?;
    socket.bind(SocketAddr::new(listen_ip, 0))?;
    let listener = socket.listen(64)?;
    let listen = listener.local_addr()?;
    let bucket = shape.rate.map(|r| Arc::new(Bucket::new(r)));
    let task = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(to).await else { continue };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            conns.push(tokio::spawn(pump(cr, sw, shape, bucket.clone())));
            conns.push(tokio::spawn(pump(sr, cw, shape, None)));
        }
        for c in conns {
            c.abort();
        }
    });
    Ok(Proxy { listen, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// 1 MiB through a 4 MiB/s cap takes ~250 ms; 50 ms of latency adds 50 ms; the bytes arrive
    /// whole and in order; the reply comes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_proxy_delays_caps_and_keeps_the_bytes() {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let to = server.local_addr().expect("addr");
        let shape = Shape {
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            rate: Some(4 << 20),
        };
        let proxy = start("127.0.0.1".parse().expect("ip"), to, shape).await.expect("proxy");
        let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let echo = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.expect("accept");
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            while got.len() < 1 << 20 {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed early");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"done").await.expect("reply");
            got
        });
        let t = std::time::Instant::now();
        let mut c = TcpStream::connect(proxy.listen).await.expect("connect");
        c.write_all(&sent).await.expect("send");
        let mut reply = [0u8; 4];
        c.read_exact(&mut reply).await.expect("reply");
        let took = t.elapsed();
        assert_eq!(&reply, b"done");
        assert_eq!(echo.await.expect("echo"), data, "whole and in order");
        assert!(took >= Duration::from_millis(280), "the cap and the latency hold it back: {took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    /// Four connections share the one rate: 4 × 512 KiB through 4 MiB/s take ~0.5 s, not the
    /// ~0.13 s of four separate caps.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_share_the_links_rate() {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let to = server.local_addr().expect("addr");
        let shape = Shape { rate: Some(4 << 20), ..Shape::default() };
        let proxy = start("127.0.0.1".parse().expect("ip"), to, shape).await.expect("proxy");
        let sink = tokio::spawn(async move {
            let mut readers = Vec::new();
            for _ in 0..4 {
                let (mut s, _) = server.accept().await.expect("accept");
                readers.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut got = 0;
                    while got < 512 << 10 {
                        let n = s.read(&mut buf).await.expect("read");
                        assert!(n > 0, "closed early");
                        got += n;
                    }
                }));
            }
            for r in readers {
                r.await.expect("reader");
            }
        });
        let t = std::time::Instant::now();
        let mut senders = Vec::new();
        for _ in 0..4 {
            let listen = proxy.listen;
            senders.push(tokio::spawn(async move {
                let mut c = TcpStream::connect(listen).await.expect("connect");
                c.write_all(&vec![7u8; 512 << 10]).await.expect("send");
                c
            }));
        }
        let _conns: Vec<TcpStream> =
            futures_join(senders).await.into_iter().map(|c| c.expect("sender")).collect();
        sink.await.expect("sink");
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(420), "2 MiB at 4 MiB/s in all: {took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    async fn futures_join<T>(
        handles: Vec<tokio::task::JoinHandle<T>>,
    ) -> Vec<Result<T, tokio::task::JoinError>> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await);
        }
        out
    }

    /// No deep queue: a sender pushing 8 MiB into a 1 MiB/s link has, after one second, got
    /// rid of little more than what passed plus the path's buffers — not the whole stream
    /// into the proxy's memory (which made QEMU see a fast link).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_proxy_holds_no_deep_queue() {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let to = server.local_addr().expect("addr");
        let shape = Shape { latency: Duration::from_millis(20), rate: Some(1 << 20), ..Shape::default() };
        let proxy = start("127.0.0.1".parse().expect("ip"), to, shape).await.expect("proxy");
        let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = received.clone();
        let sink = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.expect("accept");
            let mut buf = vec![0u8; 65536];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => r.fetch_add(n, std::sync::atomic::Ordering::Relaxed),
                };
            }
        });
        let sock = TcpSocket::new_v4().expect("socket");
        sock.set_send_buffer_size(64 << 10).expect("sndbuf");
        let mut c = sock.connect(proxy.listen).await.expect("connect");
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s2 = sent.clone();
        let writer = tokio::spawn(async move {
            let chunk = vec![1u8; 64 << 10];
            for _ in 0..128 {
                if c.write_all(&chunk).await.is_err() {
                    break;
                }
                s2.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (w, got) = (
            sent.load(std::sync::atomic::Ordering::Relaxed),
            received.load(std::sync::atomic::Ordering::Relaxed),
        );
        writer.abort();
        sink.abort();
        assert!(got > 512 << 10, "about 1 MiB passed in 1 s: {got}");
        assert!(w - got < 2 << 20, "the sender got rid of {w} bytes, {got} arrived: a deep queue in between");
    }
}
