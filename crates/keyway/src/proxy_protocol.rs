//! The PROXY protocol header (haproxy's `proxy-protocol.txt`, v1 text and v2
//! binary) that a load balancer puts in front of each client's bytes. Pure: no
//! I/O, no clock; the handler feeds it what it has read and peeked so far.
//!
//! [`parse`] looks at the start of a connection and says one of three things:
//! a complete header and its length, "need more bytes", or why these bytes can
//! never become a header. The version is auto-detected from the first byte
//! (`P` for v1, `\r` for the v2 signature).
//!
//! Invariants:
//! - Bounded: [`parse`] never asks for more than [`MAX_LEN`] bytes. A v1 line
//!   has its CRLF within [`V1_MAX_LEN`] bytes and a v2 header is at most
//!   [`V2_MAX_LEN`] bytes, or the bytes are refused; so a buffer of
//!   [`MAX_LEN`] bytes is always enough and `Ok(None)` is only ever returned
//!   for fewer bytes than that.
//! - Prefix-stable: when `parse(buf)` is `Ok(None)`, every byte of `buf`
//!   belongs to the header (the header ends further on), so a reader may
//!   consume them; `parse` of a longer buffer starting with the same bytes
//!   gives the same answer once the header is complete. A complete header's
//!   length never covers a byte after it: client bytes are never eaten.
//! - Refuses early: bytes that cannot start a header (a RESP command, TLS, a
//!   wrong v2 version or command) are refused as soon as they are seen, not
//!   after a timeout.
//! - Never panics, whatever the bytes (property-tested).
//!
//! Choices:
//! - Strict v1, as the spec words it: `PROXY`, single spaces, `TCP4` / `TCP6`
//!   / `UNKNOWN`, addresses of the announced family (IPv4 dotted decimal
//!   without leading zeros; IPv6 as `std` parses it, `::` and `::ffff:a.b.c.d`
//!   included, no zone), ports 0..=65535 without leading zeros, printable
//!   US-ASCII only, a CRLF and nothing else as the line end.
//! - `PROXY UNKNOWN` (whatever follows it on the line), v2 `LOCAL` (whatever
//!   its family) and v2 `PROXY` with family `UNSPEC` give a header without
//!   addresses: the connection is kept and the real peer address is used
//!   (the balancer's health checks).
//! - v2 `PROXY` over UDP or AF_UNIX: a header without addresses too. The spec
//!   asks a receiver that does not support a valid combination to fall back
//!   to UNSPEC rather than refuse it. Family or transport values the spec does
//!   not define, and combinations it does not list (`0x10`, `0x01`, ...), are
//!   refused.
//! - v2 TLVs (after the addresses, within the header's length) are skipped
//!   unread: Keyway uses none of them. The length field is capped at
//!   [`V2_MAX_PAYLOAD`] bytes (the spec allows 65535; real balancers send a
//!   few dozen), which bounds the memory a header can take.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest v1 line, CRLF included (`PROXY UNKNOWN` with two full IPv6
/// addresses and ports).
pub const V1_MAX_LEN: usize = 107;

/// The largest v2 length field accepted: addresses plus TLVs.
pub const V2_MAX_PAYLOAD: usize = 1024;

/// The longest v2 header accepted: the 16-byte fixed part and its payload.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + V2_MAX_PAYLOAD;

/// The longest header [`parse`] accepts; a buffer of this size is always enough.
pub const MAX_LEN: usize = if V1_MAX_LEN > V2_MAX_LEN {
    V1_MAX_LEN
} else {
    V2_MAX_LEN
};

/// The v2 signature, the first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_FIXED_LEN: usize = 16;
/// Address block sizes of the v2 families: IPv4 and IPv6 with ports, AF_UNIX.
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;

/// Which version of the protocol a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text line, `PROXY TCP4 ...\r\n`.
    V1,
    /// The binary header, starting with [`V2_SIGNATURE`].
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// A complete, valid header.
///
/// `source` and `destination` are both `Some` (a relayed TCP connection) or
/// both `None` (`PROXY UNKNOWN`, v2 `LOCAL`, a v2 family Keyway does not use):
/// then the connection's own addresses stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The original client, as the balancer saw it.
    pub source: Option<SocketAddr>,
    /// The address the original client connected to (the balancer's).
    pub destination: Option<SocketAddr>,
    pub version: Version,
}

/// Which address or port of a v1 line is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// Why the bytes at the start of a connection are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY header: the connection starts with neither \"PROXY \" nor the v2 signature")]
    Missing,
    #[error("v1 header without a CRLF in its first {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("v1 header with a CR or LF that is not its final CRLF")]
    V1LineEnd,
    #[error("v1 header with a byte that is not printable US-ASCII")]
    V1NotAscii,
    #[error("v1 header with an unknown protocol: expected TCP4, TCP6 or UNKNOWN")]
    V1Protocol,
    #[error(
        "v1 header without exactly four fields (addresses and ports) separated by single spaces"
    )]
    V1Fields,
    #[error("v1 header with an invalid {0} address for its protocol")]
    V1Address(Side),
    #[error("v1 header with an invalid {0} port")]
    V1Port(Side),
    #[error("v2 header with version {0}: expected 2")]
    V2Version(u8),
    #[error("v2 header with command {0}: expected 0 (LOCAL) or 1 (PROXY)")]
    V2Command(u8),
    #[error("v2 header with an invalid address family and transport 0x{0:02x}")]
    V2Family(u8),
    #[error("v2 header of {len} address bytes, fewer than its family needs ({needed})")]
    V2Short { len: usize, needed: usize },
    #[error("v2 header of {0} address bytes, more than the {V2_MAX_PAYLOAD} accepted")]
    V2TooLong(usize),
}

/// Parses the header at the start of `buf`.
///
/// - `Ok(Some((header, len)))`: `buf[..len]` is a complete, valid header;
///   `buf[len..]` is the client's own bytes.
/// - `Ok(None)`: a valid beginning; more bytes are needed (`buf` is shorter
///   than [`MAX_LEN`], and all of it belongs to the header).
/// - `Err(_)`: no header can start with these bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyHeaderError::Missing),
    }
}

/// `true` when `buf` and `expected` agree on their common length.
fn agrees(buf: &[u8], expected: &[u8]) -> bool {
    let n = buf.len().min(expected.len());
    buf[..n] == expected[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    if !agrees(buf, V1_PREFIX) {
        return Err(ProxyHeaderError::Missing);
    }
    // Scan no further than the longest line: a CRLF later is too late.
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    for (i, &byte) in window.iter().enumerate() {
        match byte {
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => {
                    let header = v1_line(&window[V1_PREFIX.len()..i])?;
                    return Ok(Some((header, i + 2)));
                }
                Some(_) => return Err(ProxyHeaderError::V1LineEnd),
                // The last byte so far: its LF may be on its way.
                None => {}
            },
            b'\n' => return Err(ProxyHeaderError::V1LineEnd),
            b' '..=b'~' => {}
            _ => return Err(ProxyHeaderError::V1NotAscii),
        }
    }
    if buf.len() >= V1_MAX_LEN {
        Err(ProxyHeaderError::V1TooLong)
    } else {
        Ok(None)
    }
}

/// The line between `PROXY ` and the CRLF, all printable ASCII.
fn v1_line(line: &[u8]) -> Result<Header, ProxyHeaderError> {
    let unknown = Header {
        source: None,
        destination: None,
        version: Version::V1,
    };
    // Whatever follows UNKNOWN on the line is ignored, as the spec says.
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        return Ok(unknown);
    }
    let mut fields = line.split(|&b| b == b' ');
    let v6 = match fields.next() {
        Some(b"TCP4") => false,
        Some(b"TCP6") => true,
        _ => return Err(ProxyHeaderError::V1Protocol),
    };
    let (Some(src), Some(dst), Some(src_port), Some(dst_port), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyHeaderError::V1Fields);
    };
    let address = |field: &[u8], side| {
        let ip = if v6 { ipv6(field) } else { ipv4(field) };
        ip.ok_or(ProxyHeaderError::V1Address(side))
    };
    let port = |field: &[u8], side| decimal(field, 5, 65_535).ok_or(ProxyHeaderError::V1Port(side));
    let source = SocketAddr::new(address(src, Side::Source)?, port(src_port, Side::Source)?);
    let destination = SocketAddr::new(
        address(dst, Side::Destination)?,
        port(dst_port, Side::Destination)?,
    );
    Ok(Header {
        source: Some(source),
        destination: Some(destination),
        version: Version::V1,
    })
}

/// A decimal number of 1 to `max_digits` digits, without a leading zero
/// (except `0` itself), at most `max`.
fn decimal(field: &[u8], max_digits: usize, max: u16) -> Option<u16> {
    let valid = !field.is_empty()
        && field.len() <= max_digits
        && field.iter().all(u8::is_ascii_digit)
        && (field[0] != b'0' || field.len() == 1);
    if !valid {
        return None;
    }
    // At most 5 digits: fits a u32.
    let n = field.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok().filter(|&n| n <= max)
}

/// Exactly four dot-separated numbers 0..=255, without leading zeros.
fn ipv4(field: &[u8]) -> Option<IpAddr> {
    let mut octets = [0u8; 4];
    let mut parts = field.split(|&b| b == b'.');
    for octet in &mut octets {
        let n = decimal(parts.next()?, 3, 255)?;
        *octet = u8::try_from(n).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

/// An IPv6 address as `std` parses it (so `1.2.3.4` is refused for TCP6),
/// limited to hex digits, colons and the dots of an embedded IPv4 tail.
fn ipv6(field: &[u8]) -> Option<IpAddr> {
    if !field
        .iter()
        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
    {
        return None;
    }
    let text = std::str::from_utf8(field).ok()?;
    text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    if !agrees(buf, &V2_SIGNATURE) {
        return Err(ProxyHeaderError::Missing);
    }
    // Each fixed byte is checked as soon as it is there.
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(None);
    };
    let version = ver_cmd >> 4;
    if version != 2 {
        return Err(ProxyHeaderError::V2Version(version));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        command => return Err(ProxyHeaderError::V2Command(command)),
    };
    let Some(&family) = buf.get(13) else {
        return Ok(None);
    };
    // LOCAL: the family is ignored, whatever it says (spec, section 2.2).
    let needed = if local { 0 } else { v2_address_len(family)? };
    let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyHeaderError::V2TooLong(len));
    }
    if len < needed {
        return Err(ProxyHeaderError::V2Short { len, needed });
    }
    let total = V2_FIXED_LEN + len;
    let Some(block) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(None);
    };
    let (source, destination) = if local {
        (None, None)
    } else {
        v2_addresses(family, block)
    };
    Ok(Some((
        Header {
            source,
            destination,
            version: Version::V2,
        },
        total,
    )))
}

/// The address block size a v2 `PROXY` family and transport byte needs, or an
/// error for a value or combination the spec does not define.
fn v2_address_len(family: u8) -> Result<usize, ProxyHeaderError> {
    match family {
        0x00 => Ok(0),
        0x11 | 0x12 => Ok(V2_INET_LEN),
        0x21 | 0x22 => Ok(V2_INET6_LEN),
        0x31 | 0x32 => Ok(V2_UNIX_LEN),
        _ => Err(ProxyHeaderError::V2Family(family)),
    }
}

/// Source and destination of a v2 `PROXY` header whose block is long enough
/// for its (valid) family: TCP over IPv4 or IPv6 only; other families fall back
/// to no addresses.
fn v2_addresses(family: u8, block: &[u8]) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    match family {
        0x11 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    block[at],
                    block[at + 1],
                    block[at + 2],
                    block[at + 3],
                ))
            };
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
            )
        }
        0x21 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
            )
        }
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn complete(buf: &[u8]) -> (Header, usize) {
        match parse(buf) {
            Ok(Some(found)) => found,
            other => panic!("expected a complete header in {buf:?}, got {other:?}"),
        }
    }

    fn relayed(version: Version, source: &str, destination: &str) -> Header {
        Header {
            source: Some(addr(source)),
            destination: Some(addr(destination)),
            version,
        }
    }

    fn unknown(version: Version) -> Header {
        Header {
            source: None,
            destination: None,
            version,
        }
    }

    /// Every strict prefix of `header` needs more bytes.
    fn prefixes_need_more(header: &[u8]) {
        for n in 0..header.len() {
            assert_eq!(parse(&header[..n]), Ok(None), "prefix of {n} bytes");
        }
    }

    #[test]
    fn v1_spec_examples() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n");
        assert_eq!(
            complete(&buf),
            (
                relayed(Version::V1, "192.168.0.1:56324", "192.168.0.11:443"),
                line.len()
            )
        );
        prefixes_need_more(line);

        let max4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(max4.len(), 56);
        assert_eq!(
            complete(max4).0,
            relayed(
                Version::V1,
                "255.255.255.255:65535",
                "255.255.255.255:65535"
            )
        );

        let full6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let max6 = format!("PROXY TCP6 {full6} {full6} 65535 65535\r\n");
        assert_eq!(max6.len(), 104);
        let (header, len) = complete(max6.as_bytes());
        assert_eq!(len, 104);
        assert_eq!(
            header,
            relayed(
                Version::V1,
                &format!("[{full6}]:65535"),
                &format!("[{full6}]:65535")
            )
        );

        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (unknown(Version::V1), 15));
        let worst = format!("PROXY UNKNOWN {full6} {full6} 65535 65535\r\n");
        assert_eq!(worst.len(), V1_MAX_LEN);
        assert_eq!(
            complete(worst.as_bytes()),
            (unknown(Version::V1), V1_MAX_LEN)
        );
        // UNKNOWN ignores the rest of its line, even if it is not addresses.
        assert_eq!(
            complete(b"PROXY UNKNOWN whatever\r\n").0,
            unknown(Version::V1)
        );
    }

    #[test]
    fn v1_compressed_and_mapped_ipv6() {
        assert_eq!(
            complete(b"PROXY TCP6 2001:db8::1 ::1 1 0\r\n").0,
            relayed(Version::V1, "[2001:db8::1]:1", "[::1]:0")
        );
        assert_eq!(
            complete(b"PROXY TCP6 ::ffff:10.0.0.1 2001:DB8:0:0:0:0:0:2 6379 6379\r\n").0,
            relayed(Version::V1, "[::ffff:10.0.0.1]:6379", "[2001:db8::2]:6379")
        );
    }

    #[test]
    fn v1_refusals() {
        use ProxyHeaderError::*;
        const SRC: Side = Side::Source;
        const DST: Side = Side::Destination;
        let cases: &[(&[u8], ProxyHeaderError)] = &[
            (b"*1\r\n$4\r\nPING\r\n", Missing),
            (b"GET / HTTP/1.1\r\n", Missing),
            (b"\x16\x03\x01\x02\x00", Missing),
            (b"PROXI TCP4", Missing),
            (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Missing),
            (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", V1Protocol),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", V1Protocol),
            (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", V1Protocol),
            (b"PROXY UNKNOWNX\r\n", V1Protocol),
            (b"PROXY \r\n", V1Protocol),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", V1Fields),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", V1Fields),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", V1Fields),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", V1Fields),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", V1LineEnd),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n", V1LineEnd),
            (b"PROXY TCP4\r1", V1LineEnd),
            (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", V1NotAscii),
            (b"PROXY TCP4 1.2.3.\xff", V1NotAscii),
            (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", V1Address(SRC)),
            (b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", V1Address(SRC)),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", V1Address(SRC)),
            (b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", V1Address(SRC)),
            (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", V1Address(DST)),
            (b"PROXY TCP4 ::ffff:1.2.3.4 5.6.7.8 1 2\r\n", V1Address(SRC)),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", V1Address(SRC)),
            (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", V1Address(DST)),
            (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", V1Address(SRC)),
            (b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", V1Address(SRC)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", V1Port(SRC)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", V1Port(DST)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", V1Port(SRC)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", V1Port(DST)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", V1Port(SRC)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", V1Port(SRC)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                parse(bytes),
                Err(*expected),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn v1_needs_its_crlf_within_107_bytes() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 2, b'x');
        // 105 bytes and no CRLF yet: wait.
        assert_eq!(parse(&line), Ok(None));
        line.push(b'\r');
        assert_eq!(parse(&line), Ok(None));
        line.push(b'\n');
        assert_eq!(complete(&line), (unknown(Version::V1), V1_MAX_LEN));
        // One byte more before the CRLF: refused at 107 bytes, CRLF or not.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(parse(&long), Ok(None));
        long.push(b'\r');
        assert_eq!(parse(&long), Err(ProxyHeaderError::V1TooLong));
        long.push(b'\n');
        assert_eq!(parse(&long), Err(ProxyHeaderError::V1TooLong));
    }

    #[test]
    fn v1_does_not_wait_on_garbage() {
        // A partial line that has already gone wrong is refused at once.
        assert_eq!(parse(b"PROXY TCP4 1\n"), Err(ProxyHeaderError::V1LineEnd));
        assert_eq!(parse(b"PROXY \x00"), Err(ProxyHeaderError::V1NotAscii));
        assert_eq!(parse(b"PRX"), Err(ProxyHeaderError::Missing));
        // A partial line that is fine so far waits.
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(None));
        assert_eq!(parse(b"PROX"), Ok(None));
    }

    /// A v2 header: signature, `ver_cmd`, `family`, then `block` as the payload.
    fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(family);
        let len = u16::try_from(block.len()).expect("short block");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    #[test]
    fn v2_tcp4_as_haproxy_sends_it() {
        // haproxy 2.x, `send-proxy-v2`, then an HTTP request.
        let mut wire = vec![
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11,
            0x00, 0x0c, 0xac, 0x13, 0x00, 0x01, 0xac, 0x13, 0x00, 0x03, 0xa6, 0x52, 0x00, 0x50,
        ];
        prefixes_need_more(&wire);
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            complete(&wire),
            (
                relayed(Version::V2, "172.19.0.1:42578", "172.19.0.3:80"),
                28
            )
        );
    }

    #[test]
    fn v2_tcp6_with_tlvs_skipped() {
        let mut block = Vec::new();
        block.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().expect("ip").octets());
        block.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        block.extend_from_slice(&50_000u16.to_be_bytes());
        block.extend_from_slice(&6379u16.to_be_bytes());
        // A NOOP TLV and an AWS-style custom one: skipped unread.
        block.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
        block.extend_from_slice(&[0xea, 0x00, 0x03, b'v', b'p', b'c']);
        let header = v2(0x21, 0x21, &block);
        prefixes_need_more(&header);
        let mut wire = header.clone();
        wire.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            complete(&wire),
            (
                relayed(Version::V2, "[2001:db8::7]:50000", "[::1]:6379"),
                header.len()
            )
        );
    }

    #[test]
    fn v2_local_and_unspec_have_no_addresses() {
        // LOCAL, as balancers send for health checks: no address block.
        assert_eq!(complete(&v2(0x20, 0x00, &[])), (unknown(Version::V2), 16));
        // LOCAL with a block and any family byte, even an invalid one:
        // skipped, the family is ignored.
        assert_eq!(
            complete(&v2(0x20, 0x11, &[1; 12])),
            (unknown(Version::V2), 28)
        );
        assert_eq!(
            complete(&v2(0x20, 0xff, &[1; 3])),
            (unknown(Version::V2), 19)
        );
        // PROXY with UNSPEC: connection kept, addresses ignored.
        assert_eq!(
            complete(&v2(0x21, 0x00, &[9; 5])),
            (unknown(Version::V2), 21)
        );
    }

    #[test]
    fn v2_udp_and_unix_fall_back_to_no_addresses() {
        for (family, len) in [(0x12, 12), (0x22, 36), (0x31, 216), (0x32, 216)] {
            let header = v2(0x21, family, &vec![7; len]);
            assert_eq!(complete(&header), (unknown(Version::V2), 16 + len));
            // But their address block must be whole.
            assert_eq!(
                parse(&v2(0x21, family, &vec![7; len - 1])),
                Err(ProxyHeaderError::V2Short {
                    len: len - 1,
                    needed: len
                })
            );
        }
    }

    #[test]
    fn v2_refusals() {
        use ProxyHeaderError::*;
        let mut bad_signature = v2(0x21, 0x11, &[0; 12]);
        bad_signature[7] = b'q';
        assert_eq!(parse(&bad_signature), Err(Missing));
        assert_eq!(parse(b"\r\n\r\n\r\n"), Err(Missing));
        assert_eq!(parse(&v2(0x11, 0x11, &[0; 12])), Err(V2Version(1)));
        assert_eq!(parse(&v2(0x31, 0x11, &[0; 12])), Err(V2Version(3)));
        assert_eq!(parse(&v2(0x22, 0x11, &[0; 12])), Err(V2Command(2)));
        assert_eq!(parse(&v2(0x2f, 0x11, &[0; 12])), Err(V2Command(15)));
        for family in [0x01, 0x02, 0x10, 0x13, 0x20, 0x30, 0x41, 0xff] {
            assert_eq!(
                parse(&v2(0x21, family, &[0; 216])),
                Err(V2Family(family)),
                "0x{family:02x}"
            );
        }
        assert_eq!(
            parse(&v2(0x21, 0x11, &[0; 11])),
            Err(V2Short {
                len: 11,
                needed: 12
            })
        );
        assert_eq!(
            parse(&v2(0x21, 0x21, &[0; 12])),
            Err(V2Short {
                len: 12,
                needed: 36
            })
        );
        let mut too_long = v2(0x21, 0x11, &[]);
        too_long[14..16].copy_from_slice(&1025u16.to_be_bytes());
        assert_eq!(parse(&too_long), Err(V2TooLong(1025)));
        too_long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&too_long), Err(V2TooLong(65_535)));
        // The largest accepted header is exactly V2_MAX_LEN bytes.
        let largest = v2(0x21, 0x11, &[0; V2_MAX_PAYLOAD]);
        assert_eq!(complete(&largest).1, V2_MAX_LEN);
        assert_eq!(parse(&largest[..V2_MAX_LEN - 1]), Ok(None));
    }

    #[test]
    fn v2_refused_as_soon_as_a_fixed_byte_is_wrong() {
        // The version and command byte alone is enough to refuse.
        let mut start = V2_SIGNATURE.to_vec();
        assert_eq!(parse(&start), Ok(None));
        start.push(0x11);
        assert_eq!(parse(&start), Err(ProxyHeaderError::V2Version(1)));
        // So is the family byte, before the length arrives.
        let mut start = V2_SIGNATURE.to_vec();
        start.extend_from_slice(&[0x21, 0x42]);
        assert_eq!(parse(&start), Err(ProxyHeaderError::V2Family(0x42)));
    }

    #[test]
    fn the_empty_buffer_needs_more() {
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(b"\r"), Ok(None));
        assert_eq!(parse(b"P"), Ok(None));
        assert_eq!(parse(b"x"), Err(ProxyHeaderError::Missing));
    }

    #[test]
    fn errors_read_as_one_line() {
        let e = ProxyHeaderError::V1Port(Side::Destination);
        assert_eq!(e.to_string(), "v1 header with an invalid destination port");
        let e = ProxyHeaderError::V2Family(0x13);
        assert_eq!(
            e.to_string(),
            "v2 header with an invalid address family and transport 0x13"
        );
        assert_eq!(MAX_LEN, 1040);
    }
}
