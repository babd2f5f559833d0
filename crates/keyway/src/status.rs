//! The `/status` document, and `keyway status`, which fetches it and prints it
//! for people.
//!
//! The same types serialize on the server (`admin`) and deserialize in the
//! command, so the two cannot drift apart. The command tolerates fields it does
//! not know (a newer server), and needs no HTTP library: one `GET` over a plain
//! `std::net::TcpStream` with `Connection: close`, bounded in time and size.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};

/// The default admin address, the same as `[admin] listen`'s default.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9470";
/// How many recent events `keyway status` prints.
pub const EVENTS_SHOWN: usize = 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// The whole `/status` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub version: String,
    pub draining: bool,
    pub services: Vec<ServiceDoc>,
    /// The last events of the timeline, oldest first.
    pub events: Vec<EventDoc>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDoc {
    pub name: String,
    pub listen: SocketAddr,
    /// The node new sessions go to; `null` while clients are held.
    pub route: Option<SocketAddr>,
    /// Every node has answered (or failed) at least once.
    pub decided: bool,
    /// Sessions forwarding now.
    pub sessions: u64,
    /// Clients waiting for a route now.
    pub held: u64,
    pub route_changes: u64,
    pub nodes: Vec<NodeDoc>,
    /// `[service.sentinel] master_name`; `null` without Sentinel.
    pub sentinel_master_name: Option<String>,
    pub sentinels: Vec<SentinelDoc>,
    /// The master a majority of the sentinels names, if any.
    pub sentinel_master: Option<SocketAddr>,
    /// Nodes other than the route that claim master.
    pub conflicts: Vec<SocketAddr>,
}

/// One Redis node of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDoc {
    pub address: SocketAddr,
    /// This node is the route.
    pub routed: bool,
    /// `up` or `down`.
    pub health: String,
    /// The role the node last reported (`master`, `replica`), `null` before it answers.
    pub role: Option<String>,
    pub loading: bool,
    /// How long the last probe took, in milliseconds (to fail, when
    /// `last_error` is set).
    pub latency_ms: Option<f64>,
    pub probes: u64,
    pub probe_failures: u64,
    /// Why the last probe failed, when it did.
    pub last_error: Option<String>,
}

/// One sentinel of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentinelDoc {
    pub address: SocketAddr,
    pub reachable: bool,
    /// The master this sentinel names.
    pub master: Option<SocketAddr>,
}

/// One timeline event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDoc {
    /// RFC 3339, UTC.
    pub time: String,
    pub service: String,
    pub kind: String,
    pub message: String,
}

/// Options of `keyway status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Admin address of the running Keyway (`[admin] listen`).
    #[arg(short = 'a', long = "admin", default_value = DEFAULT_ADMIN, value_name = "ADDR")]
    pub admin: String,
    /// Print the raw JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Runs `keyway status`: fetch, then print tables (or the JSON).
pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let body = fetch(&args.admin, "/status")?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let doc: StatusDoc = serde_json::from_str(&body)
        .with_context(|| format!("{}: /status is not a Keyway status document", args.admin))?;
    print!("{}", render(&doc, &args.admin));
    Ok(())
}

/// `GET path` from the admin server at `admin` (`HOST:PORT`, optionally with
/// `http://`), returning the body of a 200 response.
pub fn fetch(admin: &str, path: &str) -> anyhow::Result<String> {
    let host = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addrs: Vec<SocketAddr> = host
        .to_socket_addrs()
        .with_context(|| {
            format!(
                "invalid admin address {admin:?}: expected HOST:PORT, for example {DEFAULT_ADMIN}"
            )
        })?
        .collect();
    let mut last = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        let why = last
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no address".into());
        bail!(
            "cannot reach the Keyway admin endpoint at {host}: {why}\n\
             (is keyway running, and is [admin] listen set to this address? use -a ADDR)"
        );
    };
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("sending the request to {host}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {host}"))?;
    let (code, body) = parse_response(&raw).with_context(|| format!("answer of {host}"))?;
    if code != 200 {
        bail!("{host}{path} answered {code}: {}", body.trim());
    }
    Ok(body)
}

/// Splits an HTTP/1.1 response read to EOF into its status code and body.
/// Handles `Content-Length` and close-delimited bodies (what the admin server
/// sends); a chunked body is an error rather than a guess.
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP response (no end of headers)"))?;
    let head = std::str::from_utf8(&raw[..end]).context("response headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code: u16 = match status_line
        .split_whitespace()
        .collect::<Vec<_>>()
        .as_slice()
    {
        [version, code, ..] if version.starts_with("HTTP/1.") => code
            .parse()
            .map_err(|_| anyhow!("bad status line {status_line:?}"))?,
        _ => bail!("not an HTTP response: {status_line:?}"),
    };
    let mut body = &raw[end + 4..];
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value
                .parse()
                .map_err(|_| anyhow!("bad Content-Length {value:?}"))?;
            if body.len() < len {
                bail!("response cut short ({} of {len} bytes)", body.len());
            }
            body = &body[..len];
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            bail!("unsupported Transfer-Encoding {value:?}");
        }
    }
    Ok((code, String::from_utf8_lossy(body).into_owned()))
}

/// The tables `keyway status` prints.
pub fn render(doc: &StatusDoc, admin: &str) -> String {
    let mut out = String::new();
    let state = if doc.draining { "DRAINING" } else { "running" };
    let _ = writeln!(out, "Keyway {} at {admin}: {state}", doc.version);
    out.push('\n');

    let mut rows = vec![row([
        "SERVICE",
        "LISTEN",
        "ROUTE",
        "SESSIONS",
        "HELD",
        "CHANGES",
        "SENTINEL MASTER",
    ])];
    for s in &doc.services {
        let route = match (s.route, s.decided) {
            (Some(r), _) => r.to_string(),
            (None, true) => "NONE (holding clients)".into(),
            (None, false) => "none yet (first probes)".into(),
        };
        let sentinel = match (&s.sentinel_master_name, s.sentinel_master) {
            (None, _) => "-".to_string(),
            (Some(name), Some(m)) => format!("{m} ({name})"),
            (Some(name), None) => format!("NO MAJORITY ({name})"),
        };
        rows.push(vec![
            s.name.clone(),
            s.listen.to_string(),
            route,
            s.sessions.to_string(),
            s.held.to_string(),
            s.route_changes.to_string(),
            sentinel,
        ]);
    }
    table(&mut out, "", &rows);

    for s in &doc.services {
        out.push('\n');
        let _ = writeln!(out, "Service {}: nodes (* = route)", s.name);
        let mut rows = vec![row([
            "",
            "NODE",
            "ROLE",
            "HEALTH",
            "LATENCY",
            "PROBES",
            "FAILED",
            "LAST ERROR",
        ])];
        for n in &s.nodes {
            let role = match (&n.role, n.loading) {
                (Some(r), true) => format!("{r} (loading)"),
                (Some(r), false) => r.clone(),
                (None, _) => "?".into(),
            };
            rows.push(vec![
                if n.routed { "*" } else { "" }.into(),
                n.address.to_string(),
                role,
                n.health.clone(),
                // The time a failed probe took to fail is not a latency.
                n.latency_ms
                    .filter(|_| n.last_error.is_none())
                    .map(|ms| format!("{ms:.2} ms"))
                    .unwrap_or_else(|| "-".into()),
                n.probes.to_string(),
                n.probe_failures.to_string(),
                n.last_error.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        table(&mut out, "  ", &rows);
        if !s.sentinels.is_empty() {
            let _ = writeln!(out, "Service {}: sentinels", s.name);
            let mut rows = vec![row(["SENTINEL", "REACHABLE", "NAMES MASTER"])];
            for sentinel in &s.sentinels {
                rows.push(vec![
                    sentinel.address.to_string(),
                    if sentinel.reachable { "yes" } else { "NO" }.into(),
                    sentinel
                        .master
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            table(&mut out, "  ", &rows);
        }
        if !s.conflicts.is_empty() {
            let list: Vec<String> = s.conflicts.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "  WARNING: {} also claim(s) master; the route stays where it is",
                list.join(", ")
            );
        }
    }

    out.push('\n');
    let shown = doc.events.len().min(EVENTS_SHOWN);
    if shown == 0 {
        out.push_str("No events yet.\n");
    } else {
        let _ = writeln!(
            out,
            "Recent events ({shown} of {}, oldest first)",
            doc.events.len()
        );
        let rows: Vec<Vec<String>> = doc.events[doc.events.len() - shown..]
            .iter()
            .map(|e| {
                vec![
                    e.time.clone(),
                    e.service.clone(),
                    e.kind.clone(),
                    e.message.clone(),
                ]
            })
            .collect();
        table(&mut out, "  ", &rows);
    }
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Appends `rows` as left-aligned columns two spaces apart; the last column is
/// not padded (no trailing spaces).
fn table(out: &mut String, indent: &str, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::from(indent);
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        ([127, 0, 0, 1], port).into()
    }

    fn doc() -> StatusDoc {
        StatusDoc {
            version: "0.1.0".into(),
            draining: false,
            services: vec![ServiceDoc {
                name: "redis".into(),
                listen: addr(6380),
                route: Some(addr(7000)),
                decided: true,
                sessions: 3,
                held: 0,
                route_changes: 1,
                nodes: vec![
                    NodeDoc {
                        address: addr(7000),
                        routed: true,
                        health: "up".into(),
                        role: Some("master".into()),
                        loading: false,
                        latency_ms: Some(0.214),
                        probes: 120,
                        probe_failures: 0,
                        last_error: None,
                    },
                    NodeDoc {
                        address: addr(7001),
                        routed: false,
                        health: "down".into(),
                        role: Some("replica".into()),
                        loading: false,
                        latency_ms: None,
                        probes: 120,
                        probe_failures: 7,
                        last_error: Some("connect: connection refused".into()),
                    },
                ],
                sentinel_master_name: Some("mymaster".into()),
                sentinels: vec![SentinelDoc {
                    address: addr(26379),
                    reachable: true,
                    master: Some(addr(7000)),
                }],
                sentinel_master: Some(addr(7000)),
                conflicts: vec![addr(7002)],
            }],
            events: (0..12)
                .map(|i| EventDoc {
                    time: format!("2026-01-01T00:00:{i:02}.000Z"),
                    service: "redis".into(),
                    kind: "node_up".into(),
                    message: format!("event {i}"),
                })
                .collect(),
        }
    }

    #[test]
    fn renders_route_nodes_sentinels_and_the_last_events() {
        let text = render(&doc(), "127.0.0.1:9470");
        for needle in [
            "Keyway 0.1.0 at 127.0.0.1:9470: running",
            "redis    127.0.0.1:6380  127.0.0.1:7000",
            "127.0.0.1:7000 (mymaster)",
            "  *  127.0.0.1:7000  master   up      0.21 ms",
            "connect: connection refused",
            "127.0.0.1:26379  yes",
            "WARNING: 127.0.0.1:7002 also claim(s) master",
            "Recent events (10 of 12, oldest first)",
            "event 11",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(!text.contains("event 1\n"), "{text}");
        assert!(text.lines().all(|l| !l.ends_with(' ')), "{text}");
    }

    #[test]
    fn json_round_trip_and_unknown_fields() {
        let d = doc();
        let json = serde_json::to_string(&d).expect("serialize");
        assert_eq!(serde_json::from_str::<StatusDoc>(&json).expect("parse"), d);
        let mut value: serde_json::Value = serde_json::from_str(&json).expect("value");
        value["future_field"] = serde_json::json!(1);
        assert!(serde_json::from_value::<StatusDoc>(value).is_ok());
    }

    #[test]
    fn parses_responses() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nokEXTRA";
        assert_eq!(parse_response(raw).expect("ok"), (200, "ok".into()));
        let raw = b"HTTP/1.1 503 Service Unavailable\r\n\r\ndraining\n";
        assert_eq!(parse_response(raw).expect("ok"), (503, "draining\n".into()));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
            )
            .is_err()
        );
    }

    #[test]
    fn unreachable_admin_is_a_clear_error() {
        // A port just released: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let err = fetch(&format!("127.0.0.1:{port}"), "/status").expect_err("nothing listens");
        let text = format!("{err:#}");
        assert!(
            text.contains("cannot reach the Keyway admin endpoint"),
            "{text}"
        );
        assert!(fetch("not an address", "/status").is_err());
    }
}
