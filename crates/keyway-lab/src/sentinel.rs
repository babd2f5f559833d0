//! One Redis Sentinel process: its config, start with port retries, fault helpers and
//! the few `SENTINEL` queries the lab needs.
//!
//! Invariants:
//! - the sentinel listens on 127.0.0.1 only, on the port in its config file, and
//!   announces 127.0.0.1 to the other sentinels; the port never changes after the first
//!   successful start;
//! - Sentinel owns its config file once started: it rewrites it at start-up (its
//!   `myid`) and at every change it learns (known replicas and sentinels, the current
//!   master, epochs). `restart` starts from that rewritten file, as a real restart does,
//!   so a restarted sentinel keeps its identity and what it knew;
//! - it counts as started only when `PING` answers `PONG` and `INFO server` reports our
//!   child's pid, as for nodes.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::LabError;
use crate::node::{CMD_TIMEOUT, quote, start_on_free_port};
use crate::process::{Process, lab_process_methods};
use crate::resp::{Client, Reply};

/// What a sentinel needs to be started; built by the lab.
#[derive(Debug)]
pub(crate) struct SentinelSpec<'a> {
    pub(crate) name: String,
    pub(crate) program: &'a Path,
    pub(crate) dir: PathBuf,
    pub(crate) master_name: &'a str,
    pub(crate) master: SocketAddr,
    pub(crate) quorum: usize,
    /// The data nodes' password (`sentinel auth-pass`).
    pub(crate) auth_pass: Option<&'a str>,
    /// The sentinel's own `requirepass`.
    pub(crate) password: Option<&'a str>,
    pub(crate) down_after: Duration,
    pub(crate) failover_timeout: Duration,
    pub(crate) start_timeout: Duration,
}

/// One Redis Sentinel (`redis-sentinel`, or `redis-server --sentinel`) on a loopback
/// port, monitoring the lab's master under the lab's master name.
///
/// Like [`crate::RedisNode`], every helper takes `&self` and opens a fresh connection
/// with a timeout, so a stopped sentinel makes a call fail instead of hang.
#[derive(Debug)]
pub struct SentinelNode {
    process: Process,
    port: u16,
    password: Option<String>,
    master_name: String,
    start_timeout: Duration,
}

/// What one sentinel says about the monitored master (`SENTINEL MASTER <name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MasterState {
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) flags: String,
    pub(crate) num_slaves: usize,
    pub(crate) num_other_sentinels: usize,
    /// Ports of the other sentinels this one sees up (`SENTINEL SENTINELS`: flags
    /// exactly `sentinel`, so not `s_down` and not `disconnected`).
    pub(crate) sentinels_up: Vec<u16>,
}

impl SentinelNode {
    /// Writes the config, starts the sentinel and waits until it answers, retrying
    /// with a new port when the picked one turns out to be taken.
    pub(crate) fn start(spec: SentinelSpec<'_>) -> Result<SentinelNode, LabError> {
        let process = Process::new(
            spec.name.clone(),
            spec.program,
            // Makes `redis-server` a sentinel too; harmless for `redis-sentinel`.
            vec![OsString::from("--sentinel")],
            spec.dir.clone(),
            "sentinel.conf",
            "sentinel.log",
        )?;
        let (port, _) = start_on_free_port(&process, spec.password, spec.start_timeout, |port| {
            render_config(port, &process, &spec)
        })?;
        Ok(SentinelNode {
            process,
            port,
            password: spec.password.map(str::to_owned),
            master_name: spec.master_name.to_owned(),
            start_timeout: spec.start_timeout,
        })
    }

    lab_process_methods!("sentinel", "sentinel-0");

    /// The config file, as Sentinel last rewrote it.
    pub fn config_path(&self) -> &Path {
        self.process.config_path()
    }

    /// Starts the sentinel again from the config file as Sentinel last rewrote it (same
    /// port, same `myid`, the master it last knew, the replicas and sentinels it knew),
    /// like a real restart. A still-running process is killed first. Returns once
    /// `PING` answers; use [`crate::Lab::wait_sentinels`] to wait until it rejoined.
    pub fn restart(&self) -> Result<(), LabError> {
        self.respawn()
    }

    pub(crate) fn cmd_within(&self, args: &[&str], timeout: Duration) -> Result<Reply, LabError> {
        Client::connect(self.addr(), self.password(), timeout)?.cmd(args)
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME <name>`: the master this sentinel names now;
    /// `None` when it does not know the name.
    pub fn master_addr(&self) -> Result<Option<SocketAddr>, LabError> {
        self.master_addr_within(CMD_TIMEOUT)
    }

    pub(crate) fn master_addr_within(
        &self,
        timeout: Duration,
    ) -> Result<Option<SocketAddr>, LabError> {
        const COMMAND: &str = "SENTINEL GET-MASTER-ADDR-BY-NAME";
        let reply = self
            .cmd_within(
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.master_name],
                timeout,
            )?
            .into_result(COMMAND)?;
        if reply.is_nil() {
            return Ok(None);
        }
        parse_addr(&reply)
            .map(Some)
            .ok_or_else(|| unexpected(COMMAND, &reply))
    }

    /// `SENTINEL MASTER <name>` and `SENTINEL SENTINELS <name>`, the fields the lab
    /// waits on.
    pub(crate) fn master_state(&self, timeout: Duration) -> Result<MasterState, LabError> {
        let mut client = Client::connect(self.addr(), self.password(), timeout)?;
        let name = self.master_name.as_str();
        let command = "SENTINEL MASTER";
        let reply = client
            .cmd(&["SENTINEL", "MASTER", name])?
            .into_result(command)?;
        let mut state = parse_master_state(&reply).ok_or_else(|| unexpected(command, &reply))?;
        let command = "SENTINEL SENTINELS";
        let reply = client
            .cmd(&["SENTINEL", "SENTINELS", name])?
            .into_result(command)?;
        state.sentinels_up =
            parse_sentinels_up(&reply).ok_or_else(|| unexpected(command, &reply))?;
        Ok(state)
    }
}

fn unexpected(command: &str, reply: &Reply) -> LabError {
    LabError::UnexpectedReply {
        command: command.to_owned(),
        reply: format!("{reply:?}"),
    }
}

/// `[ip, port]`, as `get-master-addr-by-name` returns it.
fn parse_addr(reply: &Reply) -> Option<SocketAddr> {
    match reply.as_array()? {
        [ip, port] => {
            let ip: IpAddr = ip.as_str()?.parse().ok()?;
            let port: u16 = port.as_str()?.parse().ok()?;
            Some(SocketAddr::new(ip, port))
        }
        _ => None,
    }
}

/// The value of `key` in a flat field/value array, as `SENTINEL MASTER` returns.
fn field<'a>(items: &'a [Reply], key: &str) -> Option<&'a str> {
    items
        .chunks_exact(2)
        .find(|pair| pair[0].as_str() == Some(key))
        .and_then(|pair| pair[1].as_str())
}

/// `SENTINEL SENTINELS`: one field/value array per other sentinel.
fn parse_sentinels_up(reply: &Reply) -> Option<Vec<u16>> {
    let mut up = Vec::new();
    for sentinel in reply.as_array()? {
        let items = sentinel.as_array()?;
        if field(items, "flags")? == "sentinel" {
            up.push(field(items, "port")?.parse().ok()?);
        }
    }
    Some(up)
}

/// The flat field/value array of `SENTINEL MASTER`.
fn parse_master_state(reply: &Reply) -> Option<MasterState> {
    let items = reply.as_array()?;
    let field = |key: &str| field(items, key);
    let count = |key: &str| field(key)?.parse::<usize>().ok();
    let addr = match (field("ip"), field("port")) {
        (Some(ip), Some(port)) => Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?)),
        _ => None,
    };
    Some(MasterState {
        addr,
        flags: field("flags")?.to_owned(),
        num_slaves: count("num-slaves")?,
        num_other_sentinels: count("num-other-sentinels")?,
        sentinels_up: Vec::new(),
    })
}

/// The sentinel's initial config file. Values that come from callers are quoted.
fn render_config(port: u16, process: &Process, spec: &SentinelSpec<'_>) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;

    let name = spec.master_name.as_bytes();
    let mut out = Vec::new();
    let mut line = |parts: &[&[u8]]| {
        out.extend_from_slice(&parts.join(&b' '));
        out.push(b'\n');
    };
    line(&[b"# written by keyway-lab for", process.name().as_bytes()]);
    line(&[b"# Sentinel rewrites this file while it runs; keep it writable."]);
    // Loopback only, always: the lab must never be reachable from another host.
    line(&[b"bind", b"127.0.0.1"]);
    line(&[b"protected-mode", b"no"]);
    line(&[b"port", port.to_string().as_bytes()]);
    line(&[b"daemonize", b"no"]);
    line(&[b"dir", &quote(process.dir().as_os_str().as_bytes())]);
    line(&[
        b"logfile",
        &quote(process.log_path().as_os_str().as_bytes()),
    ]);
    line(&[b"loglevel", b"notice"]);
    if let Some(password) = spec.password {
        // Sentinel also uses it to authenticate to the other sentinels.
        line(&[b"requirepass", &quote(password.as_bytes())]);
    }
    // What the other sentinels see as this one's address (hello messages).
    line(&[b"sentinel", b"announce-ip", b"127.0.0.1"]);
    line(&[b"sentinel", b"resolve-hostnames", b"no"]);
    let master_port = spec.master.port().to_string();
    let quorum = spec.quorum.to_string();
    line(&[
        b"sentinel monitor",
        name,
        spec.master.ip().to_string().as_bytes(),
        master_port.as_bytes(),
        quorum.as_bytes(),
    ]);
    if let Some(password) = spec.auth_pass {
        line(&[b"sentinel auth-pass", name, &quote(password.as_bytes())]);
    }
    let down_after = spec.down_after.as_millis().max(1).to_string();
    line(&[
        b"sentinel down-after-milliseconds",
        name,
        down_after.as_bytes(),
    ]);
    let failover_timeout = spec.failover_timeout.as_millis().max(1).to_string();
    line(&[
        b"sentinel failover-timeout",
        name,
        failover_timeout.as_bytes(),
    ]);
    line(&[b"sentinel parallel-syncs", name, b"1"]);
    out
}

/// Sentinel writes the master name back into its config file unquoted, so it must be
/// one plain word to survive a restart. Allowed: ASCII letters, digits, `-`, `_`, `.`.
pub(crate) fn check_master_name(name: &str) -> Result<(), LabError> {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        Ok(())
    } else {
        Err(LabError::Config(format!(
            "master name {name:?} must be non-empty and use only ASCII letters, digits, \
             '-', '_' and '.'"
        )))
    }
}

/// Sentinel also writes `sentinel auth-pass <name> <password>` back unquoted (seen with
/// Redis 7.0), so with sentinels the data nodes' password must be one token that
/// `sdssplitargs` reads back unchanged: printable ASCII without spaces or quotes. (The
/// sentinels' own `requirepass` is stored as a hash and may be anything.)
pub(crate) fn check_auth_pass(password: &str) -> Result<(), LabError> {
    if password
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\'')
    {
        Ok(())
    } else {
        Err(LabError::Config(
            "with sentinels, the password must be printable ASCII without spaces or quotes \
             (Sentinel writes it back to its config file unquoted)"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::loopback;

    fn spec<'a>(program: &'a Path, dir: &Path) -> SentinelSpec<'a> {
        SentinelSpec {
            name: "sentinel-0".into(),
            program,
            dir: dir.join("sentinel-0"),
            master_name: "keyway",
            master: loopback(7000),
            quorum: 2,
            auth_pass: Some("p w"),
            password: Some("s"),
            down_after: Duration::from_millis(1000),
            failover_timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn config_monitors_the_master_on_loopback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(Path::new("redis-sentinel"), dir.path());
        let process = Process::new(
            "sentinel-0",
            spec.program,
            Vec::new(),
            spec.dir.clone(),
            "sentinel.conf",
            "sentinel.log",
        )
        .expect("process");
        let config = String::from_utf8(render_config(26400, &process, &spec)).expect("utf-8");
        for want in [
            "\nbind 127.0.0.1\n",
            "\nport 26400\n",
            "\nrequirepass \"s\"\n",
            "\nsentinel announce-ip 127.0.0.1\n",
            "\nsentinel resolve-hostnames no\n",
            "\nsentinel monitor keyway 127.0.0.1 7000 2\n",
            "\nsentinel auth-pass keyway \"p w\"\n",
            "\nsentinel down-after-milliseconds keyway 1000\n",
            "\nsentinel failover-timeout keyway 10000\n",
            "\nsentinel parallel-syncs keyway 1\n",
        ] {
            assert!(config.contains(want), "{want:?} missing in:\n{config}");
        }
        // `sentinel monitor` must precede the per-master options.
        let monitor = config.find("sentinel monitor").expect("monitor");
        let auth = config.find("sentinel auth-pass").expect("auth-pass");
        assert!(monitor < auth);
    }

    #[test]
    fn parses_master_replies() {
        let bulk = |s: &str| Reply::Bulk(Some(s.as_bytes().to_vec()));
        let addr = Reply::Array(Some(vec![bulk("127.0.0.1"), bulk("6379")]));
        assert_eq!(parse_addr(&addr), Some(loopback(6379)));
        assert_eq!(parse_addr(&Reply::Array(Some(vec![bulk("x")]))), None);

        let master = Reply::Array(Some(
            [
                "name",
                "keyway",
                "ip",
                "127.0.0.1",
                "port",
                "7000",
                "flags",
                "master",
                "num-slaves",
                "2",
                "num-other-sentinels",
                "2",
            ]
            .into_iter()
            .map(bulk)
            .collect(),
        ));
        assert_eq!(
            parse_master_state(&master),
            Some(MasterState {
                addr: Some(loopback(7000)),
                flags: "master".into(),
                num_slaves: 2,
                num_other_sentinels: 2,
                sentinels_up: Vec::new(),
            })
        );

        let sentinel = |port: &str, flags: &str| {
            Reply::Array(Some(
                ["ip", "127.0.0.1", "port", port, "flags", flags]
                    .into_iter()
                    .map(bulk)
                    .collect(),
            ))
        };
        let sentinels = Reply::Array(Some(vec![
            sentinel("1", "sentinel"),
            sentinel("2", "s_down,sentinel"),
            sentinel("3", "sentinel,disconnected"),
        ]));
        assert_eq!(parse_sentinels_up(&sentinels), Some(vec![1]));
        assert_eq!(
            parse_sentinels_up(&Reply::Array(Some(vec![]))),
            Some(vec![])
        );
    }

    #[test]
    fn auth_passwords_are_single_tokens() {
        assert!(check_auth_pass("0123abcdef").is_ok());
        assert!(check_auth_pass("p\\x!#$%").is_ok());
        for bad in ["a b", "a\"b", "a'b", "a\tb", "é"] {
            assert!(check_auth_pass(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn master_names_are_plain_words() {
        assert!(check_master_name("keyway").is_ok());
        assert!(check_master_name("my-master_1.a").is_ok());
        for bad in ["", "a b", "a\"b", "a\nb", "é"] {
            assert!(check_master_name(bad).is_err(), "{bad:?}");
        }
    }
}
