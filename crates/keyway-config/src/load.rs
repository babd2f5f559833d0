//! The I/O edge: read the main file, expand `include` globs, read included
//! files and password files, then hand everything to the pure walk and checks.
//!
//! Invariants: every problem is collected, none stops the load early (except a
//! main file that cannot be read at all); problems are returned in file order
//! (main file first, then included files in the order read), each file's by
//! position. A password is read only from a regular file that is not
//! world-readable, and never appears in a message.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};
use toml::Spanned;

use crate::problem::{Problem, Problems, Source};
use crate::types::{Config, Credentials, Secret, Sentinel, Service};
use crate::walk::{self, FileKind, SentinelDraft, ServiceDraft};

/// `Config::from_file`.
pub(crate) fn from_file(path: &Path) -> Result<Config, Problems> {
    match fs::read_to_string(path) {
        Ok(text) => from_toml_str(&text, path),
        Err(e) => Err(Problems(vec![Problem::whole_file(
            path,
            format!("cannot read the configuration file: {}", io_reason(&e)),
        )])),
    }
}

/// `Config::from_toml_str`.
pub(crate) fn from_toml_str(text: &str, origin: &Path) -> Result<Config, Problems> {
    let mut problems = Vec::new();
    let mut sources = vec![Source {
        path: origin.to_path_buf(),
        text: text.to_string(),
    }];
    let main = walk::walk_file(&sources[0], 0, FileKind::Main, &mut problems);
    // Whether "no service" would be news: not when a file could not be parsed
    // or has a (bad) service key, as that was reported already.
    let mut no_service_reported = !main.parsed || main.has_service_key;
    let mut drafts = main.services;

    // The main file itself never counts as an include (`include = ["*.toml"]`
    // beside it), and a file matched by two patterns is read once.
    let mut seen: HashSet<PathBuf> = HashSet::new();
    seen.insert(identity(origin));
    for pattern in &main.includes {
        let paths = match expand(sources[0].dir(), pattern.get_ref()) {
            Ok(paths) => paths,
            Err(message) => {
                problems.push(sources[0].problem(&pattern.span(), message));
                continue;
            }
        };
        for path in paths {
            if !seen.insert(identity(&path)) {
                continue;
            }
            let text = match fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    problems.push(sources[0].problem(
                        &pattern.span(),
                        format!("cannot read included file {path:?}: {}", io_reason(&e)),
                    ));
                    continue;
                }
            };
            let file = sources.len();
            sources.push(Source { path, text });
            let included = walk::walk_file(&sources[file], file, FileKind::Included, &mut problems);
            no_service_reported |= !included.parsed || included.has_service_key;
            drafts.extend(included.services);
        }
    }

    let admin = main.admin.unwrap_or_default();
    walk::check_services(&sources, &drafts, &admin, &mut problems);
    if drafts.is_empty() && !no_service_reported {
        problems.push(Problem::whole_file(
            origin,
            "no service defined: add a [[service]] table, here or in an included file",
        ));
    }

    let services: Vec<Service> = drafts
        .into_iter()
        .filter_map(|draft| finish_service(draft, &sources, &mut problems))
        .collect();

    if !problems.is_empty() {
        sort_problems(&mut problems, &sources);
        return Err(Problems(problems));
    }
    Ok(Config {
        admin,
        log: main.log.unwrap_or_default(),
        drain: main.drain.unwrap_or_default(),
        runtime: main.runtime.unwrap_or_default(),
        services,
        sources: sources.into_iter().map(|s| s.path).collect(),
    })
}

/// Read the password files (the service's and its sentinels'), then build the
/// service if nothing is missing. Every password file is read before giving up,
/// so that each problem is reported.
fn finish_service(
    draft: ServiceDraft,
    sources: &[Source],
    problems: &mut Vec<Problem>,
) -> Option<Service> {
    let src = &sources[draft.file];
    let auth = credentials(src, draft.username, draft.password_file.as_ref(), problems);
    let sentinel = draft
        .sentinel
        .map(|sentinel| finish_sentinel(sentinel, src, problems));
    Some(Service {
        name: draft.name?.into_inner(),
        listen: draft.listen?.into_inner(),
        nodes: draft.nodes,
        auth,
        check: draft.check,
        timeouts: draft.timeouts,
        limits: draft.limits,
        tcp: draft.tcp,
        proxy_protocol: draft.proxy_protocol,
        // `Some(None)`: a problem in [service.sentinel] was reported.
        sentinel: match sentinel {
            Some(finished) => Some(finished?),
            None => None,
        },
    })
}

/// Read the sentinels' password file, then build [`Sentinel`] if nothing is
/// missing.
fn finish_sentinel(
    draft: SentinelDraft,
    src: &Source,
    problems: &mut Vec<Problem>,
) -> Option<Sentinel> {
    let auth = credentials(src, draft.username, draft.password_file.as_ref(), problems);
    Some(Sentinel {
        master_name: draft.master_name?,
        nodes: draft.nodes.into_iter().map(Spanned::into_inner).collect(),
        auth,
        interval: draft.interval,
        timeout: draft.timeout,
    })
}

/// `username` and the password read from `password_file` (relative to `src`,
/// the file that names it). `None` without a password file, or when it cannot
/// be used (reported at the `password_file` value).
fn credentials(
    src: &Source,
    username: Option<String>,
    password_file: Option<&Spanned<PathBuf>>,
    problems: &mut Vec<Problem>,
) -> Option<Credentials> {
    let path = password_file?;
    match read_password(&src.dir().join(path.get_ref())) {
        Ok(password) => Some(Credentials { username, password }),
        Err(message) => {
            problems.push(src.problem(&path.span(), message));
            None
        }
    }
}

/// The files one include pattern matches, sorted. Relative patterns are
/// relative to `dir`, the directory of the including file. Hidden files
/// (leading dot) and anything that is not a regular file are skipped; a
/// pattern matching nothing is fine.
fn expand(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    // Checked alone first, so that the position in the message is the user's.
    Pattern::new(pattern).map_err(|e| {
        format!(
            "invalid include pattern {pattern:?}: {} at character {}: expected a glob such as \"conf.d/*.toml\"",
            e.msg,
            e.pos + 1
        )
    })?;
    let full = if Path::new(pattern).is_absolute() || dir.as_os_str().is_empty() {
        pattern.to_string()
    } else {
        let Some(dir) = dir.to_str() else {
            return Err(format!(
                "cannot expand include {pattern:?}: the directory {dir:?} is not valid UTF-8"
            ));
        };
        // The directory is literal text: escape it so that `[` or `*` in it
        // does not turn into a pattern.
        format!("{}/{pattern}", Pattern::escape(dir.trim_end_matches('/')))
    };
    let options = MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let entries = glob::glob_with(&full, options)
        .map_err(|e| format!("cannot expand include {pattern:?}: {}", e.msg))?;
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(path) => {
                if path.is_file() {
                    paths.push(path);
                }
            }
            Err(e) => {
                return Err(format!(
                    "cannot expand include {pattern:?}: cannot read {:?}: {}",
                    e.path(),
                    io_reason(e.error())
                ));
            }
        }
    }
    paths.sort();
    Ok(paths)
}

/// Read a password file: a regular file, not world-readable, not empty; one
/// trailing newline (`\n` or `\r\n`) is stripped.
fn read_password(path: &Path) -> Result<Secret, String> {
    let reason = |what: String| format!("password file {path:?} {what}");
    // Checked before opening, so that a FIFO or a device never blocks the load.
    let meta =
        fs::metadata(path).map_err(|e| reason(format!("cannot be read: {}", io_reason(&e))))?;
    if !meta.is_file() {
        return Err(reason("is not a regular file".to_string()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o004 != 0 {
            return Err(reason(format!(
                "is readable by every user (mode {mode:04o}): run chmod o-r on it, for example chmod 0600"
            )));
        }
    }
    let bytes = fs::read(path).map_err(|e| reason(format!("cannot be read: {}", io_reason(&e))))?;
    // Never echo the content: not even in the UTF-8 error.
    let text = String::from_utf8(bytes).map_err(|_| reason("is not valid UTF-8".to_string()))?;
    let password = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(reason(
            "is empty: expected the password on one line".to_string(),
        ));
    }
    if password.contains(['\n', '\r']) {
        return Err(reason(
            "holds more than one line: expected the password alone, on one line".to_string(),
        ));
    }
    Ok(Secret::new(password))
}

/// A key to recognise one file reached under two names.
fn identity(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Main file first, then included files in the order read; each by position.
fn sort_problems(problems: &mut [Problem], sources: &[Source]) {
    let rank = |p: &Problem| {
        sources
            .iter()
            .position(|s| s.path == p.file)
            .unwrap_or(usize::MAX)
    };
    problems.sort_by_key(|p| (rank(p), p.line, p.col));
}

/// A lowercase reason for an I/O error, without the OS error number.
fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::IsADirectory => "is a directory".to_string(),
        io::ErrorKind::InvalidData => "not valid UTF-8".to_string(),
        _ => {
            let text = e.to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tempfile::TempDir;

    use super::*;
    use crate::types::{
        Admin, Check, Drain, Limits, Log, NodeAddr, Sentinel, SentinelAddr, Tcp, Timeouts,
    };

    /// A temporary configuration directory.
    struct Dir(TempDir);

    impl Dir {
        fn new() -> Self {
            Dir(tempfile::tempdir().expect("temp dir"))
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.0.path().join(rel)
        }

        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.path(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create dir");
            }
            fs::write(&path, text).expect("write file");
            path
        }

        #[cfg(unix)]
        fn write_mode(&self, rel: &str, text: &str, mode: u32) -> PathBuf {
            use std::os::unix::fs::PermissionsExt;
            let path = self.write(rel, text);
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            path
        }

        fn load(&self, main: &str) -> Result<Config, Problems> {
            let path = self.write("keyway.toml", main);
            Config::from_file(&path)
        }

        /// `FILE:LINE:COL: message` with FILE relative to the directory.
        fn problems(&self, main: &str) -> Vec<String> {
            match self.load(main) {
                Ok(config) => panic!("expected problems, got {config:?}"),
                Err(problems) => problems
                    .iter()
                    .map(|p| {
                        let file = p.file.strip_prefix(self.0.path()).unwrap_or(&p.file);
                        format!("{}:{}:{}: {}", file.display(), p.line, p.col, p.message)
                    })
                    .collect(),
            }
        }

        fn ok(&self, main: &str) -> Config {
            match self.load(main) {
                Ok(config) => config,
                Err(problems) => panic!("expected a valid config, got:\n{problems}"),
            }
        }
    }

    fn service(name: &str, port: u16) -> String {
        format!(
            "[[service]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nnodes = [\"127.0.0.1:7000\"]\n"
        )
    }

    fn names(config: &Config) -> Vec<&str> {
        config.services.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn includes_add_services_in_sorted_order() {
        let dir = Dir::new();
        dir.write("conf.d/b.toml", &service("b", 6002));
        dir.write(
            "conf.d/a.toml",
            &format!("{}{}", service("a1", 6001), service("a2", 6003)),
        );
        // Skipped: hidden, other extension, a directory whose name matches.
        dir.write(".hidden.toml", "garbage = [");
        dir.write("conf.d/.hidden.toml", "garbage = [");
        dir.write("conf.d/notes.txt", "garbage = [");
        fs::create_dir_all(dir.path("conf.d/old.toml")).expect("mkdir");
        let config = dir.ok(&format!(
            "include = [\"conf.d/*.toml\"]\n{}",
            service("main", 6000)
        ));
        assert_eq!(names(&config), ["main", "a1", "a2", "b"]);
        assert_eq!(
            config.sources,
            vec![
                dir.path("keyway.toml"),
                dir.path("conf.d/a.toml"),
                dir.path("conf.d/b.toml"),
            ]
        );
    }

    #[test]
    fn include_matching_nothing_is_fine() {
        let dir = Dir::new();
        fs::create_dir_all(dir.path("conf.d")).expect("mkdir");
        let config = dir.ok(&format!(
            "include = [\"conf.d/*.toml\", \"missing/*.toml\"]\n{}",
            service("main", 6000)
        ));
        assert_eq!(names(&config), ["main"]);
        assert_eq!(config.sources, vec![dir.path("keyway.toml")]);
    }

    #[test]
    fn services_may_all_come_from_includes() {
        let dir = Dir::new();
        dir.write("conf.d/a.toml", &service("a", 6001));
        let config = dir.ok("include = [\"conf.d/*.toml\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n");
        assert_eq!(names(&config), ["a"]);
    }

    #[test]
    fn no_service_in_main_or_includes() {
        let dir = Dir::new();
        fs::create_dir_all(dir.path("conf.d")).expect("mkdir");
        assert_eq!(
            dir.problems("include = [\"conf.d/*.toml\"]\n"),
            [
                "keyway.toml:0:0: no service defined: add a [[service]] table, here or in an included file"
            ]
        );
    }

    #[test]
    fn the_main_file_and_repeated_matches_are_read_once() {
        let dir = Dir::new();
        dir.write("extra.toml", &service("extra", 6001));
        let config = dir.ok(&format!(
            "include = [\"*.toml\", \"extra.toml\", \"./extra.toml\"]\n{}",
            service("main", 6000)
        ));
        assert_eq!(names(&config), ["main", "extra"]);
    }

    #[test]
    fn absolute_patterns_and_odd_directory_names() {
        let dir = Dir::new();
        let other = Dir::new();
        other.write("x.toml", &service("abs", 6001));
        // `[` and `]` in the including file's directory are literal.
        dir.write("a[1]/conf.d/y.toml", &service("rel", 6002));
        let main = format!(
            "include = [{:?}, \"conf.d/*.toml\"]\n{}",
            format!("{}/*.toml", other.0.path().display()),
            service("main", 6000)
        );
        let path = dir.write("a[1]/keyway.toml", &main);
        let config = Config::from_file(&path).expect("valid");
        assert_eq!(names(&config), ["main", "abs", "rel"]);
    }

    #[test]
    fn invalid_include_pattern() {
        let dir = Dir::new();
        assert_eq!(
            dir.problems(&format!(
                "include = [\"conf.d/[*.toml\"]\n{}",
                service("main", 6000)
            )),
            [
                "keyway.toml:1:12: invalid include pattern \"conf.d/[*.toml\": invalid range pattern \
              at character 8: expected a glob such as \"conf.d/*.toml\""
            ]
        );
    }

    #[test]
    fn included_file_may_hold_services_only() {
        let dir = Dir::new();
        dir.write(
            "conf.d/a.toml",
            &format!(
                "include = [\"x\"]\nthing = 1\n[admin]\nlisten = \"0.0.0.0:1\"\n[log]\nlevel = \"debug\"\n\
                 [drain]\ntimeout = \"1s\"\n[runtime]\nworkers = 1\n{}",
                service("a", 6001)
            ),
        );
        assert_eq!(
            dir.problems(&format!(
                "include = [\"conf.d/*.toml\"]\n{}",
                service("main", 6000)
            )),
            [
                "conf.d/a.toml:1:1: include is not allowed in an included file: included files may only hold [[service]] tables",
                "conf.d/a.toml:2:1: unknown key \"thing\" at the top level: expected service",
                "conf.d/a.toml:3:2: [admin] is not allowed in an included file: included files may only hold [[service]] tables",
                "conf.d/a.toml:5:2: [log] is not allowed in an included file: included files may only hold [[service]] tables",
                "conf.d/a.toml:7:2: [drain] is not allowed in an included file: included files may only hold [[service]] tables",
                "conf.d/a.toml:9:2: [runtime] is not allowed in an included file: included files may only hold [[service]] tables",
            ]
        );
    }

    #[test]
    fn duplicates_across_files_point_at_the_right_file() {
        let dir = Dir::new();
        dir.write("conf.d/a.toml", &service("other", 6001));
        dir.write("conf.d/b.toml", &format!("# b\n{}", service("main", 6002)));
        dir.write("conf.d/c.toml", &service("c", 6001));
        let problems = dir.problems(&format!(
            "include = [\"conf.d/*.toml\"]\n{}",
            service("main", 6000)
        ));
        let main = dir.path("keyway.toml");
        let a = dir.path("conf.d/a.toml");
        assert_eq!(
            problems,
            [
                format!(
                    "conf.d/b.toml:3:8: duplicate service name \"main\": first defined at {}:3:8",
                    main.display()
                ),
                format!(
                    "conf.d/c.toml:3:10: service.listen 127.0.0.1:6001 is already the listen address of \
                     service \"other\" at {}:3:10: each service needs its own address",
                    a.display()
                ),
            ]
        );
    }

    #[test]
    fn problems_from_every_file_in_file_order() {
        let dir = Dir::new();
        dir.write(
            "conf.d/a.toml",
            "[[service]]\nname = \"a\"\nlisten = \"nope\"\nnodes = [\"127.0.0.1:7000\"]\n",
        );
        dir.write("conf.d/b.toml", "[[service]\n");
        dir.write(
            "conf.d/c.toml",
            &format!("{}check.rise = 0\n", service("c", 6003)),
        );
        let problems = dir.problems(&format!(
            "include = [\"conf.d/*.toml\"]\n{}bogus = 1\n",
            service("main", 6000)
        ));
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[0].starts_with("keyway.toml:6:1: unknown key \"bogus\""),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("conf.d/a.toml:3:10: invalid address \"nope\""),
            "{problems:#?}"
        );
        assert!(problems[2].starts_with("conf.d/b.toml:1:"), "{problems:#?}");
        assert!(problems[2].contains("invalid TOML"), "{problems:#?}");
        assert!(
            problems[3].starts_with("conf.d/c.toml:5:14: service.check.rise must be at least 1"),
            "{problems:#?}"
        );
    }

    #[test]
    fn unreadable_main_file() {
        let dir = Dir::new();
        let path = dir.path("absent.toml");
        let problems = Config::from_file(&path).expect_err("absent");
        assert_eq!(
            problems.to_string(),
            format!(
                "{}: cannot read the configuration file: no such file or directory",
                path.display()
            )
        );
    }

    const PASSWORD: &str = "s3cret-Pa55";

    fn with_password(file: &str) -> String {
        format!(
            "{}username = \"keyway\"\npassword_file = {file:?}\n",
            service("main", 6000)
        )
    }

    #[cfg(unix)]
    #[test]
    fn password_file_0600_is_read_and_one_newline_stripped() {
        let dir = Dir::new();
        for (content, expected) in [
            (format!("{PASSWORD}\n"), PASSWORD.to_string()),
            (format!("{PASSWORD}\r\n"), PASSWORD.to_string()),
            (PASSWORD.to_string(), PASSWORD.to_string()),
            (" spaces kept \n".to_string(), " spaces kept ".to_string()),
        ] {
            dir.write_mode("redis.password", &content, 0o600);
            let config = dir.ok(&with_password("redis.password"));
            let auth = config.services[0].auth.as_ref().expect("credentials");
            assert_eq!(auth.username.as_deref(), Some("keyway"));
            assert_eq!(auth.password.expose(), expected);
            assert!(
                !format!("{config:?}").contains(expected.trim()),
                "Debug must redact"
            );
        }
        // 0640 (group-readable, for a keyway group) is fine too.
        dir.write_mode("redis.password", PASSWORD, 0o640);
        dir.ok(&with_password("redis.password"));
    }

    #[cfg(unix)]
    #[test]
    fn password_without_username() {
        let dir = Dir::new();
        dir.write_mode("p", PASSWORD, 0o600);
        let config = dir.ok(&format!("{}password_file = \"p\"\n", service("main", 6000)));
        let auth = config.services[0].auth.as_ref().expect("credentials");
        assert_eq!(auth.username, None);
        assert_eq!(auth.password.expose(), PASSWORD);
    }

    #[cfg(unix)]
    #[test]
    fn password_file_problems_point_at_the_value() {
        let dir = Dir::new();
        // (file name, content and mode to create it with, expected reason)
        type Case<'a> = (&'a str, Option<(&'a str, u32)>, &'a str);
        let cases: [Case<'_>; 5] = [
            (
                "world.password",
                Some((PASSWORD, 0o644)),
                "is readable by every user (mode 0644): run chmod o-r on it, for example chmod 0600",
            ),
            (
                "absent.password",
                None,
                "cannot be read: no such file or directory",
            ),
            (
                "empty.password",
                Some(("\n", 0o600)),
                "is empty: expected the password on one line",
            ),
            (
                "two.password",
                Some(("a\nb\n", 0o600)),
                "holds more than one line: expected the password alone, on one line",
            ),
            ("conf.d", None, "is not a regular file"),
        ];
        fs::create_dir_all(dir.path("conf.d")).expect("mkdir");
        for (name, content, reason) in cases {
            if let Some((text, mode)) = content {
                dir.write_mode(name, text, mode);
            }
            let problems = dir.problems(&with_password(name));
            let path = dir.path(name);
            assert_eq!(
                problems,
                [format!("keyway.toml:6:17: password file {path:?} {reason}")],
            );
            assert!(!problems[0].contains(PASSWORD));
        }
    }

    #[cfg(unix)]
    #[test]
    fn password_file_is_relative_to_the_file_that_names_it() {
        let dir = Dir::new();
        dir.write_mode("conf.d/secrets/a.password", "from-include", 0o600);
        dir.write_mode("main.password", "from-main", 0o600);
        let absolute = dir.write_mode("abs.password", "absolute", 0o600);
        dir.write(
            "conf.d/a.toml",
            &format!(
                "{}password_file = \"secrets/a.password\"\n",
                service("a", 6001)
            ),
        );
        dir.write(
            "conf.d/b.toml",
            &format!("{}password_file = {absolute:?}\n", service("b", 6002)),
        );
        let config = dir.ok(&format!(
            "include = [\"conf.d/*.toml\"]\n{}password_file = \"main.password\"\n",
            service("main", 6000)
        ));
        let passwords: Vec<&str> = config
            .services
            .iter()
            .map(|s| s.auth.as_ref().expect("credentials").password.expose())
            .collect();
        assert_eq!(passwords, ["from-main", "from-include", "absolute"]);
    }

    /// `service("main", 6000)` (lines 1 to 4) and a `[service.sentinel]`
    /// (lines 5 to 7) followed by `extra` (from line 8 on).
    fn with_sentinel(extra: &str) -> String {
        format!(
            "{}[service.sentinel]\nmaster_name = \"mymaster\"\n\
             nodes = [\"127.0.0.1:26379\", \"127.0.0.1:26380\", \"127.0.0.1:26381\"]\n{extra}",
            service("main", 6000)
        )
    }

    #[cfg(unix)]
    #[test]
    fn sentinel_every_key_parsed() {
        let dir = Dir::new();
        dir.write_mode("redis.password", "for-redis\n", 0o600);
        dir.write_mode("secrets/sentinel.password", "for-sentinels\n", 0o640);
        let config = dir.ok(&format!(
            "{}username = \"keyway\"\npassword_file = \"redis.password\"\n\
             check = {{ interval = \"1s\", timeout = \"300ms\" }}\n\
             [service.sentinel]\n\
             master_name = \"mymaster\"\n\
             nodes = [\"127.0.0.1:26379\", \"127.0.0.1:26380\", \"127.0.0.1:26381\"]\n\
             username = \"sentinel-user\"\n\
             password_file = \"secrets/sentinel.password\"\n\
             interval = \"2s\"\n\
             timeout = \"750ms\"\n",
            service("main", 6000)
        ));
        let service = &config.services[0];
        let sentinel = service.sentinel.as_ref().expect("sentinel");
        assert_eq!(
            *sentinel,
            Sentinel {
                master_name: "mymaster".to_string(),
                nodes: ["127.0.0.1:26379", "127.0.0.1:26380", "127.0.0.1:26381"]
                    .map(|a| SentinelAddr(a.parse().expect("addr")))
                    .to_vec(),
                auth: Some(Credentials {
                    username: Some("sentinel-user".to_string()),
                    password: Secret::new("for-sentinels"),
                }),
                interval: Duration::from_secs(2),
                timeout: Duration::from_millis(750),
            }
        );
        // The service keeps its own credentials and check.
        let auth = service.auth.as_ref().expect("service credentials");
        assert_eq!(auth.username.as_deref(), Some("keyway"));
        assert_eq!(auth.password.expose(), "for-redis");
        assert_eq!(service.check.interval, Duration::from_secs(1));
        assert!(!format!("{config:?}").contains("for-sentinels"));
    }

    #[cfg(unix)]
    #[test]
    fn sentinel_password_without_username() {
        let dir = Dir::new();
        dir.write_mode("sentinel.password", PASSWORD, 0o600);
        let config = dir.ok(&with_sentinel("password_file = \"sentinel.password\"\n"));
        let service = &config.services[0];
        assert_eq!(service.auth, None, "the service itself has no password");
        let auth = service
            .sentinel
            .as_ref()
            .and_then(|s| s.auth.as_ref())
            .expect("sentinel credentials");
        assert_eq!(auth.username, None);
        assert_eq!(auth.password.expose(), PASSWORD);
    }

    #[cfg(unix)]
    #[test]
    fn sentinel_password_file_follows_the_same_rules() {
        let dir = Dir::new();
        dir.write_mode("world.password", PASSWORD, 0o644);
        dir.write_mode("empty.password", "", 0o600);
        let world = dir.path("world.password");
        let absent = dir.path("absent.password");
        let empty = dir.path("empty.password");
        assert_eq!(
            dir.problems(&with_sentinel(
                "username = \"sentinel-user\"\npassword_file = \"world.password\"\n"
            )),
            [format!(
                "keyway.toml:9:17: password file {world:?} is readable by every user (mode 0644): \
                 run chmod o-r on it, for example chmod 0600"
            )]
        );
        // The service's and the sentinels' password files are both reported.
        let problems = dir.problems(&format!(
            "{}password_file = \"absent.password\"\n[service.sentinel]\n\
             master_name = \"mymaster\"\nnodes = [\"127.0.0.1:26379\"]\n\
             password_file = \"empty.password\"\n",
            service("main", 6000)
        ));
        assert_eq!(
            problems,
            [
                format!(
                    "keyway.toml:5:17: password file {absent:?} cannot be read: no such file or directory"
                ),
                format!(
                    "keyway.toml:9:17: password file {empty:?} is empty: expected the password on one line"
                ),
            ]
        );
        assert!(problems.iter().all(|p| !p.contains(PASSWORD)));
    }

    #[cfg(unix)]
    #[test]
    fn sentinel_password_file_is_relative_to_the_file_that_names_it() {
        let dir = Dir::new();
        dir.write_mode("conf.d/sentinel.password", "from-include", 0o600);
        dir.write_mode("sentinel.password", "from-main", 0o600);
        dir.write(
            "conf.d/a.toml",
            &format!(
                "{}[service.sentinel]\nmaster_name = \"a\"\nnodes = [\"127.0.0.1:26379\"]\n\
                 password_file = \"sentinel.password\"\n",
                service("a", 6001)
            ),
        );
        let config = dir.ok(&format!(
            "include = [\"conf.d/*.toml\"]\n{}",
            with_sentinel("password_file = \"sentinel.password\"\n")
        ));
        let passwords: Vec<&str> = config
            .services
            .iter()
            .map(|s| {
                let sentinel = s.sentinel.as_ref().expect("sentinel");
                sentinel
                    .auth
                    .as_ref()
                    .expect("credentials")
                    .password
                    .expose()
            })
            .collect();
        assert_eq!(passwords, ["from-main", "from-include"]);
    }

    #[test]
    fn a_problem_in_the_sentinel_table_gives_no_config() {
        // Nothing to read from disk: the problem is the walk's, and the load
        // still reports it (and only it).
        let dir = Dir::new();
        assert_eq!(
            dir.problems(&with_sentinel("timeout = \"1s\"\n")),
            [
                "keyway.toml:8:11: service.sentinel.timeout (1s) must not exceed \
              service.sentinel.interval (500ms, from service.check.interval)"
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn example_file_parses() {
        // The example names `password_file = "redis.password"` and
        // `"sentinel.password"`, relative to the config file: an origin in a
        // temp dir with those files beside it is all the test needs, the
        // example text is used unchanged.
        let dir = Dir::new();
        dir.write_mode("redis.password", "example-password\n", 0o600);
        dir.write_mode("sentinel.password", "sentinel-password\n", 0o600);
        let text = include_str!("../../../config/keyway.example.toml");
        let config = Config::from_toml_str(text, &dir.path("keyway.toml"))
            .unwrap_or_else(|problems| panic!("the example must be valid:\n{problems}"));
        assert_eq!(config.admin, Admin::default());
        assert_eq!(config.log, Log::default());
        assert_eq!(config.drain, Drain::default());
        let [service] = config.services.as_slice() else {
            panic!("the example has one active service");
        };
        assert_eq!(service.name, "redis");
        assert_eq!(
            service.listen,
            "0.0.0.0:6379".parse::<SocketAddr>().expect("addr")
        );
        let node = |s: &str| NodeAddr(s.parse().expect("addr"));
        assert_eq!(
            service.nodes,
            [
                node("10.0.0.11:6379"),
                node("10.0.0.12:6379"),
                node("10.0.0.13:6379")
            ]
        );
        let auth = service.auth.as_ref().expect("credentials");
        assert_eq!(auth.username.as_deref(), Some("keyway"));
        assert_eq!(auth.password.expose(), "example-password");
        // The example spells out the defaults: they must agree with the code.
        assert_eq!(service.check, Check::default());
        assert_eq!(service.timeouts, Timeouts::default());
        assert_eq!(service.limits, Limits::default());
        assert_eq!(service.tcp, Tcp::default());
        assert!(!service.proxy_protocol);
        assert_eq!(service.check.interval, Duration::from_millis(500));
        // The recommended set-up: Sentinel, three of them, with a password.
        let sentinel = service
            .sentinel
            .as_ref()
            .expect("the example follows Sentinel");
        assert_eq!(sentinel.master_name, "mymaster");
        let sentinel_addr = |s: &str| SentinelAddr(s.parse().expect("addr"));
        assert_eq!(
            sentinel.nodes,
            [
                sentinel_addr("10.0.0.11:26379"),
                sentinel_addr("10.0.0.12:26379"),
                sentinel_addr("10.0.0.13:26379")
            ]
        );
        assert_eq!(sentinel.majority(), 2);
        let auth = sentinel.auth.as_ref().expect("sentinel credentials");
        assert_eq!(auth.username.as_deref(), Some("keyway"));
        assert_eq!(auth.password.expose(), "sentinel-password");
        // Its interval and timeout are spelled out at their defaults: the check's.
        assert_eq!(sentinel.interval, service.check.interval);
        assert_eq!(sentinel.timeout, service.check.timeout);
    }

    #[cfg(unix)]
    #[test]
    fn example_commented_service_is_valid_too() {
        // Uncommenting the second service of the example must give a valid file.
        let dir = Dir::new();
        dir.write_mode("redis.password", "example-password\n", 0o600);
        dir.write_mode("sentinel.password", "sentinel-password\n", 0o600);
        let text = include_str!("../../../config/keyway.example.toml");
        let marker = "# [[service]]\n";
        let start = text
            .find(marker)
            .expect("the example has a commented service");
        let (head, tail) = text.split_at(start);
        let uncommented: String = tail
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let config =
            Config::from_toml_str(&format!("{head}{uncommented}"), &dir.path("keyway.toml"))
                .unwrap_or_else(|problems| {
                    panic!("the uncommented example must be valid:\n{problems}")
                });
        assert_eq!(names(&config), ["redis", "redis-cache"]);
        assert_eq!(config.services[1].sentinel, None);
    }

    #[test]
    fn relative_origin() {
        // A bare file name: its directory is the current one.
        let config =
            Config::from_toml_str(&service("main", 6000), Path::new("keyway.toml")).expect("valid");
        assert_eq!(config.sources, vec![PathBuf::from("keyway.toml")]);
    }
}
