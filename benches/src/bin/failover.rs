//! The failover benchmark: HAProxy and Keyway side by side in front of one
//! Redis group managed by Sentinel.
//!
//! One command (`scripts/bench/failover.sh`, which builds in release mode and
//! runs this binary); the method and results are in `docs/failover.md`.
//!
//! For each scenario and each run it starts a fresh lab (`keyway_lab`: 1
//! master, 2 replicas, 3 sentinels, down-after 1000 ms, quorum 2, all on
//! 127.0.0.1), then, in front of it and at the same time:
//!
//! - HAProxy from `benches/failover/haproxy.cfg` (tcp-check `role:master`,
//!   inter 1s, rise 2, fall 2, `on-marked-down shutdown-sessions`);
//! - Keyway (`target/release/keyway run`, or `KEYWAY_BIN`) following the
//!   sentinels, probes every 100 ms with a 100 ms timeout;
//! - unless `--no-keyway-default`, a second Keyway with the default probe
//!   settings (500 ms / 250 ms).
//!
//! Per proxy, a **writer** sends `MULTI / INCR writer-<proxy> / RPUSH
//! writer-<proxy>:acked <seq> / EXEC` every 10 ms on one connection (200 ms
//! timeout per operation, connect included; a new connection after any error)
//! and a **probe** opens a fresh connection every 50 ms and sends `AUTH / INCR
//! probe-<proxy> / CONFIG GET port` (200 ms timeout). Every connection asks
//! `CONFIG GET port` (the proxies are L4: a connection stays on one node), so
//! every acknowledged write is known with the node that acknowledged it. One
//! thread per node polls `ROLE` every 10 ms to timestamp the promotion, and
//! one per sentinel polls `SENTINEL GET-MASTER-ADDR-BY-NAME` every 10 ms to
//! timestamp the moment a majority names the new master.
//!
//! Scenarios: (a) `kill -9` of the master; (b) `SIGSTOP` of the master,
//! `SIGCONT` once a sentinel majority named the new one; (b', letter `f`) the
//! same, `SIGCONT` only once every proxy writes to the new master; (c)
//! `SENTINEL FAILOVER`; (d) the old master restarted (original config, empty,
//! claiming master) after a `kill -9` failover completed; (e) every node
//! killed for `--outage-ms` (default 3000), then restarted, with two extra
//! clients per proxy (0.5 s into the outage and 0.5 s before its end) waiting
//! up to 15 s for `PONG`.
//!
//! A run ends when one node is the only one saying master, a sentinel majority
//! names it, and, for 2 s, every probe of every proxy was answered by it and
//! every write succeeded on it (at most 60 s after the event). That node is the
//! final master: found, not assumed (Sentinel can fail over twice). Then the
//! `acked` list on the final master says exactly which acknowledged writes
//! survived.
//!
//! Usage: `failover [--runs N] [--scenarios abfcde] [--outage-ms MS]
//! [--no-keyway-default] [--out DIR]`. Prints a Markdown report; per run, the
//! proxies' logs and a merged timeline go to `--out` (default
//! `target/bench/failover-<unix time>`). The password is the lab's throwaway
//! one; HAProxy's copy lives in a 0600 file in the lab's temporary directory.

use keyway_benches::{Proc, first_line, keyway_bin, start_haproxy_with};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use keyway_lab::{Client, Lab, Reply};

const HAPROXY_TEMPLATE: &str = include_str!("../../failover/haproxy.cfg");
/// The writer's pace.
const WRITE_EVERY: Duration = Duration::from_millis(10);
/// The probe's pace.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// One operation (connect, AUTH and the write included) of the writer or probe.
const OP_TIMEOUT: Duration = Duration::from_millis(200);
/// `ROLE` polling of every node.
const ROLE_EVERY: Duration = Duration::from_millis(10);
const ROLE_TIMEOUT: Duration = Duration::from_millis(100);
const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// A run is settled after this long with every probe and write on the final master.
const SETTLE_WINDOW_MS: f64 = 2000.0;
/// And gives up waiting for that this long after the event.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
const WARMUP_DEADLINE: Duration = Duration::from_secs(30);
const SWITCH_DEADLINE: Duration = Duration::from_secs(30);
/// Scenario (e): when the extra client connects, and how long it waits.
const OUTAGE_CLIENT_AFTER: Duration = Duration::from_millis(500);
const OUTAGE_CLIENT_WAIT: Duration = Duration::from_secs(15);

/// The proxies under test: key (file names, Redis keys) and label (tables).
const HAPROXY: &str = "haproxy";
const KEYWAY: &str = "keyway";
const KEYWAY_DEFAULT: &str = "keyway-default";

fn label(proxy: &str) -> &'static str {
    match proxy {
        HAPROXY => "HAProxy 2.6",
        KEYWAY => "Keyway 100ms",
        _ => "Keyway defaults",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Kill,
    Stop,
    StopLong,
    Failover,
    Restart,
    NoMaster,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Kill,
        Scenario::Stop,
        Scenario::StopLong,
        Scenario::Failover,
        Scenario::Restart,
        Scenario::NoMaster,
    ];

    fn letter(self) -> char {
        match self {
            Scenario::Kill => 'a',
            Scenario::Stop => 'b',
            Scenario::StopLong => 'f',
            Scenario::Failover => 'c',
            Scenario::Restart => 'd',
            Scenario::NoMaster => 'e',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::Kill => "(a) kill -9 master",
            Scenario::Stop => "(b) SIGSTOP master, SIGCONT at the switch",
            Scenario::StopLong => "(b') SIGSTOP master, SIGCONT once clients moved",
            Scenario::Failover => "(c) SENTINEL FAILOVER",
            Scenario::Restart => "(d) old master restarted",
            Scenario::NoMaster => "(e) no master (all nodes down)",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Scenario::Kill => "a-kill",
            Scenario::Stop => "b-sigstop",
            Scenario::StopLong => "b2-sigstop-long",
            Scenario::Failover => "c-sentinel-failover",
            Scenario::Restart => "d-old-master-restarted",
            Scenario::NoMaster => "e-no-master",
        }
    }
}

struct Args {
    runs: usize,
    scenarios: Vec<Scenario>,
    outage: Duration,
    keyway_default: bool,
    out: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        runs: 3,
        scenarios: Scenario::ALL.to_vec(),
        outage: Duration::from_millis(3000),
        keyway_default: true,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => args.runs = it.next().context("--runs N")?.parse()?,
            "--outage-ms" => {
                args.outage = Duration::from_millis(it.next().context("--outage-ms MS")?.parse()?)
            }
            "--scenarios" => {
                let letters = it.next().context("--scenarios LETTERS, e.g. abfcde")?;
                args.scenarios = Scenario::ALL
                    .into_iter()
                    .filter(|s| letters.contains(s.letter()))
                    .collect();
                if args.scenarios.is_empty() {
                    bail!("--scenarios: no scenario among a, b, f (b'), c, d, e in {letters:?}");
                }
            }
            "--no-keyway-default" => args.keyway_default = false,
            "--out" => args.out = Some(it.next().context("--out DIR")?.into()),
            other => bail!("unknown argument {other}; see the doc at the top of failover.rs"),
        }
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => {
            let exe = std::env::current_exe()?;
            let target = exe
                .parent()
                .and_then(Path::parent)
                .context("exe in target/<profile>/")?;
            target
                .join("bench")
                .join(format!("failover-{}", unix_secs()))
        }
    };
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let keyway = keyway_bin()?;
    let mut proxies = vec![HAPROXY, KEYWAY];
    if args.keyway_default {
        proxies.push(KEYWAY_DEFAULT);
    }

    println!("# Keyway failover benchmark\n");
    println!("{}", machine()?);
    println!(
        "HAProxy: {}",
        first_line(Command::new("haproxy").arg("-v"))?
    );
    println!(
        "Redis: {}",
        first_line(Command::new("redis-server").arg("--version"))?
    );
    println!("Keyway: {}", keyway.display());
    println!(
        "Runs per scenario: {}; (e) outage {} ms; artifacts: {}\n",
        args.runs,
        args.outage.as_millis(),
        out.display()
    );

    let started = Instant::now();
    let mut results: Vec<RunResult> = Vec::new();
    for run in 1..=args.runs {
        for &scenario in &args.scenarios {
            let dir = out.join(format!("{}-{run}", scenario.slug()));
            fs::create_dir_all(&dir)?;
            let t = Instant::now();
            eprintln!("== {} run {run}", scenario.name());
            match run_once(scenario, run, &proxies, &keyway, &dir, args.outage) {
                Ok(result) => {
                    eprintln!("{}", result.detail_lines());
                    results.push(result);
                }
                Err(e) => {
                    eprintln!("{} run {run} failed: {e:#}", scenario.name());
                    results.push(RunResult::failed(scenario, run, format!("{e:#}")));
                }
            }
            eprintln!(
                "   ({:.1} s; {:.0} s so far)",
                t.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
        }
    }

    println!("## Results (median (worst) of {} runs)\n", args.runs);
    println!("{}", summary_table(&args.scenarios, &proxies, &results));
    println!("## Every run\n");
    println!(
        "| run | proxy | event → good write | promotion → good write | failed ops | acked lost / acked | new conns elsewhere | (e) outage client | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        print!("{}", r.rows());
    }
    println!(
        "\nTotal time {:.0} s. Per run: proxies' logs and a merged timeline in {}.",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------

/// Times are milliseconds since the start of the run.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    wall: SystemTime,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            start: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn ms(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64() * 1000.0
    }

    fn now(&self) -> f64 {
        self.ms(Instant::now())
    }

    /// UTC time of day, as in the proxies' logs.
    fn wall(&self, ms: f64) -> String {
        let t = self.wall + Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let day = since.as_secs() % 86_400;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            day / 3600,
            day / 60 % 60,
            day % 60,
            since.subsec_millis()
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One writer operation.
#[derive(Debug, Clone)]
struct WriteRec {
    start: f64,
    end: f64,
    /// (port of the node that acknowledged, sequence number) or why it failed.
    result: Result<(u16, u64), String>,
}

/// One probe connection.
#[derive(Debug, Clone)]
struct ProbeRec {
    start: f64,
    end: f64,
    /// The node that answered `CONFIG GET port`, if any did.
    port: Option<u16>,
    /// Its `INCR` was acknowledged.
    wrote: bool,
    fail: Option<String>,
}

/// A change of the master one sentinel names (`SENTINEL
/// GET-MASTER-ADDR-BY-NAME`; `None`: no answer within 100 ms).
#[derive(Debug, Clone)]
struct VoteRec {
    t: f64,
    sentinel: u16,
    named: Option<u16>,
}

/// A change of what one node answers to `ROLE`: `master`, `slave` or `down`
/// (no answer within 100 ms).
#[derive(Debug, Clone)]
struct RoleRec {
    t: f64,
    port: u16,
    role: String,
}

impl OutageClient {
    fn describe(&self) -> String {
        format!(
            "connected at +{:.1} s: {} after {:.2} s",
            self.connected_at / 1000.0,
            self.outcome,
            (self.at - self.connected_at) / 1000.0
        )
    }
}

/// What an extra client of scenario (e) got.
#[derive(Debug, Clone)]
struct OutageClient {
    connected_at: f64,
    /// `served`, `closed`, `reset`, `timeout`, `connect failed`, `error reply`.
    outcome: String,
    /// When that happened.
    at: f64,
}

#[derive(Default)]
struct Records {
    writes: Mutex<Vec<WriteRec>>,
    probes: Mutex<Vec<ProbeRec>>,
}

struct Running {
    name: &'static str,
    addr: SocketAddr,
    log: PathBuf,
    records: Arc<Records>,
    _proc: Proc,
}

/// Per proxy, per run.
#[derive(Debug, Clone, Default)]
struct Outcome {
    event_to_good: Option<f64>,
    promo_to_good: Option<f64>,
    /// From the first time a sentinel majority names the final master.
    majority_to_good: Option<f64>,
    failed: usize,
    fail_kinds: BTreeMap<String, usize>,
    acked: usize,
    lost: Option<usize>,
    /// Probes answered by a node other than the final master after the
    /// reference point (promotion, or the event in (d)).
    wrong_count: usize,
    /// From the first to the last of them (ms).
    wrong_span: f64,
    /// The last of them, after the reference point (ms).
    wrong_last: Option<f64>,
    outage_clients: Vec<OutageClient>,
    /// (e): what the 50 ms probes got while every node was down.
    outage_probes: Option<String>,
}

#[derive(Debug, Clone)]
struct RunResult {
    scenario: Scenario,
    run: usize,
    error: Option<String>,
    settled: bool,
    /// Event to settled (ms).
    settle_ms: f64,
    /// Event to promotion (ms), when there is one.
    promotion_ms: Option<f64>,
    /// Event to "a majority of the sentinels (polled every 10 ms) names the
    /// final master" (ms); none when it did before the event.
    switch_ms: Option<f64>,
    /// Every node that started answering master after the warm-up, and when
    /// (from the event; negative before it): more than one means Sentinel
    /// failed over twice (or, in (d) and (e), a restarted node).
    masters_after: Vec<(u16, f64)>,
    final_port: u16,
    per_proxy: BTreeMap<&'static str, Outcome>,
}

impl RunResult {
    fn failed(scenario: Scenario, run: usize, error: String) -> RunResult {
        RunResult {
            scenario,
            run,
            error: Some(error),
            settled: false,
            settle_ms: 0.0,
            promotion_ms: None,
            switch_ms: None,
            masters_after: Vec::new(),
            final_port: 0,
            per_proxy: BTreeMap::new(),
        }
    }

    fn detail_lines(&self) -> String {
        self.rows()
    }

    fn rows(&self) -> String {
        let mut out = String::new();
        let id = format!("{} #{}", self.scenario.name(), self.run);
        if let Some(e) = &self.error {
            let _ = writeln!(out, "| {id} | - | run failed: {e} | | | | | | |");
            return out;
        }
        let masters = self
            .masters_after
            .iter()
            .map(|(port, t)| format!("{port} at {t:+.0} ms"))
            .collect::<Vec<_>>()
            .join(", ");
        let note = format!(
            "final master {}; promotion {}, sentinel majority switched {}, settled {}{}; \
             nodes turning master: {}",
            self.final_port,
            opt_ms(self.promotion_ms),
            opt_ms(self.switch_ms),
            secs(self.settle_ms),
            if self.settled { "" } else { " (NOT settled)" },
            if masters.is_empty() { "none" } else { &masters }
        );
        for (proxy, o) in &self.per_proxy {
            let kinds = o
                .fail_kinds
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let wrong = if o.wrong_count == 0 {
                "0".to_owned()
            } else {
                format!(
                    "{} ({} probes, last {})",
                    secs(o.wrong_span),
                    o.wrong_count,
                    opt_ms(o.wrong_last)
                )
            };
            let outage = if o.outage_clients.is_empty() {
                "-".to_owned()
            } else {
                format!(
                    "{}; 50 ms probes: {}",
                    o.outage_clients
                        .iter()
                        .map(OutageClient::describe)
                        .collect::<Vec<_>>()
                        .join("; "),
                    o.outage_probes.as_deref().unwrap_or("-")
                )
            };
            let _ = writeln!(
                out,
                "| {id} | {} | {} | {} | {}{} | {} / {} | {wrong} | {outage} | {note} |",
                label(proxy),
                opt_secs(o.event_to_good),
                opt_secs(o.promo_to_good),
                o.failed,
                if kinds.is_empty() {
                    String::new()
                } else {
                    format!(" ({kinds})")
                },
                o.lost.map_or("-".to_owned(), |l| l.to_string()),
                o.acked,
            );
        }
        out
    }
}

fn run_once(
    scenario: Scenario,
    run: usize,
    proxy_names: &[&'static str],
    keyway: &Path,
    out: &Path,
    outage: Duration,
) -> anyhow::Result<RunResult> {
    let lab = Lab::builder()
        .replicas(2)
        .sentinels(3)
        .down_after(DOWN_AFTER)
        .start()
        .context("starting the lab")?;
    let password = lab.password().context("lab password")?.to_owned();
    let clock = Clock::new();
    let stop = Arc::new(AtomicBool::new(false));
    let roles: Arc<Mutex<Vec<RoleRec>>> = Arc::default();
    let votes: Arc<Mutex<Vec<VoteRec>>> = Arc::default();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut marks: Vec<(f64, String)> = Vec::new();

    // Whatever happens below, the proxies and the lab are torn down on return
    // (Proc and Lab drops); the threads stop with `stop` and are joined here.
    let result = (|| -> anyhow::Result<RunResult> {
        let mut proxies = Vec::new();
        for &name in proxy_names {
            let port = keyway_lab::free_port();
            let proc = match name {
                HAPROXY => start_haproxy(&lab, port, &password)?,
                KEYWAY => start_keyway(&lab, keyway, name, port, Some(("100ms", "100ms")))?,
                _ => start_keyway(&lab, keyway, name, port, None)?,
            };
            proxies.push(Running {
                name,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                log: lab.dir().join(format!("{name}.log")),
                records: Arc::default(),
                _proc: proc,
            });
        }
        for node in lab.nodes() {
            let (addr, pw, roles, halt) =
                (node.addr(), password.clone(), roles.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                poll_roles(addr, &pw, clock, &roles, &halt);
            }));
        }
        for sentinel in lab.sentinels() {
            let (addr, pw, votes, halt) = (
                sentinel.addr(),
                lab.sentinel_password().map(str::to_owned),
                votes.clone(),
                stop.clone(),
            );
            let master_name = lab.master_name().to_owned();
            threads.push(thread::spawn(move || {
                poll_sentinel(addr, pw.as_deref(), &master_name, clock, &votes, &halt);
            }));
        }
        for p in &proxies {
            let name = p.name;
            let (addr, pw, rec, halt) = (p.addr, password.clone(), p.records.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                writer(addr, &pw, name, clock, &rec, &halt);
            }));
            let (addr, pw, rec, halt) = (p.addr, password.clone(), p.records.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                probe(addr, &pw, name, clock, &rec, &halt);
            }));
        }

        let initial = lab.node(0).port();
        marks.push((
            clock.now(),
            format!("lab up, master {initial}; proxies started"),
        ));
        wait_clean(&proxies, initial, clock, 1000.0, WARMUP_DEADLINE)
            .context("warm-up: proxies not all writing to the master")?;
        let warm = clock.now();
        thread::sleep(Duration::from_millis(500));

        let old = lab.node(0);
        let mut outage_clients: Vec<(&'static str, JoinHandle<OutageClient>)> = Vec::new();
        // (e): one client early in the outage, one late (when HAProxy has had
        // time to mark every node down).
        let outage_at = [
            OUTAGE_CLIENT_AFTER,
            outage
                .saturating_sub(OUTAGE_CLIENT_AFTER)
                .max(OUTAGE_CLIENT_AFTER),
        ];
        let mut back = None;
        // (e): when the last node is dead. A write or probe that started
        // between the event and this may still have been answered by the old
        // dataset.
        let mut down_at = None;
        let event;
        match scenario {
            Scenario::Kill => {
                event = clock.now();
                old.kill();
                marks.push((event, format!("EVENT kill -9 node {}", old.port())));
                let new = lab.wait_master_switch(old.addr(), SWITCH_DEADLINE)?;
                marks.push((clock.now(), format!("sentinel majority names {new}")));
            }
            Scenario::Stop => {
                event = clock.now();
                old.stop();
                marks.push((event, format!("EVENT SIGSTOP node {}", old.port())));
                let new = lab.wait_master_switch(old.addr(), SWITCH_DEADLINE)?;
                marks.push((clock.now(), format!("sentinel majority names {new}")));
                old.cont();
                marks.push((clock.now(), format!("SIGCONT node {}", old.port())));
            }
            Scenario::StopLong => {
                event = clock.now();
                old.stop();
                marks.push((event, format!("EVENT SIGSTOP node {}", old.port())));
                let new = lab.wait_master_switch(old.addr(), SWITCH_DEADLINE)?;
                marks.push((clock.now(), format!("sentinel majority names {new}")));
                let moved = wait_settled(&lab, &proxies, &roles, clock, 1000.0, SWITCH_DEADLINE);
                old.cont();
                marks.push((clock.now(), format!("SIGCONT node {}", old.port())));
                moved.context("with the old master stopped: proxies not all on the new master")?;
            }
            Scenario::Failover => {
                event = clock.now();
                marks.push((event, "EVENT SENTINEL FAILOVER".to_owned()));
                lab.failover()?;
                marks.push((clock.now(), "SENTINEL FAILOVER accepted".to_owned()));
                let new = lab.wait_master_switch(old.addr(), SWITCH_DEADLINE)?;
                marks.push((clock.now(), format!("sentinel majority names {new}")));
            }
            Scenario::Restart => {
                let t = clock.now();
                old.kill();
                marks.push((t, format!("kill -9 node {} (before the event)", old.port())));
                let new = lab.wait_master_switch(old.addr(), SWITCH_DEADLINE)?;
                marks.push((clock.now(), format!("sentinel majority names {new}")));
                wait_settled(&lab, &proxies, &roles, clock, 1000.0, SETTLE_DEADLINE)
                    .context("after the kill -9 failover: proxies not all on the new master")?;
                event = clock.now();
                marks.push((
                    event,
                    format!("EVENT restart node {} with its original config", old.port()),
                ));
                old.restart()?;
                marks.push((clock.now(), format!("node {} answers PING", old.port())));
            }
            Scenario::NoMaster => {
                event = clock.now();
                for node in lab.nodes() {
                    node.kill();
                }
                marks.push((event, "EVENT kill -9 every node".to_owned()));
                down_at = Some(clock.now());
                marks.push((clock.now(), "every node killed".to_owned()));
                for p in &proxies {
                    for after in outage_at {
                        let (addr, pw, name) = (p.addr, password.clone(), p.name);
                        let at = lab_instant(clock, event) + after;
                        outage_clients.push((
                            name,
                            thread::spawn(move || outage_client(addr, &pw, at, clock)),
                        ));
                    }
                }
                sleep_until(lab_instant(clock, event) + outage);
                let t = clock.now();
                marks.push((t, "restarting every node (node 0 first)".to_owned()));
                back = Some(t);
                for node in lab.nodes() {
                    node.restart()?;
                }
                marks.push((clock.now(), "every node answers PING".to_owned()));
            }
        }

        // The final master: the only node saying master, named by a sentinel
        // majority, every proxy on it; or, if that never happens, the one a
        // sentinel majority names at the deadline.
        let settled = wait_settled(
            &lab,
            &proxies,
            &roles,
            clock,
            SETTLE_WINDOW_MS,
            SETTLE_DEADLINE,
        );
        let settle = settled.is_some();
        let settled_at = clock.now();
        let final_port = match settled {
            Some(port) => port,
            None => lab
                .sentinel_master()
                .context("no sentinel majority names a master")?
                .port(),
        };
        let final_node = lab
            .nodes()
            .iter()
            .find(|n| n.port() == final_port)
            .context("the final master is not a lab node")?;
        marks.push((
            settled_at,
            format!(
                "{} (final master {final_port})",
                if settle { "settled" } else { "NOT settled" }
            ),
        ));
        thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        let mut outage_results: BTreeMap<&'static str, Vec<OutageClient>> = BTreeMap::new();
        for (name, h) in outage_clients {
            if let Ok(mut c) = h.join() {
                // From now on relative to the event.
                c.connected_at -= event;
                c.at -= event;
                outage_results.entry(name).or_default().push(c);
            }
        }
        for t in threads.drain(..) {
            let _ = t.join();
        }

        // Promotion: the final master's ROLE turning to master after the event
        // (after the restart in (e); none in (d), where it was master before).
        let roles = lock(&roles).clone();
        let promo_from = back.unwrap_or(event);
        let promotion = match scenario {
            Scenario::Restart => None,
            _ => roles
                .iter()
                .find(|r| r.t >= promo_from && r.port == final_port && r.role == "master")
                .map(|r| r.t),
        };
        let majority = majority_at(&lock(&votes), final_port, event);
        // Wrong-node probes count from the promotion; in (d) from the event.
        let wrong_from = promotion.unwrap_or(event);

        let mut per_proxy = BTreeMap::new();
        for p in &proxies {
            let acked_list = final_node
                .cmd(&["LRANGE", &format!("writer-{}:acked", p.name), "0", "-1"])?
                .into_result("LRANGE")?;
            let kept: BTreeSet<u64> = acked_list
                .as_array()
                .unwrap_or_default()
                .iter()
                .filter_map(|r| r.as_str()?.parse().ok())
                .collect();
            let writes = lock(&p.records.writes).clone();
            let probes = lock(&p.records.probes).clone();
            // Every acknowledged write counts, except: in (d), those of the
            // kill -9 failover before the event (that is scenario (a)); in
            // (e), those before every node was dead (the dataset went with
            // the nodes).
            let count_from = match scenario {
                Scenario::Restart => event,
                _ => down_at.unwrap_or(0.0),
            };
            let good_from = down_at.unwrap_or(event);
            let acked: Vec<u64> = writes
                .iter()
                .filter(|w| w.start >= count_from)
                .filter_map(|w| w.result.as_ref().ok().map(|&(_, seq)| seq))
                .collect();
            let lost = acked.iter().filter(|s| !kept.contains(s)).count();
            let good = writes
                .iter()
                .find(|w| {
                    w.start >= good_from && matches!(w.result, Ok((port, _)) if port == final_port)
                })
                .map(|w| w.end);
            let mut fail_kinds = BTreeMap::new();
            let mut failed = 0;
            for w in writes.iter().filter(|w| w.start >= event) {
                if let Err(kind) = &w.result {
                    failed += 1;
                    *fail_kinds.entry(kind.clone()).or_insert(0) += 1;
                }
            }
            let wrong: Vec<&ProbeRec> = probes
                .iter()
                .filter(|r| r.start >= wrong_from && r.port.is_some_and(|port| port != final_port))
                .collect();
            let outage_probes = back.map(|back| {
                let during: Vec<&ProbeRec> = probes
                    .iter()
                    .filter(|r| r.start >= good_from && r.end <= back)
                    .collect();
                let mut kinds: BTreeMap<String, Vec<f64>> = BTreeMap::new();
                for r in &during {
                    let kind = r.fail.clone().unwrap_or_else(|| "answered".to_owned());
                    kinds.entry(kind).or_default().push(r.end - r.start);
                }
                kinds
                    .into_iter()
                    .map(|(k, v)| format!("{k} {} (median {:.1} ms)", v.len(), median(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            let is_restart = scenario == Scenario::Restart;
            per_proxy.insert(
                p.name,
                Outcome {
                    event_to_good: if is_restart {
                        None
                    } else {
                        good.map(|g| g - event)
                    },
                    promo_to_good: match (good, promotion) {
                        (Some(g), Some(pr)) => Some(g - pr),
                        _ => None,
                    },
                    majority_to_good: match (good, majority) {
                        (Some(g), Some(m)) => Some(g - m),
                        _ => None,
                    },
                    failed,
                    fail_kinds,
                    acked: acked.len(),
                    lost: Some(lost),
                    wrong_count: wrong.len(),
                    wrong_span: match (wrong.first(), wrong.last()) {
                        (Some(a), Some(b)) => b.end - a.start,
                        _ => 0.0,
                    },
                    wrong_last: wrong.last().map(|r| r.end - wrong_from),
                    outage_clients: outage_results.remove(p.name).unwrap_or_default(),
                    outage_probes,
                },
            );
        }

        write_artifacts(
            out, &lab, &proxies, &roles, &marks, clock, event, final_port,
        )?;

        Ok(RunResult {
            scenario,
            run,
            error: None,
            settled: settle,
            settle_ms: settled_at - event,
            promotion_ms: promotion.map(|p| p - event),
            switch_ms: majority_at(&lock(&votes), final_port, event).map(|t| t - event),
            masters_after: roles
                .iter()
                .filter(|r| r.t >= warm && r.role == "master")
                .map(|r| (r.port, r.t - event))
                .collect(),
            final_port,
            per_proxy,
        })
    })();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if result.is_err() {
        // Keep what there is for the post-mortem.
        for name in proxy_names {
            let _ = fs::copy(
                lab.dir().join(format!("{name}.log")),
                out.join(format!("{name}.log")),
            );
        }
    }
    result
}

fn lab_instant(clock: Clock, ms: f64) -> Instant {
    clock.start + Duration::from_secs_f64(ms / 1000.0)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

/// Waits until, for the last `window` ms, every probe of every proxy was
/// answered by `port` with its write acknowledged, and every write succeeded
/// on `port`.
fn wait_clean(
    proxies: &[Running],
    port: u16,
    clock: Clock,
    window: f64,
    deadline: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    loop {
        if proxies.iter().all(|p| clean(p, port, clock.now(), window)) {
            return Ok(());
        }
        if Instant::now() > until {
            let state = proxies
                .iter()
                .map(|p| format!("{}: {}", p.name, last_state(p)))
                .collect::<Vec<_>>()
                .join("; ");
            bail!("not clean on node {port} within {deadline:?}: {state}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn clean(p: &Running, port: u16, now: f64, window: f64) -> bool {
    let from = now - window;
    let probes = lock(&p.records.probes);
    let recent: Vec<&ProbeRec> = probes.iter().filter(|r| r.start >= from).collect();
    // At least 80 % of the expected probes and writes (a loaded machine
    // sleeps late), and every one of them good.
    let probes_ok = recent.len() as f64 >= 0.8 * window / PROBE_EVERY.as_millis() as f64
        && recent.iter().all(|r| r.port == Some(port) && r.wrote);
    drop(probes);
    let writes = lock(&p.records.writes);
    let recent: Vec<&WriteRec> = writes.iter().filter(|w| w.start >= from).collect();
    probes_ok
        && recent.len() as f64 >= 0.5 * window / WRITE_EVERY.as_millis() as f64
        && recent
            .iter()
            .all(|w| matches!(w.result, Ok((p, _)) if p == port))
}

fn last_state(p: &Running) -> String {
    let probe = lock(&p.records.probes).last().cloned();
    let write = lock(&p.records.writes).last().cloned();
    format!("last probe {probe:?}, last write {write:?}")
}

/// Waits until one node is the only one saying master, a sentinel majority
/// names it, and every proxy has been clean on it (see [`clean`]) for the
/// last `window` ms; returns its port, or `None` after `deadline`. The node is
/// found, not given: a loaded machine can make Sentinel fail over twice.
fn wait_settled(
    lab: &Lab,
    proxies: &[Running],
    roles: &Mutex<Vec<RoleRec>>,
    clock: Clock,
    window: f64,
    deadline: Duration,
) -> Option<u16> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(port) = single_master(roles)
            && proxies.iter().all(|p| clean(p, port, clock.now(), window))
            && lab.sentinel_master().map(|a| a.port()) == Some(port)
        {
            return Some(port);
        }
        if Instant::now() > until {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The one node whose last `ROLE` answer was master, if exactly one.
fn single_master(roles: &Mutex<Vec<RoleRec>>) -> Option<u16> {
    let roles = lock(roles);
    let mut latest: BTreeMap<u16, &str> = BTreeMap::new();
    for r in roles.iter() {
        latest.insert(r.port, &r.role);
    }
    let masters: Vec<u16> = latest
        .iter()
        .filter(|(_, role)| **role == "master")
        .map(|(&port, _)| port)
        .collect();
    match masters.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

/// Polls `ROLE` of one node every 10 ms on one connection and records changes.
fn poll_roles(
    addr: SocketAddr,
    password: &str,
    clock: Clock,
    roles: &Mutex<Vec<RoleRec>>,
    stop: &AtomicBool,
) {
    let mut client: Option<Client> = None;
    let mut last = String::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        sleep_until(next);
        next = (next + ROLE_EVERY).max(Instant::now());
        if client.is_none() {
            client = Client::connect(addr, Some(password), ROLE_TIMEOUT).ok();
        }
        let role = client
            .as_mut()
            .and_then(|c| c.cmd(&["ROLE"]).ok())
            .and_then(|r| r.as_array()?.first()?.as_str().map(str::to_owned));
        let role = match role {
            Some(role) => role,
            None => {
                client = None;
                "down".to_owned()
            }
        };
        if role != last {
            lock(roles).push(RoleRec {
                t: clock.now(),
                port: addr.port(),
                role: role.clone(),
            });
            last = role;
        }
    }
}

/// Polls one sentinel every 10 ms for the master it names and records changes.
fn poll_sentinel(
    addr: SocketAddr,
    password: Option<&str>,
    master_name: &str,
    clock: Clock,
    votes: &Mutex<Vec<VoteRec>>,
    stop: &AtomicBool,
) {
    let mut client: Option<Client> = None;
    let mut last: Option<Option<u16>> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        sleep_until(next);
        next = (next + ROLE_EVERY).max(Instant::now());
        if client.is_none() {
            client = Client::connect(addr, password, ROLE_TIMEOUT).ok();
        }
        let named = client
            .as_mut()
            .and_then(|c| {
                c.cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name])
                    .ok()
            })
            .and_then(|r| r.as_array()?.get(1)?.as_str()?.parse::<u16>().ok());
        if named.is_none() {
            client = None;
        }
        if last != Some(named) {
            lock(votes).push(VoteRec {
                t: clock.now(),
                sentinel: addr.port(),
                named,
            });
            last = Some(named);
        }
    }
}

/// The first time at or after `from` when a majority of the sentinels names
/// `port`, if it did not already before `from`.
fn majority_at(votes: &[VoteRec], port: u16, from: f64) -> Option<f64> {
    let sentinels: BTreeSet<u16> = votes.iter().map(|v| v.sentinel).collect();
    let mut latest: BTreeMap<u16, Option<u16>> = BTreeMap::new();
    let mut before = false;
    for v in votes {
        latest.insert(v.sentinel, v.named);
        let named = latest.values().filter(|n| **n == Some(port)).count();
        let majority = named * 2 > sentinels.len();
        if v.t < from {
            before = majority;
        } else if majority {
            return (!before).then_some(v.t);
        }
    }
    None
}

/// The writer: a write every 10 ms on one connection, a new one after any error.
fn writer(
    addr: SocketAddr,
    password: &str,
    name: &str,
    clock: Clock,
    rec: &Records,
    stop: &AtomicBool,
) {
    let key = format!("writer-{name}");
    let list = format!("{key}:acked");
    let mut conn: Option<Conn> = None;
    let mut seq = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        sleep_until(next);
        next = (next + WRITE_EVERY).max(Instant::now());
        seq += 1;
        let start = Instant::now();
        let deadline = start + OP_TIMEOUT;
        let result = write_once(&mut conn, addr, password, &key, &list, seq, deadline);
        if result.is_err() {
            conn = None;
        }
        lock(&rec.writes).push(WriteRec {
            start: clock.ms(start),
            end: clock.now(),
            result: result.map(|port| (port, seq)),
        });
    }
}

fn write_once(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    password: &str,
    key: &str,
    list: &str,
    seq: u64,
    deadline: Instant,
) -> Result<u16, String> {
    if conn.is_none() {
        *conn = Some(Conn::open(addr, password, deadline)?);
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".to_owned());
    };
    let seq = seq.to_string();
    let mut req = encode(&["MULTI"]);
    req.extend(encode(&["INCR", key]));
    req.extend(encode(&["RPUSH", list, &seq]));
    req.extend(encode(&["EXEC"]));
    let replies = c.round_trip(&req, 4, deadline)?;
    match replies.last() {
        Some(Reply::Array(Some(items)))
            if items.len() == 2 && items.iter().all(|i| i.as_int().is_some()) =>
        {
            Ok(c.port)
        }
        // The first error tells why (e.g. READONLY at queue time, then EXECABORT).
        _ => Err(replies
            .iter()
            .find_map(|r| r.as_error().map(error_word))
            .unwrap_or_else(|| "unexpected reply".to_owned())),
    }
}

/// The probe: a fresh connection every 50 ms.
fn probe(
    addr: SocketAddr,
    password: &str,
    name: &str,
    clock: Clock,
    rec: &Records,
    stop: &AtomicBool,
) {
    let key = format!("probe-{name}");
    let mut req = encode(&["AUTH", password]);
    req.extend(encode(&["INCR", &key]));
    req.extend(encode(&["CONFIG", "GET", "port"]));
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        sleep_until(next);
        next = (next + PROBE_EVERY).max(Instant::now());
        let start = Instant::now();
        let deadline = start + OP_TIMEOUT;
        let result = connect(addr, deadline).and_then(|stream| {
            let mut c = Conn {
                stream,
                buf: Vec::new(),
                port: 0,
            };
            c.round_trip(&req, 3, deadline)
        });
        let r = match result {
            Ok(replies) => {
                let port = replies.get(2).and_then(config_port);
                let wrote = replies.get(1).is_some_and(|r| r.as_int().is_some());
                let fail = if wrote {
                    None
                } else {
                    Some(
                        replies
                            .iter()
                            .find_map(|r| r.as_error().map(error_word))
                            .unwrap_or_else(|| "unexpected reply".to_owned()),
                    )
                };
                ProbeRec {
                    start: clock.ms(start),
                    end: clock.now(),
                    port,
                    wrote,
                    fail,
                }
            }
            Err(kind) => ProbeRec {
                start: clock.ms(start),
                end: clock.now(),
                port: None,
                wrote: false,
                fail: Some(kind),
            },
        };
        lock(&rec.probes).push(r);
    }
}

/// Scenario (e): connects at `at`, sends `AUTH` + `PING` and waits up to 15 s.
fn outage_client(addr: SocketAddr, password: &str, at: Instant, clock: Clock) -> OutageClient {
    sleep_until(at);
    let connected_at = clock.now();
    let deadline = Instant::now() + OUTAGE_CLIENT_WAIT;
    let mut req = encode(&["AUTH", password]);
    req.extend(encode(&["PING"]));
    let result = connect(addr, Instant::now() + Duration::from_secs(1)).and_then(|stream| {
        let mut c = Conn {
            stream,
            buf: Vec::new(),
            port: 0,
        };
        c.round_trip(&req, 2, deadline)
    });
    let outcome = match result {
        Ok(replies) if matches!(replies.get(1), Some(Reply::Simple(s)) if s == "PONG") => {
            "served".to_owned()
        }
        Ok(replies) => format!(
            "error reply {}",
            replies
                .iter()
                .find_map(|r| r.as_error().map(error_word))
                .unwrap_or_default()
        ),
        Err(kind) => kind,
    };
    OutageClient {
        connected_at,
        outcome,
        at: clock.now(),
    }
}

// ---------------------------------------------------------------------------
// A minimal pipelining RESP2 client with a deadline per operation
// ---------------------------------------------------------------------------

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The node behind the proxy (from `CONFIG GET port`).
    port: u16,
}

impl Conn {
    /// Connects, authenticates and asks which node it reached.
    fn open(addr: SocketAddr, password: &str, deadline: Instant) -> Result<Conn, String> {
        let stream = connect(addr, deadline)?;
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            port: 0,
        };
        let mut req = encode(&["AUTH", password]);
        req.extend(encode(&["CONFIG", "GET", "port"]));
        let replies = conn.round_trip(&req, 2, deadline)?;
        if let Some(e) = replies.iter().find_map(Reply::as_error) {
            return Err(error_word(e));
        }
        conn.port = replies
            .get(1)
            .and_then(config_port)
            .ok_or_else(|| "unexpected reply".to_owned())?;
        Ok(conn)
    }

    /// Sends `req` and reads `n` replies, all before `deadline`.
    fn round_trip(
        &mut self,
        req: &[u8],
        n: usize,
        deadline: Instant,
    ) -> Result<Vec<Reply>, String> {
        self.stream
            .set_write_timeout(Some(remaining(deadline)?))
            .map_err(io_kind)?;
        self.stream.write_all(req).map_err(io_kind)?;
        let mut replies = Vec::with_capacity(n);
        let mut chunk = [0u8; 4096];
        while replies.len() < n {
            if let Some((reply, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                replies.push(reply);
                continue;
            }
            self.stream
                .set_read_timeout(Some(remaining(deadline)?))
                .map_err(io_kind)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("closed".to_owned()),
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_kind(e)),
            }
        }
        Ok(replies)
    }
}

fn connect(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, String> {
    let stream =
        TcpStream::connect_timeout(&addr, remaining(deadline)?).map_err(|e| match e.kind() {
            ErrorKind::ConnectionRefused => "refused".to_owned(),
            _ => format!("connect {}", io_kind(e)),
        })?;
    stream.set_nodelay(true).map_err(io_kind)?;
    Ok(stream)
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err("timeout".to_owned())
    } else {
        Ok(left)
    }
}

fn io_kind(e: io::Error) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "timeout".to_owned(),
        ErrorKind::ConnectionReset => "reset".to_owned(),
        ErrorKind::BrokenPipe => "broken pipe".to_owned(),
        ErrorKind::ConnectionRefused => "refused".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The first word of an error reply, e.g. `READONLY`, `LOADING`, `EXECABORT`.
fn error_word(e: &str) -> String {
    e.split_whitespace().next().unwrap_or("ERR").to_owned()
}

fn config_port(reply: &Reply) -> Option<u16> {
    reply.as_array()?.get(1)?.as_str()?.parse().ok()
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One RESP2 reply from the front of `buf`: `None` if incomplete.
fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..end].split_first() else {
        return Err("protocol".to_owned());
    };
    let line = std::str::from_utf8(line).map_err(|_| "protocol".to_owned())?;
    let after = end + 2;
    let int = || line.parse::<i64>().map_err(|_| "protocol".to_owned());
    Ok(match kind {
        b'+' => Some((Reply::Simple(line.to_owned()), after)),
        b'-' => Some((Reply::Error(line.to_owned()), after)),
        b':' => Some((Reply::Int(int()?), after)),
        b'$' => {
            let len = int()?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let len = usize::try_from(len).map_err(|_| "protocol".to_owned())?;
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            Some((
                Reply::Bulk(Some(buf[after..after + len].to_vec())),
                after + len + 2,
            ))
        }
        b'*' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..n {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Some((Reply::Array(Some(items)), at))
        }
        _ => return Err("protocol".to_owned()),
    })
}

// ---------------------------------------------------------------------------
// Proxies
// ---------------------------------------------------------------------------

fn start_haproxy(lab: &Lab, port: u16, password: &str) -> anyhow::Result<Proc> {
    let nodes = lab.nodes();
    if nodes.len() != 3 {
        bail!(
            "the HAProxy template lists 3 nodes, the lab has {}",
            nodes.len()
        );
    }
    let cfg = HAPROXY_TEMPLATE
        .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
        .replace("@NODE0@", &nodes[0].addr().to_string())
        .replace("@NODE1@", &nodes[1].addr().to_string())
        .replace("@NODE2@", &nodes[2].addr().to_string())
        .replace("@PASSWORD@", password);
    start_haproxy_with(
        &lab.dir().join("haproxy.cfg"),
        &cfg,
        &lab.dir().join(format!("{HAPROXY}.log")),
    )
}

/// Keyway following the lab's sentinels; `check` is (interval, timeout), or
/// `None` for the defaults.
fn start_keyway(
    lab: &Lab,
    bin: &Path,
    name: &str,
    port: u16,
    check: Option<(&str, &str)>,
) -> anyhow::Result<Proc> {
    let quote = |a: SocketAddr| format!("\"{a}\"");
    let nodes: Vec<String> = lab.nodes().iter().map(|n| quote(n.addr())).collect();
    let sentinels: Vec<String> = lab.sentinels().iter().map(|s| quote(s.addr())).collect();
    let password_file = lab.password_file().context("lab password file")?;
    let check = match check {
        Some((interval, timeout)) => {
            format!("\n[service.check]\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\n")
        }
        None => String::new(),
    };
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [log]\nlevel = \"warn,keyway_discovery=info\"\n\n\
         [[service]]\nname = \"redis\"\nlisten = \"127.0.0.1:{port}\"\n\
         nodes = [{}]\npassword_file = {password_file:?}\n{check}\n\
         [service.sentinel]\nmaster_name = \"{}\"\nnodes = [{}]\n",
        nodes.join(", "),
        lab.master_name(),
        sentinels.join(", "),
    );
    let path = lab.dir().join(format!("{name}.toml"));
    fs::write(&path, cfg)?;
    let log = fs::File::create(lab.dir().join(format!("{name}.log")))?;
    let child = Command::new(bin)
        .args(["run", "-c"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Proc(child))
}

// ---------------------------------------------------------------------------
// Artifacts and report
// ---------------------------------------------------------------------------

/// Copies the proxies' logs and writes `timeline.txt`: the run's marks, every
/// ROLE change, and every change of state of each writer and probe (first
/// failure of a streak with its reason, first success after, node changes),
/// in time order, relative to the event and in UTC as in the logs.
#[allow(clippy::too_many_arguments)]
fn write_artifacts(
    out: &Path,
    lab: &Lab,
    proxies: &[Running],
    roles: &[RoleRec],
    marks: &[(f64, String)],
    clock: Clock,
    event: f64,
    final_port: u16,
) -> anyhow::Result<()> {
    let mut lines: Vec<(f64, String)> = marks.to_vec();
    for r in roles {
        lines.push((r.t, format!("ROLE node {} -> {}", r.port, r.role)));
    }
    for p in proxies {
        let _ = fs::copy(&p.log, out.join(format!("{}.log", p.name)));
        let mut last = String::new();
        let mut streak = 0usize;
        for w in lock(&p.records.writes).iter() {
            let state = match &w.result {
                Ok((port, _)) => format!("ok on {port}"),
                Err(kind) => format!("failing ({kind})"),
            };
            if state == last {
                streak += 1;
                continue;
            }
            if !last.is_empty() {
                lines.push((
                    w.start,
                    format!("{} writer: {state} (after {streak} x {last})", p.name),
                ));
            } else {
                lines.push((w.start, format!("{} writer: {state}", p.name)));
            }
            last = state;
            streak = 1;
        }
        let mut last = String::new();
        for r in lock(&p.records.probes).iter() {
            let state = match (r.port, &r.fail) {
                (Some(port), None) => format!("answered by {port}"),
                (Some(port), Some(f)) => format!("answered by {port}, write refused ({f})"),
                (None, Some(f)) => format!("failed ({f}, {:.0} ms)", r.end - r.start),
                (None, None) => "no port".to_owned(),
            };
            // Failures of different durations are one state.
            let key = state.split(',').next().unwrap_or_default().to_owned();
            if key != last {
                lines.push((r.start, format!("{} probe: {state}", p.name)));
                last = key;
            }
        }
    }
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut text = format!(
        "# t (ms from the event) | UTC | what; final master {final_port}; nodes {}\n",
        lab.nodes()
            .iter()
            .map(|n| n.port().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (t, what) in lines {
        let _ = writeln!(text, "{:>9.1} | {} | {what}", t - event, clock.wall(t));
    }
    fs::write(out.join("timeline.txt"), text)?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn secs(ms: f64) -> String {
    format!("{:.2} s", ms / 1000.0)
}

fn opt_secs(ms: Option<f64>) -> String {
    ms.map_or("-".to_owned(), secs)
}

fn opt_ms(ms: Option<f64>) -> String {
    ms.map_or("-".to_owned(), |m| format!("+{:.0} ms", m))
}

/// "median (worst)" of the values, `-` when there are none. `worst` is the
/// largest; `missing` counts runs without a value (e.g. no good write at all).
fn stat(values: &[Option<f64>], fmt: impl Fn(f64) -> String) -> String {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    if present.is_empty() {
        return "-".to_owned();
    }
    let worst = present.iter().copied().fold(f64::MIN, f64::max);
    let missing = values.len() - present.len();
    let med = median(present);
    let mut s = if values.len() == 1 {
        fmt(med)
    } else {
        format!("{} ({})", fmt(med), fmt(worst))
    };
    if missing > 0 {
        let _ = write!(s, " [{missing} run(s) without]");
    }
    s
}

fn summary_table(
    scenarios: &[Scenario],
    proxies: &[&'static str],
    results: &[RunResult],
) -> String {
    let mut out = String::new();
    let _ = write!(out, "| scenario | metric |");
    for p in proxies {
        let _ = write!(out, " {} |", label(p));
    }
    let _ = writeln!(out, " Keyway target |");
    let _ = write!(out, "|---|---|");
    for _ in proxies {
        let _ = write!(out, "---|");
    }
    let _ = writeln!(out, "---|");
    let time = |ms: f64| format!("{:.2} s", ms / 1000.0);
    let plus = |ms: f64| format!("{:+.2} s", ms / 1000.0);
    let count = |n: f64| format!("{n:.0}");
    for &s in scenarios {
        let runs: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.scenario == s && r.error.is_none())
            .collect();
        let failed_runs = results
            .iter()
            .filter(|r| r.scenario == s && r.error.is_some())
            .count();
        let get = |p: &str, f: &dyn Fn(&Outcome) -> Option<f64>| -> Vec<Option<f64>> {
            runs.iter()
                .map(|r| r.per_proxy.get(p).and_then(f))
                .collect()
        };
        type Metric<'a> = (
            &'a str,
            Box<dyn Fn(&Outcome) -> Option<f64>>,
            &'a dyn Fn(f64) -> String,
            &'a str,
        );
        let mut metrics: Vec<Metric<'_>> = Vec::new();
        if s != Scenario::Restart {
            metrics.push((
                "event → first good write",
                Box::new(|o| o.event_to_good),
                &time,
                "",
            ));
            metrics.push((
                if s == Scenario::NoMaster {
                    "master back (ROLE) → first good write"
                } else {
                    "promotion → first good write"
                },
                Box::new(|o| o.promo_to_good),
                &plus,
                match s {
                    Scenario::Kill | Scenario::Stop | Scenario::StopLong => "≤ +0.10 s",
                    _ => "",
                },
            ));
        }
        if s != Scenario::Restart && s != Scenario::NoMaster {
            metrics.push((
                "sentinel majority names it → first good write",
                Box::new(|o| o.majority_to_good),
                &plus,
                "",
            ));
        }
        metrics.push((
            "failed writes",
            Box::new(|o| Some(o.failed as f64)),
            &count,
            "",
        ));
        metrics.push((
            "acknowledged writes lost",
            Box::new(|o| o.lost.map(|l| l as f64)),
            &count,
            if s == Scenario::Failover {
                "≤ 10"
            } else {
                ""
            },
        ));
        metrics.push((
            if s == Scenario::Restart {
                "new connections on another node (span)"
            } else {
                "new connections on another node after promotion (span)"
            },
            Box::new(|o| Some(o.wrong_span)),
            &time,
            if s == Scenario::Restart { "0 s" } else { "" },
        ));
        metrics.push((
            "… probes answered by another node",
            Box::new(|o| Some(o.wrong_count as f64)),
            &count,
            "",
        ));
        let name = if failed_runs > 0 {
            format!("{} ({failed_runs} run(s) failed)", s.name())
        } else {
            s.name().to_owned()
        };
        for (i, (metric, f, fmt, target)) in metrics.iter().enumerate() {
            let _ = write!(
                out,
                "| {} | {metric} |",
                if i == 0 { name.as_str() } else { "" }
            );
            for p in proxies {
                let _ = write!(out, " {} |", stat(&get(p, f.as_ref()), fmt));
            }
            let _ = writeln!(out, " {target} |");
        }
        if s == Scenario::NoMaster {
            for i in 0..2 {
                let at = runs
                    .iter()
                    .flat_map(|r| r.per_proxy.values())
                    .find_map(|o| o.outage_clients.get(i))
                    .map_or(0.0, |c| c.connected_at);
                let _ = write!(
                    out,
                    "| | a new client connecting at +{:.1} s gets |",
                    at / 1000.0
                );
                for p in proxies {
                    let clients: Vec<&OutageClient> = runs
                        .iter()
                        .filter_map(|r| r.per_proxy.get(p)?.outage_clients.get(i))
                        .collect();
                    let _ = write!(out, " {} |", outage_summary(&clients));
                }
                let _ = writeln!(out, " held, then served |");
            }
        }
    }
    out
}

/// "served after 2.80 s (2.95)" when every run got the same, else each run's.
fn outage_summary(clients: &[&OutageClient]) -> String {
    let Some(first) = clients.first() else {
        return "-".to_owned();
    };
    let waits: Vec<Option<f64>> = clients
        .iter()
        .map(|c| Some(c.at - c.connected_at))
        .collect();
    if clients.iter().all(|c| c.outcome == first.outcome) {
        format!(
            "{} after {}",
            first.outcome,
            stat(&waits, |ms| format!("{:.2} s", ms / 1000.0))
        )
    } else {
        clients
            .iter()
            .map(|c| {
                format!(
                    "{} after {:.2} s",
                    c.outcome,
                    (c.at - c.connected_at) / 1000.0
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The shared machine line plus the load average, since the failover timings
/// depend on how busy the machine was.
fn machine() -> anyhow::Result<String> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    Ok(format!(
        "{}; load average at start {}",
        keyway_benches::machine()?,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    ))
}
