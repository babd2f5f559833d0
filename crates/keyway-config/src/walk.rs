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
//! password files are read by the `load` module.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use crate::duration::{format_duration, parse_duration};
use crate::problem::{Problem, Source};
use crate::types::{Admin, Check, Limits, Log, LogFormat, NodeAddr, Tcp, Timeouts};

/// Which keys a file may hold at its top level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// The file given on the command line: `include`, `[admin]`, `[log]`, `[[service]]`.
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
}

const ROOT_KEYS: &[&str] = &["include", "admin", "log", "service"];
const ADMIN_KEYS: &[&str] = &["listen"];
const LOG_KEYS: &[&str] = &["format", "level"];
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
];
const CHECK_KEYS: &[&str] = &["interval", "timeout", "rise", "fall"];
const TIMEOUTS_KEYS: &[&str] = &["connect", "hold", "idle"];
const LIMITS_KEYS: &[&str] = &["max_sessions", "max_held"];
const TCP_KEYS: &[&str] = &["keepalive"];

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

/// What a listen or node address is for: the checks and the example differ.
#[derive(Clone, Copy)]
enum AddrUse {
    Listen,
    Node,
}

impl Walker<'_> {
    fn report(&mut self, span: &Range<usize>, message: String) {
        self.problems.push(self.src.problem(span, message));
    }

    fn unknown(&mut self, key: &Spanned<DeString<'_>>, table: &str, expected: &[&str]) {
        let name = key.get_ref().as_ref();
        let hint = if name == "password" && table == "in [[service]]" {
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
        let example = match usage {
            AddrUse::Listen => "0.0.0.0:6379",
            AddrUse::Node => "10.0.0.11:6379",
        };
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
        if let AddrUse::Node = usage {
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
                        "invalid address {s:?} for {path}: {} is not the address of one node",
                        addr.ip()
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
            if kind == FileKind::Included && matches!(name, "include" | "admin" | "log") {
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
        };
        let (mut has_name, mut has_listen, mut has_nodes) = (false, false, false);
        let mut username_span = None;
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
                    draft.nodes = self.nodes(value);
                }
                "username" => {
                    username_span = Some(value.span());
                    draft.username = self.username(value);
                }
                "password_file" => {
                    if let Some(path) = self.string(value, "service.password_file") {
                        if path.is_empty() {
                            self.report(
                                &value.span(),
                                "service.password_file is empty: expected the path of a file holding the password"
                                    .to_string(),
                            );
                        } else {
                            draft.password_file =
                                Some(Spanned::new(value.span(), PathBuf::from(path)));
                        }
                    }
                }
                "check" => draft.check = self.check(value),
                "timeouts" => draft.timeouts = self.timeouts(value),
                "limits" => draft.limits = self.limits(value),
                "tcp" => draft.tcp = self.tcp(value),
                _ => self.unknown(key, "in [[service]]", SERVICE_KEYS),
            }
        }
        let header = value.span();
        for (present, key, example) in [
            (has_name, "name", "name = \"redis\""),
            (has_listen, "listen", "listen = \"0.0.0.0:6379\""),
            (has_nodes, "nodes", "nodes = [\"10.0.0.11:6379\"]"),
        ] {
            if !present {
                self.report(
                    &header,
                    format!("missing key {key:?} in [[service]]: expected for example {example}"),
                );
            }
        }
        if let Some(span) = username_span
            && draft.password_file.is_none()
        {
            self.report(
                &span,
                "service.username is set without service.password_file: an ACL user needs a password"
                    .to_string(),
            );
        }
        Some(draft)
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

    fn username(&mut self, value: &Spanned<DeValue<'_>>) -> Option<String> {
        let name = self.string(value, "service.username")?;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.report(
                &value.span(),
                format!(
                    "invalid service.username {name:?}: expected an ACL user name, without spaces"
                ),
            );
            return None;
        }
        Some(name.to_string())
    }

    fn nodes(&mut self, value: &Spanned<DeValue<'_>>) -> Vec<NodeAddr> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(
                value,
                "service.nodes",
                "an array of IP:port strings such as [\"10.0.0.11:6379\"]",
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.report(
                &value.span(),
                "service.nodes is empty: expected at least one IP:port, for example [\"10.0.0.11:6379\"]"
                    .to_string(),
            );
        }
        let mut nodes: Vec<NodeAddr> = Vec::new();
        for item in items.iter() {
            let Some(addr) = self.addr(item, "service.nodes", AddrUse::Node) else {
                continue;
            };
            let node = NodeAddr(addr);
            if nodes.contains(&node) {
                self.report(
                    &item.span(),
                    format!("duplicate node {node} in service.nodes: list each node once"),
                );
                continue;
            }
            nodes.push(node);
        }
        nodes
    }

    fn check(&mut self, value: &Spanned<DeValue<'_>>) -> Check {
        let mut check = Check::default();
        let Some(table) = self.table(value, "service.check") else {
            return check;
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
        check
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
    use crate::types::Config;

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
    }

    #[test]
    fn every_key_parsed() {
        let config = ok(r#"
[admin]
listen = "0.0.0.0:9000"

[log]
format = "json"
level = "keyway=debug,warn"

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
"#,
        );
        assert_eq!(
            problems,
            vec![
                "1:1: unknown key \"color\" at the top level: expected include, admin, log or service",
                "3:1: unknown key \"port\" in [admin]: expected listen",
                "5:1: unknown key \"colour\" in [log]: expected format or level",
                "10:1: unknown key \"role\" in [[service]]: expected name, listen, nodes, username, \
                 password_file, check, timeouts, limits or tcp",
                "12:1: unknown key \"intervall\" in [service.check]: expected interval, timeout, rise or fall",
                "14:1: unknown key \"read\" in [service.timeouts]: expected connect, hold or idle",
                "16:1: unknown key \"max\" in [service.limits]: expected max_sessions or max_held",
                "18:1: unknown key \"nodelay\" in [service.tcp]: expected keepalive",
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
            "check.rise",
            "timeouts.idle",
            "tcp.keepalive",
            "bogus",
        ]);
        let value = prop_oneof![
            Just("\"500ms\"".to_string()),
            Just("\"0s\"".to_string()),
            Just("\"127.0.0.1:6379\"".to_string()),
            Just("[\"10.0.0.1:6379\", \"x\"]".to_string()),
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
            "[[service]]",
            "[service.check]",
            "[service.timeouts]",
            "[service.limits]",
            "[service.tcp]",
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
