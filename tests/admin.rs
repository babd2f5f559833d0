//! The admin HTTP server against a real lab: `/healthz` follows the route,
//! `/metrics` is valid OpenMetrics whose counters match the bytes a session
//! moved, `/status` shows the route and the timeline, nothing leaks the
//! password, and a silent client is dropped.
//!
//! The proxy runs in-process with its admin server on 127.0.0.1:0; requests are
//! plain HTTP/1.1 over a TCP socket, so the test sees exactly what a load
//! balancer or Prometheus sees.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use keyway::status::StatusDoc;
use keyway_tests::{
    AUTH_PING_REPLY, DEADLINE, Lab, Tuning, addrs, assert_eventually, auth_ping, config, endpoint,
    expect_bytes, on_lab, proxy_routed_to, raw, read_until_closed, start_lab, within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP answer: status code, head (lower-cased header names), body.
#[derive(Debug)]
struct Answer {
    code: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// Sends one request and reads the answer to EOF (the server closes after one
/// request), all within `DEADLINE`.
async fn http(admin: SocketAddr, method: &str, target: &str) -> Answer {
    let exchange = async {
        let mut s = TcpStream::connect(admin).await.expect("connect to admin");
        let req = format!("{method} {target} HTTP/1.1\r\nHost: {admin}\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read answer");
        raw
    };
    let raw = tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("admin answers within the deadline");
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("end of headers");
    let mut lines = head.split("\r\n");
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        code,
        headers,
        body: body.to_string(),
    }
}

async fn get(admin: SocketAddr, target: &str) -> Answer {
    http(admin, "GET", target).await
}

/// The samples of an OpenMetrics exposition, checked on the way: every family
/// has exactly one `# TYPE` and one `# HELP`, every sample belongs to a declared
/// family, and the text ends with `# EOF`.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no # EOF:\n{text}");
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut helps = BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(types.insert(name, kind).is_none(), "TYPE twice: {name}");
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "empty HELP for {name}");
            assert!(helps.insert(name.to_string()), "HELP twice: {name}");
        } else if line.starts_with('#') {
            assert!(line == "# EOF" || line.starts_with("# UNIT "), "{line}");
        } else {
            // `name{labels} value`: label values here never hold a space.
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            let name = series.split('{').next().unwrap_or(series);
            let family = types
                .keys()
                .filter(|f| {
                    name == **f
                        || ["_total", "_bucket", "_sum", "_count", "_info"]
                            .iter()
                            .any(|suffix| name.strip_prefix(**f) == Some(suffix))
                })
                .max_by_key(|f| f.len());
            assert!(family.is_some(), "sample of an undeclared family: {line}");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            samples.insert(series.to_string(), value);
        }
    }
    for name in types.keys() {
        assert!(helps.contains(*name), "no HELP for {name}");
        assert!(name.starts_with("keyway_"), "{name}");
    }
    samples
}

async fn metrics(admin: SocketAddr) -> BTreeMap<String, f64> {
    let answer = get(admin, "/metrics").await;
    assert_eq!(answer.code, 200, "{}", answer.body);
    parse_metrics(&answer.body)
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    match samples.get(series) {
        Some(v) => *v,
        None => panic!("{series} missing; have:\n{:#?}", samples.keys()),
    }
}

/// One session through the proxy with known bytes both ways: AUTH + PING,
/// then EOF. Returns (client_to_node, node_to_client) byte counts.
async fn one_session(proxy: &keyway::Proxy, lab: &Lab) -> (u64, u64) {
    let request = auth_ping(lab);
    within("the session", async {
        let mut s = raw(proxy).await;
        s.write_all(&request).await.expect("send");
        expect_bytes(&mut s, AUTH_PING_REPLY).await;
        // Half-close: Redis closes its side, the session ends `done`.
        s.shutdown().await.expect("shutdown");
        let (rest, error) = read_until_closed(&mut s).await;
        assert!(error.is_none(), "no clean EOF: {error:?}");
        assert!(rest.is_empty(), "unexpected bytes {rest:?}");
    })
    .await;
    (request.len() as u64, AUTH_PING_REPLY.len() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_metrics_and_status_follow_a_real_group() {
    let lab = start_lab(1).await;
    let master = lab.node(0).addr();
    let replica = lab.node(1).addr();
    let proxy = proxy_routed_to(&config(&lab, &addrs(&lab), &Tuning::default()), master).await;
    let admin = proxy.admin_addr();
    assert_ne!(admin.port(), 0);
    let password = lab.password().expect("lab password").to_string();

    // --- /healthz with a route.
    let ok = get(admin, "/healthz").await;
    assert_eq!((ok.code, ok.body.as_str()), (200, "ok\n"));
    assert!(ok.headers["content-type"].starts_with("text/plain"));
    assert_eq!(get(admin, "/healthz?service=redis").await.code, 200);
    let unknown = get(admin, "/healthz?service=nope").await;
    assert_eq!(
        (unknown.code, unknown.body.as_str()),
        (404, "unknown service nope\n")
    );

    // --- paths and methods.
    assert_eq!(get(admin, "/").await.code, 404);
    assert_eq!(get(admin, "/admin/metrics").await.code, 404);
    let post = http(admin, "POST", "/healthz").await;
    assert_eq!(post.code, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");

    // --- /metrics: format, and exact byte counts of one session.
    let answer = get(admin, "/metrics").await;
    assert_eq!(
        answer.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    for declared in [
        "# TYPE keyway_sessions counter",
        "# TYPE keyway_sessions_current gauge",
        "# TYPE keyway_client_to_node_bytes counter",
        "# UNIT keyway_client_to_node_bytes bytes",
        "# TYPE keyway_probe_duration_seconds histogram",
        "# TYPE keyway_node_up gauge",
        "# HELP keyway_route_up ",
    ] {
        assert!(
            answer.body.contains(declared),
            "{declared:?} missing:\n{}",
            answer.body
        );
    }
    let before = parse_metrics(&answer.body);
    let svc = "{service=\"redis\"}";
    let total = |m: &BTreeMap<String, f64>, name: &str| sample(m, &format!("{name}{svc}"));
    let (up, down) = one_session(&proxy, &lab).await;
    // The session adds its counts when it closes, just after our EOF.
    let mut after: BTreeMap<String, f64>;
    assert_eventually!(
        {
            after = metrics(admin).await;
            total(&after, "keyway_sessions_current") == 0.0
                && total(&after, "keyway_sessions_total")
                    == total(&before, "keyway_sessions_total") + 1.0
        },
        "session not counted: {after:#?}"
    );
    assert_eq!(
        total(&after, "keyway_client_to_node_bytes_total"),
        total(&before, "keyway_client_to_node_bytes_total") + up as f64
    );
    assert_eq!(
        total(&after, "keyway_node_to_client_bytes_total"),
        total(&before, "keyway_node_to_client_bytes_total") + down as f64
    );
    assert_eq!(
        sample(
            &after,
            "keyway_sessions_closed_total{service=\"redis\",reason=\"done\"}"
        ),
        1.0
    );
    assert_eq!(total(&after, "keyway_held_clients_current"), 0.0);
    assert_eq!(total(&after, "keyway_route_up"), 1.0);
    let node = |n: SocketAddr| format!("{{service=\"redis\",node=\"{n}\"}}");
    assert_eq!(
        sample(&after, &format!("keyway_route_info{}", node(master))),
        1.0
    );
    assert_eq!(
        sample(&after, &format!("keyway_node_up{}", node(master))),
        1.0
    );
    assert_eq!(
        sample(&after, &format!("keyway_node_up{}", node(replica))),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            &format!("keyway_node_role{{service=\"redis\",node=\"{replica}\",role=\"replica\"}}")
        ),
        1.0
    );
    let inf = format!(
        "keyway_probe_duration_seconds_bucket{{le=\"+Inf\",service=\"redis\",node=\"{master}\"}}"
    );
    let count = format!("keyway_probe_duration_seconds_count{}", node(master));
    assert!(
        sample(&after, &inf) >= 2.0,
        "rise = 2 probes answered at least"
    );
    assert_eq!(sample(&after, &inf), sample(&after, &count));
    assert_eq!(
        sample(
            &after,
            &format!("keyway_probe_failures_total{}", node(master))
        ),
        0.0
    );
    assert_eq!(total(&after, "keyway_master_conflict"), 0.0);
    assert_eq!(
        sample(
            &after,
            &format!(
                "keyway_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );

    // --- /status: the route, the nodes and the timeline.
    let answer = get(admin, "/status").await;
    assert_eq!(answer.code, 200);
    assert_eq!(answer.headers["content-type"], "application/json");
    let doc: StatusDoc = serde_json::from_str(&answer.body).expect("status JSON");
    assert!(!doc.draining);
    let service = &doc.services[0];
    assert_eq!(
        (service.name.as_str(), service.route),
        ("redis", Some(master))
    );
    assert!(service.decided);
    assert_eq!(service.listen, endpoint(&proxy));
    let routed: Vec<_> = service.nodes.iter().filter(|n| n.routed).collect();
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0].address, master);
    assert_eq!(routed[0].role.as_deref(), Some("master"));
    assert_eq!(routed[0].health, "up");
    assert!(routed[0].latency_ms.is_some());
    let route_event = doc
        .events
        .iter()
        .find(|e| e.kind == "route_changed")
        .expect("a route_changed event");
    assert_eq!(route_event.service, "redis");
    assert!(
        route_event.message.contains(&master.to_string()),
        "{route_event:?}"
    );
    assert!(route_event.time.ends_with('Z') && route_event.time.contains('T'));

    // --- kill every node: healthz turns 503 with the reason.
    on_lab(&lab, |lab| lab.nodes().iter().for_each(|n| n.kill())).await;
    let mut last: Option<Answer>;
    assert_eventually!(
        {
            let a = get(admin, "/healthz").await;
            let done = a.code == 503;
            last = Some(a);
            done
        },
        "healthz still {last:?}"
    );
    let down = last.expect("an answer");
    assert_eq!(down.body, "service redis: no route\n");
    assert_eq!(get(admin, "/healthz?service=redis").await.code, 503);
    let after = metrics(admin).await;
    assert_eq!(total(&after, "keyway_route_up"), 0.0);
    assert!(!after.keys().any(|k| k.starts_with("keyway_route_info")));
    // Every node down with its failure reason (the replica may fail a probe later).
    let mut doc: StatusDoc;
    assert_eventually!(
        {
            doc = serde_json::from_str(&get(admin, "/status").await.body).expect("status JSON");
            doc.services[0]
                .nodes
                .iter()
                .all(|n| n.health == "down" && n.last_error.is_some())
        },
        "nodes not all down: {:?}",
        doc.services[0].nodes
    );
    assert_eq!(doc.services[0].route, None);

    // --- no secret anywhere, including failure reasons after the kill.
    for path in ["/status", "/metrics", "/healthz"] {
        let body = get(admin, path).await.body;
        assert!(!body.contains(&password), "{path} shows the password");
    }

    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_or_slow_admin_clients_are_dropped() {
    let lab = start_lab(0).await;
    let proxy = proxy_routed_to(
        &config(&lab, &addrs(&lab), &Tuning::default()),
        lab.node(0).addr(),
    )
    .await;
    let admin = proxy.admin_addr();

    // Half a request head, then silence: closed after the header read timeout.
    let mut slow = TcpStream::connect(admin).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");
    // A silent client: connects, never sends a byte.
    let mut silent = TcpStream::connect(admin).await.expect("connect");
    for s in [&mut slow, &mut silent] {
        // Panics if the admin server keeps the stalled connection open.
        let (rest, _) = read_until_closed(s).await;
        // Closed without a 200 (hyper may answer 408 first).
        let text = String::from_utf8_lossy(&rest);
        assert!(!text.contains(" 200 "), "{text}");
    }
    // The server still answers.
    assert_eq!(get(admin, "/healthz").await.code, 200);

    // An oversized head is refused, not buffered.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let mut s = TcpStream::connect(admin).await.expect("connect");
    let _ = s.write_all(huge.as_bytes()).await;
    // Answered or closed, within the deadline.
    let (rest, _) = read_until_closed(&mut s).await;
    assert!(!String::from_utf8_lossy(&rest).contains(" 200 "));

    proxy.shutdown().await;
}
