//! What the `Prober` and the `SentinelWatcher` share: one authenticated RESP
//! connection ([`RespConn`]), the failure reasons they report ([`Failure`]),
//! the cadence of their reports ([`ticker`]), the back-off of their connection
//! attempts ([`Retries`], [`backoff_skips`]) and the redaction of the password
//! from reasons ([`redact`]).
//!
//! Invariants:
//! - A connection is in step: every reply read was asked for (or, subscribed, is
//!   a published message). The callers check that nothing is left over after a
//!   round trip ([`RespConn::has_unread`]) and drop the connection after any
//!   failure; nothing here retries.
//! - Nothing here is bounded in time: each caller puts its own timeout around
//!   what it does (the subscribed connection has none on its reads).
//! - The request that carries the password lives only until it is written, and
//!   the reply to AUTH keeps only its error code, never its text.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use keyway_config::Credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Interval, MissedTickBehavior};

use crate::reply::{ErrorCode, Frame, ReplyError, decode_frame};

/// One connection to one Redis node or sentinel.
#[derive(Debug)]
pub(crate) struct RespConn {
    stream: TcpStream,
    /// Bytes read and not yet decoded: empty between the round trips of a
    /// query connection, maybe part of a message on a subscribed one.
    buf: BytesMut,
}

impl RespConn {
    /// Connects, then sends AUTH (if configured), `CLIENT SETNAME name` and
    /// `then` in one write, and checks the AUTH and SETNAME replies. The
    /// replies to `then` are the caller's to read. `step` follows the progress,
    /// so a caller's timeout can name the step it interrupted.
    pub(crate) async fn open(
        addr: SocketAddr,
        auth: Option<&Credentials>,
        name: &str,
        then: &[u8],
        step: &mut Step,
    ) -> Result<RespConn, Failure> {
        *step = Step::Connect;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Failure::io(Step::Connect, &e))?;
        // Small requests waiting for their replies: Nagle would only add delay.
        // Failing to set it changes timing only, so it is not an error.
        let _ = stream.set_nodelay(true);
        let mut conn = RespConn {
            stream,
            buf: BytesMut::with_capacity(4096),
        };

        let mut request = BytesMut::new();
        if let Some(creds) = auth {
            *step = Step::Auth;
            encode_auth(&mut request, creds);
        } else {
            *step = Step::Handshake;
        }
        encode_command(&mut request, &[b"CLIENT", b"SETNAME", name.as_bytes()]);
        request.extend_from_slice(then);
        conn.write(&request, *step).await?;
        // The request held the password: do not keep it around longer than needed.
        drop(request);

        if auth.is_some() {
            match conn.read_frame(Step::Auth).await? {
                Frame::SimpleString(ok) if &ok[..] == b"OK" => {}
                Frame::Error(text) => {
                    // Only the code is kept: this text answers a command that
                    // carried the password.
                    return Err(Failure::reply(
                        Step::Auth,
                        ReplyError::Refused {
                            code: ErrorCode::from_error_text(&text),
                            message: String::new(),
                        },
                    ));
                }
                _ => {
                    return Err(Failure::reply(
                        Step::Auth,
                        ReplyError::Malformed("auth reply is not ok"),
                    ));
                }
            }
            *step = Step::Handshake;
        }
        // The name only helps operators: an error reply (an old server, an ACL)
        // is fine. A reply that is not RESP still fails the connection.
        let _ = conn.read_frame(Step::Handshake).await?;
        Ok(conn)
    }

    /// Whether the idle connection is unusable: closed by the peer, in error,
    /// or holding bytes nobody asked for. Never waits.
    pub(crate) fn is_stale(&mut self) -> bool {
        if self.has_unread() {
            return true;
        }
        let mut probe = [0u8; 1];
        // Anything but "would block" (EOF, a reset, unsolicited data) is stale.
        !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Whether bytes were read beyond the frames taken: after a round trip,
    /// data nobody asked for.
    pub(crate) fn has_unread(&self) -> bool {
        !self.buf.is_empty()
    }

    pub(crate) async fn write(&mut self, bytes: &[u8], step: Step) -> Result<(), Failure> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| Failure::io(step, &e))
    }

    /// Reads until one whole frame is buffered, and takes it. Waits as long as
    /// it takes. Cancel-safe: bytes read stay in the buffer.
    pub(crate) async fn read_frame(&mut self, step: Step) -> Result<Frame, Failure> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf).map_err(|e| Failure::reply(step, e))? {
                return Ok(frame);
            }
            self.buf.reserve(4096);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(Failure::new(step, Cause::Closed)),
                Ok(_) => {}
                Err(e) => return Err(Failure::io(step, &e)),
            }
        }
    }
}

/// `AUTH [username] password`.
fn encode_auth(out: &mut BytesMut, creds: &Credentials) {
    let password = creds.password.expose().as_bytes();
    match &creds.username {
        Some(user) => encode_command(out, &[b"AUTH", user.as_bytes(), password]),
        None => encode_command(out, &[b"AUTH", password]),
    }
}

/// A command as a RESP array of bulk strings.
pub(crate) fn encode_command(out: &mut BytesMut, args: &[&[u8]]) {
    out.put_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.put_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// The ticker of a task that reports every `interval`.
///
/// The first tick completes at once: nothing is routed before the first
/// answers, so they should not wait. `Delay`: after a slow attempt the next one
/// waits a full interval instead of bursting to catch up. `interval` panics on
/// zero; the config rejects it, this is a backstop.
pub(crate) fn ticker(interval: Duration) -> Interval {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// How many ticks to skip before the next connection attempt, after `failures`
/// consecutive failures (`failures >= 1`).
///
/// The wait doubles from one interval: `min(interval * 2^(failures-1), max)`,
/// counted in whole ticks, so a peer that is down for good costs one connect
/// every `max` instead of one per interval, and a peer that blinked is retried
/// at the very next tick. Ticks, not instants: reports stay on the interval's
/// cadence and there is no clock skew to round against. No jitter: each task
/// talks to a different peer, so their retries do not pile up on one.
fn backoff_skips(failures: u32, interval: Duration, max: Duration) -> u32 {
    let doubling = 1u128 << failures.saturating_sub(1).min(31);
    // The most ticks that fit in `max`; at least one (an interval longer than
    // `max` keeps its own cadence).
    let cap = (max.as_nanos() / interval.as_nanos().max(1)).max(1);
    u32::try_from(doubling.min(cap) - 1).unwrap_or(u32::MAX)
}

/// Consecutive failures of one task's attempts, and the connection attempts
/// they skip (see [`backoff_skips`]). Only connection attempts back off: a
/// skipped tick still reports, with the reason of the last failure.
#[derive(Debug, Default)]
pub(crate) struct Retries {
    /// Consecutive failures.
    failures: u32,
    /// Ticks left to skip before the next connection attempt.
    skip: u32,
    last_failure: String,
}

impl Retries {
    /// While backing off, uses up one skipped tick and returns the reason to
    /// report for it; `None`: attempt now. The caller asks only when it has no
    /// connection open, and not on a wake (which skips the back-off once).
    pub(crate) fn skip_tick(&mut self) -> Option<String> {
        if self.skip == 0 {
            return None;
        }
        self.skip -= 1;
        Some(self.last_failure.clone())
    }

    /// Records a success; returns how many failures in a row it ends.
    pub(crate) fn succeeded(&mut self) -> u32 {
        self.skip = 0;
        std::mem::take(&mut self.failures)
    }

    /// Records a failure and its (redacted) reason, and backs off: the next
    /// [`backoff_skips`] ticks skip their connection attempt. Returns how many
    /// failures in a row there are now.
    pub(crate) fn failed(&mut self, reason: &str, interval: Duration, max: Duration) -> u32 {
        self.failures = self.failures.saturating_add(1);
        self.skip = backoff_skips(self.failures, interval, max);
        reason.clone_into(&mut self.last_failure);
        self.failures
    }
}

/// Belt and braces: reasons are built from fixed words and sanitised codes, but
/// a peer could still echo a password as an "error code". It never reaches a
/// report or a log.
pub(crate) fn redact(reason: String, auth: Option<&Credentials>) -> String {
    match auth.map(|c| c.password.expose()) {
        Some(password) if !password.is_empty() && reason.contains(password) => {
            reason.replace(password, "<redacted>")
        }
        _ => reason,
    }
}

/// The step under way when something failed, named in failure reasons.
///
/// The prober goes `Connect`, `Auth`, `Handshake`, then `Role` (or `Info`) and
/// `Ping`; the sentinel watcher's query connection `Query` after the
/// handshake, its subscribed one `Subscribe`, then `Events` and `Ping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Connect,
    Auth,
    /// `CLIENT SETNAME`.
    Handshake,
    /// `ROLE`.
    Role,
    /// `INFO replication`.
    Info,
    Ping,
    /// `SENTINEL get-master-addr-by-name` and `SENTINEL replicas`.
    Query,
    Subscribe,
    /// Waiting for published messages.
    Events,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Connect => "connect",
            Step::Auth => "auth",
            Step::Handshake => "handshake",
            Step::Role => "role",
            Step::Info => "info",
            Step::Ping => "ping",
            Step::Query => "query",
            Step::Subscribe => "subscribe",
            Step::Events => "events",
        })
    }
}

/// Why a probe, a query or a subscription failed: `"<step>: <cause>"`, for
/// example `connect: connection refused`.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {cause}")]
pub(crate) struct Failure {
    step: Step,
    // Not a `#[source]`: the message already shows the cause.
    cause: Cause,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Cause {
    /// Only the kind: an `io::Error`'s text is capitalised and OS-specific.
    #[error("{0}")]
    Io(io::ErrorKind),
    #[error("connection closed")]
    Closed,
    #[error("timed out")]
    TimedOut,
    /// Bytes left over after a round trip, from `"node"` or `"sentinel"`.
    #[error("unexpected data from {from}")]
    Unsolicited { from: &'static str },
    #[error(transparent)]
    Reply(ReplyError),
}

impl Failure {
    pub(crate) fn new(step: Step, cause: Cause) -> Self {
        Failure { step, cause }
    }

    pub(crate) fn io(step: Step, e: &io::Error) -> Self {
        Failure::new(step, Cause::Io(e.kind()))
    }

    pub(crate) fn reply(step: Step, e: ReplyError) -> Self {
        Failure::new(step, Cause::Reply(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_config::Secret;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        let max = Duration::from_secs(5);
        let skips: Vec<u32> = (1..=7).map(|n| backoff_skips(n, ms(500), max)).collect();
        // Waits of 1, 2, 4, 8, 10, 10, 10 intervals of 500 ms.
        assert_eq!(skips, [0, 1, 3, 7, 9, 9, 9]);
        assert_eq!(backoff_skips(u32::MAX, ms(1), max), 4_999);
        // An interval beyond the cap keeps its own cadence.
        assert_eq!(backoff_skips(10, Duration::from_secs(30), max), 0);
        assert_eq!(backoff_skips(1, Duration::ZERO, max), 0);
    }

    #[test]
    fn retries_skip_ticks_and_reset() {
        let ms = Duration::from_millis;
        let max = Duration::from_secs(5);
        let mut retries = Retries::default();
        assert_eq!(retries.skip_tick(), None);
        assert_eq!(retries.failed("connect: timed out", ms(500), max), 1);
        // Retried at the very next tick.
        assert_eq!(retries.skip_tick(), None);
        assert_eq!(
            retries.failed("connect: connection refused", ms(500), max),
            2
        );
        assert_eq!(
            retries.skip_tick().as_deref(),
            Some("connect: connection refused")
        );
        assert_eq!(retries.skip_tick(), None);
        assert_eq!(retries.succeeded(), 2);
        assert_eq!(retries.succeeded(), 0);
        assert_eq!(retries.skip_tick(), None);
    }

    #[test]
    fn auth_encoding() {
        let mut out = BytesMut::new();
        encode_command(&mut out, &[b"AUTH", b"u", b"p w"]);
        assert_eq!(&out[..], b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$3\r\np w\r\n");
        let creds = |username: Option<&str>| Credentials {
            username: username.map(Into::into),
            password: Secret::new("p w"),
        };
        let mut out = BytesMut::new();
        encode_auth(&mut out, &creds(Some("u")));
        encode_auth(&mut out, &creds(None));
        assert_eq!(
            &out[..],
            b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$3\r\np w\r\n*2\r\n$4\r\nAUTH\r\n$3\r\np w\r\n"
        );
    }

    #[test]
    fn setname_encoding() {
        // What the prober sent as a constant before the connection was shared.
        let mut out = BytesMut::new();
        encode_command(&mut out, &[b"CLIENT", b"SETNAME", b"keyway-probe"]);
        assert_eq!(
            &out[..],
            b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$12\r\nkeyway-probe\r\n"
        );
    }

    #[test]
    fn redaction() {
        let auth = Credentials {
            username: None,
            password: Secret::new("hunter2"),
        };
        assert_eq!(
            redact("auth: refused (hunter2)".into(), Some(&auth)),
            "auth: refused (<redacted>)"
        );
        assert_eq!(redact("auth: refused".into(), Some(&auth)), "auth: refused");
        assert_eq!(redact("hunter2".into(), None), "hunter2");
        let empty = Credentials {
            username: None,
            password: Secret::new(""),
        };
        assert_eq!(redact("x".into(), Some(&empty)), "x");
    }

    #[test]
    fn reasons() {
        assert_eq!(
            Failure::new(Step::Ping, Cause::Unsolicited { from: "node" }).to_string(),
            "ping: unexpected data from node"
        );
        assert_eq!(
            Failure::io(Step::Connect, &io::ErrorKind::ConnectionRefused.into()).to_string(),
            "connect: connection refused"
        );
        assert_eq!(
            Failure::new(Step::Events, Cause::Closed).to_string(),
            "events: connection closed"
        );
    }
}
