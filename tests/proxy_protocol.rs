//! PROXY protocol: the parser's properties, then the proxy end to end with
//! `proxy_protocol = true` in front of a real `redis-server`.
//!
//! Properties (`keyway::proxy_protocol::parse`, pure): arbitrary bytes never
//! panic and respect the length bounds; every header the small encoder below
//! writes (v1 TCP4 / TCP6 / UNKNOWN, v2 TCP4 / TCP6 with TLVs, LOCAL, the
//! families that fall back to no addresses) parses back to what was encoded,
//! whatever follows it; and however the header is split into chunks, reading
//! it the way the handler does (peek, consume only header bytes) gives the
//! same header and leaves exactly the bytes after it.
//!
//! End to end: a v1 or v2 header in the same write as `AUTH` + `PING` leaves
//! those commands intact; a header dribbled over several writes works; no
//! header, a bad header or a header that never completes closes the client
//! without a byte of reply (and counts it); with the key off, a PROXY line is
//! forwarded untouched and Redis answers it with an error; a reload that turns
//! it on applies to new clients and leaves open sessions alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use keyway::proxy_protocol::{
    Header, MAX_LEN, V1_MAX_LEN, V2_MAX_PAYLOAD, V2_SIGNATURE, Version, parse,
};
use keyway_config::Config;
use keyway_tests::{
    AUTH_PING_REPLY, Lab, Tuning, addrs, assert_eventually, auth_ping, config, expect_bytes,
    proxy_routed_to, read_until_closed, resp, start_lab, within,
};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// A small encoder, the tests' own (not the parser's mirror image)
// ---------------------------------------------------------------------------

/// `PROXY TCP4|TCP6 src dst sport dport\r\n`; both addresses of one family.
fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let proto = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// The 16 fixed bytes of a v2 header, then `payload`.
fn v2_raw(ver_cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, family]);
    let len = u16::try_from(payload.len()).expect("payload fits a u16");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A v2 PROXY header for TCP over IPv4 or IPv6, with `tlvs` after the addresses.
fn v2(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            payload.extend_from_slice(&s.octets());
            payload.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            payload.extend_from_slice(&s.octets());
            payload.extend_from_slice(&d.octets());
            0x21
        }
        _ => panic!("one family for both addresses"),
    };
    payload.extend_from_slice(&source.port().to_be_bytes());
    payload.extend_from_slice(&destination.port().to_be_bytes());
    payload.extend_from_slice(tlvs);
    v2_raw(0x21, family, &payload)
}

fn relayed(version: Version, source: SocketAddr, destination: SocketAddr) -> Header {
    Header {
        source: Some(source),
        destination: Some(destination),
        version,
    }
}

fn no_addresses(version: Version) -> Header {
    Header {
        source: None,
        destination: None,
        version,
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Any source and destination whose addresses `ip` makes from `O`.
fn any_pair<O>(ip: fn(O) -> IpAddr) -> impl Strategy<Value = (SocketAddr, SocketAddr)>
where
    O: Arbitrary,
{
    (any::<O>(), any::<O>(), any::<u16>(), any::<u16>())
        .prop_map(move |(s, d, sp, dp)| (SocketAddr::new(ip(s), sp), SocketAddr::new(ip(d), dp)))
}

/// Source and destination of one family.
fn address_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    let v4 = any_pair(|octets: [u8; 4]| IpAddr::V4(Ipv4Addr::from(octets)));
    let v6 = any_pair(|octets: [u8; 16]| IpAddr::V6(Ipv6Addr::from(octets)));
    // Sparse IPv6 addresses too, so `::` compression and `::ffff:a.b.c.d`
    // show up in v1 lines.
    let sparse6 = (any::<[u8; 4]>(), any::<u16>(), any::<bool>()).prop_map(|(v4, port, mapped)| {
        let inner = Ipv4Addr::from(v4);
        let ip = if mapped {
            inner.to_ipv6_mapped()
        } else {
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(v4[3]))
        };
        (
            SocketAddr::new(IpAddr::V6(ip), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 6379),
        )
    });
    prop_oneof![v4, v6, sparse6]
}

/// A valid header, encoded, and what it must parse to.
fn valid_header() -> impl Strategy<Value = (Vec<u8>, Header)> {
    let v1_tcp = address_pair().prop_map(|(s, d)| (v1(s, d), relayed(Version::V1, s, d)));
    // UNKNOWN, alone or with whatever printable text fits in 107 bytes.
    let v1_unknown = "[ -~]{0,91}".prop_map(|tail: String| {
        let line = if tail.is_empty() {
            "PROXY UNKNOWN\r\n".to_string()
        } else {
            format!("PROXY UNKNOWN {tail}\r\n")
        };
        assert!(line.len() <= V1_MAX_LEN);
        (line.into_bytes(), no_addresses(Version::V1))
    });
    let v2_tcp = (
        address_pair(),
        prop::collection::vec(any::<u8>(), 0..=V2_MAX_PAYLOAD - 36),
    )
        .prop_map(|((s, d), tlvs)| (v2(s, d, &tlvs), relayed(Version::V2, s, d)));
    // LOCAL: any family byte, any block.
    let v2_local = (
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..=V2_MAX_PAYLOAD),
    )
        .prop_map(|(family, block)| (v2_raw(0x20, family, &block), no_addresses(Version::V2)));
    // PROXY with UNSPEC, UDP or AF_UNIX: no addresses, block long enough.
    let v2_fallback = (
        prop::sample::select(vec![
            (0x00u8, 0usize),
            (0x12, 12),
            (0x22, 36),
            (0x31, 216),
            (0x32, 216),
        ]),
        prop::collection::vec(any::<u8>(), 0..=V2_MAX_PAYLOAD - 216),
    )
        .prop_map(|((family, needed), extra)| {
            let mut block = vec![0xab; needed];
            block.extend_from_slice(&extra);
            (v2_raw(0x21, family, &block), no_addresses(Version::V2))
        });
    prop_oneof![v1_tcp, v1_unknown, v2_tcp, v2_local, v2_fallback]
}

/// Bytes that look like the start of a header, then anything: reaches deeper
/// into the parser than uniformly random bytes.
fn header_like() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just(b"PROXY ".to_vec()),
        Just(b"PROXY TCP4 ".to_vec()),
        Just(b"PROXY TCP6 ".to_vec()),
        Just(V2_SIGNATURE.to_vec()),
        Just([&V2_SIGNATURE[..], &[0x21, 0x11]].concat()),
        Just([&V2_SIGNATURE[..], &[0x20]].concat()),
    ];
    (
        start,
        prop::collection::vec(
            prop_oneof![
                any::<u8>(),
                prop::sample::select(b"0123456789.: \r\nabcdefABCDEF".to_vec())
            ],
            0..200,
        ),
    )
        .prop_map(|(mut start, rest)| {
            start.extend_from_slice(&rest);
            start
        })
}

/// Checks the bounds `parse` promises, whatever the answer.
fn bounds_hold(bytes: &[u8]) -> Result<(), TestCaseError> {
    match parse(bytes) {
        Ok(Some((_, len))) => {
            prop_assert!(len > 0 && len <= bytes.len() && len <= MAX_LEN);
            // The same header is found in its own bytes alone.
            prop_assert_eq!(
                parse(&bytes[..len]).map(|h| h.map(|(_, n)| n)),
                Ok(Some(len))
            );
        }
        Ok(None) => prop_assert!(bytes.len() < MAX_LEN),
        Err(_) => {}
    }
    Ok(())
}

/// Reads a header out of `chunks` arriving one after the other, as the
/// handler does: parse everything received so far; if more is needed, consume
/// it all; once complete, consume only the header. Returns the header and
/// what is left unconsumed of everything sent.
fn read_like_the_handler(chunks: &[Vec<u8>]) -> Option<(Header, Vec<u8>)> {
    let mut arrived = Vec::new();
    let mut consumed = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        arrived.extend_from_slice(chunk);
        if arrived.len() == consumed {
            continue;
        }
        match parse(&arrived) {
            Ok(Some((header, len))) => {
                assert!(len >= consumed, "a header shorter than what was consumed");
                // Left in the socket: the rest of what arrived, and what is
                // still on its way.
                let mut left = arrived[len..].to_vec();
                left.extend(chunks[i + 1..].iter().flatten());
                return Some((header, left));
            }
            Ok(None) => consumed = arrived.len(),
            Err(e) => panic!("a valid header refused after {consumed} bytes: {e}"),
        }
    }
    None
}

/// `bytes` cut at the (sorted, deduplicated) `cuts`, modulo its length.
fn split_at_cuts(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| c % (bytes.len() + 1))
        .chain([0, bytes.len()])
        .collect();
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

proptest! {
    // No regression files: this crate's layout (tests beside Cargo.toml) is
    // not one proptest knows where to write them for.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2 * MAX_LEN)) {
        bounds_hold(&bytes)?;
    }

    #[test]
    fn header_like_bytes_never_panic(bytes in header_like()) {
        bounds_hold(&bytes)?;
    }

    #[test]
    fn valid_headers_round_trip(
        (header, expected) in valid_header(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut wire = header.clone();
        wire.extend_from_slice(&payload);
        prop_assert_eq!(parse(&wire), Ok(Some((expected, header.len()))));
        prop_assert_eq!(parse(&header), Ok(Some((expected, header.len()))));
    }

    #[test]
    fn every_prefix_of_a_valid_header_needs_more((header, _) in valid_header()) {
        for n in 0..header.len() {
            prop_assert_eq!(parse(&header[..n]), Ok(None), "prefix of {} bytes", n);
        }
    }

    #[test]
    fn any_split_parses_once_complete(
        (header, expected) in valid_header(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut wire = header.clone();
        wire.extend_from_slice(&payload);
        let chunks = split_at_cuts(&wire, &cuts);
        let found = read_like_the_handler(&chunks);
        prop_assert_eq!(found, Some((expected, payload)));
    }

    #[test]
    fn one_changed_byte_never_panics(
        (header, _) in valid_header(),
        at in any::<usize>(),
        value in any::<u8>(),
    ) {
        let mut changed = header.clone();
        let at = at % changed.len();
        changed[at] = value;
        bounds_hold(&changed)?;
    }
}

// ---------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------

/// A one-service config in front of the lab's master, with `proxy_protocol`
/// set as given, steady probes, and `timeouts.connect` (the header timeout
/// too) at `connect`.
fn pp_config(lab: &Lab, proxy_protocol: bool, connect: &'static str) -> Config {
    let tuning = Tuning {
        connect,
        service: format!("proxy_protocol = {proxy_protocol}"),
        ..Tuning::steady()
    };
    config(lab, &addrs(lab), &tuning)
}

/// A master-only lab and a proxy routed to it.
async fn setup(proxy_protocol: bool, connect: &'static str) -> (Arc<Lab>, keyway::Proxy) {
    let lab = start_lab(0).await;
    let config = pp_config(&lab, proxy_protocol, connect);
    assert_eq!(config.services[0].proxy_protocol, proxy_protocol);
    let proxy = proxy_routed_to(&config, lab.node(0).addr()).await;
    (lab, proxy)
}

/// A raw connection to the proxy, Nagle off so that each write leaves alone.
async fn raw(proxy: &keyway::Proxy) -> TcpStream {
    let stream = keyway_tests::raw(proxy).await;
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// The `proxy_header` refusals counted for service `redis`.
fn proxy_header_refusals(proxy: &keyway::Proxy) -> u64 {
    let text = proxy.metrics().encode();
    let sample = "keyway_refused_clients_total{service=\"redis\",reason=\"proxy_header\"} ";
    text.lines()
        .find_map(|line| line.strip_prefix(sample))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no proxy_header sample in:\n{text}"))
}

/// Sends `request`, then expects the proxy to close without a byte of reply
/// and to count one more `proxy_header` refusal.
async fn refused(proxy: &keyway::Proxy, request: &[u8]) {
    let before = proxy_header_refusals(proxy);
    let mut stream = raw(proxy).await;
    stream.write_all(request).await.expect("write");
    let (got, _) = read_until_closed(&mut stream).await;
    assert!(
        got.is_empty(),
        "the client got a reply: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eventually!(
        proxy_header_refusals(proxy) == before + 1,
        "proxy_header refusals: {} (was {before})",
        proxy_header_refusals(proxy)
    );
}

const CLIENT: &str = "203.0.113.7:51234";
const BALANCER: &str = "10.0.0.10:6379";

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_header_then_commands_in_the_same_write() {
    let (lab, proxy) = setup(true, "1s").await;
    let mut stream = raw(&proxy).await;
    let mut request = v1(sock(CLIENT), sock(BALANCER));
    request.extend_from_slice(&auth_ping(&lab));
    // Bytes after the header that look like a header themselves, CRLFs
    // included, come back exactly: nothing after the header was eaten or
    // parsed.
    let echo = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n\r\n\x00";
    request.extend_from_slice(&resp(&[b"ECHO", echo]));
    stream.write_all(&request).await.expect("write");
    let mut expected = AUTH_PING_REPLY.to_vec();
    expected.extend_from_slice(format!("${}\r\n", echo.len()).as_bytes());
    expected.extend_from_slice(echo);
    expected.extend_from_slice(b"\r\n");
    expect_bytes(&mut stream, &expected).await;
    assert_eq!(proxy_header_refusals(&proxy), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_headers_work_tcp6_with_tlvs_and_local() {
    let (lab, proxy) = setup(true, "1s").await;
    // TCP6 with a TLV, in the same write as the commands.
    let mut stream = raw(&proxy).await;
    let mut request = v2(
        sock("[2001:db8::7]:40000"),
        sock("[2001:db8::10]:6379"),
        &[0x04, 0x00, 0x02, 0xaa, 0xbb],
    );
    request.extend_from_slice(&auth_ping(&lab));
    stream.write_all(&request).await.expect("write");
    expect_bytes(&mut stream, AUTH_PING_REPLY).await;

    // LOCAL (a balancer's own connection) and v1 UNKNOWN: forwarded too.
    for header in [v2_raw(0x20, 0x00, &[]), b"PROXY UNKNOWN\r\n".to_vec()] {
        let mut stream = raw(&proxy).await;
        let mut request = header;
        request.extend_from_slice(&auth_ping(&lab));
        stream.write_all(&request).await.expect("write");
        expect_bytes(&mut stream, AUTH_PING_REPLY).await;
    }
    assert_eq!(proxy_header_refusals(&proxy), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_split_over_several_writes() {
    let (lab, proxy) = setup(true, "2s").await;
    let v4 = v2(sock(CLIENT), sock(BALANCER), &[]);
    for header in [v1(sock(CLIENT), sock(BALANCER)), v4] {
        let mut stream = raw(&proxy).await;
        // Uneven pieces, the last one with the commands glued to it. The
        // pauses only make separate segments likely; correctness does not
        // depend on them (the parser test above covers every split).
        let (a, rest) = header.split_at(1);
        let (b, rest) = rest.split_at(7);
        let (c, d) = rest.split_at(rest.len() - 1);
        let mut last = d.to_vec();
        last.extend_from_slice(&auth_ping(&lab));
        for piece in [a, b, c, &last[..]] {
            stream.write_all(piece).await.expect("write a piece");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        expect_bytes(&mut stream, AUTH_PING_REPLY).await;
    }
    assert_eq!(proxy_header_refusals(&proxy), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_header_is_closed_without_a_reply() {
    let (lab, proxy) = setup(true, "1s").await;
    // A client that bypasses the balancer: plain RESP.
    refused(&proxy, &auth_ping(&lab)).await;
    // An inline command.
    refused(&proxy, b"PING\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_headers_are_closed() {
    let (lab, proxy) = setup(true, "1s").await;
    let bad: [&[u8]; 5] = [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        &[&V2_SIGNATURE[..], &[0x11, 0x11, 0x00, 0x0c], &[0; 12]].concat(),
        &[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat(),
    ];
    for header in bad {
        let mut request = header.to_vec();
        request.extend_from_slice(&auth_ping(&lab));
        refused(&proxy, &request).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_header_is_closed_after_the_timeout() {
    let (_lab, proxy) = setup(true, "300ms").await;
    // The v1 line stops short, and so does a v2 header; then silence. The
    // client keeps its socket open: the proxy must be the one to close.
    let v2_start = v2(sock(CLIENT), sock(BALANCER), &[]);
    for partial in [&b"PROXY TCP4 203.0.113.7 "[..], &v2_start[..20]] {
        refused(&proxy, partial).await;
    }
    // A client that connects and sends nothing is closed by the same timeout.
    let mut stream = raw(&proxy).await;
    let (got, _) = read_until_closed(&mut stream).await;
    assert!(got.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_forwards_a_proxy_line_untouched() {
    let (lab, proxy) = setup(false, "1s").await;
    let mut stream = raw(&proxy).await;
    let mut request = v1(sock(CLIENT), sock(BALANCER));
    request.extend_from_slice(&auth_ping(&lab));
    stream.write_all(&request).await.expect("write");
    // Redis read the PROXY line as an (unknown, unauthenticated) inline
    // command: an error reply, then the commands after it as usual.
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        let byte = within("read the error reply", stream.read_u8())
            .await
            .expect("a reply byte");
        line.push(byte);
    }
    assert_eq!(
        line.first(),
        Some(&b'-'),
        "expected an error reply, got {:?}",
        String::from_utf8_lossy(&line)
    );
    expect_bytes(&mut stream, AUTH_PING_REPLY).await;
    assert_eq!(proxy_header_refusals(&proxy), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_turns_it_on_for_new_clients() {
    let (lab, mut proxy) = setup(false, "1s").await;
    // A session opened before the reload keeps working without a header.
    let mut before = raw(&proxy).await;
    before.write_all(&auth_ping(&lab)).await.expect("write");
    expect_bytes(&mut before, AUTH_PING_REPLY).await;

    let config = pp_config(&lab, true, "1s");
    within("reload", proxy.reload(&config))
        .await
        .expect("reload applies");
    refused(&proxy, &auth_ping(&lab)).await;
    let mut stream = raw(&proxy).await;
    let mut request = v1(sock(CLIENT), sock(BALANCER));
    request.extend_from_slice(&auth_ping(&lab));
    stream.write_all(&request).await.expect("write");
    expect_bytes(&mut stream, AUTH_PING_REPLY).await;

    before
        .write_all(&resp(&[b"PING"]))
        .await
        .expect("write on the old session");
    expect_bytes(&mut before, b"+PONG\r\n").await;
}
