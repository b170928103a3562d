//! `hookd.yaml`: where hookd listens, keeps its data, finds pipelines, and the
//! sources (receiver endpoints) with their credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{
    is_env_name, is_safe_name, parse_yaml, resolve_path, ConfigError, ConfigErrors, Errors,
};

/// The config file `hookd` looks for when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "hookd.yaml";

/// A credential read from a file or the environment. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (tests, `hookd sign`).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret's bytes, for HMAC keys and constant-time comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// The kinds of source hookd knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// GitHub and GitHub Enterprise webhooks (`X-Hub-Signature-256`).
    Github,
}

impl SourceKind {
    /// Every kind with its config spelling.
    pub const ALL: &'static [(&'static str, SourceKind)] = &[("github", SourceKind::Github)];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(s, _)| *s)
            .unwrap_or("unknown")
    }

    fn parse(s: &str) -> Option<SourceKind> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }

    /// Which credential keys this kind can verify.
    fn accepted_credentials(self) -> &'static [&'static str] {
        match self {
            SourceKind::Github => &["secret_file", "secret_env"],
        }
    }
}

/// How a source's senders prove who they are.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// HMAC key (`secret_file` / `secret_env`).
    pub hmac_secret: Option<Secret>,
}

impl Credentials {
    /// No credential configured: only loopback senders are accepted.
    pub fn is_empty(&self) -> bool {
        self.hmac_secret.is_none()
    }

    /// Every secret value, for redaction from run logs.
    pub fn secrets(&self) -> Vec<String> {
        self.hmac_secret
            .iter()
            .map(|s| s.expose().to_string())
            .collect()
    }
}

/// One receiver endpoint, `/hooks/{name}`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The name in the URL and in pipelines' `sources:`.
    pub name: String,
    /// Which provider's format and authentication it speaks.
    pub kind: SourceKind,
    /// Its credentials.
    pub credentials: Credentials,
}

/// Where runs, deliveries and policy state are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// Embedded SQLite database in `data_dir` (the default).
    Sqlite,
}

/// The validated daemon configuration.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The file it came from; `None` for built-in defaults.
    pub file: Option<PathBuf>,
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Database, mirrors, workspaces and run logs (default `./data`, or `$STATE_DIRECTORY`).
    pub data_dir: PathBuf,
    /// Directory of pipeline YAML files (default `./pipelines`).
    pub pipelines_dir: PathBuf,
    /// True when `pipelines_dir` was set explicitly (a missing one is then an error).
    pub pipelines_dir_explicit: bool,
    /// Store backend.
    pub store: StoreConfig,
    /// Bearer token for `/api/v1`; `None` → the API serves loopback clients only.
    pub admin_token: Option<Secret>,
    /// Largest accepted request body (default 25 MiB).
    pub max_body_bytes: usize,
    /// Runs executing at once, across all groups (default 4).
    pub max_parallel_runs: usize,
    /// Cap of one run's stored log (default 16 MiB).
    pub max_log_bytes: u64,
    /// On shutdown, how long running steps may continue before they are killed (default 30s).
    pub shutdown_grace: Duration,
    /// Between SIGTERM and SIGKILL when a step is stopped or times out (default 10s).
    pub kill_grace: Duration,
    /// Names of daemon environment variables that commands inherit.
    pub env_passthrough: Vec<String>,
    /// Sources by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// What to prune, and when.
    pub retention: Retention,
}

/// `retention:` — old runs, their logs and deliveries are pruned in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete finished runs (and deliveries without runs) older than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many finished runs per pipeline.
    pub max_runs_per_pipeline: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    listen: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
    pipelines_dir: Option<Spanned<String>>,
    store: Option<Spanned<String>>,
    admin_token_file: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<u64>>,
    max_parallel_runs: Option<Spanned<u64>>,
    max_log_bytes: Option<Spanned<u64>>,
    shutdown_grace: Option<Spanned<String>>,
    kill_grace: Option<Spanned<String>>,
    env_passthrough: Option<Vec<Spanned<String>>>,
    sources: Option<BTreeMap<String, RawSource>>,
    retention: Option<RawRetention>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    max_age: Option<Spanned<String>>,
    max_runs_per_pipeline: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: Spanned<String>,
    secret_file: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
}

impl DaemonConfig {
    /// Loads `path`, or the built-in defaults when `path` is `None` and
    /// `./hookd.yaml` does not exist. An explicitly named file must exist.
    pub fn load(path: Option<&Path>) -> Result<DaemonConfig, ConfigErrors> {
        let (file, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        match std::fs::read_to_string(&file) {
            Ok(text) => Self::from_yaml(&file, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Self::parse(None, "")
            }
            Err(e) => Err(ConfigErrors(vec![ConfigError::file(
                &file,
                format!("cannot read config file: {e}"),
            )])),
        }
    }

    /// Parses and validates config text; `file` names it in errors and
    /// anchors relative paths (its directory).
    pub fn from_yaml(file: &Path, text: &str) -> Result<DaemonConfig, ConfigErrors> {
        Self::parse(Some(file), text)
    }

    fn parse(file: Option<&Path>, text: &str) -> Result<DaemonConfig, ConfigErrors> {
        let name = file.unwrap_or(Path::new("<built-in defaults>"));
        let builtin = text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---"
        });
        let raw: RawDaemon = if builtin {
            RawDaemon {
                listen: None,
                data_dir: None,
                pipelines_dir: None,
                store: None,
                admin_token_file: None,
                max_body_bytes: None,
                max_parallel_runs: None,
                max_log_bytes: None,
                shutdown_grace: None,
                kill_grace: None,
                env_passthrough: None,
                sources: None,
                retention: None,
            }
        } else {
            parse_yaml(name, text).map_err(|e| ConfigErrors(vec![e]))?
        };
        validate(name, file, raw)
    }
}

fn validate(
    name: &Path,
    file: Option<&Path>,
    raw: RawDaemon,
) -> Result<DaemonConfig, ConfigErrors> {
    let mut errs = Errors::new(name);
    let base = file
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // Everything is resolved to absolute paths now: steps run in other
    // directories and must still find HOOKD_*_FILE paths under data_dir.
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let base = std::path::absolute(&base).unwrap_or(base);
    let mut path_of = |errs: &mut Errors, field: &str, v: &Spanned<String>| -> Option<PathBuf> {
        match expand_env(&v.value) {
            Ok(s) => Some(resolve_path(&base, &s)),
            Err(e) => {
                errs.at(v.referenced, format!("{field}: {e}"));
                None
            }
        }
    };

    let listen = match &raw.listen {
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        Some(v) => match v.value.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                errs.at(
                    v.referenced,
                    format!(
                        "listen: {:?} is not an address:port such as 127.0.0.1:8080 or [::1]:8080",
                        v.value
                    ),
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        },
    };
    let data_dir = match &raw.data_dir {
        Some(v) => path_of(&mut errs, "data_dir", v).unwrap_or_default(),
        None => match std::env::var_os("STATE_DIRECTORY") {
            // systemd's StateDirectory= may list several, separated by ':'.
            Some(dirs) => resolve_path(
                &base,
                dirs.to_string_lossy().split(':').next().unwrap_or_default(),
            ),
            None => base.join("data"),
        },
    };
    let pipelines_dir = match &raw.pipelines_dir {
        Some(v) => path_of(&mut errs, "pipelines_dir", v).unwrap_or_default(),
        None => base.join("pipelines"),
    };
    let store = match &raw.store {
        None => StoreConfig::Sqlite,
        Some(v) if v.value == "sqlite" => StoreConfig::Sqlite,
        Some(v) if v.value.starts_with("postgres://") || v.value.starts_with("postgresql://") => {
            errs.at(
                v.referenced,
                "store: the PostgreSQL store is not available in this version; use sqlite",
            );
            StoreConfig::Sqlite
        }
        Some(v) => {
            errs.at(
                v.referenced,
                format!(
                    "store: {:?} is neither sqlite nor a postgres:// URL",
                    v.value
                ),
            );
            StoreConfig::Sqlite
        }
    };
    let admin_token = raw.admin_token_file.as_ref().and_then(|v| {
        let path = path_of(&mut errs, "admin_token_file", v)?;
        read_secret_file(&mut errs, "admin_token_file", v, &path)
    });
    let positive = |errs: &mut Errors, field: &str, v: &Option<Spanned<u64>>, default: u64| match v
    {
        None => default,
        Some(s) if s.value == 0 => {
            errs.at(s.referenced, format!("{field}: must be greater than zero"));
            default
        }
        Some(s) => s.value,
    };
    let max_body_bytes = positive(
        &mut errs,
        "max_body_bytes",
        &raw.max_body_bytes,
        25 * 1024 * 1024,
    );
    let max_parallel_runs = positive(&mut errs, "max_parallel_runs", &raw.max_parallel_runs, 4);
    let max_log_bytes = positive(
        &mut errs,
        "max_log_bytes",
        &raw.max_log_bytes,
        16 * 1024 * 1024,
    );
    let shutdown_grace = raw
        .shutdown_grace
        .as_ref()
        .and_then(|v| errs.duration("shutdown_grace", v))
        .unwrap_or(Duration::from_secs(30));
    let kill_grace = raw
        .kill_grace
        .as_ref()
        .and_then(|v| errs.duration("kill_grace", v))
        .unwrap_or(Duration::from_secs(10));
    let mut env_passthrough = Vec::new();
    for (i, v) in raw.env_passthrough.iter().flatten().enumerate() {
        if is_env_name(&v.value) {
            env_passthrough.push(v.value.clone());
        } else {
            errs.at(
                v.referenced,
                format!("env_passthrough[{i}]: {:?} is not a variable name", v.value),
            );
        }
    }

    let retention = match &raw.retention {
        None => Retention::default(),
        Some(r) => Retention {
            max_age: r
                .max_age
                .as_ref()
                .and_then(|v| errs.duration("retention.max_age", v)),
            max_runs_per_pipeline: r.max_runs_per_pipeline.as_ref().and_then(|v| {
                if v.value == 0 {
                    errs.at(
                        v.referenced,
                        "retention.max_runs_per_pipeline: must be greater than zero",
                    );
                    None
                } else {
                    usize::try_from(v.value).ok()
                }
            }),
        },
    };

    let mut sources = BTreeMap::new();
    match raw.sources {
        None => {
            // Built-in: one source per kind, named after it, without credentials
            // (loopback senders only, which start-up says loudly).
            for (name, kind) in SourceKind::ALL {
                sources.insert(
                    name.to_string(),
                    SourceConfig {
                        name: name.to_string(),
                        kind: *kind,
                        credentials: Credentials::default(),
                    },
                );
            }
        }
        Some(raw_sources) => {
            for (name, rs) in raw_sources {
                if let Some(s) = validate_source(&mut errs, &mut path_of, &name, rs) {
                    sources.insert(name, s);
                }
            }
        }
    }

    if !errs.is_empty() {
        return Err(ConfigErrors(errs.into_vec()));
    }
    Ok(DaemonConfig {
        file: file.map(Path::to_path_buf),
        listen,
        data_dir,
        pipelines_dir_explicit: raw.pipelines_dir.is_some(),
        pipelines_dir,
        store,
        admin_token,
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        max_parallel_runs: usize::try_from(max_parallel_runs).unwrap_or(usize::MAX),
        max_log_bytes,
        shutdown_grace,
        kill_grace,
        env_passthrough,
        sources,
        retention,
    })
}

fn validate_source(
    errs: &mut Errors,
    path_of: &mut impl FnMut(&mut Errors, &str, &Spanned<String>) -> Option<PathBuf>,
    name: &str,
    rs: RawSource,
) -> Option<SourceConfig> {
    let at = rs.kind.referenced;
    if !is_safe_name(name) {
        errs.at(
            at,
            format!("sources.{name}: a source name may use letters, digits, '.', '_' and '-' only"),
        );
    }
    let Some(kind) = SourceKind::parse(&rs.kind.value) else {
        let known: Vec<&str> = SourceKind::ALL.iter().map(|(n, _)| *n).collect();
        errs.at(
            at,
            format!(
                "sources.{name}.kind: unknown source kind {:?} (known: {})",
                rs.kind.value,
                known.join(", ")
            ),
        );
        return None;
    };
    let given: Vec<(&str, &Spanned<String>)> = [
        ("secret_file", rs.secret_file.as_ref()),
        ("secret_env", rs.secret_env.as_ref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    for (key, v) in &given {
        if !kind.accepted_credentials().contains(key) {
            errs.at(
                v.referenced,
                format!(
                    "sources.{name}.{key}: {} sources authenticate with {}",
                    kind.as_str(),
                    kind.accepted_credentials().join(" or ")
                ),
            );
        }
    }
    if let (Some(f), Some(_)) = (&rs.secret_file, &rs.secret_env) {
        errs.at(
            f.referenced,
            format!("sources.{name}: set secret_file or secret_env, not both"),
        );
    }
    let mut credentials = Credentials::default();
    if let Some(v) = &rs.secret_file {
        let field = format!("sources.{name}.secret_file");
        credentials.hmac_secret =
            path_of(errs, &field, v).and_then(|p| read_secret_file(errs, &field, v, &p));
    } else if let Some(v) = &rs.secret_env {
        let field = format!("sources.{name}.secret_env");
        match std::env::var(&v.value) {
            Ok(s) if !s.trim_end().is_empty() => {
                credentials.hmac_secret = Some(Secret(s.trim_end().to_string()))
            }
            _ => errs.at(
                v.referenced,
                format!(
                    "{field}: environment variable {} is not set or empty",
                    v.value
                ),
            ),
        }
    }
    Some(SourceConfig {
        name: name.to_string(),
        kind,
        credentials,
    })
}

/// Reads a secret file; trailing whitespace and newlines are trimmed so that
/// `echo s3cret > file` works.
fn read_secret_file(
    errs: &mut Errors,
    field: &str,
    v: &Spanned<String>,
    path: &Path,
) -> Option<Secret> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim_end().is_empty() => {
            errs.at(
                v.referenced,
                format!("{field}: {} is empty", path.display()),
            );
            None
        }
        Ok(s) => Some(Secret(s.trim_end().to_string())),
        Err(e) => {
            errs.at(
                v.referenced,
                format!("{field}: cannot read {}: {e}", path.display()),
            );
            None
        }
    }
}

/// Expands `$NAME` and `${NAME}` (e.g. `${CREDENTIALS_DIRECTORY}/github`).
fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            (&inner[..end], &inner[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if !is_env_name(name) {
            return Err(format!("invalid variable reference in {s:?}"));
        }
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<DaemonConfig, String> {
        DaemonConfig::from_yaml(Path::new("/etc/hookd/hookd.yaml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = load("# nothing\n").expect("defaults");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.max_body_bytes, 26_214_400);
        assert_eq!(c.max_parallel_runs, 4);
        assert_eq!(c.pipelines_dir, PathBuf::from("/etc/hookd/pipelines"));
        assert!(c.sources["github"].credentials.is_empty());
        assert_eq!(c.store, StoreConfig::Sqlite);
    }

    #[test]
    fn secret_files_are_trimmed_and_relative_to_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("gh"), "s3cret\n\n").expect("write");
        let file = dir.path().join("hookd.yaml");
        let c = DaemonConfig::from_yaml(
            &file,
            "sources:\n  gh: { kind: github, secret_file: ./gh }\n",
        )
        .expect("valid");
        assert_eq!(
            c.sources["gh"]
                .credentials
                .hmac_secret
                .as_ref()
                .map(Secret::expose),
            Some("s3cret")
        );
        assert_eq!(
            format!("{:?}", c.sources["gh"].credentials),
            "Credentials { hmac_secret: Some(Secret([REDACTED])) }"
        );
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let cases = [
            (
                "listen: nowhere\n",
                "/etc/hookd/hookd.yaml:1:9: listen: \"nowhere\" is not an address:port",
            ),
            (
                "lisen: 1\n",
                "/etc/hookd/hookd.yaml:1:1: unknown field `lisen`",
            ),
            (
                "max_parallel_runs: 0\n",
                "/etc/hookd/hookd.yaml:1:20: max_parallel_runs: must be greater than zero",
            ),
            (
                "shutdown_grace: ten minutes\n",
                "/etc/hookd/hookd.yaml:1:17: shutdown_grace: invalid duration \"ten minutes\"",
            ),
            (
                "sources:\n  x: { kind: gitlub }\n",
                "/etc/hookd/hookd.yaml:2:14: sources.x.kind: unknown source kind \"gitlub\"",
            ),
            (
                "sources:\n  x: { kind: github, secret_file: /nonexistent/s }\n",
                "/etc/hookd/hookd.yaml:2:35: sources.x.secret_file: cannot read /nonexistent/s",
            ),
            (
                "sources:\n  x: { kind: github, secret_env: HOOKD_TEST_UNSET_VAR }\n",
                "sources.x.secret_env: environment variable HOOKD_TEST_UNSET_VAR is not set",
            ),
            (
                "store: mysql://x\n",
                "/etc/hookd/hookd.yaml:1:8: store: \"mysql://x\" is neither sqlite",
            ),
            (
                "data_dir: ${HOOKD_TEST_UNSET_VAR}/x\n",
                "data_dir: environment variable HOOKD_TEST_UNSET_VAR is not set",
            ),
        ];
        for (text, expected) in cases {
            let err = load(text).expect_err(text);
            assert!(
                err.contains(expected),
                "for {text:?}:\n got: {err}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn several_errors_are_reported_at_once() {
        let err = load("listen: x\nmax_parallel_runs: 0\n").expect_err("invalid");
        assert_eq!(err.lines().count(), 2, "{err}");
    }

    #[test]
    fn env_references_expand() {
        std::env::set_var("HOOKD_TEST_CRED_DIR", "/run/credentials/hookd.service");
        assert_eq!(
            expand_env("${HOOKD_TEST_CRED_DIR}/github").as_deref(),
            Ok("/run/credentials/hookd.service/github")
        );
        assert_eq!(
            expand_env("$HOOKD_TEST_CRED_DIR/x").as_deref(),
            Ok("/run/credentials/hookd.service/x")
        );
        assert!(expand_env("${oops").is_err());
    }
}
