//! The load benchmark: direct Redis, HAProxy, Keyway and the epoll floor side
//! by side.
//!
//! One command (`scripts/bench/load.sh`, which raises `ulimit -n`, builds in
//! release mode and runs this binary). It starts a lab master
//! (`keyway_lab`, no replica), HAProxy from `benches/haproxy/haproxy.cfg`,
//! Keyway from a generated config and `floor` (`src/bin/floor.rs`), all on
//! 127.0.0.1, then:
//!
//! 1. runs `redis-benchmark` against direct, HAProxy, Keyway and the floor
//!    interleaved (A B C D A B C D ...) for each workload, `--rounds` rounds,
//!    and records ops/s, p50 and p99, each process's CPU time (utime + stime
//!    from /proc/PID/stat, delta per run) per million requests and per GB
//!    (bytes counted by Redis itself, `total_net_input_bytes` +
//!    `total_net_output_bytes`), then prints medians and the Keyway/HAProxy,
//!    Keyway/direct, Keyway/floor and floor/HAProxy ratios;
//! 2. opens `--idle` idle sessions (connect, one `AUTH` round trip, then
//!    nothing) through HAProxy and through Keyway and reports RSS per session;
//! 3. runs one `GET` workload at 100, 1,000 and 10,000 concurrent clients
//!    through Keyway and HAProxy and reports CPU per request and peak RSS.
//!
//! 4. with `--syscalls`, counts each proxy's syscalls per request with
//!    `strace -c -f` (a slow, separate run: only the counts mean anything).
//!
//! The floor is the least work an L4 proxy on epoll can do: one thread, one
//! recvfrom and one sendto per direction per request, nothing else. Most of a
//! proxy's CPU is the kernel's TCP work inside those calls, which no proxy can
//! avoid; the floor measures that part, so `keyway/floor` says how much Keyway
//! spends above it and `floor/haproxy` how low a CPU ratio against HAProxy can
//! go at all. It is a byte pipe (redis-benchmark's `AUTH` goes through it to
//! Redis), and only part of the load and syscall runs, not of the idle-session
//! and scale ones.
//!
//! Usage: `load [--rounds N] [--quick] [--idle N] [--no-load] [--syscalls] [--no-memory] [--no-scale]
//! [--keyway-workers N]` (the last adds a second Keyway run with
//! `[runtime] workers = N`, to compare worker counts).
//! The password is the lab's throwaway one; it goes to redis-benchmark with `-a`
//! and into a 0600 HAProxy config in the lab's temporary directory, never into
//! the repository.

use keyway_benches::{Proc, first_line, keyway_bin, machine, sibling_bin, start_haproxy_with};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keyway_lab::Lab;

/// Keyway's `max_sessions`: above anything the descriptor limit lets through.
const MAX_SESSIONS: usize = 40_000;
const HAPROXY_TEMPLATE: &str = include_str!("../../haproxy/haproxy.cfg");

struct Args {
    rounds: usize,
    quick: bool,
    load: bool,
    syscalls: bool,
    memory: bool,
    scale: bool,
    idle: usize,
    keyway_workers: Option<usize>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        rounds: 3,
        quick: false,
        load: true,
        syscalls: false,
        memory: true,
        scale: true,
        idle: 10_000,
        keyway_workers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => args.rounds = it.next().context("--rounds N")?.parse()?,
            "--idle" => args.idle = it.next().context("--idle N")?.parse()?,
            "--keyway-workers" => {
                args.keyway_workers = Some(it.next().context("--keyway-workers N")?.parse()?)
            }
            "--quick" => args.quick = true,
            "--no-load" => args.load = false,
            "--syscalls" => args.syscalls = true,
            "--no-memory" => args.memory = false,
            "--no-scale" => args.scale = false,
            other => bail!("unknown argument {other}; see the doc at the top of load.rs"),
        }
    }
    Ok(args)
}

/// A workload: redis-benchmark arguments (besides host, port, password, --csv).
struct Workload {
    name: &'static str,
    args: Vec<String>,
    /// Requests it sends in total (every test of `-t`).
    requests: u64,
}

fn workloads(quick: bool) -> Vec<Workload> {
    let scale = if quick { 10 } else { 1 };
    let w = |name, args: &str, n: u64, tests: u64| Workload {
        name,
        args: format!("{args} -n {}", n / scale)
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        requests: tests * n / scale,
    };
    vec![
        w(
            "(i) -P 1 -d 64 -c 50",
            "-t set,get -c 50 -P 1 -d 64",
            300_000,
            2,
        ),
        w(
            "(ii) -P 16 -d 64 -c 50",
            "-t set,get -c 50 -P 16 -d 64",
            300_000,
            2,
        ),
        w(
            "(iii) -d 102400 -c 10",
            "-t set,get -c 10 -d 102400",
            20_000,
            2,
        ),
    ]
}

/// Something redis-benchmark can be pointed at.
struct Target {
    name: String,
    port: u16,
    /// The proxy process; `None` for direct.
    pid: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let mut args = parse_args()?;
    let clk_tck = clk_tck()?;
    // A proxy needs two descriptors per session; stay under this process's
    // limit, which every child inherits (the script raises it as far as allowed).
    let nofile = nofile_limit()?;
    let max_sessions = (nofile.saturating_sub(200) / 2) as usize;
    if args.idle > max_sessions {
        eprintln!(
            "ulimit -n is {nofile}: {max_sessions} sessions at most, not {}",
            args.idle
        );
        args.idle = max_sessions;
    }
    println!("# Keyway load benchmark\n");
    println!("{}", machine()?);

    let lab = Lab::builder().replicas(0).start()?;
    let node = lab.node(0);
    let password = lab
        .password()
        .context("the lab runs with a password")?
        .to_owned();
    let password_file = lab.password_file().context("lab password file")?.to_owned();
    // Room for the idle-session and scale tests, within the descriptor limit.
    let maxclients = (max_sessions + 500).to_string();
    node.cmd(&["CONFIG", "SET", "maxclients", &maxclients])?
        .into_result("CONFIG SET maxclients")?;
    let redis_pid = node.pid().context("redis pid")?;
    let dir = lab.dir().to_owned();

    let env = Env {
        dir: &dir,
        node: node.addr(),
        direct_port: node.port(),
        password: &password,
        password_file: &password_file,
        maxconn: max_sessions,
        keyway_workers: args.keyway_workers,
    };
    let (targets, procs) = env.start(true)?;
    println!(
        "HAProxy: {}",
        first_line(Command::new("haproxy").arg("-v"))?
    );
    println!(
        "redis-benchmark: {}\n",
        first_line(Command::new("redis-benchmark").arg("--version"))?
    );

    let mut raw = String::from(
        "workload,round,target,ops_s,p50_ms,p99_ms,proxy_cpu_s,redis_cpu_s,requests,bytes\n",
    );
    let mut results: BTreeMap<(usize, String), Vec<Run>> = BTreeMap::new();
    let runs = if args.load {
        workloads(args.quick)
    } else {
        vec![]
    };
    for (wi, workload) in runs.iter().enumerate() {
        for round in 1..=args.rounds {
            for t in &targets {
                let run = measure(t, workload, &password, redis_pid, node, clk_tck)?;
                eprintln!(
                    "{} round {round} {:<10} {:>10.0} ops/s p50 {:.3} p99 {:.3} cpu {:.2}s",
                    workload.name, t.name, run.ops, run.p50, run.p99, run.proxy_cpu
                );
                let _ = writeln!(
                    raw,
                    "{:?},{round},{},{:.0},{:.3},{:.3},{:.3},{:.3},{},{}",
                    workload.name,
                    t.name,
                    run.ops,
                    run.p50,
                    run.p99,
                    run.proxy_cpu,
                    run.redis_cpu,
                    run.requests,
                    run.bytes
                );
                results.entry((wi, t.name.clone())).or_default().push(run);
            }
        }
    }
    fs::write(dir.join("load-raw.csv"), &raw)?;
    if args.load {
        println!("## Load (median of {} interleaved rounds)\n", args.rounds);
        println!("{}", table(&runs, &targets, &results));
        println!("Raw runs:\n\n```\n{raw}```\n");
    }

    if args.syscalls {
        println!("## Syscalls per request (strace -c -f on the proxy, separate run)\n");
        println!("| workload | proxy | syscalls / request | by call |");
        println!("|---|---|---|---|");
        let cases = [
            (
                "(i) GET -P 1 -d 64 -c 50",
                "-t get -P 1 -d 64 -c 50 -n 50000",
                50_000u64,
            ),
            (
                "(iii) -d 102400 -c 10",
                "-t set,get -d 102400 -c 10 -n 5000",
                10_000,
            ),
        ];
        for (name, bench, requests) in cases {
            small_value(node)?;
            for t in targets.iter().filter(|t| t.pid.is_some()) {
                let counts = syscall_counts(&dir, t, bench, &password)?;
                let total: u64 = counts.iter().map(|(_, n)| n).sum();
                let per = |n: u64| n as f64 / requests as f64;
                let by: Vec<String> = counts
                    .iter()
                    .filter(|(_, n)| per(*n) >= 0.01)
                    .map(|(call, n)| format!("{call} {:.2}", per(*n)))
                    .collect();
                println!(
                    "| {name} | {} | {:.2} | {} |",
                    t.name,
                    per(total),
                    by.join(", ")
                );
            }
        }
        println!();
    }

    if args.memory {
        println!("## Idle sessions ({} through each proxy)\n", args.idle);
        println!(
            "| proxy | RSS before (MiB) | RSS with sessions (MiB) | RSS per session (bytes) |"
        );
        println!("|---|---|---|---|");
        for name in ["haproxy", "keyway"] {
            // Fresh processes: nothing left from the load runs.
            let (fresh, procs) = env.start(false)?;
            let Some(t) = fresh.iter().find(|t| t.name == name) else {
                continue;
            };
            let (before, after) = idle_sessions(t, args.idle, &password)?;
            drop(procs);
            println!(
                "| {} | {:.1} | {:.1} | {:.0} |",
                t.name,
                before as f64 / 1024.0,
                after as f64 / 1024.0,
                (after.saturating_sub(before) * 1024) as f64 / args.idle as f64
            );
        }
        println!();
    }

    if args.scale {
        println!("## Scale (GET -P 1 -d 64, one run each)\n");
        println!(
            "| proxy | clients | ops/s | p99 ms | CPU s / M req | peak RSS (MiB) | RSS growth per client (bytes) |"
        );
        println!("|---|---|---|---|---|---|---|");
        // HAProxy closes clients past its maxconn; leave it a margin.
        let top = 10_000.min(max_sessions as u64 - 100);
        for clients in [100u64, 1_000, top] {
            small_value(node)?;
            let n = if args.quick { 50_000 } else { 300_000 };
            let workload = Workload {
                name: "scale",
                args: format!("-t get -P 1 -d 64 -c {clients} -n {n}")
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                requests: n,
            };
            let (fresh, procs) = env.start(false)?;
            for t in fresh.iter().filter(|t| t.pid.is_some()) {
                let pid = t.pid.unwrap_or_default();
                let base = rss_kib(pid)?;
                let peak = Arc::new(AtomicU64::new(base));
                let stop = Arc::new(AtomicBool::new(false));
                let sampler = {
                    let (peak, stop) = (peak.clone(), stop.clone());
                    thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            if let Ok(rss) = rss_kib(pid) {
                                peak.fetch_max(rss, Ordering::Relaxed);
                            }
                            thread::sleep(Duration::from_millis(20));
                        }
                    })
                };
                let run = measure(t, &workload, &password, redis_pid, node, clk_tck)?;
                stop.store(true, Ordering::Relaxed);
                let _ = sampler.join();
                let peak = peak.load(Ordering::Relaxed);
                println!(
                    "| {} | {clients} | {:.0} | {:.3} | {:.2} | {:.1} | {:.0} |",
                    t.name,
                    run.ops,
                    run.p99,
                    run.proxy_cpu / (run.requests as f64 / 1e6),
                    peak as f64 / 1024.0,
                    (peak.saturating_sub(base) * 1024) as f64 / clients as f64
                );
            }
            drop(procs);
        }
        println!();
    }
    drop(procs);
    Ok(())
}

/// What it takes to start the proxies.
struct Env<'a> {
    dir: &'a Path,
    node: SocketAddr,
    direct_port: u16,
    password: &'a str,
    password_file: &'a Path,
    maxconn: usize,
    keyway_workers: Option<usize>,
}

impl Env<'_> {
    /// Starts HAProxy and Keyway (and, when `extra`, Keyway with
    /// `keyway_workers` and the floor), waits until each forwards, and returns
    /// the targets (direct first) and the processes, killed when dropped.
    fn start(&self, extra: bool) -> anyhow::Result<(Vec<Target>, Vec<Proc>)> {
        let mut targets = vec![Target {
            name: "direct".into(),
            port: self.direct_port,
            pid: None,
        }];
        let mut procs = vec![];
        let port = keyway_lab::free_port();
        procs.push(start_haproxy(
            self.dir,
            port,
            self.node,
            self.password,
            self.maxconn,
        )?);
        targets.push(Target {
            name: "haproxy".into(),
            port,
            pid: Some(procs[0].0.id()),
        });
        let mut keyways = vec![("keyway".to_owned(), None)];
        if let (true, Some(workers)) = (extra, self.keyway_workers) {
            keyways.push((format!("keyway-w{workers}"), Some(workers)));
        }
        for (name, workers) in keyways {
            let port = keyway_lab::free_port();
            let proc = start_keyway(
                self.dir,
                &name,
                port,
                self.node,
                self.password_file,
                workers,
            )?;
            targets.push(Target {
                name,
                port,
                pid: Some(proc.0.id()),
            });
            procs.push(proc);
        }
        if extra {
            let port = keyway_lab::free_port();
            let proc = start_floor(self.dir, port, self.node)?;
            targets.push(Target {
                name: "floor".into(),
                port,
                pid: Some(proc.0.id()),
            });
            procs.push(proc);
        }
        for t in &targets {
            wait_ready(t.port, self.password, Duration::from_secs(20))
                .with_context(|| format!("{} never answered", t.name))?;
        }
        Ok((targets, procs))
    }
}

/// redis-benchmark's `GET` reads one key, `key:__rand_int__` (no `-r`), which
/// the 100 KB workload leaves holding 100 KB: put a 64-byte value back before
/// a `GET`-only run.
fn small_value(node: &keyway_lab::RedisNode) -> anyhow::Result<()> {
    node.cmd(&["SET", "key:__rand_int__", &"x".repeat(64)])?
        .into_result("SET")?;
    Ok(())
}

/// One redis-benchmark run against one target.
struct Run {
    ops: f64,
    p50: f64,
    p99: f64,
    proxy_cpu: f64,
    /// Of `proxy_cpu`, the kernel's part (stime).
    proxy_sys: f64,
    redis_cpu: f64,
    requests: u64,
    bytes: u64,
}

fn measure(
    t: &Target,
    workload: &Workload,
    password: &str,
    redis_pid: u32,
    node: &keyway_lab::RedisNode,
    clk_tck: f64,
) -> anyhow::Result<Run> {
    let net_before = net_bytes(node)?;
    let proxy_before = t.pid.map(cpu_ticks).transpose()?.unwrap_or_default();
    let redis_before = cpu_ticks(redis_pid)?;
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &t.port.to_string(),
            "-a",
            password,
            "--csv",
        ])
        .args(&workload.args)
        .output()
        .context("redis-benchmark (apt-get install -y redis-tools)")?;
    let proxy_after = t.pid.map(cpu_ticks).transpose()?.unwrap_or_default();
    let redis_after = cpu_ticks(redis_pid)?;
    let net_after = net_bytes(node)?;
    if !out.status.success() {
        bail!(
            "redis-benchmark failed against {}: {:?}: {}",
            t.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (mut time, mut p50, mut p99, mut tests) = (0.0, 0.0, 0.0, 0.0);
    let per_test = workload.requests as f64
        / String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .count()
            .max(1) as f64;
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let f: Vec<f64> = line
            .split(',')
            .skip(1)
            .map(|v| v.trim_matches('"').parse().unwrap_or(f64::NAN))
            .collect();
        // rps, avg, min, p50, p95, p99, max
        if f.len() < 7 {
            bail!("unexpected redis-benchmark line: {line}");
        }
        time += per_test / f[0];
        p50 += f[3];
        p99 += f[5];
        tests += 1.0;
    }
    if tests == 0.0 {
        bail!("no result from redis-benchmark against {}", t.name);
    }
    Ok(Run {
        ops: workload.requests as f64 / time,
        p50: p50 / tests,
        p99: p99 / tests,
        proxy_cpu: (proxy_after.0 + proxy_after.1 - proxy_before.0 - proxy_before.1) as f64
            / clk_tck,
        proxy_sys: (proxy_after.1 - proxy_before.1) as f64 / clk_tck,
        redis_cpu: (redis_after.0 + redis_after.1 - redis_before.0 - redis_before.1) as f64
            / clk_tck,
        requests: workload.requests,
        bytes: (net_after.0 + net_after.1).saturating_sub(net_before.0 + net_before.1),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn table(
    workloads: &[Workload],
    targets: &[Target],
    results: &BTreeMap<(usize, String), Vec<Run>>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | target | ops/s | p50 ms | p99 ms | proxy CPU s / M req | proxy CPU s / GB | proxy sys % | redis CPU s / M req |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let mut ratios = String::new();
    for (wi, w) in workloads.iter().enumerate() {
        let mut summary: BTreeMap<&str, [f64; 5]> = BTreeMap::new();
        for t in targets {
            let Some(runs) = results.get(&(wi, t.name.clone())) else {
                continue;
            };
            let ops = median(runs.iter().map(|r| r.ops).collect());
            let p50 = median(runs.iter().map(|r| r.p50).collect());
            let p99 = median(runs.iter().map(|r| r.p99).collect());
            let per_m = median(
                runs.iter()
                    .map(|r| r.proxy_cpu / (r.requests as f64 / 1e6))
                    .collect(),
            );
            let per_gb = median(
                runs.iter()
                    .map(|r| r.proxy_cpu / (r.bytes as f64 / 1e9))
                    .collect(),
            );
            let sys = median(
                runs.iter()
                    .map(|r| 100.0 * r.proxy_sys / r.proxy_cpu)
                    .collect(),
            );
            let redis = median(
                runs.iter()
                    .map(|r| r.redis_cpu / (r.requests as f64 / 1e6))
                    .collect(),
            );
            let cpu = |v: f64| {
                if t.pid.is_some() {
                    format!("{v:.3}")
                } else {
                    "-".to_owned()
                }
            };
            let _ = writeln!(
                out,
                "| {} | {} | {ops:.0} | {p50:.3} | {p99:.3} | {} | {} | {} | {redis:.2} |",
                w.name,
                t.name,
                cpu(per_m),
                cpu(per_gb),
                if t.pid.is_some() {
                    format!("{sys:.0}")
                } else {
                    "-".to_owned()
                }
            );
            summary.insert(t.name.as_str(), [ops, p50, p99, per_m, per_gb]);
        }
        // Each Keyway against HAProxy, direct and the floor, then the floor
        // against HAProxy; a row whose targets did not run is left out.
        let mut pairs: Vec<(&str, &str)> = targets
            .iter()
            .filter(|t| t.name.starts_with("keyway"))
            .flat_map(|k| ["haproxy", "direct", "floor"].map(|base| (k.name.as_str(), base)))
            .collect();
        pairs.push(("floor", "haproxy"));
        for (name, base) in pairs {
            let (Some(kv), Some(b)) = (summary.get(name), summary.get(base)) else {
                continue;
            };
            let r = |i: usize| kv[i] / b[i];
            // Direct has no proxy CPU to divide by.
            let cpu = if base == "direct" {
                "- | -".to_owned()
            } else {
                format!("{:.2} | {:.2}", r(3), r(4))
            };
            let _ = writeln!(
                ratios,
                "| {} | {name}/{base} | {:.2} | {:.2} | {:.2} | {cpu} |",
                w.name,
                r(0),
                r(1),
                r(2)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nRatios (targets: ops/s >= 1.10, p99 <= 1.00, CPU/M req <= 0.70 for (i) and (ii), CPU/GB <= 0.50 for (iii); \
         keyway/floor and floor/haproxy have none: they show how far above the epoll floor each proxy is):\n"
    );
    let _ = writeln!(
        out,
        "| workload | ratio | ops/s | p50 | p99 | CPU / M req | CPU / GB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    out + &ratios
}

/// Runs redis-benchmark `bench` through `t` with `strace -c -f` attached to the
/// proxy; returns the call count of each syscall, most frequent first.
fn syscall_counts(
    dir: &Path,
    t: &Target,
    bench: &str,
    password: &str,
) -> anyhow::Result<Vec<(String, u64)>> {
    let pid = t.pid.context("a proxy")?;
    let file = dir.join(format!("strace-{}.txt", t.name));
    let mut strace = Proc(
        Command::new("strace")
            .args(["-c", "-f", "-o"])
            .arg(&file)
            .args(["-p", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("strace (apt-get install -y strace)")?,
    );
    // strace attaches to every thread before the run starts.
    thread::sleep(Duration::from_secs(1));
    let status = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &t.port.to_string(),
            "-a",
            password,
            "-q",
        ])
        .args(bench.split_whitespace())
        .output()?
        .status;
    if !status.success() {
        bail!("redis-benchmark failed under strace against {}", t.name);
    }
    // SIGINT makes strace detach and write its summary.
    Command::new("kill")
        .args(["-INT", &strace.0.id().to_string()])
        .status()?;
    strace.0.wait()?;
    let text = fs::read_to_string(&file)?;
    let mut counts = vec![];
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if f.len() < 5 || f[0].starts_with('-') || f[0] == "%" || f.last() == Some(&"total") {
            continue;
        }
        let (Ok(calls), Some(name)) = (f[3].parse::<u64>(), f.last()) else {
            continue;
        };
        counts.push(((*name).to_owned(), calls));
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(counts)
}

/// Opens `n` sessions through `t`, each with one AUTH round trip, and returns
/// the proxy's RSS (KiB) before and with them open.
fn idle_sessions(t: &Target, n: usize, password: &str) -> anyhow::Result<(u64, u64)> {
    let pid = t.pid.context("a proxy")?;
    thread::sleep(Duration::from_secs(1));
    let before = rss_kib(pid)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], t.port));
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let s =
            TcpStream::connect(addr).with_context(|| format!("session {i} through {}", t.name))?;
        sessions.push(s);
    }
    let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n", password.len());
    for s in &mut sessions {
        s.write_all(auth.as_bytes())?;
    }
    for (i, s) in sessions.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut reply = [0u8; 5];
        s.read_exact(&mut reply)
            .with_context(|| format!("AUTH reply of session {i} through {}", t.name))?;
        if &reply != b"+OK\r\n" {
            bail!("session {i} through {}: unexpected reply {reply:?}", t.name);
        }
    }
    thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid)?;
    drop(sessions);
    // Let the proxy close them all before the next measurement.
    thread::sleep(Duration::from_secs(2));
    Ok((before, after))
}

fn start_haproxy(
    dir: &Path,
    port: u16,
    node: SocketAddr,
    password: &str,
    maxconn: usize,
) -> anyhow::Result<Proc> {
    let cfg = HAPROXY_TEMPLATE
        .replace("@MAXCONN@", &maxconn.to_string())
        .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
        .replace("@NODE@", &node.to_string())
        .replace("@PASSWORD@", password);
    start_haproxy_with(&dir.join("haproxy.cfg"), &cfg, &dir.join("haproxy.log"))
}

fn start_keyway(
    dir: &Path,
    name: &str,
    port: u16,
    node: SocketAddr,
    password_file: &Path,
    workers: Option<usize>,
) -> anyhow::Result<Proc> {
    let admin = keyway_lab::free_port();
    // Checks as HAProxy's (inter 1s, timeout check 1s, rise 2, fall 2): with
    // the default 250 ms probe timeout, the connection storm of 10,000
    // redis-benchmark clients can fail a probe and drop the route, which cuts
    // every session.
    let runtime = workers.map_or(String::new(), |n| format!("[runtime]\nworkers = {n}\n\n"));
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[log]\nlevel = \"warn\"\n\n{runtime}\
         [[service]]\nname = \"bench\"\nlisten = \"127.0.0.1:{port}\"\nnodes = [\"{node}\"]\n\
         password_file = {password_file:?}\n\n[service.limits]\nmax_sessions = {max}\n\n\
         [service.check]\ninterval = \"1s\"\ntimeout = \"1s\"\nrise = 2\nfall = 2\n",
        max = MAX_SESSIONS
    );
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, cfg)?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    let mut cmd = Command::new(keyway_bin()?);
    cmd.args(["run", "-c"])
        .arg(&path)
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(Proc(cmd.spawn().context("keyway")?))
}

/// Starts the floor forwarder (built next to this binary) in front of `node`.
fn start_floor(dir: &Path, port: u16, node: SocketAddr) -> anyhow::Result<Proc> {
    let bin = sibling_bin(
        "floor",
        "cargo build --release -p keyway-benches --bin floor",
    )?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("floor.log"))?;
    let child = Command::new(bin)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--upstream")
        .arg(node.to_string())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("floor")?;
    Ok(Proc(child))
}

/// Waits until `AUTH` + `PING` through `port` answer.
fn wait_ready(port: u16, password: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ask = format!(
        "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n",
        password.len()
    );
    loop {
        let attempt = (|| -> std::io::Result<bool> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(ask.as_bytes())?;
            let mut reply = [0u8; 12];
            s.read_exact(&mut reply)?;
            Ok(&reply == b"+OK\r\n+PONG\r\n")
        })();
        if let Ok(true) = attempt {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not ready on port {port}: {attempt:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// (utime, stime) of a process (every thread), in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok((utime, stime))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn net_bytes(node: &keyway_lab::RedisNode) -> anyhow::Result<(u64, u64)> {
    let info = node.info("stats")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = info
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .with_context(|| format!("{name} in INFO stats"))?;
        Ok(line.trim().parse()?)
    };
    Ok((
        field("total_net_input_bytes")?,
        field("total_net_output_bytes")?,
    ))
}

/// The soft `RLIMIT_NOFILE` of this process.
fn nofile_limit() -> anyhow::Result<u64> {
    let limits = fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("Max open files")?;
    Ok(line
        .split_whitespace()
        .nth(3)
        .context("soft limit")?
        .parse()
        .unwrap_or(u64::MAX))
}

fn clk_tck() -> anyhow::Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}
