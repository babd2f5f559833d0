//! Keyway: an L4 proxy in front of a Redis high-availability group that forwards
//! each client connection to the confirmed master only.
//!
//! This crate is the binary's library half: wiring, the accept loop, sessions and
//! the command line. Protocol logic lives elsewhere: `keyway-config` (files to a
//! validated `Config`), `keyway-discovery` (probes and the pure routing decision),
//! `keyway-io` (the forwarding engine), `keyway-lab` (real Redis for tests and
//! `keyway lab`).
//!
//! Modules:
//! - [`cli`]: the `keyway` command line (`run`, `check`, `lab`, `status`).
//! - [`proxy`]: [`Proxy`], every service of a config running: monitors and
//!   listeners; reload in place and drain.
//! - [`serve`]: the process around a proxy: READY / RELOADING / STOPPING /
//!   WATCHDOG for systemd, SIGHUP reload, SIGTERM drain.
//! - [`control`]: the control-plane thread (monitors, admin HTTP), isolated
//!   from the data path's workers.
//! - [`listener`]: the accept loop of one service, with its limits.
//! - [`handler`]: one session: read the PROXY header (when the service wants
//!   one), hold until a route exists, connect, forward, log.
//! - [`proxy_protocol`]: the PROXY protocol header (v1 and v2), parsed without
//!   I/O.
//! - [`metrics`]: Prometheus metrics: data-path handles per service, control
//!   plane read from the monitors' snapshots at scrape time.
//! - [`admin`]: the admin HTTP server: `/metrics`, `/healthz`, `/status`.
//! - [`status`]: the `/status` document and `keyway status`, which prints it.
//! - [`logging`]: tracing set-up from `[log]`.
//! - [`signals`]: SIGHUP means reload, SIGTERM / SIGINT mean drain and stop.
//! - [`notify`]: systemd's notify protocol without libsystemd.
//! - [`lab`]: `keyway lab`, a local HA lab with Keyway in front.

pub mod admin;
pub mod cli;
pub mod control;
pub mod handler;
pub mod lab;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod proxy_protocol;
pub mod serve;
pub mod signals;
pub mod status;
pub mod workers;

pub use proxy::Proxy;
