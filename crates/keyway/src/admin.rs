//! The admin HTTP server on `[admin] listen`: `/metrics`, `/healthz`, `/status`.
//!
//! Invariants:
//! - Cheap and never blocked by Redis: every answer is built from what is already
//!   in memory (the monitors' latest `ServiceStatus` snapshots on their watch
//!   channels, the metric handles, the timeline). Nothing here waits on a probe, a
//!   node or a lock held across I/O, so a hung Redis cannot make the load
//!   balancer's health check time out.
//! - Bounded: at most [`MAX_CONNECTIONS`] connections at once (more are closed at
//!   accept), request headers within [`MAX_HEADER_BYTES`] and
//!   [`HEADER_READ_TIMEOUT`], one request per connection, and a whole connection
//!   within [`CONNECTION_TIMEOUT`]: a slow or silent client holds nothing for
//!   long.
//! - No secret is reachable: the documents are built from addresses, roles and
//!   failure reasons, which the probes already keep free of passwords.
//!
//! HTTP/1.1 only (load balancers and Prometheus speak it), served by hyper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use keyway_discovery::{Health, ServiceStatus, Timeline};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{Metrics, ServiceMetrics};
use crate::status::{EventDoc, NodeDoc, SentinelDoc, ServiceDoc, StatusDoc};

/// Admin connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request line and headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may live, request and response included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head accepted (hyper's minimum buffer); larger gets 431.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// How many timeline entries `/status` returns.
pub const STATUS_EVENTS: usize = 100;

/// What the admin endpoints and the metrics collector know of one running service.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub name: String,
    pub listen: SocketAddr,
    /// `[service.sentinel] master_name`, when the service follows Sentinel.
    pub sentinel_master_name: Option<String>,
    pub status: watch::Receiver<ServiceStatus>,
    pub metrics: ServiceMetrics,
}

/// The running services, as the proxy last published them (at start, and again
/// after each reload).
pub type ServiceViews = watch::Receiver<Arc<[ServiceView]>>;

/// Set while Keyway drains (SIGTERM): `/healthz` answers 503 at once so the load
/// balancer stops sending clients. Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct DrainFlag(Arc<AtomicBool>);

impl DrainFlag {
    pub fn set(&self, draining: bool) {
        self.0.store(draining, Ordering::Release);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Everything a request may read.
#[derive(Debug)]
pub struct AdminState {
    pub services: ServiceViews,
    pub timeline: Timeline,
    pub draining: DrainFlag,
    pub metrics: Arc<Metrics>,
}

/// The admin HTTP server. See the module doc.
#[derive(Debug)]
pub struct AdminServer {
    /// A std listener, registered with the runtime `run` is polled on (the
    /// control-plane thread), not the one that bound it.
    tcp: std::net::TcpListener,
    state: Arc<AdminState>,
}

impl AdminServer {
    /// `tcp` must be non-blocking.
    pub fn new(tcp: std::net::TcpListener, state: AdminState) -> Self {
        AdminServer {
            tcp,
            state: Arc::new(state),
        }
    }

    /// Serves until `shutdown`; open connections are dropped then.
    pub async fn run(self, shutdown: CancellationToken) {
        let tcp = match TcpListener::from_std(self.tcp) {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable; no admin HTTP");
                return;
            }
        };
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(client = %peer, max = MAX_CONNECTIONS, "admin connections full; closing");
                continue;
            };
            let state = self.state.clone();
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req: Request<Incoming>| {
                    let response = state.respond(&req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_HEADER_BYTES)
                    // One request per connection: nothing sits idle between
                    // scrapes or health checks.
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    result = conn => if let Err(e) = result {
                        tracing::debug!(client = %peer, error = %e, "admin connection error");
                    },
                    () = tokio::time::sleep(CONNECTION_TIMEOUT) => {
                        tracing::debug!(client = %peer, "admin connection timed out");
                    }
                    () = shutdown.cancelled() => {}
                }
            });
        }
        connections.close();
        connections.wait().await;
    }
}

impl AdminState {
    /// Routes one request. Pure reads of in-memory state; see the module doc.
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if !matches!(path, "/metrics" | "/healthz" | "/status") {
            return text(StatusCode::NOT_FOUND, "not found\n".into());
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".into(),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match path {
            "/metrics" => with_type(
                StatusCode::OK,
                self.metrics.encode().into(),
                crate::metrics::CONTENT_TYPE,
            ),
            "/healthz" => self.healthz(req.uri().query()),
            _ => match serde_json::to_vec_pretty(&self.status_doc()) {
                Ok(json) => with_type(StatusCode::OK, json.into(), "application/json"),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("status: {e}\n")),
            },
        }
    }

    /// 200 `ok` when not draining and every service (or the one named by
    /// `?service=`) has a route; 503 with a one-line reason otherwise; 404 for
    /// an unknown service name.
    fn healthz(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let wanted = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("service="));
        let services = self.services.borrow().clone();
        let selected: Vec<&ServiceView> = match wanted {
            Some(name) => match services.iter().find(|s| s.name == name) {
                Some(s) => vec![s],
                // Service names are [A-Za-z0-9_.-]: echoing one back is safe.
                None if is_service_name(name) => {
                    return text(StatusCode::NOT_FOUND, format!("unknown service {name}\n"));
                }
                None => return text(StatusCode::NOT_FOUND, "unknown service\n".into()),
            },
            None => services.iter().collect(),
        };
        if self.draining.is_set() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into());
        }
        let problems: Vec<String> = selected
            .iter()
            .filter_map(|s| {
                let status = s.status.borrow();
                match (status.route, status.decided) {
                    (Some(_), _) => None,
                    (None, true) => Some(format!("service {}: no route", s.name)),
                    (None, false) => Some(format!(
                        "service {}: no route (first probes pending)",
                        s.name
                    )),
                }
            })
            .collect();
        if problems.is_empty() {
            text(StatusCode::OK, "ok\n".into())
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}\n", problems.join("; ")),
            )
        }
    }

    /// The `/status` document.
    pub fn status_doc(&self) -> StatusDoc {
        let services = self.services.borrow().clone();
        StatusDoc {
            version: env!("CARGO_PKG_VERSION").to_string(),
            draining: self.draining.is_set(),
            services: services.iter().map(service_doc).collect(),
            events: self
                .timeline
                .recent(STATUS_EVENTS)
                .into_iter()
                .map(|e| EventDoc {
                    time: rfc3339(e.at),
                    service: e.service,
                    kind: e.kind.to_string(),
                    message: e.message,
                })
                .collect(),
        }
    }
}

fn service_doc(view: &ServiceView) -> ServiceDoc {
    let status = view.status.borrow().clone();
    ServiceDoc {
        name: view.name.clone(),
        listen: view.listen,
        route: status.route.map(|n| n.0),
        decided: status.decided,
        sessions: view.metrics.sessions_current(),
        held: view.metrics.held_current(),
        route_changes: status.route_changes,
        nodes: status
            .nodes
            .iter()
            .map(|n| NodeDoc {
                address: n.addr.0,
                routed: status.route == Some(n.addr),
                health: match n.health {
                    Health::Up => "up",
                    Health::Down => "down",
                }
                .to_string(),
                role: n.role.map(|r| r.role.to_string()),
                loading: n.role.is_some_and(|r| r.loading),
                latency_ms: n.last_latency.map(|d| d.as_secs_f64() * 1000.0),
                probes: n.probes.total,
                probe_failures: n.probes.failures,
                last_error: n.last_error.clone(),
            })
            .collect(),
        sentinel_master_name: view.sentinel_master_name.clone(),
        sentinels: status
            .sentinels
            .iter()
            .map(|s| SentinelDoc {
                address: s.addr.0,
                reachable: s.reachable,
                master: s.master.map(|n| n.0),
            })
            .collect(),
        sentinel_master: status.sentinel_master.map(|n| n.0),
        conflicts: status.conflicts.iter().map(|n| n.0).collect(),
    }
}

fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, body.into(), "text/plain; charset=utf-8")
}

fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Health and status are live values: no cache in between may keep them.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `t` as RFC 3339 in UTC with milliseconds, for example
/// `2026-11-26T14:56:40.123Z`. Times before 1970 print as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        let at =
            |secs: u64, ms: u64| UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a year divisible by 400).
        assert_eq!(rfc3339(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(at(1_700_000_000, 999)), "2023-11-14T22:13:20.999Z");
        assert_eq!(rfc3339(at(4_102_444_799, 0)), "2099-12-31T23:59:59.000Z");
    }

    fn state(services: Vec<ServiceView>) -> (AdminState, watch::Sender<Arc<[ServiceView]>>) {
        let (tx, rx) = watch::channel::<Arc<[ServiceView]>>(services.into());
        let metrics = Arc::new(Metrics::new(rx.clone()));
        let state = AdminState {
            services: rx,
            timeline: Timeline::default(),
            draining: DrainFlag::default(),
            metrics,
        };
        (state, tx)
    }

    fn get(state: &AdminState, uri: &str) -> (StatusCode, String) {
        let req = Request::get(uri).body(()).expect("request");
        let resp = state.respond(&req);
        let status = resp.status();
        let body = resp.into_body();
        // `Full` holds one chunk; read it back without a runtime.
        let bytes = body_bytes(body);
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn body_bytes(body: Full<Bytes>) -> Bytes {
        use http_body_util::BodyExt as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(body.collect())
            .map(|c| c.to_bytes())
            .unwrap_or_default()
    }

    fn view(
        metrics: &Metrics,
        name: &str,
        status: ServiceStatus,
    ) -> (ServiceView, watch::Sender<ServiceStatus>) {
        let (tx, rx) = watch::channel(status);
        let view = ServiceView {
            name: name.into(),
            listen: ([127, 0, 0, 1], 6379).into(),
            sentinel_master_name: None,
            status: rx,
            metrics: metrics.service(name),
        };
        (view, tx)
    }

    #[test]
    fn healthz_routes_draining_and_unknown() {
        let (state, views) = state(Vec::new());
        let routed = ServiceStatus {
            route: Some(keyway_config::NodeAddr(([127, 0, 0, 1], 7000).into())),
            decided: true,
            ..ServiceStatus::default()
        };
        let (a, _a) = view(&state.metrics, "a", routed);
        let (b, b_tx) = view(&state.metrics, "b", ServiceStatus::default());
        views.send_replace(vec![a, b].into());

        assert_eq!(
            get(&state, "/healthz"),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "service b: no route (first probes pending)\n".into()
            )
        );
        assert_eq!(
            get(&state, "/healthz?service=a"),
            (StatusCode::OK, "ok\n".into())
        );
        b_tx.send_modify(|s| s.decided = true);
        assert_eq!(
            get(&state, "/healthz?x=1&service=b"),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "service b: no route\n".into()
            )
        );
        assert_eq!(
            get(&state, "/healthz?service=nope"),
            (StatusCode::NOT_FOUND, "unknown service nope\n".into())
        );
        assert_eq!(
            get(&state, "/healthz?service=%3Cx%3E").0,
            StatusCode::NOT_FOUND
        );
        state.draining.set(true);
        assert_eq!(
            get(&state, "/healthz?service=a"),
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
        );
    }

    #[test]
    fn paths_and_methods() {
        let (state, _views) = state(Vec::new());
        assert_eq!(get(&state, "/").0, StatusCode::NOT_FOUND);
        assert_eq!(get(&state, "/metrics/x").0, StatusCode::NOT_FOUND);
        assert_eq!(get(&state, "/healthz").0, StatusCode::OK);
        let req = Request::post("/status").body(()).expect("request");
        let resp = state.respond(&req);
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET, HEAD");
        let req = Request::head("/metrics").body(()).expect("request");
        assert_eq!(state.respond(&req).status(), StatusCode::OK);
        let (code, body) = get(&state, "/status");
        assert_eq!(code, StatusCode::OK);
        let doc: StatusDoc = serde_json::from_str(&body).expect("status json");
        assert!(doc.services.is_empty());
    }
}
