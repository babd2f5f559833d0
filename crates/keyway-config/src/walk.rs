//! From one file's text to drafts, collecting every problem on the way. Pure.
//!
//! The text is parsed once into a spanned tree ([`DeTable`]); then each table is
//! walked by hand, key by key, so that one bad key never hides the next one:
//! unknown keys, wrong types, bad values and missing keys are all reported, each
//! at its own position. Only a TOML syntax error stops the walk of its file
//! (the tree is incomplete then, and anything said about it would be noise).
//!
//! Invariants: this module reads no file and no clock. A draft field is `None`
//! only if a problem about it was reported. Checks that span several services or
//! several files (unique names and listen addresses) live in [`check_services`];
//! password files are read by the `load` module. Defaults that depend on another
//! table of the same service (`[service.sentinel]` timing from `[service.check]`)
//! are resolved once the whole service table is walked, whatever the key order.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use crate::duration::{format_duration, parse_duration};
use crate::problem::{Problem, Source};
use crate::types::{
    Admin, Check, Drain, Limits, Log, LogFormat, MAX_WORKERS, NodeAddr, Runtime, SentinelAddr, Tcp,
    Timeouts,
};

/// Which keys a file may hold at its top level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// The file given on the command line: `include`, `[admin]`, `[log]`,
    /// `[drain]`, `[[service]]`.
    Main,
    /// A file reached through `include`: `[[service]]` only.
    Included,
}

/// What one file says, before files are merged and password files read.
#[derive(Debug, Default)]
pub(crate) struct FileDraft {
    /// False when the file is not valid TOML (nothing else was looked at).
    pub parsed: bool,
    /// The file has a `service` key that is not an empty array, valid or not
    /// (so a missing service was already reported, or is not missing).
    pub has_service_key: bool,
    pub admin: Option<Admin>,
    pub log: Option<Log>,
    pub drain: Option<Drain>,
    pub runtime: Option<Runtime>,
    /// Include patterns as written, with their position.
    pub includes: Vec<Spanned<String>>,
    pub services: Vec<ServiceDraft>,
}

/// One `[[service]]` as written. Required keys are `Option`s: `None` means a
/// problem was reported.
#[derive(Debug)]
pub(crate) struct ServiceDraft {
    /// Index of the file in the load's list of sources.
    pub file: usize,
    pub name: Option<Spanned<String>>,
    pub listen: Option<Spanned<SocketAddr>>,
    pub nodes: Vec<NodeAddr>,
    pub username: Option<String>,
    /// As written (relative paths are resolved by the loader).
    pub password_file: Option<Spanned<PathBuf>>,
    pub check: Check,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub tcp: Tcp,
    /// `[service.sentinel]`; `None` when absent, or not a table (reported).
    pub sentinel: Option<SentinelDraft>,
    /// `proxy_protocol`; false when absent or invalid (reported).
    pub proxy_protocol: bool,
}

/// One `[service.sentinel]` as written, its defaults resolved against the
/// service's `[service.check]`.
#[derive(Debug)]
pub(crate) struct SentinelDraft {
    /// `None`: a problem was reported (missing or invalid).
    pub master_name: Option<String>,
    /// Valid, distinct addresses, with their position; empty only if a
    /// problem was reported.
    pub nodes: Vec<Spanned<SentinelAddr>>,
    pub username: Option<String>,
    /// As written (relative paths are resolved by the loader).
    pub password_file: Option<Spanned<PathBuf>>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// `interval` and `timeout` of `[service.sentinel]` as written, before the
/// defaults from `[service.check]` are applied.
#[derive(Debug, Default)]
struct SentinelTiming {
    /// Given and valid.
    interval: Option<Duration>,
    /// Given but invalid (reported): nothing can be compared with it.
    interval_bad: bool,
    /// Given and valid.
    timeout: Option<Spanned<Duration>>,
}

/// What [`Walker::check`] found: the values, and whether `interval` is one the
/// user can be told about (false when it or its table was invalid, reported).
struct CheckDraft {
    check: Check,
    interval_ok: bool,
}

const ROOT_KEYS: &[&str] = &["include", "admin", "log", "drain", "runtime", "service"];
const ADMIN_KEYS: &[&str] = &["listen"];
const LOG_KEYS: &[&str] = &["format", "level"];
const DRAIN_KEYS: &[&str] = &["timeout"];
const RUNTIME_KEYS: &[&str] = &["workers"];
const SERVICE_KEYS: &[&str] = &[
    "name",
    "listen",
    "nodes",
    "username",
    "password_file",
    "check",
    "timeouts",
    "limits",
    "tcp",
    "sentinel",
    "proxy_protocol",
];
const CHECK_KEYS: &[&str] = &["interval", "timeout", "rise", "fall"];
const TIMEOUTS_KEYS: &[&str] = &["connect", "hold", "idle"];
const LIMITS_KEYS: &[&str] = &["max_sessions", "max_held"];
const TCP_KEYS: &[&str] = &["keepalive"];
const SENTINEL_KEYS: &[&str] = &[
    "master_name",
    "nodes",
    "username",
    "password_file",
    "interval",
    "timeout",
];

/// Largest TCP keepalive idle time Linux accepts (`TCP_KEEPIDLE`, seconds).
const MAX_KEEPALIVE: Duration = Duration::from_secs(32_767);

/// Parse and walk one file. `file` is its index in the load's list of sources.
pub(crate) fn walk_file(
    src: &Source,
    file: usize,
    kind: FileKind,
    problems: &mut Vec<Problem>,
) -> FileDraft {
    let root = match DeTable::parse(&src.text) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            problems.push(src.problem(&span, format!("invalid TOML: {}", e.message())));
            return FileDraft::default();
        }
    };
    let mut walker = Walker { src, problems };
    walker.root(root.get_ref(), file, kind)
}

struct Walker<'a> {
    src: &'a Source,
    problems: &'a mut Vec<Problem>,
}

/// What an address is for: the checks, the example and the wording differ.
#[derive(Clone, Copy)]
enum AddrUse {
    Listen,
    Node,
    Sentinel,
}

impl AddrUse {
    fn example(self) -> &'static str {
        match self {
            AddrUse::Listen => "0.0.0.0:6379",
            AddrUse::Node => "10.0.0.11:6379",
            AddrUse::Sentinel => "10.0.0.11:26379",
        }
    }

    /// What one address of a list names: "node", "sentinel".
    fn noun(self) -> &'static str {
        match self {
            AddrUse::Listen => "listener",
            AddrUse::Node => "node",
            AddrUse::Sentinel => "sentinel",
        }
    }
}

impl Walker<'_> {
    fn report(&mut self, span: &Range<usize>, message: String) {
        self.problems.push(self.src.problem(span, message));
    }

    fn unknown(&mut self, key: &Spanned<DeString<'_>>, table: &str, expected: &[&str]) {
        let name = key.get_ref().as_ref();
        let hint = if name == "password"
            && matches!(table, "in [[service]]" | "in [service.sentinel]")
        {
            "passwords are never written in the configuration: put it in a file and set password_file"
                .to_string()
        } else {
            format!("expected {}", one_of(expected))
        };
        self.report(&key.span(), format!("unknown key {name:?} {table}: {hint}"));
    }

    fn wrong_type(&mut self, value: &Spanned<DeValue<'_>>, path: &str, expected: &str) {
        let found = article(value.get_ref().type_str());
        self.report(
            &value.span(),
            format!("invalid type for {path}: expected {expected}, found {found}"),
        );
    }

    fn table<'v, 'i>(
        &mut self,
        value: &'v Spanned<DeValue<'i>>,
        path: &str,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.wrong_type(value, path, &format!("a table ([{path}])"));
                None
            }
        }
    }

    fn boolean(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(value, path, "a boolean (true or false)");
                None
            }
        }
    }

    fn string<'v>(&mut self, value: &'v Spanned<DeValue<'_>>, path: &str) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.wrong_type(value, path, "a string");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    fn integer(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        min: i128,
        max: i128,
    ) -> Option<i128> {
        let DeValue::Integer(int) = value.get_ref() else {
            self.wrong_type(value, path, "an integer");
            return None;
        };
        let span = value.span();
        let Ok(n) = i128::from_str_radix(int.as_str(), int.radix()) else {
            self.report(
                &span,
                format!("{path} is out of range: expected at most {max}"),
            );
            return None;
        };
        if n < min {
            self.report(&span, format!("{path} must be at least {min}, found {n}"));
            None
        } else if n > max {
            self.report(&span, format!("{path} must be at most {max}, found {n}"));
            None
        } else {
            Some(n)
        }
    }

    fn duration(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Duration> {
        let DeValue::String(s) = value.get_ref() else {
            self.wrong_type(value, path, "a duration string such as \"500ms\" or \"2s\"");
            return None;
        };
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.report(
                    &value.span(),
                    format!("invalid duration {s:?} for {path}: {e}"),
                );
                None
            }
        }
    }

    /// A duration that must be greater than zero.
    fn positive_duration(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Duration> {
        let d = self.duration(value, path)?;
        if d.is_zero() {
            self.report(
                &value.span(),
                format!("{path} must be greater than 0s, for example \"500ms\""),
            );
            return None;
        }
        Some(d)
    }

    fn addr(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        usage: AddrUse,
    ) -> Option<SocketAddr> {
        let example = usage.example();
        let DeValue::String(s) = value.get_ref() else {
            self.wrong_type(
                value,
                path,
                &format!("a string IP:port such as \"{example}\""),
            );
            return None;
        };
        let span = value.span();
        let Ok(addr) = s.parse::<SocketAddr>() else {
            self.report(
                &span,
                format!(
                    "invalid address {s:?} for {path}: expected IP:port, for example {example} \
                     or [::1]:6379 (host names are not resolved)"
                ),
            );
            return None;
        };
        if let AddrUse::Node | AddrUse::Sentinel = usage {
            if addr.port() == 0 {
                self.report(
                    &span,
                    format!("invalid address {s:?} for {path}: port 0 cannot be connected to"),
                );
                return None;
            }
            if addr.ip().is_unspecified() || addr.ip().is_multicast() {
                self.report(
                    &span,
                    format!(
                        "invalid address {s:?} for {path}: {} is not the address of one {}",
                        addr.ip(),
                        usage.noun()
                    ),
                );
                return None;
            }
        }
        Some(addr)
    }

    fn root(&mut self, root: &DeTable<'_>, file: usize, kind: FileKind) -> FileDraft {
        let mut draft = FileDraft {
            parsed: true,
            ..FileDraft::default()
        };
        for (key, value) in root.iter() {
            let name = key.get_ref().as_ref();
            if kind == FileKind::Included
                && matches!(name, "include" | "admin" | "log" | "drain" | "runtime")
            {
                let what = if name == "include" {
                    "include".to_string()
                } else {
                    format!("[{name}]")
                };
                self.report(
                    &key.span(),
                    format!(
                        "{what} is not allowed in an included file: included files may only hold [[service]] tables"
                    ),
                );
                continue;
            }
            match name {
                "include" => draft.includes = self.includes(value),
                "admin" => draft.admin = self.admin(value),
                "log" => draft.log = self.log(value),
                "drain" => draft.drain = self.drain(value),
                "runtime" => draft.runtime = self.runtime(value),
                "service" => {
                    draft.has_service_key =
                        !matches!(value.get_ref(), DeValue::Array(items) if items.is_empty());
                    draft.services = self.services(value, file);
                }
                _ => {
                    let expected = match kind {
                        FileKind::Main => ROOT_KEYS,
                        FileKind::Included => &["service"],
                    };
                    self.unknown(key, "at the top level", expected);
                }
            }
        }
        draft
    }

    fn includes(&mut self, value: &Spanned<DeValue<'_>>) -> Vec<Spanned<String>> {
        const EXPECTED: &str = "an array of glob patterns such as [\"conf.d/*.toml\"]";
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(value, "include", EXPECTED);
            return Vec::new();
        };
        let mut patterns = Vec::new();
        for item in items.iter() {
            let Some(pattern) = self.string(item, "include") else {
                continue;
            };
            if pattern.is_empty() {
                self.report(
                    &item.span(),
                    format!("empty pattern in include: expected {EXPECTED}"),
                );
                continue;
            }
            patterns.push(Spanned::new(item.span(), pattern.to_string()));
        }
        patterns
    }

    fn admin(&mut self, value: &Spanned<DeValue<'_>>) -> Option<Admin> {
        let table = self.table(value, "admin")?;
        let mut admin = Admin::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "listen" => {
                    if let Some(addr) = self.addr(value, "admin.listen", AddrUse::Listen) {
                        admin.listen = addr;
                    }
                }
                _ => self.unknown(key, "in [admin]", ADMIN_KEYS),
            }
        }
        Some(admin)
    }

    fn log(&mut self, value: &Spanned<DeValue<'_>>) -> Option<Log> {
        let table = self.table(value, "log")?;
        let mut log = Log::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "format" => match self.string(value, "log.format") {
                    Some("text") => log.format = LogFormat::Text,
                    Some("json") => log.format = LogFormat::Json,
                    Some(other) => self.report(
                        &value.span(),
                        format!("invalid log.format {other:?}: expected \"text\" or \"json\""),
                    ),
                    None => {}
                },
                "level" => {
                    if let Some(level) = self.string(value, "log.level") {
                        match check_log_level(level) {
                            Ok(()) => log.level = level.to_string(),
                            Err(e) => self
                                .report(&value.span(), format!("invalid log.level {level:?}: {e}")),
                        }
                    }
                }
                _ => self.unknown(key, "in [log]", LOG_KEYS),
            }
        }
        Some(log)
    }

    fn drain(&mut self, value: &Spanned<DeValue<'_>>) -> Option<Drain> {
        let table = self.table(value, "drain")?;
        let mut drain = Drain::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "timeout" => {
                    if let Some(d) = self.duration(value, "drain.timeout") {
                        drain.timeout = d;
                    }
                }
                _ => self.unknown(key, "in [drain]", DRAIN_KEYS),
            }
        }
        Some(drain)
    }

    fn runtime(&mut self, value: &Spanned<DeValue<'_>>) -> Option<Runtime> {
        let table = self.table(value, "runtime")?;
        let mut runtime = Runtime::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "workers" => {
                    runtime.workers = self
                        .integer(value, "runtime.workers", 1, MAX_WORKERS as i128)
                        .map(to_usize);
                }
                _ => self.unknown(key, "in [runtime]", RUNTIME_KEYS),
            }
        }
        Some(runtime)
    }

    fn services(&mut self, value: &Spanned<DeValue<'_>>, file: usize) -> Vec<ServiceDraft> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(
                value,
                "service",
                "an array of tables (write each service as [[service]], with two brackets)",
            );
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| self.service(item, file))
            .collect()
    }

    fn service(&mut self, value: &Spanned<DeValue<'_>>, file: usize) -> Option<ServiceDraft> {
        let table = self.table(value, "service")?;
        let mut draft = ServiceDraft {
            file,
            name: None,
            listen: None,
            nodes: Vec::new(),
            username: None,
            password_file: None,
            check: Check::default(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            tcp: Tcp::default(),
            sentinel: None,
            proxy_protocol: false,
        };
        let (mut has_name, mut has_listen, mut has_nodes) = (false, false, false);
        let mut username_span = None;
        // Whether `nodes` was an empty array: an error only without Sentinel.
        let mut empty_nodes = None;
        let mut check_interval_ok = true;
        // The `sentinel` key, and what its table says before defaults.
        let mut sentinel = None;
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "name" => {
                    has_name = true;
                    draft.name = self.service_name(value);
                }
                "listen" => {
                    has_listen = true;
                    draft.listen = self
                        .addr(value, "service.listen", AddrUse::Listen)
                        .map(|addr| Spanned::new(value.span(), addr));
                }
                "nodes" => {
                    has_nodes = true;
                    if matches!(value.get_ref(), DeValue::Array(items) if items.is_empty()) {
                        empty_nodes = Some(value.span());
                    }
                    draft.nodes = self
                        .addresses(value, "service.nodes", AddrUse::Node)
                        .into_iter()
                        .map(|addr| NodeAddr(addr.into_inner()))
                        .collect();
                }
                "username" => {
                    username_span = Some(value.span());
                    draft.username = self.username(value, "service.username");
                }
                "password_file" => {
                    draft.password_file = self.password_file(value, "service.password_file");
                }
                "check" => {
                    let found = self.check(value);
                    draft.check = found.check;
                    check_interval_ok = found.interval_ok;
                }
                "sentinel" => sentinel = Some(self.sentinel(value)),
                "timeouts" => draft.timeouts = self.timeouts(value),
                "limits" => draft.limits = self.limits(value),
                "tcp" => draft.tcp = self.tcp(value),
                "proxy_protocol" => {
                    if let Some(enabled) = self.boolean(value, "service.proxy_protocol") {
                        draft.proxy_protocol = enabled;
                    }
                }
                _ => self.unknown(key, "in [[service]]", SERVICE_KEYS),
            }
        }
        let header = value.span();
        // With Sentinel, nodes are discovered: static ones are optional.
        let nodes_optional = sentinel.is_some();
        for (present, key, example) in [
            (has_name, "name", "name = \"redis\""),
            (has_listen, "listen", "listen = \"0.0.0.0:6379\""),
            (
                has_nodes || nodes_optional,
                "nodes",
                "nodes = [\"10.0.0.11:6379\"]",
            ),
        ] {
            if !present {
                self.report(
                    &header,
                    format!("missing key {key:?} in [[service]]: expected for example {example}"),
                );
            }
        }
        if let Some(span) = empty_nodes
            && !nodes_optional
        {
            self.report(
                &span,
                "service.nodes is empty: expected at least one IP:port, for example [\"10.0.0.11:6379\"], \
                 or a [service.sentinel] table to discover the nodes from"
                    .to_string(),
            );
        }
        self.username_needs_password(username_span, draft.password_file.is_some(), "service");
        if let Some(Some((mut found, timing))) = sentinel {
            (found.interval, found.timeout) =
                self.sentinel_timing(timing, &draft.check, check_interval_ok);
            for addr in &found.nodes {
                if draft.nodes.contains(&NodeAddr(addr.get_ref().0)) {
                    self.report(
                        &addr.span(),
                        format!(
                            "sentinel {} in service.sentinel.nodes is also in service.nodes: \
                             a sentinel is not a Redis node (sentinels usually listen on port 26379)",
                            addr.get_ref()
                        ),
                    );
                }
            }
            draft.sentinel = Some(found);
        }
        Some(draft)
    }

    /// `username` without `password_file` (in `[{table}]`) is an error.
    fn username_needs_password(
        &mut self,
        username_span: Option<Range<usize>>,
        has_password_file: bool,
        table: &str,
    ) {
        if let Some(span) = username_span
            && !has_password_file
        {
            self.report(
                &span,
                format!(
                    "{table}.username is set without {table}.password_file: an ACL user needs a password"
                ),
            );
        }
    }

    /// `[service.sentinel]`, its timing left for [`Walker::sentinel_timing`].
    /// `None` when it is not a table (reported).
    fn sentinel(
        &mut self,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<(SentinelDraft, SentinelTiming)> {
        let table = self.table(value, "service.sentinel")?;
        let mut draft = SentinelDraft {
            master_name: None,
            nodes: Vec::new(),
            username: None,
            password_file: None,
            interval: Duration::ZERO,
            timeout: Duration::ZERO,
        };
        let mut timing = SentinelTiming::default();
        let (mut has_master_name, mut has_nodes) = (false, false);
        let mut username_span = None;
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "master_name" => {
                    has_master_name = true;
                    draft.master_name = self.master_name(value);
                }
                "nodes" => {
                    has_nodes = true;
                    if matches!(value.get_ref(), DeValue::Array(items) if items.is_empty()) {
                        self.report(
                            &value.span(),
                            "service.sentinel.nodes is empty: expected at least one IP:port, \
                             for example [\"10.0.0.11:26379\"]"
                                .to_string(),
                        );
                    }
                    draft.nodes = self
                        .addresses(value, "service.sentinel.nodes", AddrUse::Sentinel)
                        .into_iter()
                        .map(|addr| Spanned::new(addr.span(), SentinelAddr(addr.into_inner())))
                        .collect();
                }
                "username" => {
                    username_span = Some(value.span());
                    draft.username = self.username(value, "service.sentinel.username");
                }
                "password_file" => {
                    draft.password_file =
                        self.password_file(value, "service.sentinel.password_file");
                }
                "interval" => match self.positive_duration(value, "service.sentinel.interval") {
                    Some(d) => timing.interval = Some(d),
                    None => timing.interval_bad = true,
                },
                "timeout" => {
                    timing.timeout = self
                        .positive_duration(value, "service.sentinel.timeout")
                        .map(|d| Spanned::new(value.span(), d));
                }
                _ => self.unknown(key, "in [service.sentinel]", SENTINEL_KEYS),
            }
        }
        let header = value.span();
        for (present, key, example) in [
            (has_master_name, "master_name", "master_name = \"mymaster\""),
            (
                has_nodes,
                "nodes",
                "nodes = [\"10.0.0.11:26379\", \"10.0.0.12:26379\", \"10.0.0.13:26379\"]",
            ),
        ] {
            if !present {
                self.report(
                    &header,
                    format!(
                        "missing key {key:?} in [service.sentinel]: expected for example {example}"
                    ),
                );
            }
        }
        self.username_needs_password(
            username_span,
            draft.password_file.is_some(),
            "service.sentinel",
        );
        Some((draft, timing))
    }

    /// The sentinels' `interval` and `timeout`: as written, else the service's
    /// `check` values. An inherited timeout is lowered to the interval; a
    /// written one above it is an error. `check_interval_ok`: whether
    /// `check.interval` can be named in a message (it was not invalid).
    fn sentinel_timing(
        &mut self,
        timing: SentinelTiming,
        check: &Check,
        check_interval_ok: bool,
    ) -> (Duration, Duration) {
        let interval = timing.interval.unwrap_or(check.interval);
        let Some(timeout) = timing.timeout else {
            return (interval, check.timeout.min(interval));
        };
        let comparable = match timing.interval {
            Some(_) => true,
            None => !timing.interval_bad && check_interval_ok,
        };
        if comparable && *timeout.get_ref() > interval {
            let interval_text = match timing.interval {
                Some(_) => format_duration(interval),
                None => format!("{}, from service.check.interval", format_duration(interval)),
            };
            self.report(
                &timeout.span(),
                format!(
                    "service.sentinel.timeout ({}) must not exceed service.sentinel.interval ({interval_text})",
                    format_duration(*timeout.get_ref())
                ),
            );
        }
        (interval, *timeout.get_ref())
    }

    fn master_name(&mut self, value: &Spanned<DeValue<'_>>) -> Option<String> {
        let name = self.string(value, "service.sentinel.master_name")?;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.report(
                &value.span(),
                format!(
                    "invalid service.sentinel.master_name {name:?}: expected the name given to \
                     `sentinel monitor`, without spaces, for example \"mymaster\""
                ),
            );
            return None;
        }
        Some(name.to_string())
    }

    /// A `password_file` value: a non-empty path, as written.
    fn password_file(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<Spanned<PathBuf>> {
        let file = self.string(value, path)?;
        if file.is_empty() {
            self.report(
                &value.span(),
                format!("{path} is empty: expected the path of a file holding the password"),
            );
            return None;
        }
        Some(Spanned::new(value.span(), PathBuf::from(file)))
    }

    fn service_name(&mut self, value: &Spanned<DeValue<'_>>) -> Option<Spanned<String>> {
        let name = self.string(value, "service.name")?;
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            self.report(
                &value.span(),
                format!(
                    "invalid service name {name:?}: expected letters, digits, \"_\", \".\" or \"-\", for example \"redis\""
                ),
            );
            return None;
        }
        Some(Spanned::new(value.span(), name.to_string()))
    }

    fn username(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<String> {
        let name = self.string(value, path)?;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.report(
                &value.span(),
                format!("invalid {path} {name:?}: expected an ACL user name, without spaces"),
            );
            return None;
        }
        Some(name.to_string())
    }

    /// An array of node or sentinel addresses: each valid and listed once.
    /// Whether it may be empty is the caller's business.
    fn addresses(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        usage: AddrUse,
    ) -> Vec<Spanned<SocketAddr>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(
                value,
                path,
                &format!(
                    "an array of IP:port strings such as [\"{}\"]",
                    usage.example()
                ),
            );
            return Vec::new();
        };
        let noun = usage.noun();
        let mut addrs: Vec<Spanned<SocketAddr>> = Vec::new();
        for item in items.iter() {
            let Some(addr) = self.addr(item, path, usage) else {
                continue;
            };
            if addrs.iter().any(|a| *a.get_ref() == addr) {
                self.report(
                    &item.span(),
                    format!("duplicate {noun} {addr} in {path}: list each {noun} once"),
                );
                continue;
            }
            addrs.push(Spanned::new(item.span(), addr));
        }
        addrs
    }

    fn check(&mut self, value: &Spanned<DeValue<'_>>) -> CheckDraft {
        let mut check = Check::default();
        let Some(table) = self.table(value, "service.check") else {
            return CheckDraft {
                check,
                interval_ok: false,
            };
        };
        let mut interval_span = None;
        let mut timeout_span = None;
        let mut interval_ok = true;
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "interval" => {
                    interval_span = Some(value.span());
                    match self.positive_duration(value, "service.check.interval") {
                        Some(d) => check.interval = d,
                        None => interval_ok = false,
                    }
                }
                "timeout" => {
                    if let Some(d) = self.positive_duration(value, "service.check.timeout") {
                        timeout_span = Some(value.span());
                        check.timeout = d;
                    }
                }
                "rise" => {
                    if let Some(n) = self.integer(value, "service.check.rise", 1, u32::MAX.into()) {
                        check.rise = to_u32(n);
                    }
                }
                "fall" => {
                    if let Some(n) = self.integer(value, "service.check.fall", 1, u32::MAX.into()) {
                        check.fall = to_u32(n);
                    }
                }
                _ => self.unknown(key, "in [service.check]", CHECK_KEYS),
            }
        }
        match timeout_span {
            // Not given: the default, but never more than the interval.
            None => check.timeout = check.timeout.min(check.interval),
            Some(span) if interval_ok && check.timeout > check.interval => {
                let interval = match interval_span {
                    Some(_) => format_duration(check.interval),
                    None => format!("{}, the default", format_duration(check.interval)),
                };
                self.report(
                    &span,
                    format!(
                        "service.check.timeout ({}) must not exceed service.check.interval ({interval})",
                        format_duration(check.timeout)
                    ),
                );
            }
            Some(_) => {}
        }
        CheckDraft { check, interval_ok }
    }

    fn timeouts(&mut self, value: &Spanned<DeValue<'_>>) -> Timeouts {
        let mut timeouts = Timeouts::default();
        let Some(table) = self.table(value, "service.timeouts") else {
            return timeouts;
        };
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "connect" => {
                    if let Some(d) = self.positive_duration(value, "service.timeouts.connect") {
                        timeouts.connect = d;
                    }
                }
                "hold" => {
                    if let Some(d) = self.duration(value, "service.timeouts.hold") {
                        timeouts.hold = d;
                    }
                }
                "idle" => {
                    if let Some(d) = self.duration(value, "service.timeouts.idle") {
                        timeouts.idle = (!d.is_zero()).then_some(d);
                    }
                }
                _ => self.unknown(key, "in [service.timeouts]", TIMEOUTS_KEYS),
            }
        }
        timeouts
    }

    fn limits(&mut self, value: &Spanned<DeValue<'_>>) -> Limits {
        let mut limits = Limits::default();
        let Some(table) = self.table(value, "service.limits") else {
            return limits;
        };
        let max = i128::try_from(usize::MAX).unwrap_or(i128::MAX);
        let mut held_span = None;
        let mut sessions_ok = true;
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "max_sessions" => {
                    match self.integer(value, "service.limits.max_sessions", 1, max) {
                        Some(n) => limits.max_sessions = to_usize(n),
                        None => sessions_ok = false,
                    }
                }
                "max_held" => {
                    if let Some(n) = self.integer(value, "service.limits.max_held", 0, max) {
                        held_span = Some(value.span());
                        limits.max_held = to_usize(n);
                    }
                }
                _ => self.unknown(key, "in [service.limits]", LIMITS_KEYS),
            }
        }
        match held_span {
            // Not given: the default, but never more than max_sessions.
            None => limits.max_held = limits.max_held.min(limits.max_sessions),
            Some(span) if sessions_ok && limits.max_held > limits.max_sessions => {
                self.report(
                    &span,
                    format!(
                        "service.limits.max_held ({}) must not exceed service.limits.max_sessions ({})",
                        limits.max_held, limits.max_sessions
                    ),
                );
            }
            Some(_) => {}
        }
        limits
    }

    fn tcp(&mut self, value: &Spanned<DeValue<'_>>) -> Tcp {
        let mut tcp = Tcp::default();
        let Some(table) = self.table(value, "service.tcp") else {
            return tcp;
        };
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "keepalive" => {
                    let Some(d) = self.duration(value, "service.tcp.keepalive") else {
                        continue;
                    };
                    if d.is_zero() {
                        tcp.keepalive = None;
                    } else if d < Duration::from_secs(1) || d > MAX_KEEPALIVE {
                        self.report(
                            &value.span(),
                            format!(
                                "service.tcp.keepalive must be between 1s and {}s, or 0s to turn keepalive off",
                                MAX_KEEPALIVE.as_secs()
                            ),
                        );
                    } else {
                        tcp.keepalive = Some(d);
                    }
                }
                _ => self.unknown(key, "in [service.tcp]", TCP_KEYS),
            }
        }
        tcp
    }
}

/// Checks across every service of every file: unique names, listen addresses
/// that do not overlap each other or the admin listener. Each problem points at
/// the second occurrence and names the first.
pub(crate) fn check_services(
    sources: &[Source],
    services: &[ServiceDraft],
    admin: &Admin,
    problems: &mut Vec<Problem>,
) {
    let place = |file: usize, span: &Range<usize>| -> String {
        let p = sources[file].problem(span, "");
        format!("{}:{}:{}", p.file.display(), p.line, p.col)
    };
    for (i, service) in services.iter().enumerate() {
        let src = &sources[service.file];
        if let Some(name) = &service.name {
            let first = services[..i].iter().find_map(|s| {
                s.name
                    .as_ref()
                    .filter(|n| n.get_ref() == name.get_ref())
                    .map(|n| (s.file, n))
            });
            if let Some((file, first)) = first {
                problems.push(src.problem(
                    &name.span(),
                    format!(
                        "duplicate service name {:?}: first defined at {}",
                        name.get_ref(),
                        place(file, &first.span())
                    ),
                ));
            }
        }
        let Some(listen) = &service.listen else {
            continue;
        };
        let addr = *listen.get_ref();
        if overlaps(addr, admin.listen) {
            problems.push(src.problem(
                &listen.span(),
                format!(
                    "service.listen {addr} overlaps admin.listen {}: use another port",
                    admin.listen
                ),
            ));
            continue;
        }
        let first = services[..i].iter().find_map(|s| {
            s.listen
                .as_ref()
                .filter(|l| overlaps(addr, *l.get_ref()))
                .map(|l| (s, l))
        });
        if let Some((other, first)) = first {
            let other_name = other.name.as_ref().map_or_else(
                || "another service".to_string(),
                |n| format!("service {:?}", n.get_ref()),
            );
            let at = place(other.file, &first.span());
            let what = if *first.get_ref() == addr {
                format!("is already the listen address of {other_name} at {at}")
            } else {
                format!("overlaps {} of {other_name} at {at}", first.get_ref())
            };
            problems.push(src.problem(
                &listen.span(),
                format!("service.listen {addr} {what}: each service needs its own address"),
            ));
        }
    }
}

/// Whether binding both addresses would clash: same port (not 0, which picks a
/// free one) and the same IP, or a wildcard IP of the same family.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let same_family = a.is_ipv4() == b.is_ipv4();
    a.ip() == b.ip() || (same_family && (a.ip().is_unspecified() || b.ip().is_unspecified()))
}

/// A light check of a tracing filter directive (`info`, `keyway=debug,warn`):
/// each comma-separated directive must end in a level. A bare word that is not a
/// level (`inf`) is valid filter syntax (a target at every level) but is almost
/// always a typo, so it is refused.
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    const EXPECTED: &str = "expected a level (trace, debug, info, warn, error, off) or target=level directives separated by commas";
    if level.trim().is_empty() {
        return Err(EXPECTED.to_string());
    }
    for directive in level.split(',') {
        let level_part = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&level_part.trim().to_ascii_lowercase().as_str()) {
            return Err(EXPECTED.to_string());
        }
    }
    Ok(())
}

fn to_u32(n: i128) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn to_usize(n: i128) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn article(type_str: &str) -> String {
    match type_str.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_str}"),
        _ => format!("a {type_str}"),
    }
}

/// `a, b or c`.
fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::types::{Config, Sentinel};

    /// An origin in a directory that does not exist: no include can match and
    /// no file is read, so these tests stay pure.
    const ORIGIN: &str = "/nonexistent-keyway-test/keyway.toml";

    fn load(text: &str) -> Result<Config, Vec<String>> {
        Config::from_toml_str(text, Path::new(ORIGIN)).map_err(|problems| {
            problems
                .iter()
                .map(|p| {
                    assert_eq!(p.file, Path::new(ORIGIN));
                    format!("{}:{}: {}", p.line, p.col, p.message)
                })
                .collect()
        })
    }

    fn ok(text: &str) -> Config {
        match load(text) {
            Ok(config) => config,
            Err(problems) => panic!("expected a valid config, got:\n{}", problems.join("\n")),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match load(text) {
            Ok(config) => panic!("expected problems, got {config:?}"),
            Err(problems) => problems,
        }
    }

    /// Exactly one problem, and it contains `needle`; returns it.
    fn one_error(text: &str, needle: &str) -> String {
        let problems = errors(text);
        assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
        assert!(
            problems[0].contains(needle),
            "{:?} does not contain {needle:?}",
            problems[0]
        );
        problems[0].clone()
    }

    const MINIMAL: &str = r#"
[[service]]
name = "redis"
listen = "127.0.0.1:6379"
nodes = ["10.0.0.11:6379"]
"#;

    /// MINIMAL plus `extra` lines at the end of the service table.
    fn with(extra: &str) -> String {
        format!("{MINIMAL}{extra}\n")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn defaults_applied() {
        let config = ok(MINIMAL);
        assert_eq!(config.admin, Admin::default());
        assert_eq!(config.admin.listen, addr("127.0.0.1:9470"));
        assert_eq!(config.log, Log::default());
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.drain, Drain::default());
        assert_eq!(config.drain.timeout, Duration::from_secs(30));
        assert_eq!(config.sources, vec![PathBuf::from(ORIGIN)]);
        let [service] = config.services.as_slice() else {
            panic!("one service expected");
        };
        assert_eq!(service.name, "redis");
        assert_eq!(service.listen, addr("127.0.0.1:6379"));
        assert_eq!(service.nodes, vec![NodeAddr(addr("10.0.0.11:6379"))]);
        assert_eq!(service.auth, None);
        assert_eq!(service.check, Check::default());
        assert_eq!(service.timeouts, Timeouts::default());
        assert_eq!(service.limits, Limits::default());
        assert_eq!(service.tcp, Tcp::default());
        assert!(!service.proxy_protocol);
    }

    #[test]
    fn proxy_protocol_is_a_boolean() {
        assert!(ok(&with("proxy_protocol = true")).services[0].proxy_protocol);
        assert!(!ok(&with("proxy_protocol = false")).services[0].proxy_protocol);
        // Keys before the first sub-table belong to the service.
        let config = ok(&with(
            "proxy_protocol = true\n[service.timeouts]\nhold = \"1s\"",
        ));
        assert!(config.services[0].proxy_protocol);
        for (value, found) in [
            ("\"true\"", "a string"),
            ("1", "an integer"),
            ("[true]", "an array"),
        ] {
            assert_eq!(
                errors(&with(&format!("proxy_protocol = {value}"))),
                [format!(
                    "6:18: invalid type for service.proxy_protocol: expected a boolean (true or \
                     false), found {found}"
                )]
            );
        }
        // It belongs to the service, not to a sub-table.
        one_error(
            &with("[service.tcp]\nproxy_protocol = true"),
            "7:1: unknown key \"proxy_protocol\" in [service.tcp]: expected keepalive",
        );
        // Each service has its own.
        let config = ok(r#"
[[service]]
name = "a"
listen = "0.0.0.0:6379"
nodes = ["10.0.0.11:6379"]
proxy_protocol = true
[[service]]
name = "b"
listen = "0.0.0.0:6380"
nodes = ["10.0.0.21:6379"]
"#);
        assert!(config.services[0].proxy_protocol);
        assert!(!config.services[1].proxy_protocol);
    }

    #[test]
    fn every_key_parsed() {
        let config = ok(r#"
[admin]
listen = "0.0.0.0:9000"

[log]
format = "json"
level = "keyway=debug,warn"

[drain]
timeout = "1.5m"

[[service]]
name = "main.redis-1_a"
listen = "[::1]:7000"
nodes = ["10.0.0.11:6379", "[fd00::12]:6380"]

[service.check]
interval = "1s"
timeout = "1s"
rise = 3
fall = 5

[service.timeouts]
connect = "1.5s"
hold = "0s"
idle = "10m"

[service.limits]
max_sessions = 0x10
max_held = 16

[service.tcp]
keepalive = "2h"

[[service]]
name = "second"
listen = "0.0.0.0:7001"
nodes = ["10.0.0.21:6379"]
timeouts = { idle = "0s", hold = "250ms" }
tcp.keepalive = "0s"
limits.max_held = 0
"#);
        assert_eq!(config.admin.listen, addr("0.0.0.0:9000"));
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.level, "keyway=debug,warn");
        assert_eq!(config.drain.timeout, Duration::from_secs(90));
        let [first, second] = config.services.as_slice() else {
            panic!("two services expected");
        };
        assert_eq!(first.name, "main.redis-1_a");
        assert_eq!(first.listen, addr("[::1]:7000"));
        assert_eq!(
            first.nodes,
            vec![
                NodeAddr(addr("10.0.0.11:6379")),
                NodeAddr(addr("[fd00::12]:6380"))
            ]
        );
        assert_eq!(
            first.check,
            Check {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                rise: 3,
                fall: 5,
            }
        );
        assert_eq!(
            first.timeouts,
            Timeouts {
                connect: Duration::from_millis(1_500),
                hold: Duration::ZERO,
                idle: Some(Duration::from_secs(600)),
            }
        );
        assert_eq!(
            first.limits,
            Limits {
                max_sessions: 16,
                max_held: 16,
            }
        );
        assert_eq!(first.tcp.keepalive, Some(Duration::from_secs(7_200)));
        assert_eq!(second.name, "second");
        assert_eq!(second.timeouts.idle, None);
        assert_eq!(second.timeouts.hold, Duration::from_millis(250));
        assert_eq!(second.tcp.keepalive, None);
        assert_eq!(second.limits.max_held, 0);
        assert_eq!(second.limits.max_sessions, 10_000);
    }

    #[test]
    fn defaults_never_contradict_an_explicit_value() {
        let config = ok(&with(
            "check.interval = \"100ms\"\nlimits.max_sessions = 10",
        ));
        let service = &config.services[0];
        assert_eq!(service.check.timeout, Duration::from_millis(100));
        assert_eq!(service.limits.max_held, 10);
    }

    #[test]
    fn unknown_keys_at_their_position() {
        let problems = errors(
            r#"color = "blue"
[admin]
port = 1
[log]
colour = true
[[service]]
name = "redis"
listen = "127.0.0.1:6379"
nodes = ["10.0.0.11:6379"]
role = "master"
[service.check]
intervall = "1s"
[service.timeouts]
read = "1s"
[service.limits]
max = 1
[service.tcp]
nodelay = true
[service.sentinel]
master_name = "mymaster"
nodes = ["10.0.0.11:26379"]
quorum = 2
[drain]
grace = "5s"
"#,
        );
        assert_eq!(
            problems,
            vec![
                "1:1: unknown key \"color\" at the top level: expected include, admin, log, drain, runtime or service",
                "3:1: unknown key \"port\" in [admin]: expected listen",
                "5:1: unknown key \"colour\" in [log]: expected format or level",
                "10:1: unknown key \"role\" in [[service]]: expected name, listen, nodes, username, \
                 password_file, check, timeouts, limits, tcp, sentinel or proxy_protocol",
                "12:1: unknown key \"intervall\" in [service.check]: expected interval, timeout, rise or fall",
                "14:1: unknown key \"read\" in [service.timeouts]: expected connect, hold or idle",
                "16:1: unknown key \"max\" in [service.limits]: expected max_sessions or max_held",
                "18:1: unknown key \"nodelay\" in [service.tcp]: expected keepalive",
                "22:1: unknown key \"quorum\" in [service.sentinel]: expected master_name, nodes, \
                 username, password_file, interval or timeout",
                "24:1: unknown key \"grace\" in [drain]: expected timeout",
            ]
        );
    }

    #[test]
    fn inline_password_gets_a_hint() {
        one_error(
            &with("password = \"hunter2\""),
            "6:1: unknown key \"password\" in [[service]]: passwords are never written in the configuration",
        );
    }

    #[test]
    fn wrong_types() {
        one_error(
            &with("check.rise = \"2\""),
            "6:14: invalid type for service.check.rise: expected an integer, found a string",
        );
        one_error(
            &with("check.interval = 500"),
            "invalid type for service.check.interval: expected a duration string such as \"500ms\" or \"2s\", found an integer",
        );
        one_error(
            &with("check = 1"),
            "invalid type for service.check: expected a table ([service.check]), found an integer",
        );
        one_error(
            &format!("admin = \"x\"\n{MINIMAL}"),
            "1:9: invalid type for admin: expected a table ([admin]), found a string",
        );
        one_error(
            &format!("include = \"conf.d/*.toml\"\n{MINIMAL}"),
            "invalid type for include: expected an array of glob patterns",
        );
        one_error(
            &format!("include = [1]\n{MINIMAL}"),
            "1:12: invalid type for include: expected a string, found an integer",
        );
        one_error(
            &with("limits.max_sessions = 1.5"),
            "expected an integer, found a float",
        );
        one_error(&with("check.fall = true"), "found a boolean");
        one_error(&with("tcp.keepalive = 1979-05-27"), "found a datetime");
        one_error(
            "[service]\nname = \"x\"\n",
            "1:1: invalid type for service: expected an array of tables (write each service as [[service]], with two brackets), found a table",
        );
    }

    #[test]
    fn bad_durations() {
        one_error(
            &with("[service.check]\ninterval = \"5x\""),
            "7:12: invalid duration \"5x\" for service.check.interval: expected a number with unit ms, s, m or h",
        );
        one_error(&with("timeouts.hold = \"-1s\""), "cannot be negative");
        one_error(&with("timeouts.connect = \"5\""), "missing unit");
        one_error(&with("timeouts.idle = \"\""), "invalid duration \"\"");
        one_error(
            &with("timeouts.connect = \"0s\""),
            "service.timeouts.connect must be greater than 0s",
        );
        one_error(
            &with("check.timeout = \"0ms\""),
            "service.check.timeout must be greater than 0s",
        );
        one_error(
            &with("check.interval = \"0s\""),
            "service.check.interval must be greater than 0s",
        );
        one_error(
            &with("tcp.keepalive = \"500ms\""),
            "service.tcp.keepalive must be between 1s and 32767s, or 0s to turn keepalive off",
        );
        one_error(&with("tcp.keepalive = \"10h\""), "between 1s and 32767s");
    }

    #[test]
    fn timeout_must_not_exceed_interval() {
        one_error(
            &with("check.timeout = \"2s\""),
            "6:17: service.check.timeout (2s) must not exceed service.check.interval (500ms, the default)",
        );
        one_error(
            &with("check.interval = \"1s\"\ncheck.timeout = \"1500ms\""),
            "7:17: service.check.timeout (1500ms) must not exceed service.check.interval (1s)",
        );
    }

    #[test]
    fn bad_addresses() {
        one_error(
            &with("[admin]")
                .replace("[admin]", "")
                .replace("listen = \"127.0.0.1:6379\"", "listen = \"localhost:6379\""),
            "4:10: invalid address \"localhost:6379\" for service.listen: expected IP:port, for example 0.0.0.0:6379 or [::1]:6379 (host names are not resolved)",
        );
        let problems = errors(
            r#"[admin]
listen = "127.0.0.1"
[[service]]
name = "redis"
listen = "127.0.0.1:6379"
nodes = ["redis-1:6379", "10.0.0.1:0", "0.0.0.0:6379", "::1:6379", "10.0.0.2:6379", "10.0.0.2:6379"]
"#,
        );
        assert_eq!(
            problems,
            vec![
                "2:10: invalid address \"127.0.0.1\" for admin.listen: expected IP:port, for example \
                 0.0.0.0:6379 or [::1]:6379 (host names are not resolved)",
                "6:10: invalid address \"redis-1:6379\" for service.nodes: expected IP:port, for example \
                 10.0.0.11:6379 or [::1]:6379 (host names are not resolved)",
                "6:26: invalid address \"10.0.0.1:0\" for service.nodes: port 0 cannot be connected to",
                "6:40: invalid address \"0.0.0.0:6379\" for service.nodes: 0.0.0.0 is not the address of one node",
                "6:56: invalid address \"::1:6379\" for service.nodes: expected IP:port, for example \
                 10.0.0.11:6379 or [::1]:6379 (host names are not resolved)",
                "6:85: duplicate node 10.0.0.2:6379 in service.nodes: list each node once",
            ]
        );
        one_error(
            &with("").replace("nodes = [\"10.0.0.11:6379\"]", "nodes = []"),
            "5:9: service.nodes is empty: expected at least one IP:port",
        );
        one_error(
            &with("").replace("nodes = [\"10.0.0.11:6379\"]", "nodes = \"10.0.0.11:6379\""),
            "invalid type for service.nodes: expected an array of IP:port strings",
        );
    }

    #[test]
    fn listen_port_zero_is_allowed_and_never_a_duplicate() {
        let config = ok(r#"
[admin]
listen = "127.0.0.1:0"
[[service]]
name = "a"
listen = "127.0.0.1:0"
nodes = ["127.0.0.1:7001"]
[[service]]
name = "b"
listen = "127.0.0.1:0"
nodes = ["127.0.0.1:7001"]
"#);
        assert_eq!(config.services.len(), 2);
    }

    #[test]
    fn missing_required_keys_point_at_the_header() {
        let problems = errors("[log]\nlevel = \"warn\"\n\n  [[service]]\nusername = \"u\"\n");
        assert_eq!(
            problems,
            vec![
                "4:3: missing key \"name\" in [[service]]: expected for example name = \"redis\"",
                "4:3: missing key \"listen\" in [[service]]: expected for example listen = \"0.0.0.0:6379\"",
                "4:3: missing key \"nodes\" in [[service]]: expected for example nodes = [\"10.0.0.11:6379\"]",
                "5:12: service.username is set without service.password_file: an ACL user needs a password",
            ]
        );
    }

    #[test]
    fn no_service_at_all() {
        let problems = Config::from_toml_str("[admin]\n", Path::new(ORIGIN))
            .expect_err("no service is an error");
        let empty = Config::from_toml_str("service = []\n", Path::new(ORIGIN))
            .expect_err("an empty service array is an error");
        assert_eq!(empty, problems);
        assert_eq!(
            problems.to_string(),
            format!(
                "{ORIGIN}: no service defined: add a [[service]] table, here or in an included file"
            )
        );
    }

    #[test]
    fn out_of_range_numbers() {
        one_error(
            &with("check.rise = 0"),
            "6:14: service.check.rise must be at least 1, found 0",
        );
        one_error(
            &with("check.fall = -3"),
            "service.check.fall must be at least 1, found -3",
        );
        one_error(
            &with("check.fall = 4294967296"),
            "service.check.fall must be at most 4294967295, found 4294967296",
        );
        one_error(
            &with("limits.max_sessions = 0"),
            "service.limits.max_sessions must be at least 1, found 0",
        );
        one_error(
            &with("limits.max_held = -1"),
            "service.limits.max_held must be at least 0, found -1",
        );
        one_error(
            &with("limits.max_sessions = 10\nlimits.max_held = 11"),
            "7:19: service.limits.max_held (11) must not exceed service.limits.max_sessions (10)",
        );
        one_error(
            &with("limits.max_held = 20000"),
            "service.limits.max_held (20000) must not exceed service.limits.max_sessions (10000)",
        );
    }

    #[test]
    fn names_and_users() {
        one_error(
            &with("").replace("name = \"redis\"", "name = \"my redis\""),
            "3:8: invalid service name \"my redis\": expected letters, digits, \"_\", \".\" or \"-\"",
        );
        one_error(
            &with("").replace("name = \"redis\"", "name = \"\""),
            "invalid service name \"\"",
        );
        let problems = errors(&with("username = \"a b\""));
        assert_eq!(
            problems,
            vec![
                "6:12: invalid service.username \"a b\": expected an ACL user name, without spaces",
                "6:12: service.username is set without service.password_file: an ACL user needs a password",
            ]
        );
        one_error(
            &with("password_file = \"\""),
            "6:17: service.password_file is empty",
        );
    }

    #[test]
    fn log_values() {
        one_error(
            &format!("[log]\nformat = \"yaml\"\n{MINIMAL}"),
            "2:10: invalid log.format \"yaml\": expected \"text\" or \"json\"",
        );
        one_error(
            &format!("[log]\nlevel = \"inf\"\n{MINIMAL}"),
            "2:9: invalid log.level \"inf\": expected a level (trace, debug, info, warn, error, off) or \
             target=level directives separated by commas",
        );
        one_error(
            &format!("[log]\nlevel = \"\"\n{MINIMAL}"),
            "invalid log.level \"\"",
        );
        one_error(
            &format!("[log]\nlevel = \"keyway=verbose\"\n{MINIMAL}"),
            "invalid log.level",
        );
        for good in [
            "trace",
            "DEBUG",
            "warn",
            "error",
            "off",
            "keyway=debug,info",
            "keyway::probe=trace",
        ] {
            ok(&format!("[log]\nlevel = \"{good}\"\n{MINIMAL}"));
        }
    }

    #[test]
    fn drain_values() {
        // Zero is allowed: sessions are closed at once.
        let config = ok(&format!("[drain]\ntimeout = \"0s\"\n{MINIMAL}"));
        assert_eq!(config.drain.timeout, Duration::ZERO);
        let config = ok(&format!("drain = {{ timeout = \"250ms\" }}\n{MINIMAL}"));
        assert_eq!(config.drain.timeout, Duration::from_millis(250));
        // An empty table keeps the default.
        let config = ok(&format!("[drain]\n{MINIMAL}"));
        assert_eq!(config.drain, Drain::default());
        one_error(
            &format!("[drain]\ntimeout = \"30\"\n{MINIMAL}"),
            "2:11: invalid duration \"30\" for drain.timeout: missing unit; expected a number with \
             unit ms, s, m or h",
        );
        one_error(
            &format!("[drain]\ntimeout = \"-1s\"\n{MINIMAL}"),
            "2:11: invalid duration \"-1s\" for drain.timeout: a duration cannot be negative",
        );
        one_error(
            &format!("[drain]\ntimeout = 30\n{MINIMAL}"),
            "2:11: invalid type for drain.timeout: expected a duration string such as \"500ms\" or \
             \"2s\", found an integer",
        );
        one_error(
            &format!("drain = \"30s\"\n{MINIMAL}"),
            "1:9: invalid type for drain: expected a table ([drain]), found a string",
        );
        one_error(
            &format!("[drain]\ntimeout = \"30s\"\nsessions = 1\n{MINIMAL}"),
            "3:1: unknown key \"sessions\" in [drain]: expected timeout",
        );
    }

    #[test]
    fn runtime_values() {
        // Not given: the runtime's own default (one worker per CPU).
        assert_eq!(ok(MINIMAL).runtime.workers, None);
        let config = ok(&format!(
            "[runtime]
workers = 1
{MINIMAL}"
        ));
        assert_eq!(config.runtime.workers, Some(1));
        let config = ok(&format!(
            "[runtime]
workers = {MAX_WORKERS}
{MINIMAL}"
        ));
        assert_eq!(config.runtime.workers, Some(MAX_WORKERS));
        one_error(
            &format!(
                "[runtime]
workers = 0
{MINIMAL}"
            ),
            "2:11: runtime.workers must be at least 1, found 0",
        );
        one_error(
            &format!(
                "[runtime]
workers = 20000
{MINIMAL}"
            ),
            "2:11: runtime.workers must be at most 256, found 20000",
        );
        one_error(
            &format!(
                "[runtime]
workers = \"2\"
{MINIMAL}"
            ),
            "2:11: invalid type for runtime.workers: expected an integer, found a string",
        );
        one_error(
            &format!(
                "[runtime]
threads = 2
{MINIMAL}"
            ),
            "2:1: unknown key \"threads\" in [runtime]: expected workers",
        );
    }

    #[test]
    fn duplicate_names_and_listen_addresses_point_at_the_second() {
        let problems = errors(
            r#"[admin]
listen = "0.0.0.0:9470"
[[service]]
name = "a"
listen = "0.0.0.0:6379"
nodes = ["10.0.0.1:6379"]
[[service]]
name = "a"
listen = "10.0.0.10:6379"
nodes = ["10.0.0.1:6379"]
[[service]]
name = "c"
listen = "127.0.0.1:9470"
nodes = ["10.0.0.1:6379"]
"#,
        );
        assert_eq!(
            problems,
            vec![
                format!("8:8: duplicate service name \"a\": first defined at {ORIGIN}:4:8"),
                format!(
                    "9:10: service.listen 10.0.0.10:6379 overlaps 0.0.0.0:6379 of service \"a\" at \
                     {ORIGIN}:5:10: each service needs its own address"
                ),
                "13:10: service.listen 127.0.0.1:9470 overlaps admin.listen 0.0.0.0:9470: use another port"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn different_families_do_not_overlap() {
        assert!(!overlaps(addr("0.0.0.0:6379"), addr("[::1]:6379")));
        assert!(overlaps(addr("[::]:6379"), addr("[::1]:6379")));
        assert!(overlaps(addr("10.0.0.1:6379"), addr("10.0.0.1:6379")));
        assert!(!overlaps(addr("10.0.0.1:6379"), addr("10.0.0.2:6379")));
        assert!(!overlaps(addr("0.0.0.0:6379"), addr("0.0.0.0:6380")));
    }

    #[test]
    fn several_errors_at_once_with_line_and_column() {
        // Multi-byte characters before a problem: columns count characters.
        let problems = errors(
            "# é€ config\n\
             [admin]\n\
             listen = \"nope\"\n\
             \n\
             [[service]]\n\
             name = \"ré\"\n\
             listen = \"0.0.0.0:6379\"\n\
             nodes = [\"10.0.0.1:6379\"]\n\
             check = { interval = \"1s\", rise = 0, intervall = 3 }\n\
             timeouts.hold = \"soon\"\n",
        );
        assert_eq!(
            problems,
            vec![
                "3:10: invalid address \"nope\" for admin.listen: expected IP:port, for example \
                 0.0.0.0:6379 or [::1]:6379 (host names are not resolved)",
                "6:8: invalid service name \"ré\": expected letters, digits, \"_\", \".\" or \"-\", \
                 for example \"redis\"",
                "9:35: service.check.rise must be at least 1, found 0",
                "9:38: unknown key \"intervall\" in [service.check]: expected interval, timeout, rise or fall",
                "10:17: invalid duration \"soon\" for service.timeouts.hold: expected a number with unit \
                 ms, s, m or h",
            ]
        );
    }

    #[test]
    fn toml_syntax_error_is_one_problem() {
        let problems = errors("[admin]\nlisten = \"127.0.0.1:9470\n[[service]]\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("2:"), "{problems:?}");
        assert!(problems[0].contains("invalid TOML"), "{problems:?}");
        let problems = errors("a = 1\na = 2\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("2:1: invalid TOML: duplicate key"),
            "{problems:?}"
        );
    }

    /// A valid `[service.sentinel]`; after MINIMAL it fills lines 6 to 8.
    const SENTINEL: &str = "[service.sentinel]\nmaster_name = \"mymaster\"\n\
                            nodes = [\"10.0.0.11:26379\", \"10.0.0.12:26379\", \"10.0.0.13:26379\"]";

    /// MINIMAL without its `nodes` line (the service ends on line 4).
    fn without_nodes(text: &str) -> String {
        text.replace("nodes = [\"10.0.0.11:6379\"]\n", "")
    }

    fn sentinel_of(config: &Config) -> &Sentinel {
        config.services[0]
            .sentinel
            .as_ref()
            .expect("a [service.sentinel] table")
    }

    fn sentinel_addr(s: &str) -> SentinelAddr {
        SentinelAddr(addr(s))
    }

    #[test]
    fn sentinel_defaults_come_from_check() {
        assert_eq!(ok(MINIMAL).services[0].sentinel, None);
        let config = ok(&with(SENTINEL));
        let service = &config.services[0];
        let sentinel = sentinel_of(&config);
        assert_eq!(
            *sentinel,
            Sentinel {
                master_name: "mymaster".to_string(),
                nodes: vec![
                    sentinel_addr("10.0.0.11:26379"),
                    sentinel_addr("10.0.0.12:26379"),
                    sentinel_addr("10.0.0.13:26379"),
                ],
                auth: None,
                interval: Duration::from_millis(500),
                timeout: Duration::from_millis(250),
            }
        );
        assert_eq!(sentinel.interval, service.check.interval);
        assert_eq!(sentinel.timeout, service.check.timeout);
        assert_eq!(sentinel.majority(), 2);
    }

    #[test]
    fn sentinel_defaults_follow_check_whatever_the_key_order() {
        // The sentinel table first, the check values after it.
        let config = ok(r#"
[[service]]
name = "redis"
listen = "127.0.0.1:6379"
sentinel = { master_name = "mymaster", nodes = ["10.0.0.11:26379"] }
check.interval = "2s"
check.timeout = "1s"
"#);
        let sentinel = sentinel_of(&config);
        assert_eq!(sentinel.interval, Duration::from_secs(2));
        assert_eq!(sentinel.timeout, Duration::from_secs(1));
        // An inherited timeout is lowered to a shorter interval, never an error.
        let config = ok(&with(&format!("{SENTINEL}\ninterval = \"100ms\"")));
        let sentinel = sentinel_of(&config);
        assert_eq!(sentinel.interval, Duration::from_millis(100));
        assert_eq!(sentinel.timeout, Duration::from_millis(100));
        // A timeout alone, up to the inherited interval.
        let config = ok(&with(&format!("{SENTINEL}\ntimeout = \"500ms\"")));
        let sentinel = sentinel_of(&config);
        assert_eq!(sentinel.interval, Duration::from_millis(500));
        assert_eq!(sentinel.timeout, Duration::from_millis(500));
    }

    #[test]
    fn sentinel_keys_parsed() {
        // Every key but the password file (read from disk: see the load tests).
        let config = ok(r#"
[[service]]
name = "redis"
listen = "127.0.0.1:6379"
nodes = ["10.0.0.11:6379"]
check = { interval = "1s", timeout = "200ms" }

[service.sentinel]
master_name = "redis-main.01"
nodes = ["10.0.0.11:26379", "[fd00::12]:26379", "10.0.0.13:26380", "10.0.0.14:26379"]
interval = "250ms"
timeout = "100ms"
"#);
        let sentinel = sentinel_of(&config);
        assert_eq!(sentinel.master_name, "redis-main.01");
        assert_eq!(
            sentinel.nodes,
            vec![
                sentinel_addr("10.0.0.11:26379"),
                sentinel_addr("[fd00::12]:26379"),
                sentinel_addr("10.0.0.13:26380"),
                sentinel_addr("10.0.0.14:26379"),
            ]
        );
        assert_eq!(sentinel.auth, None);
        assert_eq!(sentinel.interval, Duration::from_millis(250));
        assert_eq!(sentinel.timeout, Duration::from_millis(100));
        // The service's own check is untouched.
        assert_eq!(config.services[0].check.interval, Duration::from_secs(1));
    }

    #[test]
    fn any_number_of_sentinels_with_its_majority() {
        // An even count is allowed (no error, no warning): it only tolerates
        // as few failures as the odd count below it.
        let all = [
            "10.0.0.11:26379",
            "10.0.0.12:26379",
            "10.0.0.13:26379",
            "10.0.0.14:26379",
            "10.0.0.15:26379",
        ];
        for (count, majority) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)] {
            let nodes: Vec<String> = all[..count].iter().map(|a| format!("{a:?}")).collect();
            let config = ok(&with(&format!(
                "[service.sentinel]\nmaster_name = \"m\"\nnodes = [{}]",
                nodes.join(", ")
            )));
            let sentinel = sentinel_of(&config);
            assert_eq!(sentinel.nodes.len(), count);
            assert_eq!(sentinel.majority(), majority, "{count} sentinels");
        }
    }

    #[test]
    fn nodes_are_optional_with_sentinel() {
        let config = ok(&without_nodes(&with(SENTINEL)));
        assert!(config.services[0].nodes.is_empty());
        assert_eq!(sentinel_of(&config).nodes.len(), 3);
        // An empty array says the same (a template with no static node).
        let config = ok(&with(SENTINEL).replace("nodes = [\"10.0.0.11:6379\"]", "nodes = []"));
        assert!(config.services[0].nodes.is_empty());
        // Both: the static nodes are kept (and probed).
        let config = ok(&with(SENTINEL));
        assert_eq!(
            config.services[0].nodes,
            vec![NodeAddr(addr("10.0.0.11:6379"))]
        );
    }

    #[test]
    fn nodes_are_required_without_sentinel() {
        assert_eq!(
            errors(&without_nodes(MINIMAL)),
            [
                "2:1: missing key \"nodes\" in [[service]]: expected for example nodes = [\"10.0.0.11:6379\"]"
            ]
        );
        assert_eq!(
            errors(&MINIMAL.replace("nodes = [\"10.0.0.11:6379\"]", "nodes = []")),
            [
                "5:9: service.nodes is empty: expected at least one IP:port, for example \
                 [\"10.0.0.11:6379\"], or a [service.sentinel] table to discover the nodes from"
            ]
        );
        // A sentinel key of the wrong type still stands for Sentinel: its type
        // is the one problem, not the missing nodes.
        assert_eq!(
            errors(&without_nodes(&with("sentinel = \"10.0.0.11:26379\""))),
            [
                "5:12: invalid type for service.sentinel: expected a table ([service.sentinel]), found a string"
            ]
        );
    }

    #[test]
    fn sentinel_missing_keys_point_at_its_header() {
        assert_eq!(
            errors(&with("  [service.sentinel]\nusername = \"u\"")),
            [
                "6:3: missing key \"master_name\" in [service.sentinel]: expected for example \
                 master_name = \"mymaster\"",
                "6:3: missing key \"nodes\" in [service.sentinel]: expected for example \
                 nodes = [\"10.0.0.11:26379\", \"10.0.0.12:26379\", \"10.0.0.13:26379\"]",
                "7:12: service.sentinel.username is set without service.sentinel.password_file: \
                 an ACL user needs a password",
            ]
        );
        // An inline table: at its opening brace.
        assert_eq!(
            errors(&with("sentinel = { nodes = [\"10.0.0.11:26379\"] }")),
            [
                "6:12: missing key \"master_name\" in [service.sentinel]: expected for example \
                 master_name = \"mymaster\""
            ]
        );
    }

    #[test]
    fn sentinel_bad_values_at_their_position() {
        let problems = errors(&with(
            r#"[service.sentinel]
master_name = "my master"
nodes = ["sentinel-1:26379", "10.0.0.21:0", "[::]:26379", "10.0.0.22:26379", "10.0.0.22:26379"]
username = "a b"
password_file = ""
interval = "0s"
timeout = "soon"
password = "hunter2""#,
        ));
        assert_eq!(
            problems,
            [
                "7:15: invalid service.sentinel.master_name \"my master\": expected the name given to \
                 `sentinel monitor`, without spaces, for example \"mymaster\"",
                "8:10: invalid address \"sentinel-1:26379\" for service.sentinel.nodes: expected IP:port, \
                 for example 10.0.0.11:26379 or [::1]:6379 (host names are not resolved)",
                "8:30: invalid address \"10.0.0.21:0\" for service.sentinel.nodes: port 0 cannot be connected to",
                "8:45: invalid address \"[::]:26379\" for service.sentinel.nodes: :: is not the address \
                 of one sentinel",
                "8:78: duplicate sentinel 10.0.0.22:26379 in service.sentinel.nodes: list each sentinel once",
                "9:12: invalid service.sentinel.username \"a b\": expected an ACL user name, without spaces",
                "9:12: service.sentinel.username is set without service.sentinel.password_file: \
                 an ACL user needs a password",
                "10:17: service.sentinel.password_file is empty: expected the path of a file holding the password",
                "11:12: service.sentinel.interval must be greater than 0s, for example \"500ms\"",
                "12:11: invalid duration \"soon\" for service.sentinel.timeout: expected a number with unit \
                 ms, s, m or h",
                "13:1: unknown key \"password\" in [service.sentinel]: passwords are never written in the \
                 configuration: put it in a file and set password_file",
            ]
        );
    }

    #[test]
    fn sentinel_wrong_types_and_empty_values() {
        let table = |body: &str| with(&format!("[service.sentinel]\n{body}"));
        one_error(
            &table("master_name = \"\"\nnodes = [\"10.0.0.11:26379\"]"),
            "7:15: invalid service.sentinel.master_name \"\"",
        );
        one_error(
            &table("master_name = \"my\\tmaster\"\nnodes = [\"10.0.0.11:26379\"]"),
            "7:15: invalid service.sentinel.master_name",
        );
        one_error(
            &table("master_name = 1\nnodes = [\"10.0.0.11:26379\"]"),
            "7:15: invalid type for service.sentinel.master_name: expected a string, found an integer",
        );
        one_error(
            &table("master_name = \"m\"\nnodes = []"),
            "8:9: service.sentinel.nodes is empty: expected at least one IP:port, for example \
             [\"10.0.0.11:26379\"]",
        );
        one_error(
            &table("master_name = \"m\"\nnodes = \"10.0.0.11:26379\""),
            "8:9: invalid type for service.sentinel.nodes: expected an array of IP:port strings such as \
             [\"10.0.0.11:26379\"], found a string",
        );
        one_error(
            &table("master_name = \"m\"\nnodes = [26379]"),
            "8:10: invalid type for service.sentinel.nodes: expected a string IP:port such as \
             \"10.0.0.11:26379\", found an integer",
        );
        one_error(
            &table("master_name = \"m\"\nnodes = [\"10.0.0.11:26379\"]\ntimeout = 1"),
            "9:11: invalid type for service.sentinel.timeout: expected a duration string",
        );
        one_error(
            &table("master_name = \"m\"\nnodes = [\"10.0.0.11:26379\"]\ntimeout = \"0s\""),
            "9:11: service.sentinel.timeout must be greater than 0s",
        );
        assert_eq!(
            errors(&table(
                "master_name = \"m\"\nnodes = [\"10.0.0.11:26379\"]\nusername = 3"
            )),
            [
                "9:12: invalid type for service.sentinel.username: expected a string, found an integer",
                "9:12: service.sentinel.username is set without service.sentinel.password_file: \
                 an ACL user needs a password",
            ]
        );
        one_error(
            &table("master_name = \"m\"\nnodes = [\"10.0.0.11:26379\"]\npassword_file = []"),
            "9:17: invalid type for service.sentinel.password_file: expected a string, found an array",
        );
    }

    #[test]
    fn sentinel_timeout_must_not_exceed_interval() {
        assert_eq!(
            errors(&with(&format!(
                "{SENTINEL}\ninterval = \"1s\"\ntimeout = \"1500ms\""
            ))),
            [
                "10:11: service.sentinel.timeout (1500ms) must not exceed service.sentinel.interval (1s)"
            ]
        );
        assert_eq!(
            errors(&with(&format!("{SENTINEL}\ntimeout = \"1s\""))),
            [
                "9:11: service.sentinel.timeout (1s) must not exceed service.sentinel.interval \
                 (500ms, from service.check.interval)"
            ]
        );
        // An invalid interval is reported alone: there is nothing to compare with.
        assert_eq!(
            errors(&with(&format!(
                "{SENTINEL}\ninterval = \"fast\"\ntimeout = \"1s\""
            ))),
            [
                "9:12: invalid duration \"fast\" for service.sentinel.interval: expected a number with \
                 unit ms, s, m or h"
            ]
        );
        // The same for an invalid check.interval the sentinels would inherit.
        assert_eq!(
            errors(&with(&format!(
                "check.interval = \"fast\"\n{SENTINEL}\ntimeout = \"1s\""
            ))),
            [
                "6:18: invalid duration \"fast\" for service.check.interval: expected a number with \
                 unit ms, s, m or h"
            ]
        );
    }

    #[test]
    fn a_sentinel_is_not_a_node() {
        assert_eq!(
            errors(&with(
                "[service.sentinel]\nmaster_name = \"m\"\nnodes = [\"10.0.0.12:26379\", \"10.0.0.11:6379\"]"
            )),
            [
                "8:29: sentinel 10.0.0.11:6379 in service.sentinel.nodes is also in service.nodes: \
                 a sentinel is not a Redis node (sentinels usually listen on port 26379)"
            ]
        );
        // Whatever the order of the keys; another service's node is fine.
        let problems = errors(
            r#"[[service]]
name = "a"
listen = "0.0.0.0:6379"
sentinel = { master_name = "m", nodes = ["10.0.0.11:6379"] }
nodes = ["10.0.0.11:6379"]
[[service]]
name = "b"
listen = "0.0.0.0:6380"
sentinel = { master_name = "m", nodes = ["10.0.0.11:6379"] }
nodes = ["10.0.0.21:6379"]
"#,
        );
        assert_eq!(
            problems,
            [
                "4:42: sentinel 10.0.0.11:6379 in service.sentinel.nodes is also in service.nodes: \
                 a sentinel is not a Redis node (sentinels usually listen on port 26379)"
            ]
        );
    }

    #[test]
    fn sentinel_problems_all_at_once() {
        let problems = errors(
            r#"[[service]]
name = "a"
listen = "0.0.0.0:6379"
[service.sentinel]
master_name = "mymaster"
nodes = ["10.0.0.11:26379", "10.0.0.11:26379"]
interval = "1s"
timeout = "2s"
colour = "red"
[[service]]
name = "b b"
listen = "0.0.0.0:6380"
nodes = ["10.0.0.21:6379"]
sentinel.nodes = ["10.0.0.21:6379"]
sentinel.username = "keyway"
[[service]]
name = "c"
listen = "0.0.0.0:6381"
"#,
        );
        assert_eq!(
            problems,
            [
                "6:29: duplicate sentinel 10.0.0.11:26379 in service.sentinel.nodes: list each sentinel once",
                "8:11: service.sentinel.timeout (2s) must not exceed service.sentinel.interval (1s)",
                "9:1: unknown key \"colour\" in [service.sentinel]: expected master_name, nodes, username, \
                 password_file, interval or timeout",
                "11:8: invalid service name \"b b\": expected letters, digits, \"_\", \".\" or \"-\", \
                 for example \"redis\"",
                "14:1: missing key \"master_name\" in [service.sentinel]: expected for example \
                 master_name = \"mymaster\"",
                "14:19: sentinel 10.0.0.21:6379 in service.sentinel.nodes is also in service.nodes: \
                 a sentinel is not a Redis node (sentinels usually listen on port 26379)",
                "15:21: service.sentinel.username is set without service.sentinel.password_file: \
                 an ACL user needs a password",
                "16:1: missing key \"nodes\" in [[service]]: expected for example nodes = [\"10.0.0.11:6379\"]",
            ]
        );
    }

    /// Pieces of TOML that the schema knows, to reach deep into the walk.
    fn schema_line() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "include",
            "listen",
            "format",
            "level",
            "name",
            "nodes",
            "username",
            "password_file",
            "interval",
            "timeout",
            "rise",
            "fall",
            "connect",
            "hold",
            "idle",
            "max_sessions",
            "max_held",
            "keepalive",
            "master_name",
            "sentinel.nodes",
            "sentinel.timeout",
            "check.rise",
            "timeouts.idle",
            "tcp.keepalive",
            "proxy_protocol",
            "bogus",
        ]);
        let value = prop_oneof![
            Just("\"500ms\"".to_string()),
            Just("\"0s\"".to_string()),
            Just("\"127.0.0.1:6379\"".to_string()),
            Just("[\"10.0.0.1:6379\", \"x\"]".to_string()),
            Just("[\"10.0.0.1:26379\", \"10.0.0.1:6379\"]".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            "[a-z0-9:.\\[\\]]{0,12}".prop_map(|s| format!("{s:?}")),
            Just("true".to_string()),
            Just("1.5".to_string()),
        ];
        let header = prop::sample::select(vec![
            "[admin]",
            "[log]",
            "[drain]",
            "[[service]]",
            "[service.check]",
            "[service.timeouts]",
            "[service.limits]",
            "[service.tcp]",
            "[service.sentinel]",
            "[service]",
            "[other]",
        ]);
        prop_oneof![
            3 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
            1 => header.prop_map(str::to_string),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = Config::from_toml_str(&text, Path::new(ORIGIN));
        }

        #[test]
        fn never_panics_on_schema_like_text(lines in prop::collection::vec(schema_line(), 0..30)) {
            let text = lines.join("\n");
            match Config::from_toml_str(&text, Path::new(ORIGIN)) {
                Ok(_) => {}
                Err(problems) => {
                    prop_assert!(!problems.is_empty());
                    for p in &problems {
                        // Positions are inside the text.
                        prop_assert!(p.line <= text.lines().count().max(1) + 1);
                    }
                }
            }
        }
    }
}
