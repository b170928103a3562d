//! `hookd.yaml`: where hookd listens, keeps its data, finds pipelines, and the
//! sources (receiver endpoints) with their credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

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
    /// GitLab webhooks (`X-Gitlab-Token`, or the Standard Webhooks signing token).
    Gitlab,
    /// Gitea, Forgejo and Gogs webhooks (`X-Gitea-Signature` and its copies).
    Gitea,
    /// Bitbucket Cloud webhooks (`X-Hub-Signature: sha256=…`, event `repo:push`).
    BitbucketCloud,
    /// Bitbucket Data Center / Server webhooks (`repo:refs_changed`).
    BitbucketServer,
    /// Any other sender: payload fields mapped with JSON pointers, configurable auth.
    Generic,
    /// Prometheus Alertmanager (webhook payload version 4).
    Alertmanager,
    /// Grafana Alerting's webhook contact point.
    Grafana,
}

impl SourceKind {
    /// Every kind with its config spelling.
    pub const ALL: &'static [(&'static str, SourceKind)] = &[
        ("github", SourceKind::Github),
        ("gitlab", SourceKind::Gitlab),
        ("gitea", SourceKind::Gitea),
        ("bitbucket-cloud", SourceKind::BitbucketCloud),
        ("bitbucket-server", SourceKind::BitbucketServer),
        ("generic", SourceKind::Generic),
        ("alertmanager", SourceKind::Alertmanager),
        ("grafana", SourceKind::Grafana),
    ];

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
            SourceKind::Github | SourceKind::BitbucketCloud => &["secret_file", "secret_env"],
            SourceKind::Gitlab => &["token_file", "signing_token_file"],
            SourceKind::Gitea => &["secret_file", "secret_env", "bearer_token_file"],
            SourceKind::BitbucketServer => &["secret_file", "secret_env", "basic"],
            SourceKind::Generic => &[
                "secret_file",
                "secret_env",
                "token_file",
                "bearer_token_file",
                "basic",
            ],
            SourceKind::Alertmanager => &["bearer_token_file", "basic"],
            SourceKind::Grafana => &["secret_file", "secret_env", "bearer_token_file", "basic"],
        }
    }
}

/// HTTP basic auth a sender must present (`basic: {username, password_file}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The expected user name.
    pub username: String,
    /// The expected password.
    pub password: Secret,
}

/// How a source's senders prove who they are. Every credential that is set
/// must verify; none set means loopback senders only.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// HMAC key (`secret_file` / `secret_env`).
    pub hmac_secret: Option<Secret>,
    /// A token the sender presents as-is (`token_file`), compared in constant time.
    pub token: Option<Secret>,
    /// A Standard Webhooks signing key, `whsec_<base64>` (`signing_token_file`).
    pub signing_token: Option<Secret>,
    /// `Authorization: Bearer <token>` (`bearer_token_file`).
    pub bearer_token: Option<Secret>,
    /// `Authorization: Basic …` (`basic: {username, password_file}`).
    pub basic: Option<BasicAuth>,
}

impl Credentials {
    /// No credential configured: only loopback senders are accepted.
    pub fn is_empty(&self) -> bool {
        self.hmac_secret.is_none()
            && self.token.is_none()
            && self.signing_token.is_none()
            && self.bearer_token.is_none()
            && self.basic.is_none()
    }

    /// Every secret value, for redaction from run logs (including the forms
    /// a sender puts on the wire: the base64 key of a `whsec_` token and the
    /// base64 `user:password` of basic auth).
    pub fn secrets(&self) -> Vec<String> {
        use base64::Engine;
        let mut out: Vec<String> = [
            &self.hmac_secret,
            &self.token,
            &self.signing_token,
            &self.bearer_token,
        ]
        .into_iter()
        .flatten()
        .map(|s| s.expose().to_string())
        .collect();
        if let Some(key) = self
            .signing_token
            .as_ref()
            .and_then(|s| s.expose().strip_prefix("whsec_"))
        {
            out.push(key.to_string());
        }
        if let Some(b) = &self.basic {
            out.push(b.password.expose().to_string());
            out.push(base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                b.username,
                b.password.expose()
            )));
        }
        out
    }
}

/// The hash function of an HMAC signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    /// HMAC-SHA1 (legacy senders).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl HmacAlgorithm {
    const ALL: &'static [(&'static str, HmacAlgorithm)] = &[
        ("sha1", HmacAlgorithm::Sha1),
        ("sha256", HmacAlgorithm::Sha256),
        ("sha512", HmacAlgorithm::Sha512),
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HmacAlgorithm::Sha1 => "sha1",
            HmacAlgorithm::Sha256 => "sha256",
            HmacAlgorithm::Sha512 => "sha512",
        }
    }
}

/// How a signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    /// Hexadecimal digits (either case).
    Hex,
    /// Standard base64 (padding optional).
    Base64,
}

/// A `generic` source's HMAC check (`hmac: {header, algorithm, encoding, prefix}`),
/// keyed with the source's `secret_file` / `secret_env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacConfig {
    /// The header carrying the signature.
    pub header: String,
    /// Hash function (default sha256).
    pub algorithm: HmacAlgorithm,
    /// Hex (default) or base64.
    pub encoding: SignatureEncoding,
    /// Text before the encoded signature, e.g. `sha256=` (default none).
    pub prefix: String,
}

/// Where a `generic` source's `token_file` token is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenPlace {
    /// In this request header.
    Header(String),
    /// In this query-string parameter.
    Query(String),
}

/// Where a `generic` source finds the sender's delivery id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryIdPlace {
    /// In this request header.
    Header(String),
    /// At this JSON pointer of the payload.
    Pointer(String),
}

/// JSON pointers (RFC 6901) from a `generic` payload to a push event's fields.
/// A GET request's query string (and a form-encoded body) is read as a flat
/// JSON object, so `/ref` reads `?ref=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMapping {
    /// `owner/name` of the repository (default `/repository`).
    pub repository: String,
    /// The pushed ref (default `/ref`); a value without `refs/` names a branch.
    pub git_ref: String,
    /// The commit before the push (default `/before`); absent means unknown.
    pub before: String,
    /// The pushed commit (default `/after`); null, empty or zeros mean a deletion.
    pub after: String,
    /// Where to clone from (default `/clone_url`).
    pub clone_url: String,
    /// Who pushed (default `/pusher`).
    pub pusher: String,
}

impl Default for PushMapping {
    fn default() -> Self {
        PushMapping {
            repository: "/repository".into(),
            git_ref: "/ref".into(),
            before: "/before".into(),
            after: "/after".into(),
            clone_url: "/clone_url".into(),
            pusher: "/pusher".into(),
        }
    }
}

/// JSON pointers from a `generic` payload to alert fields (`alert:`): the
/// source then produces alert events instead of push events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMapping {
    /// An array of alerts (each element one alert; the other pointers are
    /// relative to it); `None`: the whole document is one alert.
    pub alerts: Option<String>,
    /// Status (default `/status`): `firing`, `alerting`, `triggered`,
    /// `problem` fire; `resolved`, `ok`, `recovered` resolve (any case).
    pub status: String,
    /// Alert name (default `/name`, else the `alertname` label).
    pub name: String,
    /// Object of labels (default `/labels`).
    pub labels: String,
    /// Object of annotations (default `/annotations`).
    pub annotations: String,
    /// The sender's fingerprint (default `/fingerprint`, else derived from the labels).
    pub fingerprint: String,
    /// Start of the firing episode (default `/startsAt`).
    pub starts_at: String,
}

impl Default for AlertMapping {
    fn default() -> Self {
        AlertMapping {
            alerts: None,
            status: "/status".into(),
            name: "/name".into(),
            labels: "/labels".into(),
            annotations: "/annotations".into(),
            fingerprint: "/fingerprint".into(),
            starts_at: "/startsAt".into(),
        }
    }
}

/// Settings only `kind: generic` sources have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenericConfig {
    /// Body signature check, keyed with the source's HMAC secret.
    pub hmac: Option<HmacConfig>,
    /// Where the `token_file` token is sent.
    pub token: Option<TokenPlace>,
    /// Payload fields of the push event.
    pub push: PushMapping,
    /// Payload fields of alert events; when set, the source sends alerts, not pushes.
    pub alert: Option<AlertMapping>,
    /// Where the sender's delivery id is (redeliveries are then dropped).
    pub delivery_id: Option<DeliveryIdPlace>,
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
    /// The generic kind's mapping and auth placement; `None` for other kinds.
    pub generic: Option<GenericConfig>,
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
    /// How long a webhook's body may take to arrive, from the end of its
    /// headers (default 10s, what GitHub and GitLab wait for an answer).
    pub body_timeout: Duration,
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
    body_timeout: Option<Spanned<String>>,
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
    token_file: Option<Spanned<String>>,
    signing_token_file: Option<Spanned<String>>,
    bearer_token_file: Option<Spanned<String>>,
    basic: Option<Spanned<RawBasic>>,
    token: Option<Spanned<RawTokenPlace>>,
    hmac: Option<Spanned<RawHmac>>,
    push: Option<Spanned<RawPush>>,
    alert: Option<Spanned<RawAlertMapping>>,
    delivery_id: Option<Spanned<RawDeliveryId>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertMapping {
    alerts: Option<Spanned<String>>,
    status: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    labels: Option<Spanned<String>>,
    annotations: Option<Spanned<String>>,
    fingerprint: Option<Spanned<String>>,
    #[serde(rename = "startsAt")]
    starts_at: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasic {
    username: Spanned<String>,
    password_file: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenPlace {
    header: Option<Spanned<String>>,
    query: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHmac {
    header: Spanned<String>,
    algorithm: Option<Spanned<String>>,
    encoding: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    repository: Option<Spanned<String>>,
    #[serde(rename = "ref")]
    git_ref: Option<Spanned<String>>,
    before: Option<Spanned<String>>,
    after: Option<Spanned<String>>,
    clone_url: Option<Spanned<String>>,
    pusher: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeliveryId {
    header: Option<Spanned<String>>,
    pointer: Option<Spanned<String>>,
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
                body_timeout: None,
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
    let body_timeout = raw
        .body_timeout
        .as_ref()
        .and_then(|v| errs.duration("body_timeout", v))
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
            // Built-in (the documented default, `{github: {kind: github}}`):
            // one source without credentials, so loopback senders only,
            // which start-up says loudly. Other kinds are configured.
            sources.insert(
                "github".to_string(),
                SourceConfig {
                    name: "github".to_string(),
                    kind: SourceKind::Github,
                    credentials: Credentials::default(),
                    generic: None,
                },
            );
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
        body_timeout,
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
    let given: Vec<(&str, Location)> = [
        ("secret_file", rs.secret_file.as_ref().map(|v| v.referenced)),
        ("secret_env", rs.secret_env.as_ref().map(|v| v.referenced)),
        ("token_file", rs.token_file.as_ref().map(|v| v.referenced)),
        (
            "signing_token_file",
            rs.signing_token_file.as_ref().map(|v| v.referenced),
        ),
        (
            "bearer_token_file",
            rs.bearer_token_file.as_ref().map(|v| v.referenced),
        ),
        ("basic", rs.basic.as_ref().map(|v| v.referenced)),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    for (key, loc) in &given {
        if !kind.accepted_credentials().contains(key) {
            errs.at(
                *loc,
                format!(
                    "sources.{name}.{key}: {} sources authenticate with {}",
                    kind.as_str(),
                    either_of(kind.accepted_credentials())
                ),
            );
        }
    }
    if kind != SourceKind::Generic {
        let generic_only = [
            ("token", rs.token.as_ref().map(|v| v.referenced)),
            ("hmac", rs.hmac.as_ref().map(|v| v.referenced)),
            ("push", rs.push.as_ref().map(|v| v.referenced)),
            ("alert", rs.alert.as_ref().map(|v| v.referenced)),
            ("delivery_id", rs.delivery_id.as_ref().map(|v| v.referenced)),
        ];
        for (key, loc) in generic_only {
            if let Some(loc) = loc {
                errs.at(
                    loc,
                    format!(
                        "sources.{name}.{key}: only generic sources take {key} ({} sources use their provider's own format)",
                        kind.as_str()
                    ),
                );
            }
        }
    }
    if let (Some(f), Some(_)) = (&rs.secret_file, &rs.secret_env) {
        errs.at(
            f.referenced,
            format!("sources.{name}: set secret_file or secret_env, not both"),
        );
    }
    let mut secret_from_file = |errs: &mut Errors, key: &str, v: Option<&Spanned<String>>| {
        let v = v?;
        let field = format!("sources.{name}.{key}");
        path_of(errs, &field, v).and_then(|p| read_secret_file(errs, &field, v, &p))
    };
    let mut credentials = Credentials::default();
    if rs.secret_file.is_some() {
        credentials.hmac_secret = secret_from_file(errs, "secret_file", rs.secret_file.as_ref());
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
    credentials.token = secret_from_file(errs, "token_file", rs.token_file.as_ref());
    credentials.bearer_token =
        secret_from_file(errs, "bearer_token_file", rs.bearer_token_file.as_ref());
    credentials.signing_token =
        secret_from_file(errs, "signing_token_file", rs.signing_token_file.as_ref()).filter(|s| {
            let ok = crate::source::standard_webhooks_key(s.expose()).is_some();
            if !ok {
                if let Some(v) = &rs.signing_token_file {
                    errs.at(
                        v.referenced,
                        format!(
                            "sources.{name}.signing_token_file: {} does not hold a signing token (whsec_ followed by base64, as GitLab shows it)",
                            v.value
                        ),
                    );
                }
            }
            ok
        });
    if let Some(b) = &rs.basic {
        let username = &b.value.username;
        if username.value.is_empty() || username.value.contains(':') {
            errs.at(
                username.referenced,
                format!(
                    "sources.{name}.basic.username: {:?} is not a user name (it must be non-empty and without ':')",
                    username.value
                ),
            );
        }
        let password = secret_from_file(errs, "basic.password_file", Some(&b.value.password_file));
        credentials.basic = password.map(|password| BasicAuth {
            username: username.value.clone(),
            password,
        });
    }
    let generic = (kind == SourceKind::Generic).then(|| validate_generic(errs, name, &rs));
    Some(SourceConfig {
        name: name.to_string(),
        kind,
        credentials,
        generic,
    })
}

/// The generic kind's own keys, and how they pair with the credential keys.
/// Sets `target` from a configured JSON pointer (RFC 6901), or reports one
/// that is not a pointer.
fn json_pointer(
    errs: &mut Errors,
    field: &str,
    key: &str,
    v: &Option<Spanned<String>>,
    target: &mut String,
) {
    let Some(v) = v else { return };
    if v.value.is_empty() || v.value.starts_with('/') {
        *target = v.value.clone();
    } else {
        errs.at(
            v.referenced,
            format!(
                "{field}.{key}: {:?} is not a JSON pointer (RFC 6901): write it as /{}",
                v.value, v.value
            ),
        );
    }
}

fn validate_generic(errs: &mut Errors, name: &str, rs: &RawSource) -> GenericConfig {
    let mut out = GenericConfig::default();
    let secret_loc = rs
        .secret_file
        .as_ref()
        .or(rs.secret_env.as_ref())
        .map(|v| v.referenced);
    match (&rs.hmac, secret_loc) {
        (Some(h), None) => errs.at(
            h.referenced,
            format!(
                "sources.{name}.hmac: needs the HMAC key in secret_file or secret_env"
            ),
        ),
        (None, Some(loc)) => errs.at(
            loc,
            format!(
                "sources.{name}: a generic source with an HMAC secret needs hmac: {{header: NAME}} to say which header carries the signature"
            ),
        ),
        _ => {}
    }
    if let Some(h) = &rs.hmac {
        let h = &h.value;
        check_header_name(errs, &format!("sources.{name}.hmac.header"), &h.header);
        let algorithm = match &h.algorithm {
            None => HmacAlgorithm::Sha256,
            Some(v) => match HmacAlgorithm::ALL.iter().find(|(n, _)| *n == v.value) {
                Some((_, a)) => *a,
                None => {
                    errs.at(
                        v.referenced,
                        format!(
                            "sources.{name}.hmac.algorithm: unknown algorithm {:?} (known: sha1, sha256, sha512)",
                            v.value
                        ),
                    );
                    HmacAlgorithm::Sha256
                }
            },
        };
        let encoding = match h
            .encoding
            .as_ref()
            .map(|v| (v.value.as_str(), v.referenced))
        {
            None | Some(("hex", _)) => SignatureEncoding::Hex,
            Some(("base64", _)) => SignatureEncoding::Base64,
            Some((other, loc)) => {
                errs.at(
                    loc,
                    format!(
                        "sources.{name}.hmac.encoding: unknown encoding {other:?} (known: hex, base64)"
                    ),
                );
                SignatureEncoding::Hex
            }
        };
        out.hmac = Some(HmacConfig {
            header: h.header.value.clone(),
            algorithm,
            encoding,
            prefix: h
                .prefix
                .as_ref()
                .map(|p| p.value.clone())
                .unwrap_or_default(),
        });
    }

    match (&rs.token, &rs.token_file) {
        (Some(t), None) => errs.at(
            t.referenced,
            format!("sources.{name}.token: needs the token in token_file"),
        ),
        (None, Some(f)) => errs.at(
            f.referenced,
            format!(
                "sources.{name}.token_file: a generic source needs token: {{header: NAME}} or {{query: NAME}} to say where the token is sent"
            ),
        ),
        _ => {}
    }
    if let Some(t) = &rs.token {
        let field = format!("sources.{name}.token");
        out.token = match (&t.value.header, &t.value.query) {
            (Some(h), None) => {
                check_header_name(errs, &format!("{field}.header"), h);
                Some(TokenPlace::Header(h.value.clone()))
            }
            (None, Some(q)) if !q.value.is_empty() => Some(TokenPlace::Query(q.value.clone())),
            (None, Some(q)) => {
                errs.at(
                    q.referenced,
                    format!("{field}.query: parameter name is empty"),
                );
                None
            }
            (Some(_), Some(_)) | (None, None) => {
                errs.at(
                    t.referenced,
                    format!("{field}: set exactly one of header or query"),
                );
                None
            }
        };
    }
    if let (Some(bearer), Some(_)) = (&rs.bearer_token_file, &rs.basic) {
        errs.at(
            bearer.referenced,
            format!(
                "sources.{name}: set bearer_token_file or basic, not both (both use the Authorization header)"
            ),
        );
    }

    if let Some(p) = &rs.push {
        let p = &p.value;
        let field = format!("sources.{name}.push");
        let mut pointer = |key: &str, v: &Option<Spanned<String>>, target: &mut String| {
            json_pointer(errs, &field, key, v, target)
        };
        pointer("repository", &p.repository, &mut out.push.repository);
        pointer("ref", &p.git_ref, &mut out.push.git_ref);
        pointer("before", &p.before, &mut out.push.before);
        pointer("after", &p.after, &mut out.push.after);
        pointer("clone_url", &p.clone_url, &mut out.push.clone_url);
        pointer("pusher", &p.pusher, &mut out.push.pusher);
    }

    if let (Some(_), Some(a)) = (&rs.push, &rs.alert) {
        errs.at(
            a.referenced,
            format!(
                "sources.{name}: set push or alert, not both (a source sends one kind of event)"
            ),
        );
    }
    if let Some(a) = &rs.alert {
        let a = &a.value;
        let mut m = AlertMapping::default();
        let field = format!("sources.{name}.alert");
        let mut pointer = |key: &str, v: &Option<Spanned<String>>, target: &mut String| {
            json_pointer(errs, &field, key, v, target)
        };
        let mut alerts = String::new();
        pointer("alerts", &a.alerts, &mut alerts);
        m.alerts = a.alerts.as_ref().map(|_| alerts);
        pointer("status", &a.status, &mut m.status);
        pointer("name", &a.name, &mut m.name);
        pointer("labels", &a.labels, &mut m.labels);
        pointer("annotations", &a.annotations, &mut m.annotations);
        pointer("fingerprint", &a.fingerprint, &mut m.fingerprint);
        pointer("startsAt", &a.starts_at, &mut m.starts_at);
        out.alert = Some(m);
    }

    if let Some(d) = &rs.delivery_id {
        let field = format!("sources.{name}.delivery_id");
        out.delivery_id = match (&d.value.header, &d.value.pointer) {
            (Some(h), None) => {
                check_header_name(errs, &format!("{field}.header"), h);
                Some(DeliveryIdPlace::Header(h.value.clone()))
            }
            (None, Some(p)) if p.value.starts_with('/') => {
                Some(DeliveryIdPlace::Pointer(p.value.clone()))
            }
            (None, Some(p)) => {
                errs.at(
                    p.referenced,
                    format!(
                        "{field}.pointer: {:?} is not a JSON pointer (RFC 6901): write it as /{}",
                        p.value, p.value
                    ),
                );
                None
            }
            (Some(_), Some(_)) | (None, None) => {
                errs.at(
                    d.referenced,
                    format!("{field}: set exactly one of header or pointer"),
                );
                None
            }
        };
    }
    out
}

/// An HTTP header name: one or more RFC 9110 token characters.
fn check_header_name(errs: &mut Errors, field: &str, v: &Spanned<String>) {
    let ok = !v.value.is_empty()
        && v.value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        errs.at(
            v.referenced,
            format!("{field}: {:?} is not an HTTP header name", v.value),
        );
    }
}

/// `a`, `a or b`, `a, b or c`.
fn either_of(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
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
        assert_eq!(c.body_timeout, Duration::from_secs(10));
        assert_eq!(c.max_parallel_runs, 4);
        assert_eq!(c.pipelines_dir, PathBuf::from("/etc/hookd/pipelines"));
        assert!(c.sources["github"].credentials.is_empty());
        assert_eq!(
            c.sources.keys().collect::<Vec<_>>(),
            ["github"],
            "the documented built-in sources: {{github: {{kind: github}}}}"
        );
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
            "Credentials { hmac_secret: Some(Secret([REDACTED])), token: None, signing_token: None, bearer_token: None, basic: None }"
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
                "body_timeout: 0s\n",
                "/etc/hookd/hookd.yaml:1:15: body_timeout: duration must be greater than zero",
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

    /// A directory with one file of each credential kind, for source configs.
    fn credential_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in [
            ("secret", "s3cret\n"),
            ("token", "t0ken\n"),
            ("whsec", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"),
            ("not-whsec", "hunter2 hunter2\n"),
            ("password", "pa:ss\n"),
        ] {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    fn load_in(dir: &Path, text: &str) -> Result<DaemonConfig, String> {
        DaemonConfig::from_yaml(&dir.join("hookd.yaml"), text)
            .map_err(|e| e.to_string().replace(&dir.display().to_string(), "DIR"))
    }

    #[test]
    fn every_kind_and_credential_key_loads() {
        let dir = credential_dir();
        let c = load_in(
            dir.path(),
            r#"
sources:
  gl: { kind: gitlab, token_file: ./token, signing_token_file: ./whsec }
  tea: { kind: gitea, secret_file: ./secret, bearer_token_file: ./token }
  bbc: { kind: bitbucket-cloud, secret_file: ./secret }
  bbs:
    kind: bitbucket-server
    secret_file: ./secret
    basic: { username: hookd, password_file: ./password }
  deploybot:
    kind: generic
    token: { query: token }
    token_file: ./token
    push: { repository: /repository, ref: /ref, after: /sha }
  signer:
    kind: generic
    hmac: { header: X-Signature, algorithm: sha512, encoding: base64, prefix: "v1=" }
    secret_file: ./secret
    push: { repository: /repo/full_name, ref: /ref, before: /before, after: /after, clone_url: /repo/url, pusher: /user }
    delivery_id: { header: X-Request-Id }
  plain: { kind: generic }
"#,
        )
        .expect("valid");
        let gl = &c.sources["gl"];
        assert_eq!(gl.kind, SourceKind::Gitlab);
        assert_eq!(
            gl.credentials.token.as_ref().map(Secret::expose),
            Some("t0ken")
        );
        assert_eq!(
            gl.credentials.signing_token.as_ref().map(Secret::expose),
            Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        );
        assert!(gl.generic.is_none());
        assert_eq!(
            c.sources["tea"]
                .credentials
                .bearer_token
                .as_ref()
                .map(Secret::expose),
            Some("t0ken")
        );
        assert_eq!(c.sources["bbc"].kind, SourceKind::BitbucketCloud);
        let bbs = &c.sources["bbs"].credentials;
        assert_eq!(
            bbs.basic,
            Some(BasicAuth {
                username: "hookd".into(),
                password: Secret::new("pa:ss")
            })
        );
        let secrets = bbs.secrets();
        assert!(secrets.contains(&"pa:ss".to_string()), "{secrets:?}");
        assert!(
            secrets.contains(&"aG9va2Q6cGE6c3M=".to_string()),
            "{secrets:?}"
        );
        let deploybot = c.sources["deploybot"].generic.as_ref().expect("generic");
        assert_eq!(deploybot.token, Some(TokenPlace::Query("token".into())));
        assert_eq!(deploybot.push.after, "/sha");
        assert_eq!(
            deploybot.push.before, "/before",
            "unset pointers keep their default"
        );
        let signer = c.sources["signer"].generic.as_ref().expect("generic");
        assert_eq!(
            signer.hmac,
            Some(HmacConfig {
                header: "X-Signature".into(),
                algorithm: HmacAlgorithm::Sha512,
                encoding: SignatureEncoding::Base64,
                prefix: "v1=".into()
            })
        );
        assert_eq!(signer.push.clone_url, "/repo/url");
        assert_eq!(signer.push.pusher, "/user");
        assert_eq!(
            signer.delivery_id,
            Some(DeliveryIdPlace::Header("X-Request-Id".into()))
        );
        let plain = &c.sources["plain"];
        assert!(plain.credentials.is_empty());
        assert_eq!(plain.generic, Some(GenericConfig::default()));
        let whsec = c.sources["gl"].credentials.secrets();
        assert!(whsec.contains(&"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()));
    }

    #[test]
    fn source_key_errors_name_file_line_column_and_key() {
        let dir = credential_dir();
        let cases = [
            (
                "sources:\n  x: { kind: gitlab, token_file: ./nope }\n",
                "DIR/hookd.yaml:2:34: sources.x.token_file: cannot read DIR/./nope",
            ),
            (
                "sources:\n  x: { kind: gitlab, signing_token_file: ./not-whsec }\n",
                "DIR/hookd.yaml:2:42: sources.x.signing_token_file: ./not-whsec does not hold a signing token (whsec_ followed by base64",
            ),
            (
                "sources:\n  x: { kind: github, token_file: ./token }\n",
                "DIR/hookd.yaml:2:34: sources.x.token_file: github sources authenticate with secret_file or secret_env",
            ),
            (
                "sources:\n  x: { kind: gitea, basic: { username: a, password_file: ./password } }\n",
                "DIR/hookd.yaml:2:28: sources.x.basic: gitea sources authenticate with secret_file, secret_env or bearer_token_file",
            ),
            (
                "sources:\n  x: { kind: gitlab, token_file: ./token, push: { ref: /ref } }\n",
                "DIR/hookd.yaml:2:49: sources.x.push: only generic sources take push",
            ),
            (
                "sources:\n  x: { kind: bitbucket-cloud, secret_file: ./secret, hmac: { header: X } }\n",
                "sources.x.hmac: only generic sources take hmac",
            ),
            (
                "sources:\n  x:\n    kind: bitbucket-server\n    basic: { username: 'a:b', password_file: ./password }\n",
                "DIR/hookd.yaml:4:24: sources.x.basic.username: \"a:b\" is not a user name",
            ),
            (
                "sources:\n  x:\n    kind: bitbucket-server\n    basic: { username: a, password_file: ./nope }\n",
                "DIR/hookd.yaml:4:42: sources.x.basic.password_file: cannot read",
            ),
            (
                "sources:\n  x:\n    kind: bitbucket-server\n    basic: { username: a, password: x }\n",
                "DIR/hookd.yaml:4:27: unknown field `password`",
            ),
            (
                "sources:\n  x:\n    kind: generic\n    secret_file: ./secret\n    hmac: { header: X-Sig, algorithm: md5 }\n",
                "DIR/hookd.yaml:5:39: sources.x.hmac.algorithm: unknown algorithm \"md5\" (known: sha1, sha256, sha512)",
            ),
            (
                "sources:\n  x:\n    kind: generic\n    secret_file: ./secret\n    hmac: { header: X-Sig, encoding: base32 }\n",
                "DIR/hookd.yaml:5:38: sources.x.hmac.encoding: unknown encoding \"base32\" (known: hex, base64)",
            ),
            (
                "sources:\n  x:\n    kind: generic\n    secret_file: ./secret\n    hmac: { header: 'X Sig' }\n",
                "DIR/hookd.yaml:5:21: sources.x.hmac.header: \"X Sig\" is not an HTTP header name",
            ),
            (
                "sources:\n  x:\n    kind: generic\n    hmac: { header: X-Sig }\n",
                "DIR/hookd.yaml:4:11: sources.x.hmac: needs the HMAC key in secret_file or secret_env",
            ),
            (
                "sources:\n  x: { kind: generic, secret_file: ./secret }\n",
                "DIR/hookd.yaml:2:36: sources.x: a generic source with an HMAC secret needs hmac: {header: NAME}",
            ),
            (
                "sources:\n  x: { kind: generic, token: { query: t } }\n",
                "DIR/hookd.yaml:2:30: sources.x.token: needs the token in token_file",
            ),
            (
                "sources:\n  x: { kind: generic, token_file: ./token }\n",
                "DIR/hookd.yaml:2:35: sources.x.token_file: a generic source needs token: {header: NAME} or {query: NAME}",
            ),
            (
                "sources:\n  x: { kind: generic, token_file: ./token, token: { query: t, header: X-T } }\n",
                "DIR/hookd.yaml:2:51: sources.x.token: set exactly one of header or query",
            ),
            (
                "sources:\n  x: { kind: generic, token_file: ./token, token: {} }\n",
                "sources.x.token: set exactly one of header or query",
            ),
            (
                "sources:\n  x: { kind: generic, token_file: ./token, token: { cookie: t } }\n",
                "unknown field `cookie`",
            ),
            (
                "sources:\n  x: { kind: generic, push: { ref: ref } }\n",
                "DIR/hookd.yaml:2:36: sources.x.push.ref: \"ref\" is not a JSON pointer (RFC 6901): write it as /ref",
            ),
            (
                "sources:\n  x: { kind: generic, push: { sha: /sha } }\n",
                "DIR/hookd.yaml:2:31: unknown field `sha`",
            ),
            (
                "sources:\n  x: { kind: generic, delivery_id: { header: X-Id, pointer: /id } }\n",
                "DIR/hookd.yaml:2:36: sources.x.delivery_id: set exactly one of header or pointer",
            ),
            (
                "sources:\n  x: { kind: generic, delivery_id: { pointer: id } }\n",
                "DIR/hookd.yaml:2:47: sources.x.delivery_id.pointer: \"id\" is not a JSON pointer",
            ),
            (
                "sources:\n  x:\n    kind: generic\n    bearer_token_file: ./token\n    basic: { username: a, password_file: ./password }\n",
                "DIR/hookd.yaml:4:24: sources.x: set bearer_token_file or basic, not both",
            ),
        ];
        let mut wrong = Vec::new();
        for (text, expected) in cases {
            let err = load_in(dir.path(), text).expect_err(text);
            if !err.contains(expected) {
                wrong.push(format!("for {text:?}:\n got: {err}\nwant: {expected}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
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
