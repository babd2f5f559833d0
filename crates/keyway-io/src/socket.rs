//! Socket options for both sockets of a session.
//!
//! `TCP_NODELAY` is always on: Redis traffic is small request/response, and
//! Nagle's algorithm would add up to 40 ms to pipelined replies. Keepalive finds
//! peers that vanished without a FIN (a dead load balancer, a powered-off node)
//! on sessions that would otherwise sit idle forever.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Applies `TCP_NODELAY` and, when `keepalive` is set, TCP keepalive with that
/// idle time (probes every `keepalive / 3`, at least 1 s, 3 probes).
pub fn tune(stream: &TcpStream, keepalive: Option<Duration>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(idle) = keepalive {
        let interval = (idle / 3).max(Duration::from_secs(1));
        let params = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(3);
        SockRef::from(stream).set_tcp_keepalive(&params)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn sets_nodelay_and_keepalive() -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let stream = TcpStream::connect(listener.local_addr()?).await?;
        tune(&stream, Some(Duration::from_secs(30)))?;
        let sock = SockRef::from(&stream);
        assert!(stream.nodelay()?);
        assert!(sock.keepalive()?);
        assert_eq!(sock.tcp_keepalive_time()?, Duration::from_secs(30));
        assert_eq!(sock.tcp_keepalive_interval()?, Duration::from_secs(10));
        Ok(())
    }

    #[tokio::test]
    async fn keepalive_off_leaves_it_off() -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let stream = TcpStream::connect(listener.local_addr()?).await?;
        tune(&stream, None)?;
        assert!(stream.nodelay()?);
        assert!(!SockRef::from(&stream).keepalive()?);
        Ok(())
    }
}
