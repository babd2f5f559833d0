//! Redis replies to observations: bytes to RESP2 frames, frames to roles. Pure:
//! no I/O, no clock.
//!
//! Invariants:
//! - Nothing here panics on any input, however hostile: every byte comes from the
//!   network. Proptests feed arbitrary bytes through [`decode_frame`] and every
//!   parser.
//! - [`decode_frame`] never hands the RESP decoder a frame nested deeper than
//!   [`MAX_DEPTH`] (the decoder recurses once per level, so a megabyte of `*1\r\n`
//!   would overflow the stack and abort the process) and never lets a buffer grow
//!   past [`MAX_REPLY_BYTES`] without a complete frame.
//! - A reply is either understood exactly or rejected: an unknown role string, a
//!   missing field or a wrong type is an error, never a guess.
//! - An error reply (`-NOPERM ...`) is [`ReplyError::Refused`], distinct from a
//!   reply that makes no sense ([`ReplyError::Malformed`]), so the prober can
//!   fall back from `ROLE` to `INFO replication` on `NOPERM` only.
//! - `Display` of a [`ReplyError`] is short, lowercase, and holds no text chosen
//!   by the node beyond a sanitised error code: it ends up in logs and in
//!   `ProbeOutcome::Failed`.

use std::fmt;
use std::str;

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;

use crate::observation::{NodeRole, Role};

/// A RESP2 frame as decoded from a node's socket.
pub type Frame = BytesFrame;

/// A read buffer holding this many bytes and still no complete frame is garbage.
/// The largest reply a probe expects, `INFO replication` or `ROLE` of a master
/// with many replicas, is a few kilobytes.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// Deepest array nesting accepted. `ROLE` of a master is three levels deep.
pub const MAX_DEPTH: usize = 8;

/// Longest error code kept from an error reply (`NOPERM`, `WRONGPASS`, ...).
const MAX_CODE_LEN: usize = 24;

/// Why a reply could not be turned into an observation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The node answered with an error reply. `message` is the node's full text,
    /// kept for debugging and never displayed.
    #[error("refused ({code})")]
    Refused { code: ErrorCode, message: String },
    /// The bytes are not RESP2, or the frame does not have the expected shape.
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    /// A well-formed reply naming a role this proxy does not know.
    #[error("unknown role")]
    UnknownRole(String),
}

impl ReplyError {
    /// The error code if the node refused the command.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ReplyError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    fn refused(text: &str) -> Self {
        ReplyError::Refused {
            code: ErrorCode::from_error_text(text),
            message: text.to_owned(),
        }
    }
}

/// The first word of an error reply, which Redis uses as a machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// ACLs forbid the command (`-NOPERM`).
    NoPerm,
    /// The connection has not authenticated (`-NOAUTH`).
    NoAuth,
    /// Wrong user name or password (`-WRONGPASS`).
    WrongPass,
    /// The node is loading its dataset (`-LOADING`).
    Loading,
    /// A replica whose link to its master is down refuses commands
    /// (`-MASTERDOWN`, with `replica-serve-stale-data no`).
    MasterDown,
    /// A script or module is blocking the node (`-BUSY`).
    Busy,
    /// Any other code, lowercased, ASCII alphanumerics only, at most 24 chars.
    Other(String),
}

impl ErrorCode {
    /// The code of an error reply's text (without the leading `-`).
    pub fn from_error_text(text: &str) -> Self {
        let word = text.split_ascii_whitespace().next().unwrap_or("");
        match word {
            "NOPERM" => ErrorCode::NoPerm,
            "NOAUTH" => ErrorCode::NoAuth,
            "WRONGPASS" => ErrorCode::WrongPass,
            "LOADING" => ErrorCode::Loading,
            "MASTERDOWN" => ErrorCode::MasterDown,
            "BUSY" => ErrorCode::Busy,
            // Sanitised: this text reaches logs and the status page.
            other => ErrorCode::Other(
                other
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(MAX_CODE_LEN)
                    .map(|c| c.to_ascii_lowercase())
                    .collect(),
            ),
        }
    }

    /// Authentication failed or is missing: a configuration problem, not a node one.
    pub fn is_auth(&self) -> bool {
        matches!(self, ErrorCode::NoAuth | ErrorCode::WrongPass)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::NoPerm => "noperm",
            ErrorCode::NoAuth => "noauth",
            ErrorCode::WrongPass => "wrongpass",
            ErrorCode::Loading => "loading",
            ErrorCode::MasterDown => "masterdown",
            ErrorCode::Busy => "busy",
            ErrorCode::Other(code) if code.is_empty() => "error",
            ErrorCode::Other(code) => code,
        })
    }
}

/// Takes one complete frame off the front of `buf`.
///
/// `Ok(None)`: more bytes are needed. The buffer is only consumed when a whole
/// frame is returned. Errors are final: the stream can no longer be trusted.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, ReplyError> {
    let Some(len) = frame_extent(buf)? else {
        if buf.len() > MAX_REPLY_BYTES {
            return Err(ReplyError::Malformed("reply too large"));
        }
        return Ok(None);
    };
    if len > MAX_REPLY_BYTES {
        return Err(ReplyError::Malformed("reply too large"));
    }
    match decode_bytes_mut(buf) {
        Ok(Some((frame, amt, _))) if amt == len => Ok(Some(frame)),
        // The scan and the decoder disagree on where the frame ends (or whether it
        // is complete): neither can be trusted with the rest of the stream.
        Ok(_) => Err(ReplyError::Malformed("inconsistent resp framing")),
        Err(_) => Err(ReplyError::Malformed("invalid resp")),
    }
}

/// Finds where the first frame of `buf` ends, without recursion and without
/// allocating more than one counter per nesting level.
///
/// This is a guard in front of the decoder: it bounds nesting depth and spots
/// incomplete input cheaply. It follows the decoder's own framing rules (a
/// simple line runs to the first CRLF; a bulk string is its length plus two
/// bytes) so both agree on the frame's length.
fn frame_extent(buf: &[u8]) -> Result<Option<usize>, ReplyError> {
    // Items still expected by each open array, innermost last.
    let mut open: Vec<u64> = Vec::new();
    let mut pos = 0usize;
    loop {
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        let Some(line_len) = find_crlf(&buf[pos + 1..]) else {
            // Reject a bad type byte at once rather than waiting for a CRLF.
            if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
                return Err(ReplyError::Malformed("invalid resp type"));
            }
            return Ok(None);
        };
        let line = &buf[pos + 1..pos + 1 + line_len];
        pos += 1 + line_len + 2;
        match kind {
            b'+' | b'-' | b':' => {}
            b'$' => match parse_len(line)? {
                None => {}
                Some(n) => {
                    let Some(end) = usize::try_from(n)
                        .ok()
                        .and_then(|n| pos.checked_add(n))
                        .and_then(|end| end.checked_add(2))
                    else {
                        return Err(ReplyError::Malformed("bulk string too long"));
                    };
                    if end > buf.len() {
                        return Ok(None);
                    }
                    pos = end;
                }
            },
            b'*' => match parse_len(line)? {
                None | Some(0) => {}
                Some(n) => {
                    if open.len() >= MAX_DEPTH {
                        return Err(ReplyError::Malformed("reply nested too deep"));
                    }
                    open.push(n);
                    continue;
                }
            },
            _ => return Err(ReplyError::Malformed("invalid resp type")),
        }
        // One item is complete: it counts towards its array, which may complete
        // in turn and count towards its own parent.
        loop {
            match open.last_mut() {
                None => return Ok(Some(pos)),
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        break;
                    }
                    open.pop();
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A RESP length: `None` for `-1` (null), an error for any other negative value.
fn parse_len(line: &[u8]) -> Result<Option<u64>, ReplyError> {
    let n: i64 = str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ReplyError::Malformed("invalid length"))?;
    match n {
        -1 => Ok(None),
        n => u64::try_from(n)
            .map(Some)
            .map_err(|_| ReplyError::Malformed("invalid length")),
    }
}

/// A `ROLE` reply, with the details the reply carries beyond the role itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleReply {
    /// `["master", offset, [[ip, port, offset], ...]]`
    Master {
        repl_offset: i64,
        replicas: Vec<ReplicaEntry>,
    },
    /// `["slave", master_ip, master_port, state, offset]`; the offset is -1
    /// until the first sync.
    Replica {
        master_host: String,
        master_port: u16,
        link: String,
        repl_offset: i64,
    },
    /// `["sentinel", [master_name, ...]]`
    Sentinel { masters: Vec<String> },
}

/// One replica as a master's `ROLE` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEntry {
    pub host: String,
    pub port: u16,
    pub repl_offset: i64,
}

impl RoleReply {
    /// Parses a `ROLE` reply.
    pub fn from_frame(frame: &Frame) -> Result<Self, ReplyError> {
        let items = match frame {
            Frame::Array(items) => items,
            Frame::Error(text) => return Err(ReplyError::refused(text)),
            _ => return Err(ReplyError::Malformed("role reply is not an array")),
        };
        let Some((name, rest)) = items.split_first() else {
            return Err(ReplyError::Malformed("role reply is empty"));
        };
        let name = text(name).ok_or(ReplyError::Malformed("role name is not a string"))?;
        match (name, rest) {
            ("master", [offset, replicas]) => {
                let Frame::Array(replicas) = replicas else {
                    return Err(ReplyError::Malformed("replica list is not an array"));
                };
                Ok(RoleReply::Master {
                    repl_offset: integer(offset)
                        .ok_or(ReplyError::Malformed("master offset is not an integer"))?,
                    replicas: replicas
                        .iter()
                        .map(ReplicaEntry::from_frame)
                        .collect::<Result<_, _>>()?,
                })
            }
            ("slave", [host, port, link, offset]) => Ok(RoleReply::Replica {
                master_host: text(host)
                    .ok_or(ReplyError::Malformed("master host is not a string"))?
                    .to_owned(),
                master_port: integer(port)
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or(ReplyError::Malformed("master port is not a port"))?,
                link: text(link)
                    .ok_or(ReplyError::Malformed("replica state is not a string"))?
                    .to_owned(),
                repl_offset: integer(offset)
                    .ok_or(ReplyError::Malformed("replica offset is not an integer"))?,
            }),
            ("sentinel", [masters]) => {
                let Frame::Array(masters) = masters else {
                    return Err(ReplyError::Malformed("master list is not an array"));
                };
                Ok(RoleReply::Sentinel {
                    masters: masters
                        .iter()
                        .map(|m| text(m).map(str::to_owned))
                        .collect::<Option<_>>()
                        .ok_or(ReplyError::Malformed("master name is not a string"))?,
                })
            }
            ("master" | "slave" | "sentinel", _) => {
                Err(ReplyError::Malformed("role reply has the wrong length"))
            }
            (other, _) => Err(ReplyError::UnknownRole(other.to_owned())),
        }
    }

    pub fn role(&self) -> Role {
        match self {
            RoleReply::Master { .. } => Role::Master,
            RoleReply::Replica { .. } => Role::Replica,
            RoleReply::Sentinel { .. } => Role::Sentinel,
        }
    }
}

impl ReplicaEntry {
    fn from_frame(frame: &Frame) -> Result<Self, ReplyError> {
        // Redis sends the port and offset of each replica as strings.
        let Frame::Array(fields) = frame else {
            return Err(ReplyError::Malformed("replica entry is not an array"));
        };
        let [host, port, offset] = fields.as_slice() else {
            return Err(ReplyError::Malformed("replica entry has the wrong length"));
        };
        Ok(ReplicaEntry {
            host: text(host)
                .ok_or(ReplyError::Malformed("replica host is not a string"))?
                .to_owned(),
            port: integer(port)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(ReplyError::Malformed("replica port is not a port"))?,
            repl_offset: integer(offset)
                .ok_or(ReplyError::Malformed("replica offset is not an integer"))?,
        })
    }
}

impl Role {
    /// The role named by a `ROLE` reply.
    pub fn from_role_frame(frame: &Frame) -> Result<Role, ReplyError> {
        RoleReply::from_frame(frame).map(|reply| reply.role())
    }

    /// The role named by the `role:` line of `INFO replication` text.
    pub fn from_info_replication(info: &str) -> Result<Role, ReplyError> {
        let value = info
            .lines()
            .find_map(|line| line.trim_end_matches('\r').strip_prefix("role:"))
            .ok_or(ReplyError::Malformed("no role line in info"))?;
        match value.trim() {
            "master" => Ok(Role::Master),
            "slave" => Ok(Role::Replica),
            other => Err(ReplyError::UnknownRole(other.to_owned())),
        }
    }

    /// The role named by an `INFO replication` reply frame (a bulk string).
    pub fn from_info_frame(frame: &Frame) -> Result<Role, ReplyError> {
        match frame {
            Frame::BulkString(bytes) => {
                Role::from_info_replication(&String::from_utf8_lossy(bytes))
            }
            Frame::Error(text) => Err(ReplyError::refused(text)),
            _ => Err(ReplyError::Malformed("info reply is not a bulk string")),
        }
    }
}

/// Whether a node is loading its dataset, from its reply to `PING`.
///
/// `PING` is refused with `-LOADING` while the dataset loads, when `ROLE` and
/// `INFO` still answer; that is why the probe sends both. Any other error is a
/// refusal (for example `-MASTERDOWN` from a stale replica, or `-BUSY`).
pub fn loading_from_ping(ping: &Frame) -> Result<bool, ReplyError> {
    match ping {
        Frame::SimpleString(s) if s.as_ref() == b"PONG" => Ok(false),
        Frame::Error(text) => match ErrorCode::from_error_text(text) {
            ErrorCode::Loading => Ok(true),
            _ => Err(ReplyError::refused(text)),
        },
        _ => Err(ReplyError::Malformed("ping reply is not pong")),
    }
}

impl NodeRole {
    /// A node's state from its replies to the pipeline `ROLE`, `PING`.
    pub fn from_role_and_ping(role: &Frame, ping: &Frame) -> Result<NodeRole, ReplyError> {
        Ok(NodeRole {
            role: Role::from_role_frame(role)?,
            loading: loading_from_ping(ping)?,
        })
    }

    /// A node's state from its replies to the pipeline `INFO replication`, `PING`.
    pub fn from_info_and_ping(info: &Frame, ping: &Frame) -> Result<NodeRole, ReplyError> {
        Ok(NodeRole {
            role: Role::from_info_frame(info)?,
            loading: loading_from_ping(ping)?,
        })
    }
}

/// The text of a simple or bulk string frame.
fn text(frame: &Frame) -> Option<&str> {
    match frame {
        Frame::SimpleString(b) | Frame::BulkString(b) => str::from_utf8(b).ok(),
        _ => None,
    }
}

/// An integer frame, or a string holding an integer (replica entries use those).
fn integer(frame: &Frame) -> Option<i64> {
    match frame {
        Frame::Integer(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

// Sentinel replies: `SENTINEL get-master-addr-by-name`, `SENTINEL replicas`
// and the messages of a subscribed connection. Same rules as above: exact or
// rejected, never a panic, and only fixed words in a displayed error.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use keyway_config::NodeAddr;

use crate::observation::SentinelView;

/// Longest Sentinel event payload kept, in bytes (after sanitising).
pub const MAX_EVENT_PAYLOAD: usize = 512;

/// The master a sentinel names, from its reply to
/// `SENTINEL get-master-addr-by-name <name>`: `[ip, port]`, or a nil reply
/// (`*-1`) when the sentinel does not monitor that name (`None`).
///
/// The address must be an IP address and a non-zero port: Sentinel can be set
/// to announce host names, and the proxy does no DNS at run time.
pub fn master_addr_from_frame(frame: &Frame) -> Result<Option<NodeAddr>, ReplyError> {
    match frame {
        Frame::Null => Ok(None),
        Frame::Array(items) => match items.as_slice() {
            [ip, port] => node_addr(ip, port)
                .map(Some)
                .ok_or(ReplyError::Malformed("master address is not ip:port")),
            _ => Err(ReplyError::Malformed("master address has the wrong length")),
        },
        Frame::Error(text) => Err(ReplyError::refused(text)),
        _ => Err(ReplyError::Malformed("master address is not an array")),
    }
}

/// Every replica a sentinel lists in its reply to `SENTINEL replicas <name>`:
/// an array of flat `[key, value, key, value, ...]` arrays, of which only `ip`
/// and `port` are read (flags do not matter: the probes judge health).
pub fn replicas_from_frame(frame: &Frame) -> Result<Vec<NodeAddr>, ReplyError> {
    let entries = match frame {
        Frame::Array(entries) => entries,
        Frame::Error(text) => return Err(ReplyError::refused(text)),
        _ => return Err(ReplyError::Malformed("replica list is not an array")),
    };
    entries
        .iter()
        .map(|entry| {
            let Frame::Array(fields) = entry else {
                return Err(ReplyError::Malformed("replica entry is not an array"));
            };
            if fields.len() % 2 != 0 {
                return Err(ReplyError::Malformed("replica entry has an odd length"));
            }
            let field = |key: &str| {
                fields
                    .chunks_exact(2)
                    .find(|pair| text(&pair[0]) == Some(key))
                    .map(|pair| &pair[1])
            };
            let (Some(ip), Some(port)) = (field("ip"), field("port")) else {
                return Err(ReplyError::Malformed("replica entry has no ip or port"));
            };
            node_addr(ip, port).ok_or(ReplyError::Malformed("replica address is not ip:port"))
        })
        .collect()
}

impl SentinelView {
    /// A sentinel's view from its replies to the pipeline
    /// `SENTINEL get-master-addr-by-name <name>`, `SENTINEL replicas <name>`.
    ///
    /// A sentinel that does not know the name answers nil, then
    /// `-ERR No such master with that name`: that is a view with no master and
    /// no replicas, not a failure. Any other refusal is an error.
    pub fn from_frames(master: &Frame, replicas: &Frame) -> Result<SentinelView, ReplyError> {
        let master = master_addr_from_frame(master)?;
        let replicas = match replicas {
            Frame::Error(text) if master.is_none() && is_no_such_master(text) => Vec::new(),
            other => replicas_from_frame(other)?,
        };
        Ok(SentinelView { master, replicas })
    }
}

/// Sentinel's refusal of a command about a master name it does not monitor.
fn is_no_such_master(text: &str) -> bool {
    text.starts_with("ERR No such master")
}

/// An IP address and a port, each a string or an integer frame.
fn node_addr(ip: &Frame, port: &Frame) -> Option<NodeAddr> {
    let ip: IpAddr = text(ip)?.parse().ok()?;
    let port = integer(port).and_then(|p| u16::try_from(p).ok())?;
    (port != 0).then(|| NodeAddr(SocketAddr::new(ip, port)))
}

/// One frame read on a connection in subscribed mode (RESP2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubReply {
    /// `["subscribe", channel, count]`: one channel subscribed.
    Subscribed { channel: String },
    /// `["message", channel, payload]`: something was published.
    Message { channel: String, payload: Bytes },
    /// `["pong", data]`: the answer to `PING` in subscribed mode.
    Pong,
}

impl PubSubReply {
    /// Parses one frame of a subscribed connection. An error reply (a
    /// `SUBSCRIBE` refused by ACLs) is [`ReplyError::Refused`].
    pub fn from_frame(frame: &Frame) -> Result<PubSubReply, ReplyError> {
        let items = match frame {
            Frame::Array(items) => items,
            // RESP3 answers PING with a plain PONG even when subscribed.
            Frame::SimpleString(s) if s.eq_ignore_ascii_case(b"PONG") => {
                return Ok(PubSubReply::Pong);
            }
            Frame::Error(text) => return Err(ReplyError::refused(text)),
            _ => return Err(ReplyError::Malformed("pubsub reply is not an array")),
        };
        let Some((kind, rest)) = items.split_first() else {
            return Err(ReplyError::Malformed("pubsub reply is empty"));
        };
        let kind = text(kind).ok_or(ReplyError::Malformed("pubsub kind is not a string"))?;
        let channel = |frame: &Frame| {
            text(frame)
                .map(str::to_owned)
                .ok_or(ReplyError::Malformed("pubsub channel is not a string"))
        };
        match (kind, rest) {
            ("subscribe", [name, count]) if integer(count).is_some() => {
                Ok(PubSubReply::Subscribed {
                    channel: channel(name)?,
                })
            }
            ("message", [name, payload]) => match payload {
                Frame::BulkString(payload) | Frame::SimpleString(payload) => {
                    Ok(PubSubReply::Message {
                        channel: channel(name)?,
                        payload: payload.clone(),
                    })
                }
                _ => Err(ReplyError::Malformed("pubsub payload is not a string")),
            },
            ("pong", [_]) => Ok(PubSubReply::Pong),
            _ => Err(ReplyError::Malformed("unexpected pubsub reply")),
        }
    }
}

/// A Sentinel event payload fit for logs and the status page: printable ASCII
/// only (anything else becomes `?`), at most [`MAX_EVENT_PAYLOAD`] bytes.
pub fn sanitize_event_payload(raw: &[u8]) -> String {
    raw.iter()
        .take(MAX_EVENT_PAYLOAD)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// The master name a Sentinel event is about, from its channel and payload.
///
/// Sentinel publishes `<name> <old-ip> <old-port> <new-ip> <new-port>` on
/// `+switch-master`; every other event describes an instance:
/// `master <name> <ip> <port>` for a master, and
/// `<type> <name> <ip> <port> @ <master-name> <master-ip> <master-port>` for
/// a replica or a sentinel. `None` when the payload fits none of these.
pub fn event_master_name<'a>(channel: &str, payload: &'a str) -> Option<&'a str> {
    let mut words = payload.split(' ');
    if channel == "+switch-master" {
        return words.next().filter(|w| !w.is_empty());
    }
    match words.next()? {
        "master" => words.next().filter(|w| !w.is_empty()),
        _ => {
            let mut after_at = words.skip_while(|w| *w != "@");
            after_at.next()?;
            after_at.next().filter(|w| !w.is_empty())
        }
    }
}

/// A `+switch-master` event: Sentinel moved `master_name` from `old` to `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchMaster {
    pub master_name: String,
    pub old: NodeAddr,
    pub new: NodeAddr,
}

impl SwitchMaster {
    /// Parses `<name> <old-ip> <old-port> <new-ip> <new-port>`.
    pub fn from_payload(payload: &str) -> Result<SwitchMaster, ReplyError> {
        let words: Vec<&str> = payload.split(' ').collect();
        let [name, old_ip, old_port, new_ip, new_port] = words.as_slice() else {
            return Err(ReplyError::Malformed("switch-master has the wrong length"));
        };
        let addr = |ip: &str, port: &str| {
            let ip: IpAddr = ip.parse().ok()?;
            let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
            Some(NodeAddr(SocketAddr::new(ip, port)))
        };
        match (addr(old_ip, old_port), addr(new_ip, new_port)) {
            (Some(old), Some(new)) if !name.is_empty() => Ok(SwitchMaster {
                master_name: (*name).to_owned(),
                old,
                new,
            }),
            _ => Err(ReplyError::Malformed(
                "switch-master address is not ip:port",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    pub(super) fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, ReplyError> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = decode_frame(&mut buf)? {
            frames.push(frame);
        }
        Ok(frames)
    }

    pub(super) fn one(bytes: &[u8]) -> Frame {
        let frames = decode_all(bytes).expect("valid resp");
        assert_eq!(frames.len(), 1, "{frames:?}");
        frames.into_iter().next().expect("one frame")
    }

    fn pair(bytes: &[u8]) -> (Frame, Frame) {
        let mut frames = decode_all(bytes).expect("valid resp").into_iter();
        let pair = (
            frames.next().expect("first"),
            frames.next().expect("second"),
        );
        assert!(frames.next().is_none());
        pair
    }

    // Replies captured from redis-server 7.0.15 (raw bytes on the socket).
    const MASTER_ALONE: &[u8] = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n+PONG\r\n";
    const MASTER_WITH_REPLICA: &[u8] = b"*3\r\n$6\r\nmaster\r\n:171\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$5\r\n17002\r\n$2\r\n14\r\n+PONG\r\n";
    const REPLICA_HANDSHAKE: &[u8] =
        b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:17001\r\n$9\r\nhandshake\r\n:-1\r\n+PONG\r\n";
    const REPLICA_CONNECTED: &[u8] =
        b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:17001\r\n$9\r\nconnected\r\n:171\r\n+PONG\r\n";
    const SENTINEL: &[u8] = b"*2\r\n$8\r\nsentinel\r\n*1\r\n$8\r\nmymaster\r\n+PONG\r\n";
    const MASTER_LOADING: &[u8] =
        b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n-LOADING Redis is loading the dataset in memory\r\n";
    const REPLICA_STALE: &[u8] = b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:1\r\n$7\r\nconnect\r\n:-1\r\n-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n";
    const NOPERM_ROLE: &[u8] =
        b"-NOPERM this user has no permissions to run the 'role' command\r\n+PONG\r\n";
    const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
    const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    const AUTH_NO_PASSWORD: &[u8] = b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n";
    const INFO_MASTER: &str = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=17002,state=wait_bgsave,offset=0,lag=0\r\nmaster_failover_state:no-failover\r\nmaster_replid:de863fdbf30ad71c6eefc17465e241591a34006e\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:0\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\nrepl_backlog_size:1048576\r\nrepl_backlog_first_byte_offset:1\r\nrepl_backlog_histlen:0\r\n";
    const INFO_REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:17001\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\nmaster_sync_in_progress:0\r\nslave_read_repl_offset:1\r\nslave_repl_offset:1\r\nmaster_link_down_since_seconds:-1\r\nslave_priority:100\r\nslave_read_only:1\r\nreplica_announced:1\r\nconnected_slaves:0\r\n";

    fn node_role(bytes: &[u8]) -> Result<NodeRole, ReplyError> {
        let (role, ping) = pair(bytes);
        NodeRole::from_role_and_ping(&role, &ping)
    }

    #[test]
    fn master_reply() {
        assert_eq!(
            node_role(MASTER_ALONE),
            Ok(NodeRole {
                role: Role::Master,
                loading: false
            })
        );
        let (role, _) = pair(MASTER_WITH_REPLICA);
        assert_eq!(
            RoleReply::from_frame(&role),
            Ok(RoleReply::Master {
                repl_offset: 171,
                replicas: vec![ReplicaEntry {
                    host: "127.0.0.1".into(),
                    port: 17002,
                    repl_offset: 14
                }]
            })
        );
    }

    #[test]
    fn replica_reply() {
        assert_eq!(
            node_role(REPLICA_HANDSHAKE).map(|r| r.role),
            Ok(Role::Replica)
        );
        let (role, _) = pair(REPLICA_CONNECTED);
        assert_eq!(
            RoleReply::from_frame(&role),
            Ok(RoleReply::Replica {
                master_host: "127.0.0.1".into(),
                master_port: 17001,
                link: "connected".into(),
                repl_offset: 171
            })
        );
    }

    #[test]
    fn sentinel_reply() {
        let (role, ping) = pair(SENTINEL);
        assert_eq!(
            RoleReply::from_frame(&role),
            Ok(RoleReply::Sentinel {
                masters: vec!["mymaster".into()]
            })
        );
        assert_eq!(
            NodeRole::from_role_and_ping(&role, &ping).map(|r| r.role),
            Ok(Role::Sentinel)
        );
    }

    #[test]
    fn loading_is_not_a_failure() {
        assert_eq!(
            node_role(MASTER_LOADING),
            Ok(NodeRole {
                role: Role::Master,
                loading: true
            })
        );
        assert!(
            !node_role(MASTER_LOADING)
                .expect("parses")
                .is_writable_master()
        );
    }

    #[test]
    fn stale_replica_is_refused() {
        let err = node_role(REPLICA_STALE).expect_err("masterdown");
        assert_eq!(err.code(), Some(&ErrorCode::MasterDown));
        assert_eq!(err.to_string(), "refused (masterdown)");
    }

    #[test]
    fn error_codes_are_distinguishable() {
        let err = node_role(NOPERM_ROLE).expect_err("noperm");
        assert_eq!(err.code(), Some(&ErrorCode::NoPerm));
        let auth = |bytes| Role::from_role_frame(&one(bytes)).expect_err("error reply");
        assert!(auth(NOAUTH).code().is_some_and(ErrorCode::is_auth));
        assert!(auth(WRONGPASS).code().is_some_and(ErrorCode::is_auth));
        let other = auth(AUTH_NO_PASSWORD);
        assert_eq!(other.code(), Some(&ErrorCode::Other("err".into())));
        assert_eq!(other.to_string(), "refused (err)");
        assert!(!other.code().is_some_and(ErrorCode::is_auth));
    }

    #[test]
    fn error_code_is_sanitised() {
        let code =
            ErrorCode::from_error_text("WEIRD\u{1b}[31m-CODE-THAT-IS-WAY-TOO-LONG-FOR-A-LOG rest");
        let shown = code.to_string();
        assert!(shown.len() <= MAX_CODE_LEN);
        assert!(
            shown
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(ErrorCode::from_error_text("").to_string(), "error");
    }

    #[test]
    fn bad_role_replies_are_errors() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b":1\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n$6\r\nmaster\r\n",
            b"*3\r\n$6\r\nmaster\r\n$1\r\nx\r\n*0\r\n",
            b"*3\r\n$6\r\nmaster\r\n:0\r\n:0\r\n",
            b"*3\r\n$6\r\nmaster\r\n:0\r\n*1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n",
            b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:70000\r\n$9\r\nconnected\r\n:1\r\n",
            b"*2\r\n$8\r\nsentinel\r\n*1\r\n:1\r\n",
            b"*2\r\n$7\r\nprimary\r\n:0\r\n",
            b"*1\r\n$2\r\n\xff\xfe\r\n",
        ];
        for case in cases {
            assert!(
                Role::from_role_frame(&one(case)).is_err(),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        assert_eq!(
            Role::from_role_frame(&one(b"*2\r\n$7\r\nprimary\r\n:0\r\n")),
            Err(ReplyError::UnknownRole("primary".into()))
        );
    }

    #[test]
    fn info_replication() {
        assert_eq!(Role::from_info_replication(INFO_MASTER), Ok(Role::Master));
        assert_eq!(Role::from_info_replication(INFO_REPLICA), Ok(Role::Replica));
        assert_eq!(
            Role::from_info_replication("role:master\n"),
            Ok(Role::Master)
        );
        assert!(matches!(
            Role::from_info_replication("# Replication\r\n"),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            Role::from_info_replication("role:leader\r\n"),
            Err(ReplyError::UnknownRole(_))
        ));
        let frame = Frame::BulkString(Bytes::from_static(INFO_REPLICA.as_bytes()));
        let pong = Frame::SimpleString(Bytes::from_static(b"PONG"));
        assert_eq!(
            NodeRole::from_info_and_ping(&frame, &pong),
            Ok(NodeRole {
                role: Role::Replica,
                loading: false
            })
        );
        // A sentinel has no replication section.
        let empty = Frame::BulkString(Bytes::new());
        assert!(Role::from_info_frame(&empty).is_err());
    }

    #[test]
    fn ping_replies() {
        let f = |b| loading_from_ping(&one(b));
        assert_eq!(f(b"+PONG\r\n"), Ok(false));
        assert_eq!(
            f(b"-LOADING Redis is loading the dataset in memory\r\n"),
            Ok(true)
        );
        assert!(f(b"+OK\r\n").is_err());
        assert!(f(b"$4\r\nPONG\r\n").is_err());
        assert!(f(b"-BUSY script\r\n").is_err());
    }

    #[test]
    fn decoding_in_pieces() {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in MASTER_WITH_REPLICA {
            buf.extend_from_slice(&[*byte]);
            while let Some(frame) = decode_frame(&mut buf).expect("valid prefix") {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 2);
        assert!(buf.is_empty());
        assert_eq!(Role::from_role_frame(&frames[0]), Ok(Role::Master));
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let deep = b"*1\r\n".repeat(MAX_REPLY_BYTES / 4);
        assert_eq!(
            decode_all(&deep),
            Err(ReplyError::Malformed("reply nested too deep"))
        );
        let ok = [b"*1\r\n".repeat(MAX_DEPTH), b":1\r\n".to_vec()].concat();
        assert_eq!(decode_all(&ok).map(|f| f.len()), Ok(1));
    }

    #[test]
    fn oversized_replies_are_rejected() {
        // An incomplete bulk string that claims to be huge never completes...
        let mut buf = BytesMut::from(&b"$100000000\r\n"[..]);
        assert_eq!(decode_frame(&mut buf), Ok(None));
        // ...and the caller learns once the buffer passes the limit.
        buf.extend_from_slice(&vec![b'x'; MAX_REPLY_BYTES]);
        assert_eq!(
            decode_frame(&mut buf),
            Err(ReplyError::Malformed("reply too large"))
        );
        // A line that never ends.
        let mut buf = BytesMut::from(&vec![b'+'; MAX_REPLY_BYTES + 1][..]);
        assert!(decode_frame(&mut buf).is_err());
        // Lengths out of range.
        for bad in [
            &b"$-2\r\n"[..],
            b"*-5\r\n",
            b"$99999999999999999999999\r\n",
            b"$x\r\n",
        ] {
            assert!(decode_all(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_is_malformed() {
        for junk in [
            &b"HTTP/1.1 400 Bad Request\r\n\r\n"[..],
            b"\x16\x03\x01",
            b"SSH-2.0-OpenSSH\r\n",
        ] {
            assert_eq!(
                decode_all(junk),
                Err(ReplyError::Malformed("invalid resp type"))
            );
        }
    }

    /// Encodes a frame as RESP2, for generated replies.
    fn encode(frame: &Frame, out: &mut Vec<u8>) {
        match frame {
            Frame::SimpleString(s) => {
                out.push(b'+');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            Frame::Integer(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Frame::BulkString(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    encode(item, out);
                }
            }
            Frame::Null => out.extend_from_slice(b"$-1\r\n"),
        }
    }

    fn bulk(s: impl Into<Vec<u8>>) -> Frame {
        Frame::BulkString(Bytes::from(s.into()))
    }

    fn master_frame() -> impl Strategy<Value = (Frame, RoleReply)> {
        (
            any::<i64>(),
            prop::collection::vec(("[a-z0-9.:-]{1,40}", any::<u16>(), any::<i64>()), 0..6),
        )
            .prop_map(|(offset, replicas)| {
                let frame = Frame::Array(vec![
                    bulk("master"),
                    Frame::Integer(offset),
                    Frame::Array(
                        replicas
                            .iter()
                            .map(|(h, p, o)| {
                                Frame::Array(vec![
                                    bulk(h.as_str()),
                                    bulk(p.to_string()),
                                    bulk(o.to_string()),
                                ])
                            })
                            .collect(),
                    ),
                ]);
                let reply = RoleReply::Master {
                    repl_offset: offset,
                    replicas: replicas
                        .into_iter()
                        .map(|(host, port, repl_offset)| ReplicaEntry {
                            host,
                            port,
                            repl_offset,
                        })
                        .collect(),
                };
                (frame, reply)
            })
    }

    fn replica_frame() -> impl Strategy<Value = (Frame, RoleReply)> {
        (
            "[a-z0-9.:-]{1,40}",
            any::<u16>(),
            prop::sample::select(vec![
                "connect",
                "connecting",
                "sync",
                "connected",
                "handshake",
            ]),
            -1i64..i64::MAX,
        )
            .prop_map(|(host, port, link, offset)| {
                let frame = Frame::Array(vec![
                    bulk("slave"),
                    bulk(host.as_str()),
                    Frame::Integer(i64::from(port)),
                    bulk(link),
                    Frame::Integer(offset),
                ]);
                let reply = RoleReply::Replica {
                    master_host: host,
                    master_port: port,
                    link: link.to_owned(),
                    repl_offset: offset,
                };
                (frame, reply)
            })
    }

    /// RESP-ish bytes: real frame prefixes mixed with noise, to get past the
    /// first byte more often than uniform bytes would.
    fn resp_ish() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just(b"*".to_vec()),
            Just(b"$".to_vec()),
            Just(b":".to_vec()),
            Just(b"+".to_vec()),
            Just(b"-".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"master".to_vec()),
            Just(b"slave".to_vec()),
            Just(b"LOADING".to_vec()),
            (-3i64..12).prop_map(|n| n.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..4),
        ];
        prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    fn exercise(bytes: &[u8], split: usize) {
        let mut buf = BytesMut::new();
        let (a, b) = bytes.split_at(split.min(bytes.len()));
        let mut frames = Vec::new();
        for chunk in [a, b] {
            buf.extend_from_slice(chunk);
            // After an error the buffer is poisoned; decoding on regardless is
            // more hostile input, which is the point here.
            while let Ok(Some(frame)) = decode_frame(&mut buf) {
                frames.push(frame);
            }
        }
        for frame in &frames {
            let _ = RoleReply::from_frame(frame);
            let _ = Role::from_info_frame(frame);
            let _ = loading_from_ping(frame);
        }
        for w in frames.windows(2) {
            let _ = NodeRole::from_role_and_ping(&w[0], &w[1]);
            let _ = NodeRole::from_info_and_ping(&w[0], &w[1]);
        }
        let _ = Role::from_info_replication(&String::from_utf8_lossy(bytes));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), split in any::<usize>()) {
            exercise(&bytes, split);
        }

        #[test]
        fn resp_like_bytes_never_panic(bytes in resp_ish(), split in any::<usize>()) {
            exercise(&bytes, split);
        }

        #[test]
        fn generated_role_replies_parse((frame, expected) in prop_oneof![master_frame(), replica_frame()], split in any::<usize>()) {
            let mut bytes = Vec::new();
            encode(&frame, &mut bytes);
            encode(&Frame::SimpleString(Bytes::from_static(b"PONG")), &mut bytes);
            // Delivered in two pieces, cut anywhere.
            let cut = split % (bytes.len() + 1);
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut frames = Vec::new();
            while let Some(f) = decode_frame(&mut buf).expect("valid prefix") { frames.push(f); }
            buf.extend_from_slice(&bytes[cut..]);
            while let Some(f) = decode_frame(&mut buf).expect("valid resp") { frames.push(f); }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(frames.len(), 2);
            prop_assert_eq!(RoleReply::from_frame(&frames[0]), Ok(expected.clone()));
            prop_assert_eq!(
                NodeRole::from_role_and_ping(&frames[0], &frames[1]),
                Ok(NodeRole { role: expected.role(), loading: false })
            );
        }

        #[test]
        fn scan_agrees_with_decoder(bytes in resp_ish()) {
            // Whenever the guard finds a complete frame, the decoder agrees on its
            // length (decode_frame reports a disagreement as an error).
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(Some(len)) = frame_extent(&bytes)
                && len <= MAX_REPLY_BYTES
            {
                prop_assert_ne!(
                    decode_frame(&mut buf),
                    Err(ReplyError::Malformed("inconsistent resp framing"))
                );
            }
        }
    }
}

#[cfg(test)]
mod sentinel_tests {
    use super::tests::{decode_all, one};
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> NodeAddr {
        NodeAddr(s.parse().expect("socket address"))
    }

    // Replies captured from redis-sentinel 7.0.15 (raw bytes on the socket),
    // monitoring `keyway` at 127.0.0.1:27101 with one replica at :27102.
    const MASTER_ADDR: &[u8] = b"*2\r\n$9\r\n127.0.0.1\r\n$5\r\n27101\r\n";
    const MASTER_UNKNOWN: &[u8] = b"*-1\r\n";
    const NO_SUCH_MASTER: &[u8] = b"-ERR No such master with that name\r\n";
    const REPLICAS: &[u8] = b"*1\r\n*42\r\n$4\r\nname\r\n$15\r\n127.0.0.1:27102\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n$5\r\n27102\r\n$5\r\nrunid\r\n$40\r\n723fc17c5c2f744f831e46efcee93b29d138ed64\r\n$5\r\nflags\r\n$5\r\nslave\r\n$21\r\nlink-pending-commands\r\n$1\r\n0\r\n$13\r\nlink-refcount\r\n$1\r\n1\r\n$14\r\nlast-ping-sent\r\n$1\r\n0\r\n$18\r\nlast-ok-ping-reply\r\n$3\r\n762\r\n$15\r\nlast-ping-reply\r\n$3\r\n762\r\n$23\r\ndown-after-milliseconds\r\n$4\r\n1000\r\n$12\r\ninfo-refresh\r\n$3\r\n762\r\n$13\r\nrole-reported\r\n$5\r\nslave\r\n$18\r\nrole-reported-time\r\n$4\r\n4974\r\n$21\r\nmaster-link-down-time\r\n$5\r\n-1000\r\n$18\r\nmaster-link-status\r\n$3\r\nerr\r\n$11\r\nmaster-host\r\n$9\r\n127.0.0.1\r\n$11\r\nmaster-port\r\n$5\r\n27101\r\n$14\r\nslave-priority\r\n$3\r\n100\r\n$17\r\nslave-repl-offset\r\n$1\r\n1\r\n$17\r\nreplica-announced\r\n$1\r\n1\r\n";
    const SUBSCRIBED: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n";
    const PONG: &[u8] = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";
    // Published during `SENTINEL FAILOVER keyway`, in this order.
    const FAILOVER: &[u8] = b"*3\r\n$7\r\nmessage\r\n$13\r\n+try-failover\r\n$29\r\nmaster keyway 127.0.0.1 27101\r\n*3\r\n$7\r\nmessage\r\n$15\r\n+elected-leader\r\n$29\r\nmaster keyway 127.0.0.1 27101\r\n*3\r\n$7\r\nmessage\r\n$34\r\n+failover-state-send-slaveof-noone\r\n$62\r\nslave 127.0.0.1:27102 127.0.0.1 27102 @ keyway 127.0.0.1 27101\r\n*3\r\n$7\r\nmessage\r\n$15\r\n+promoted-slave\r\n$62\r\nslave 127.0.0.1:27102 127.0.0.1 27102 @ keyway 127.0.0.1 27101\r\n*3\r\n$7\r\nmessage\r\n$13\r\n+failover-end\r\n$29\r\nmaster keyway 127.0.0.1 27101\r\n*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$38\r\nkeyway 127.0.0.1 27101 127.0.0.1 27102\r\n*3\r\n$7\r\nmessage\r\n$17\r\n+convert-to-slave\r\n$62\r\nslave 127.0.0.1:27101 127.0.0.1 27101 @ keyway 127.0.0.1 27102\r\n";

    #[test]
    fn captured_view() {
        let view = SentinelView::from_frames(&one(MASTER_ADDR), &one(REPLICAS));
        assert_eq!(
            view,
            Ok(SentinelView {
                master: Some(addr("127.0.0.1:27101")),
                replicas: vec![addr("127.0.0.1:27102")],
            })
        );
        assert_eq!(
            replicas_from_frame(&one(b"*0\r\n")),
            Ok(Vec::new()),
            "a master with no replica"
        );
    }

    #[test]
    fn unknown_master_name_is_an_empty_view() {
        assert_eq!(master_addr_from_frame(&one(MASTER_UNKNOWN)), Ok(None));
        assert_eq!(master_addr_from_frame(&one(b"$-1\r\n")), Ok(None));
        assert_eq!(
            SentinelView::from_frames(&one(MASTER_UNKNOWN), &one(NO_SUCH_MASTER)),
            Ok(SentinelView {
                master: None,
                replicas: Vec::new()
            })
        );
        // With a master named, the same refusal makes no sense.
        assert!(SentinelView::from_frames(&one(MASTER_ADDR), &one(NO_SUCH_MASTER)).is_err());
        // Other refusals are refusals, with or without a master.
        let noperm = one(b"-NOPERM this user has no permissions\r\n");
        let err = SentinelView::from_frames(&one(MASTER_UNKNOWN), &noperm).expect_err("refused");
        assert_eq!(err.code(), Some(&ErrorCode::NoPerm));
        let err = SentinelView::from_frames(&noperm, &one(b"*0\r\n")).expect_err("refused");
        assert_eq!(err.to_string(), "refused (noperm)");
    }

    #[test]
    fn ipv6_and_integer_ports() {
        let frame = Frame::Array(vec![
            Frame::BulkString(Bytes::from_static(b"::1")),
            Frame::Integer(6379),
        ]);
        assert_eq!(master_addr_from_frame(&frame), Ok(Some(addr("[::1]:6379"))));
    }

    #[test]
    fn host_names_and_garbage_are_malformed() {
        let masters: &[&[u8]] = &[
            b"*2\r\n$16\r\nredis-0.internal\r\n$4\r\n6379\r\n",
            b"*2\r\n$9\r\n127.0.0.1\r\n$5\r\n70000\r\n",
            b"*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n",
            b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n",
            b"*2\r\n$9\r\n127.0.0.1\r\n$-1\r\n",
            b"*1\r\n$9\r\n127.0.0.1\r\n",
            b"*3\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n$1\r\nx\r\n",
            b"*0\r\n",
            b"+OK\r\n",
            b":1\r\n",
            b"$9\r\n127.0.0.1\r\n",
            b"*2\r\n$2\r\n\xff\xfe\r\n$4\r\n6379\r\n",
        ];
        for case in masters {
            let err = master_addr_from_frame(&one(case)).expect_err("malformed");
            assert!(
                matches!(err, ReplyError::Malformed(_)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(case)
            );
            assert!(err.to_string().starts_with("malformed reply"), "{err}");
        }
        let replicas: &[&[u8]] = &[
            b"+OK\r\n",
            b"$-1\r\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n*1\r\n$2\r\nip\r\n",
            b"*1\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n",
            b"*1\r\n*4\r\n$2\r\nip\r\n$4\r\nhost\r\n$4\r\nport\r\n$4\r\n6379\r\n",
            b"*1\r\n*4\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n$2\r\n-1\r\n",
            b"*2\r\n*4\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n$1\r\n1\r\n*0\r\n",
        ];
        for case in replicas {
            let err = replicas_from_frame(&one(case)).expect_err("malformed");
            assert!(
                matches!(err, ReplyError::Malformed(_)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn pubsub_replies() {
        assert_eq!(
            PubSubReply::from_frame(&one(SUBSCRIBED)),
            Ok(PubSubReply::Subscribed {
                channel: "+switch-master".into()
            })
        );
        assert_eq!(PubSubReply::from_frame(&one(PONG)), Ok(PubSubReply::Pong));
        assert_eq!(
            PubSubReply::from_frame(&one(b"+PONG\r\n")),
            Ok(PubSubReply::Pong)
        );
        let refused = PubSubReply::from_frame(&one(b"-NOPERM no channel\r\n"));
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err("refused (noperm)".into())
        );
        for bad in [
            &b"*0\r\n"[..],
            b"+OK\r\n",
            b"*2\r\n$7\r\nmessage\r\n$1\r\nx\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\nx\r\n*0\r\n",
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n$1\r\ny\r\n",
            b"*3\r\n$8\r\npmessage\r\n$1\r\nx\r\n$1\r\ny\r\n",
        ] {
            assert!(
                PubSubReply::from_frame(&one(bad)).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn captured_failover_events() {
        let events: Vec<(String, String)> = decode_all(FAILOVER)
            .expect("valid resp")
            .iter()
            .map(|f| match PubSubReply::from_frame(f) {
                Ok(PubSubReply::Message { channel, payload }) => {
                    (channel, sanitize_event_payload(&payload))
                }
                other => panic!("not a message: {other:?}"),
            })
            .collect();
        assert_eq!(events.len(), 7);
        for (channel, payload) in &events {
            assert_eq!(
                event_master_name(channel, payload),
                Some("keyway"),
                "{channel} {payload}"
            );
        }
        let (channel, payload) = &events[5];
        assert_eq!(channel, "+switch-master");
        assert_eq!(
            SwitchMaster::from_payload(payload),
            Ok(SwitchMaster {
                master_name: "keyway".into(),
                old: addr("127.0.0.1:27101"),
                new: addr("127.0.0.1:27102"),
            })
        );
    }

    #[test]
    fn event_master_names() {
        let name = event_master_name;
        assert_eq!(name("+sdown", "master other 10.0.0.1 6379"), Some("other"));
        assert_eq!(
            name(
                "+sdown",
                "sentinel 127.0.0.1:26380 127.0.0.1 26380 @ keyway 127.0.0.1 6379"
            ),
            Some("keyway")
        );
        assert_eq!(
            name("+switch-master", "other 127.0.0.1 1 127.0.0.1 2"),
            Some("other")
        );
        // A master named like a keyword is still read by position.
        assert_eq!(
            name("+odown", "master @ 127.0.0.1 1 #quorum 2/2"),
            Some("@")
        );
        for junk in ["", " ", "slave 1.2.3.4:5 1.2.3.4 5", "slave x @", "master"] {
            assert_eq!(name("+sdown", junk), None, "{junk:?}");
        }
        assert_eq!(name("+switch-master", ""), None);
    }

    #[test]
    fn switch_master_payloads() {
        assert_eq!(
            SwitchMaster::from_payload("m ::1 6379 ::1 6380").map(|s| s.new),
            Ok(addr("[::1]:6380"))
        );
        for bad in [
            "",
            "keyway 127.0.0.1 1 127.0.0.1",
            "keyway 127.0.0.1 1 127.0.0.1 2 extra",
            "keyway 127.0.0.1 1 redis-1 2",
            "keyway 127.0.0.1 1 127.0.0.1 0",
            "keyway 127.0.0.1 1 127.0.0.1 65536",
            " 127.0.0.1 1 127.0.0.1 2",
            "keyway  127.0.0.1 1 127.0.0.1 2",
        ] {
            assert!(SwitchMaster::from_payload(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn payloads_are_sanitised_and_bounded() {
        assert_eq!(
            sanitize_event_payload(b"master k\x1b[31m\xff\r\n"),
            "master k?[31m???"
        );
        let long = vec![b'a'; MAX_EVENT_PAYLOAD * 3];
        assert_eq!(sanitize_event_payload(&long).len(), MAX_EVENT_PAYLOAD);
    }

    /// Frames of any shape, biased towards what sentinels send.
    fn frame() -> impl Strategy<Value = Frame> {
        let word = prop_oneof![
            Just(b"127.0.0.1".to_vec()),
            Just(b"::1".to_vec()),
            Just(b"6379".to_vec()),
            Just(b"ip".to_vec()),
            Just(b"port".to_vec()),
            Just(b"message".to_vec()),
            Just(b"subscribe".to_vec()),
            Just(b"pong".to_vec()),
            Just(b"+switch-master".to_vec()),
            Just(b"keyway 127.0.0.1 1 127.0.0.1 2".to_vec()),
            prop::collection::vec(any::<u8>(), 0..12),
        ];
        let leaf = prop_oneof![
            word.clone().prop_map(|w| Frame::BulkString(Bytes::from(w))),
            word.prop_map(|w| Frame::SimpleString(Bytes::from(w))),
            any::<i64>().prop_map(Frame::Integer),
            Just(Frame::Null),
            "[ -~]{0,20}".prop_map(|s| Frame::Error(s.as_str().into())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop::collection::vec(inner, 0..8).prop_map(Frame::Array)
        })
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(a in frame(), b in frame()) {
            let _ = master_addr_from_frame(&a);
            let _ = replicas_from_frame(&a);
            let _ = SentinelView::from_frames(&a, &b);
            if let Ok(PubSubReply::Message { channel, payload }) = PubSubReply::from_frame(&a) {
                let text = String::from_utf8_lossy(&payload);
                let _ = event_master_name(&channel, &text);
                let _ = SwitchMaster::from_payload(&text);
            }
        }

        #[test]
        fn arbitrary_payloads_never_panic(raw in prop::collection::vec(any::<u8>(), 0..2048), channel in "[-+a-z]{0,20}") {
            let clean = sanitize_event_payload(&raw);
            prop_assert!(clean.len() <= MAX_EVENT_PAYLOAD);
            prop_assert!(clean.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
            let text = String::from_utf8_lossy(&raw);
            let _ = event_master_name(&channel, &text);
            let _ = SwitchMaster::from_payload(&text);
        }

        #[test]
        fn generated_views_parse(
            master in prop::option::of((any::<[u8; 4]>(), 1u16..)),
            replicas in prop::collection::vec((any::<[u8; 4]>(), 1u16.., "[a-z,_]{0,20}"), 0..5),
        ) {
            let bulk = |s: String| Frame::BulkString(Bytes::from(s));
            let master_frame = match master {
                Some((ip, port)) => Frame::Array(vec![
                    bulk(std::net::Ipv4Addr::from(ip).to_string()),
                    bulk(port.to_string()),
                ]),
                None => Frame::Null,
            };
            let replicas_frame = Frame::Array(
                replicas
                    .iter()
                    .map(|(ip, port, flags)| {
                        Frame::Array(vec![
                            bulk("name".into()),
                            bulk(format!("{}:{port}", std::net::Ipv4Addr::from(*ip))),
                            bulk("flags".into()),
                            bulk(flags.clone()),
                            bulk("port".into()),
                            bulk(port.to_string()),
                            bulk("ip".into()),
                            bulk(std::net::Ipv4Addr::from(*ip).to_string()),
                        ])
                    })
                    .collect(),
            );
            let to_addr = |ip: [u8; 4], port: u16| NodeAddr(SocketAddr::from((ip, port)));
            prop_assert_eq!(
                SentinelView::from_frames(&master_frame, &replicas_frame),
                Ok(SentinelView {
                    master: master.map(|(ip, port)| to_addr(ip, port)),
                    replicas: replicas.iter().map(|(ip, port, _)| to_addr(*ip, *port)).collect(),
                })
            );
        }
    }
}
