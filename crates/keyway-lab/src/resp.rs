//! A tiny blocking RESP2 client: just enough to drive and inspect lab nodes.
//!
//! Invariants:
//! - one request, one reply: [`Client::cmd`] writes a command and reads exactly one
//!   reply frame, so bytes of one reply never leak into the next;
//! - every socket operation has a timeout, so a stopped (`SIGSTOP`) node makes a call
//!   fail instead of hanging a test forever;
//! - after any error mid-reply the client refuses further commands
//!   ([`LabError::Broken`]) rather than reading a stale reply as the answer to a new one.
//!
//! Commands are encoded here as RESP arrays of bulk strings (what `redis-cli` sends);
//! replies are decoded with `redis_protocol::resp2::decode`. This is not a general
//! client: no pipelining, no pub/sub, no RESP3.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

use crate::LabError;

/// One RESP2 reply.
///
/// RESP2 has a single null on the wire for two encodings (`$-1` and `*-1`); the decoder
/// folds them together, so a top-level `*-1` is restored as `Array(None)` and any nested
/// null becomes `Bulk(None)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`: the server's error, a value, not a transport failure.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$3\r\nfoo` or `$-1` (nil).
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...` or `*-1` (nil array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a simple string or a UTF-8 bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) => Some(s),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value of an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The raw bytes of a bulk string (or of a simple string).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Simple(s) => Some(s.as_bytes()),
            Reply::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// The elements of a non-nil array.
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// The message of an error reply.
    pub fn as_error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// True for `$-1` and `*-1`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Bulk(None) | Reply::Array(None))
    }

    /// Turns an error reply into [`LabError::ErrorReply`] for `command`, so callers
    /// that expect success can use `?`.
    pub fn into_result(self, command: &str) -> Result<Reply, LabError> {
        match self {
            Reply::Error(message) => Err(LabError::ErrorReply {
                command: command.to_owned(),
                message,
            }),
            other => Ok(other),
        }
    }

    /// `top_level_array` says the frame started with `*`: see the type docs on nulls.
    fn from_frame(frame: OwnedFrame, top_level_array: bool) -> Reply {
        match frame {
            OwnedFrame::SimpleString(s) => Reply::Simple(String::from_utf8_lossy(&s).into_owned()),
            OwnedFrame::Error(e) => Reply::Error(e),
            OwnedFrame::Integer(i) => Reply::Int(i),
            OwnedFrame::BulkString(b) => Reply::Bulk(Some(b)),
            OwnedFrame::Array(items) => Reply::Array(Some(
                items
                    .into_iter()
                    .map(|f| Reply::from_frame(f, false))
                    .collect(),
            )),
            OwnedFrame::Null if top_level_array => Reply::Array(None),
            OwnedFrame::Null => Reply::Bulk(None),
        }
    }
}

/// Encodes one command as a RESP array of bulk strings.
pub(crate) fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let size: usize = args.iter().map(|a| a.as_ref().len() + 16).sum();
    let mut out = Vec::with_capacity(16 + size);
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Decodes one reply from the front of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the reply and how many bytes it used.
pub(crate) fn decode_reply(
    buf: &[u8],
) -> Result<Option<(Reply, usize)>, redis_protocol::error::RedisProtocolError> {
    Ok(decode(buf)?.map(|(frame, used)| {
        let top_level_array = buf.first() == Some(&b'*');
        (Reply::from_frame(frame, top_level_array), used)
    }))
}

/// A connected (and, with a password, authenticated) blocking connection to one server.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    stream: TcpStream,
    /// Bytes read but not yet decoded into a reply.
    buf: Vec<u8>,
    timeout: Duration,
    broken: bool,
}

impl Client {
    /// Connects to `addr` and, if `password` is set, sends `AUTH password`.
    ///
    /// `timeout` bounds the connect and every later read and write.
    pub fn connect(
        addr: SocketAddr,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<Client, LabError> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|source| LabError::Connect { addr, source })?;
        let mut client = Client {
            addr,
            stream,
            buf: Vec::new(),
            timeout,
            broken: false,
        };
        client.apply_timeout()?;
        // Commands are tiny and we wait for each reply: Nagle would only add latency.
        client
            .stream
            .set_nodelay(true)
            .map_err(|source| LabError::Io { addr, source })?;
        if let Some(password) = password
            && let Reply::Error(message) = client.cmd(&["AUTH", password])?
        {
            return Err(LabError::Auth { addr, message });
        }
        Ok(client)
    }

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the read/write timeout, e.g. before a command that blocks on purpose.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), LabError> {
        self.timeout = timeout;
        self.apply_timeout()
    }

    /// Runs one command and returns its reply. An error reply is `Ok(Reply::Error)`:
    /// only transport and protocol failures are `Err`.
    pub fn cmd(&mut self, args: &[&str]) -> Result<Reply, LabError> {
        self.cmd_bytes(args)
    }

    /// [`Client::cmd`] for binary arguments.
    pub fn cmd_bytes<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, LabError> {
        if self.broken {
            return Err(LabError::Broken { addr: self.addr });
        }
        // Marked broken until the reply is fully read: any early return leaves it so.
        self.broken = true;
        let request = encode_command(args);
        self.stream
            .write_all(&request)
            .map_err(|e| self.io_error(e))?;
        let reply = self.read_reply()?;
        self.broken = false;
        Ok(reply)
    }

    fn read_reply(&mut self) -> Result<Reply, LabError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if !self.buf.is_empty() {
                let decoded = decode_reply(&self.buf).map_err(|source| LabError::Protocol {
                    addr: self.addr,
                    source,
                })?;
                if let Some((reply, used)) = decoded {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(0) => return Err(LabError::Closed { addr: self.addr }),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e)),
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn apply_timeout(&mut self) -> Result<(), LabError> {
        let addr = self.addr;
        self.stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| self.stream.set_write_timeout(Some(self.timeout)))
            .map_err(|source| LabError::Io { addr, source })
    }

    /// A socket timeout surfaces as `WouldBlock` or `TimedOut` depending on the call;
    /// both mean "the server did not answer in time".
    fn io_error(&self, e: io::Error) -> LabError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => LabError::Timeout {
                addr: self.addr,
                timeout: self.timeout,
            },
            _ => LabError::Io {
                addr: self.addr,
                source: e,
            },
        }
    }
}

/// The value of `key` in an `INFO` reply (`key:value` lines).
pub(crate) fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim_end())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_arrays_of_bulk_strings() {
        assert_eq!(
            encode_command(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn decodes_each_reply_kind() {
        let cases: &[(&[u8], Reply)] = &[
            (b"+OK\r\n", Reply::Simple("OK".into())),
            (b"-ERR no\r\n", Reply::Error("ERR no".into())),
            (b":-7\r\n", Reply::Int(-7)),
            (b"$3\r\nfoo\r\n", Reply::Bulk(Some(b"foo".to_vec()))),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Array(None)),
            (
                b"*2\r\n$6\r\nmaster\r\n:0\r\n",
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"master".to_vec())),
                    Reply::Int(0),
                ])),
            ),
        ];
        for (bytes, want) in cases {
            let (got, used) = decode_reply(bytes)
                .expect("valid RESP")
                .expect("complete frame");
            assert_eq!(&got, want, "{}", String::from_utf8_lossy(bytes));
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn incomplete_frames_ask_for_more_and_garbage_is_an_error() {
        assert_eq!(decode_reply(b"$5\r\nab").expect("incomplete is fine"), None);
        assert_eq!(decode_reply(b"*2\r\n:1\r\n").expect("incomplete"), None);
        assert!(decode_reply(b"?what\r\n").is_err());
    }

    #[test]
    fn reply_helpers() {
        assert_eq!(Reply::Bulk(Some(b"x".to_vec())).as_str(), Some("x"));
        assert_eq!(Reply::Simple("PONG".into()).as_str(), Some("PONG"));
        assert_eq!(Reply::Int(3).as_int(), Some(3));
        assert_eq!(Reply::Simple("3".into()).as_int(), None);
        assert!(Reply::Array(None).is_nil());
        assert!(Reply::Error("ERR x".into()).into_result("GET").is_err());
    }

    #[test]
    fn info_fields() {
        let info = "# Replication\r\nrole:slave\r\nmaster_port:6380\r\n";
        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "master_port"), Some("6380"));
        assert_eq!(info_field(info, "master"), None);
    }
}
