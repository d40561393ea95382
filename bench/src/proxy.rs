//! A userspace TCP proxy in the migration stream's way: every chunk it forwards is held for a
//! latency (± jitter, order kept) and the source → destination direction is capped to a rate.
//! This kernel has no netem; the proxy works on any machine, for every connection the source
//! opens (multifd channels included).

use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How the proxy shapes the stream.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Shape {
    pub latency: Duration,
    pub jitter: Duration,
    /// Bytes per second, source → destination (None: as fast as it goes).
    pub rate: Option<u64>,
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

const CHUNK: usize = 64 * 1024;

/// Forwards `from` to `to`: chunks released `latency ± jitter` after they were read (never
/// before the previous one), at most `rate` bytes a second.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shape: Shape,
    capped: bool,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = tokio::spawn(async move {
        let mut last = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.truncate(n);
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
    // The rate cap: a clock of when the link is free again.
    let mut free_at = Instant::now();
    while let Some((release, buf)) = rx.recv().await {
        tokio::time::sleep_until(release.max(free_at)).await;
        if to.write_all(&buf).await.is_err() {
            break;
        }
        if let (true, Some(rate)) = (capped, shape.rate) {
            free_at = free_at.max(Instant::now()) + Duration::from_secs_f64(buf.len() as f64 / rate as f64);
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

/// Starts a proxy on `listen_ip` (a free port) that forwards every connection to `to`.
pub async fn start(listen_ip: std::net::IpAddr, to: SocketAddr, shape: Shape) -> std::io::Result<Proxy> {
    let listener = TcpListener::bind(SocketAddr::new(listen_ip, 0)).await?;
    let listen = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(to).await else { continue };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            conns.push(tokio::spawn(pump(cr, sw, shape, true)));
            conns.push(tokio::spawn(pump(sr, cw, shape, false)));
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
}
