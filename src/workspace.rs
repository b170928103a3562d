//! Working trees for pipeline runs: fetch a repository incrementally and check out
//! exactly one commit of it.
//!
//! Layout under the base directory handed to [`Workspaces::new`]:
//!
//! - `mirrors/<name>-<hash16>.git`: one bare mirror per repository URL (`name` is the
//!   last path segment of the URL sanitized to `[A-Za-z0-9._-]`, `hash16` the first 16
//!   hex digits of sha256 of the URL with any password removed). Mirrors persist, so
//!   every fetch only transfers what is new (libgit2 negotiates with the mirror's refs).
//!   Only the refs a run asks for are fetched, with explicit refspecs
//!   (`+refs/heads/X:refs/heads/X`, `+refs/tags/X:refs/tags/X`, `+<sha>:refs/hookd/<sha>`).
//!   Mirrors are never garbage collected here: working trees borrow their objects.
//! - `workspaces/<workspace>/tree`: the persistent working tree of a pipeline.
//! - `workspaces/<workspace>/runs/<run_id>`: a fresh working tree for one run,
//!   removed by [`Workspaces::cleanup`].
//!
//! Invariants:
//!
//! - A working tree is an ordinary non-bare git repository whose
//!   `.git/objects/info/alternates` points at the mirror's `objects` directory (no
//!   object is copied). After [`Workspaces::prepare`] its HEAD is detached at the
//!   commit, index and files match the commit, untracked files are gone and ignored
//!   files (e.g. `.terraform/`) are kept; a branch or tag that was fetched is written
//!   into the tree's refs too, and `origin` is the URL without password.
//! - Every git operation runs inside one `spawn_blocking` closure that opens its own
//!   `Repository` (git2's repository is not `Sync`); a semaphore bounds how many run
//!   at once.
//! - A mirror is guarded by a read/write lock (fetching writes, checkouts and
//!   diffs read) and every working tree by a mutex; locks are always taken mirror
//!   first, then tree, then a semaphore permit, and guards live inside the blocking
//!   closure, so a dropped future never releases a lock while git still works.
//! - Cancellation is cooperative: the token sets a flag that the libgit2 transfer,
//!   sideband and credential callbacks check, so a running fetch stops at its next
//!   callback; checkouts stop between steps.
//! - No token or URL password is logged or put into an error message.
//! - libgit2's server connect/read timeouts are not set: in git2 0.21 the setters
//!   are `unsafe fn` and this crate forbids unsafe code.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use git2::build::CheckoutBuilder;
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, DiffOptions, Direction, ErrorCode,
    FetchOptions, Oid, RemoteCallbacks, RemoteUpdateFlags, Repository, RepositoryInitOptions,
    StatusOptions, SubmoduleUpdateOptions,
};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex as AsyncMutex, RwLock, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Credential callbacks are called again after each rejection; give up after this many.
const MAX_AUTH_ATTEMPTS: u32 = 3;
/// Default user name sent with a token over HTTPS.
const DEFAULT_TOKEN_USERNAME: &str = "x-access-token";
/// Refspec used when only a commit id is known.
const ALL_HEADS: &str = "+refs/heads/*:refs/heads/*";
/// Nesting limit for recursive submodules.
const MAX_SUBMODULE_DEPTH: u32 = 8;

/// How to authenticate to a repository and verify its SSH host key.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Private key for SSH URLs (no passphrase).
    pub ssh_key_file: Option<PathBuf>,
    /// Token for HTTPS URLs; only sent to the host of the configured URL.
    pub token: Option<String>,
    /// User name sent with the token; default `x-access-token`.
    pub token_username: Option<String>,
    /// OpenSSH known_hosts file used to verify SSH host keys; when unset, libgit2's
    /// default check (`~/.ssh/known_hosts`) applies.
    pub known_hosts_file: Option<PathBuf>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("ssh_key_file", &self.ssh_key_file)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_username", &self.token_username)
            .field("known_hosts_file", &self.known_hosts_file)
            .finish()
    }
}

/// A repository to check out.
#[derive(Clone, Default)]
pub struct RepoSpec {
    /// Clone URL: `https://`, `http://`, `ssh://`, `git://`, `file://`, scp-like
    /// `user@host:path`, or a local path.
    pub url: String,
    /// How to authenticate.
    pub credentials: Credentials,
    /// Initialize and update submodules recursively.
    pub submodules: bool,
}

impl fmt::Debug for RepoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoSpec")
            .field("url", &redact_url(&self.url))
            .field("credentials", &self.credentials)
            .field("submodules", &self.submodules)
            .finish()
    }
}

/// Whether a pipeline reuses one working tree or gets a new one per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkspaceMode {
    /// `workspaces/<name>/tree`, reset hard and cleaned (ignored files kept) per run.
    Persistent,
    /// `workspaces/<name>/runs/<run_id>`, created empty per run.
    Fresh,
}

/// What to check out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// an exact commit (40 hex) announced by a push to `refname` (e.g. "refs/heads/main", "refs/tags/v1"); fetch that ref, then the commit must exist
    Commit {
        /// Full 40-hex commit id.
        sha: String,
        /// Ref the commit was pushed to; `None` fetches all branches.
        refname: Option<String>,
    },
    /// a ref name as a user writes it ("main", "v1.2", "refs/heads/x", or a 40-hex sha): fetch it and resolve to its commit
    Ref(String),
}

/// What a fetch transferred.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Whether the remote was contacted at all (false when the commit was already mirrored).
    pub network: bool,
    /// Objects received from the remote (libgit2 `Progress::received_objects`).
    pub received_objects: usize,
    /// Objects indexed into the mirror.
    pub indexed_objects: usize,
    /// Bytes received from the remote.
    pub received_bytes: usize,
}

impl FetchStats {
    fn add(&mut self, other: FetchStats) {
        self.network |= other.network;
        self.received_objects += other.received_objects;
        self.indexed_objects += other.indexed_objects;
        self.received_bytes += other.received_bytes;
    }
}

/// A working tree at exactly one commit.
#[derive(Clone, Debug)]
pub struct Checkout {
    /// Root of the working tree.
    pub path: PathBuf,
    /// Full 40-hex commit id the tree is at.
    pub commit: String,
    /// Bare mirror the tree borrows its objects from.
    pub mirror: PathBuf,
    /// Time spent fetching into the mirror (zero-ish when nothing had to be fetched).
    pub fetch_duration: Duration,
    /// Full ref name that was fetched and resolved, if any (e.g. `refs/heads/main`).
    pub refname: Option<String>,
    /// What the fetch transferred.
    pub fetch: FetchStats,
}

/// Why preparing a workspace or reading a mirror failed. URLs are shown without
/// userinfo password (and without any userinfo at all for non-SSH URLs).
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The URL is empty or unusable.
    #[error("invalid repository url {url:?}: {reason}")]
    InvalidUrl {
        /// Redacted URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A sha or ref name is malformed.
    #[error("invalid target {target:?} for {url}: {reason}")]
    InvalidTarget {
        /// Redacted URL.
        url: String,
        /// The sha or ref as given.
        target: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A workspace name contains characters outside `[A-Za-z0-9._-]`.
    #[error("invalid workspace name {name:?}: only [A-Za-z0-9._-] is allowed")]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// The cancellation token fired.
    #[error("cancelled while {action} {url}")]
    Cancelled {
        /// Redacted URL.
        url: String,
        /// What was going on, e.g. "fetching".
        action: &'static str,
    },
    /// The server rejected the credentials or none were usable.
    #[error("authentication failed for {url}: {detail}")]
    AuthFailed {
        /// Redacted URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// The SSH host key is not in the configured known_hosts file.
    #[error("host key verification failed for {url} (host {host}, known_hosts {}): {reason}", known_hosts.display())]
    HostKey {
        /// Redacted URL.
        url: String,
        /// Host as libgit2 saw it.
        host: String,
        /// The configured known_hosts file.
        known_hosts: PathBuf,
        /// Why.
        reason: String,
    },
    /// A fetch failed for another reason (network, server, protocol).
    #[error("fetching {refspecs} from {url} into {} failed: {message}", mirror.display())]
    Fetch {
        /// Redacted URL.
        url: String,
        /// Refspecs or ref names that were fetched.
        refspecs: String,
        /// Mirror path.
        mirror: PathBuf,
        /// libgit2's message, scrubbed of credentials.
        message: String,
    },
    /// The remote does not advertise the ref.
    #[error("ref {refname} not found in {url} (tried {tried})")]
    RefNotFound {
        /// Redacted URL.
        url: String,
        /// Ref as given.
        refname: String,
        /// Full ref names that were looked for.
        tried: String,
    },
    /// The commit is not in the mirror (after fetching, when a fetch was possible).
    #[error("commit {sha} not found in {url} {context}")]
    CommitNotFound {
        /// Redacted URL.
        url: String,
        /// The commit id.
        sha: String,
        /// E.g. "after fetching refs/heads/main" or "mirror /data/mirrors/x.git".
        context: String,
    },
    /// `changed_paths` or `merge_base` was called before anything was fetched.
    #[error("no mirror of {url} at {}: fetch it first", path.display())]
    MirrorMissing {
        /// Redacted URL.
        url: String,
        /// Expected mirror path.
        path: PathBuf,
    },
    /// A local git operation failed.
    #[error("git error while {action} for {url} at {}: {message}", path.display())]
    Git {
        /// Redacted URL.
        url: String,
        /// What was going on, naming the commit where there is one.
        action: String,
        /// Repository path.
        path: PathBuf,
        /// libgit2's message, scrubbed of credentials.
        message: String,
    },
    /// A filesystem operation failed.
    #[error("i/o error while {action} {}: {source}", path.display())]
    Io {
        /// What was going on.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A submodule could not be initialized or updated.
    #[error("submodule {name} ({url}) at {}: {message}", path.display())]
    Submodule {
        /// Submodule name.
        name: String,
        /// Redacted submodule URL.
        url: String,
        /// Submodule working directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The tree still differs from the commit after checkout.
    #[error("working tree {} of {url} is not clean at {commit} after checkout: {paths}", path.display())]
    NotClean {
        /// Redacted URL.
        url: String,
        /// Tree path.
        path: PathBuf,
        /// Commit id.
        commit: String,
        /// First differing paths.
        paths: String,
    },
    /// A blocking task panicked or the runtime is shutting down.
    #[error("internal error while {action}: {message}")]
    Internal {
        /// What was going on.
        action: &'static str,
        /// Details.
        message: String,
    },
}

/// Parses a full 40-hex commit id.
fn parse_sha(s: &str) -> Option<Oid> {
    if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Oid::from_str(s).ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// URLs

/// Pieces of a URL that matter here.
struct UrlParts<'a> {
    scheme: Option<&'a str>,
    user: Option<&'a str>,
    password: Option<&'a str>,
    /// Host and optional port as written.
    hostport: &'a str,
    host: Option<&'a str>,
    port: Option<u16>,
    path: &'a str,
}

fn split_url(url: &str) -> UrlParts<'_> {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo.map(|u| u.split_once(':').ok_or(u)) {
            Some(Ok((u, p))) => (Some(u), Some(p)),
            Some(Err(u)) => (Some(u), None),
            None => (None, None),
        };
        let (host, port) = split_hostport(hostport);
        return UrlParts {
            scheme: Some(scheme),
            user,
            password,
            hostport,
            host: (!host.is_empty()).then_some(host),
            port,
            path,
        };
    }
    // scp-like `[user@]host:path`: a colon before any slash.
    if let Some(colon) = url.find(':') {
        if !url[..colon].contains('/') && colon > 0 {
            let (user, host) = match url[..colon].rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, &url[..colon]),
            };
            return UrlParts {
                scheme: None,
                user,
                password: None,
                hostport: host,
                host: (!host.is_empty()).then_some(host),
                port: None,
                path: &url[colon + 1..],
            };
        }
    }
    UrlParts {
        scheme: None,
        user: None,
        password: None,
        hostport: "",
        host: None,
        port: None,
        path: url,
    }
}

fn split_hostport(hostport: &str) -> (&str, Option<u16>) {
    if let Some(rest) = hostport.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (hostport, None),
        };
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, p.parse().ok())
        }
        _ => (hostport, None),
    }
}

fn is_ssh_scheme(scheme: &str) -> bool {
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "ssh" | "git+ssh" | "ssh+git"
    )
}

/// The URL safe to show: no password, and for non-SSH URLs no userinfo at all
/// (a user name there is often a token).
pub fn redact_url(url: &str) -> String {
    let parts = split_url(url);
    match (parts.scheme, parts.user) {
        (Some(scheme), Some(user)) => {
            if is_ssh_scheme(scheme) {
                format!("{scheme}://{user}@{}{}", parts.hostport, parts.path)
            } else {
                format!("{scheme}://{}{}", parts.hostport, parts.path)
            }
        }
        _ => url.to_string(),
    }
}

/// Lowercase host of a URL, `None` for local paths.
fn url_host(url: &str) -> Option<String> {
    split_url(url).host.map(str::to_ascii_lowercase)
}

/// Readable part of a mirror's directory name.
fn readable_name(url: &str) -> String {
    let parts = split_url(url);
    let path = parts.path.trim_end_matches(['/', '\\']);
    let last = path.rsplit(['/', '\\', ':']).next().unwrap_or(path);
    let last = last.strip_suffix(".git").unwrap_or(last);
    let mut name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    name = name.trim_start_matches('.').to_string();
    if name.is_empty() {
        "repo".to_string()
    } else {
        name
    }
}

/// `mirrors/<name>-<hash16>.git` relative to the base directory.
fn mirror_dir_name(url: &str) -> String {
    let digest = Sha256::digest(redact_password(url).as_bytes());
    let hash = hex::encode(digest);
    format!("{}-{}.git", readable_name(url), &hash[..16])
}

/// The URL with only the password removed (the mirror identity).
fn redact_password(url: &str) -> String {
    let parts = split_url(url);
    match (parts.scheme, parts.user, parts.password) {
        (Some(scheme), Some(user), Some(_)) => {
            format!("{scheme}://{user}@{}{}", parts.hostport, parts.path)
        }
        _ => url.to_string(),
    }
}

fn valid_workspace_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

// ---------------------------------------------------------------------------
// known_hosts

/// Checks an SSH host key against an OpenSSH known_hosts file. Plain and wildcard
/// host patterns, `[host]:port`, negation and `@revoked` are understood; hashed
/// entries (`|1|...`) and `@cert-authority` lines are skipped.
fn check_known_hosts(
    file: &Path,
    host: &str,
    port: u16,
    key_type: &str,
    key: &[u8],
) -> Result<(), String> {
    let text = fs::read_to_string(file).map_err(|e| format!("cannot read known_hosts: {e}"))?;
    let key_b64 = base64_encode(key);
    let mut host_listed = false;
    let mut accepted = false;
    let mut hashed = 0usize;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (marker, patterns) = match fields.next() {
            Some(m) if m.starts_with('@') => (Some(m), fields.next()),
            first => (None, first),
        };
        let (Some(patterns), Some(line_type), Some(line_key)) =
            (patterns, fields.next(), fields.next())
        else {
            continue;
        };
        match host_matches(patterns, host, port) {
            HostMatch::No => continue,
            HostMatch::HashedOnly => {
                hashed += 1;
                continue;
            }
            HostMatch::Yes => {}
        }
        let same_key = line_type == key_type && line_key == key_b64;
        match marker {
            Some("@revoked") if same_key => return Err("the host key is marked @revoked".into()),
            Some(_) => continue,
            None => {
                host_listed = true;
                accepted |= same_key;
            }
        }
    }
    if accepted {
        Ok(())
    } else if host_listed {
        Err(format!(
            "the {key_type} host key offered by {host} does not match any key listed for it"
        ))
    } else if hashed > 0 {
        Err(format!(
            "no entry for {host} (hashed known_hosts entries are not supported, {hashed} skipped)"
        ))
    } else {
        Err(format!("no entry for {host}"))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HostMatch {
    Yes,
    No,
    HashedOnly,
}

fn host_matches(patterns: &str, host: &str, port: u16) -> HostMatch {
    let host = host.to_ascii_lowercase();
    let names = if port == 22 {
        vec![host.clone(), format!("[{host}]:22")]
    } else {
        vec![format!("[{host}]:{port}")]
    };
    let mut matched = false;
    let mut hashed = false;
    for pattern in patterns.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if pattern.starts_with('|') {
            hashed = true;
            continue;
        }
        let pattern = pattern.to_ascii_lowercase();
        if names.iter().any(|n| glob_match(&pattern, n)) {
            if negated {
                return HostMatch::No;
            }
            matched = true;
        }
    }
    if matched {
        HostMatch::Yes
    } else if hashed {
        HostMatch::HashedOnly
    } else {
        HostMatch::No
    }
}

/// `*` and `?` wildcards as in OpenSSH host patterns.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Cancellation and locks

/// Set when the caller's token fires or the caller drops the future; read by
/// libgit2 callbacks on the blocking thread.
#[derive(Clone, Default)]
struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Sets the flag when dropped, so abandoning `prepare` stops the blocking work.
struct CancelOnDrop(CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Lazily created locks keyed by path; unused entries are dropped on the next lookup.
struct LockMap<L> {
    map: Mutex<HashMap<PathBuf, Arc<L>>>,
}

impl<L: Default> LockMap<L> {
    fn new() -> Self {
        LockMap {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &Path) -> Arc<L> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(map.entry(key.to_path_buf()).or_default())
    }
}

// ---------------------------------------------------------------------------
// Fetching

/// Everything a blocking fetch needs; owned so it can cross into `spawn_blocking`.
struct FetchCtx {
    url: String,
    shown: String,
    host: Option<String>,
    port: Option<u16>,
    credentials: Credentials,
    cancel: CancelFlag,
}

impl FetchCtx {
    fn new(repo: &RepoSpec, cancel: CancelFlag) -> Self {
        let parts = split_url(&repo.url);
        FetchCtx {
            url: repo.url.clone(),
            shown: redact_url(&repo.url),
            host: parts.host.map(str::to_ascii_lowercase),
            port: parts.port,
            credentials: repo.credentials.clone(),
            cancel,
        }
    }

    fn check_cancel(&self, action: &'static str) -> Result<(), WorkspaceError> {
        if self.cancel.is_set() {
            Err(self.cancelled(action))
        } else {
            Ok(())
        }
    }

    fn cancelled(&self, action: &'static str) -> WorkspaceError {
        WorkspaceError::Cancelled {
            url: self.shown.clone(),
            action,
        }
    }

    /// Removes anything secret from a libgit2 message.
    fn scrub(&self, message: &str) -> String {
        let mut out = message.replace(&self.url, &self.shown);
        let secrets = [
            split_url(&self.url).password,
            self.credentials.token.as_deref(),
        ];
        for secret in secrets.into_iter().flatten() {
            if !secret.is_empty() {
                out = out.replace(secret, "***");
            }
        }
        out.trim_end_matches('.').to_string()
    }

    fn git_err(&self, action: impl Into<String>, path: &Path, e: &git2::Error) -> WorkspaceError {
        WorkspaceError::Git {
            url: self.shown.clone(),
            action: action.into(),
            path: path.to_path_buf(),
            message: self.scrub(e.message()),
        }
    }

    /// Whether a token may be sent to `url` (same host as the configured URL).
    fn token_allowed_for(&self, url: &str) -> bool {
        match (&self.host, url_host(url)) {
            (Some(mine), Some(theirs)) => *mine == theirs,
            _ => false,
        }
    }
}

/// Callback state of one connection: counts credential attempts and remembers why
/// a callback refused, so the resulting libgit2 error can be classified.
struct Session<'a> {
    ctx: &'a FetchCtx,
    auth_attempts: Cell<u32>,
    auth_failure: RefCell<Option<String>>,
    hostkey_failure: RefCell<Option<(String, PathBuf, String)>>,
}

impl<'a> Session<'a> {
    fn new(ctx: &'a FetchCtx) -> Self {
        Session {
            ctx,
            auth_attempts: Cell::new(0),
            auth_failure: RefCell::new(None),
            hostkey_failure: RefCell::new(None),
        }
    }

    fn callbacks(&'a self) -> RemoteCallbacks<'a> {
        let mut cb = RemoteCallbacks::new();
        cb.credentials(move |url, user, allowed| self.credentials(url, user, allowed));
        cb.transfer_progress(move |_| !self.ctx.cancel.is_set());
        cb.sideband_progress(move |_| !self.ctx.cancel.is_set());
        cb.certificate_check(move |cert, host| self.certificate_check(cert, host));
        cb
    }

    fn credentials(
        &self,
        url: &str,
        username: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        if self.ctx.cancel.is_set() {
            return Err(git2::Error::from_str("cancelled"));
        }
        let attempt = self.auth_attempts.get() + 1;
        self.auth_attempts.set(attempt);
        if attempt > MAX_AUTH_ATTEMPTS {
            return Err(self.refuse(format!("credentials rejected {MAX_AUTH_ATTEMPTS} times")));
        }
        let creds = &self.ctx.credentials;
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(username.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            if let Some(key) = &creds.ssh_key_file {
                return Cred::ssh_key(username.unwrap_or("git"), None, key, None);
            }
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if let Some(token) = &creds.token {
                if self.ctx.token_allowed_for(url) {
                    let user = creds
                        .token_username
                        .as_deref()
                        .or(username)
                        .unwrap_or(DEFAULT_TOKEN_USERNAME);
                    return Cred::userpass_plaintext(user, token);
                }
                debug!(url = %redact_url(url), "not sending the token to a different host");
            }
        }
        Err(self.refuse(format!(
            "the server asked for credentials ({allowed:?}) and none usable are configured for {}",
            redact_url(url)
        )))
    }

    fn refuse(&self, why: String) -> git2::Error {
        let error = git2::Error::from_str(&why);
        *self.auth_failure.borrow_mut() = Some(why);
        error
    }

    fn certificate_check(
        &self,
        cert: &git2::cert::Cert<'_>,
        host: &str,
    ) -> Result<CertificateCheckStatus, git2::Error> {
        let Some(known_hosts) = &self.ctx.credentials.known_hosts_file else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2 verifies against the system CA store.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let port = if self.ctx.host.as_deref() == Some(&host.to_ascii_lowercase()) {
            self.ctx.port.unwrap_or(22)
        } else {
            22
        };
        let verdict = match (hostkey.hostkey(), hostkey.hostkey_type()) {
            (Some(key), Some(kind)) => check_known_hosts(known_hosts, host, port, kind.name(), key),
            _ => Err("the server did not provide a raw host key".to_string()),
        };
        match verdict {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(reason) => {
                let error = git2::Error::from_str(&format!("host key rejected: {reason}"));
                *self.hostkey_failure.borrow_mut() =
                    Some((host.to_string(), known_hosts.clone(), reason));
                Err(error)
            }
        }
    }

    /// Classifies a libgit2 error of this session.
    fn error(&self, e: &git2::Error, refspecs: &str, mirror: &Path) -> WorkspaceError {
        let ctx = self.ctx;
        if ctx.cancel.is_set() {
            return ctx.cancelled("fetching");
        }
        if let Some((host, known_hosts, reason)) = self.hostkey_failure.borrow_mut().take() {
            return WorkspaceError::HostKey {
                url: ctx.shown.clone(),
                host,
                known_hosts,
                reason,
            };
        }
        if let Some(detail) = self.auth_failure.borrow_mut().take() {
            return WorkspaceError::AuthFailed {
                url: ctx.shown.clone(),
                detail,
            };
        }
        if e.code() == ErrorCode::Auth {
            return WorkspaceError::AuthFailed {
                url: ctx.shown.clone(),
                detail: ctx.scrub(e.message()),
            };
        }
        WorkspaceError::Fetch {
            url: ctx.shown.clone(),
            refspecs: refspecs.to_string(),
            mirror: mirror.to_path_buf(),
            message: ctx.scrub(e.message()),
        }
    }
}

/// A ref as advertised by the remote.
type Advertised = Vec<(String, Oid)>;

/// One connection: list the remote's refs, let `choose` pick refspecs from them,
/// download what is missing and update the mirror's refs. `describe` names what is
/// fetched in errors.
fn fetch_session(
    repo: &Repository,
    ctx: &FetchCtx,
    mirror: &Path,
    describe: &str,
    choose: impl FnOnce(&Advertised) -> Result<Vec<String>, WorkspaceError>,
) -> Result<FetchStats, WorkspaceError> {
    let session = Session::new(ctx);
    let fail = |e: git2::Error| session.error(&e, describe, mirror);
    let mut remote = repo.remote_anonymous(&ctx.url).map_err(fail)?;
    let mut conn = remote
        .connect_auth(Direction::Fetch, Some(session.callbacks()), None)
        .map_err(fail)?;
    let advertised: Advertised = conn
        .list()
        .map_err(fail)?
        .iter()
        .map(|head| (head.name().to_string(), head.oid()))
        .collect();
    let refspecs = choose(&advertised)?;
    let mut stats = FetchStats {
        network: true,
        ..FetchStats::default()
    };
    if refspecs.is_empty() {
        return Ok(stats);
    }
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(session.callbacks())
        .download_tags(AutotagOption::None)
        .update_fetchhead(false);
    let remote = conn.remote();
    remote.download(&refspecs, Some(&mut opts)).map_err(fail)?;
    {
        let progress = remote.stats();
        stats.received_objects = progress.received_objects();
        stats.indexed_objects = progress.indexed_objects();
        stats.received_bytes = progress.received_bytes();
    }
    remote
        .update_tips(
            None,
            RemoteUpdateFlags::empty(),
            AutotagOption::None,
            Some("hookd: fetch"),
        )
        .map_err(fail)?;
    info!(
        url = %ctx.shown,
        refspecs = %refspecs.join(" "),
        received_objects = stats.received_objects,
        received_bytes = stats.received_bytes,
        "fetched into mirror"
    );
    Ok(stats)
}

/// Result of the fetch stage.
struct Resolved {
    commit: Oid,
    /// Full ref name that was resolved (`refs/heads/x`, `refs/tags/x`).
    refname: Option<String>,
    /// What to write to `refname` in the working tree.
    ref_target: Option<Oid>,
    stats: FetchStats,
}

/// Full ref names a user-written ref may mean, in order of preference.
fn ref_candidates(name: &str) -> Vec<String> {
    if name == "HEAD" || name.starts_with("refs/") {
        vec![name.to_string()]
    } else {
        vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")]
    }
}

fn refspec_for(refname: &str) -> String {
    if refname == "HEAD" {
        "+HEAD:refs/hookd/HEAD".to_string()
    } else {
        format!("+{refname}:{refname}")
    }
}

fn validate_ref(ctx: &FetchCtx, name: &str) -> Result<Vec<String>, WorkspaceError> {
    let candidates = ref_candidates(name);
    let valid = name == "HEAD"
        || candidates
            .iter()
            .all(|c| git2::Reference::is_valid_name(c) && !c.contains(['*', ':', '^', '~']));
    if valid {
        Ok(candidates)
    } else {
        Err(WorkspaceError::InvalidTarget {
            url: ctx.shown.clone(),
            target: name.to_string(),
            reason: "not a valid ref name",
        })
    }
}

fn has_commit(repo: &Repository, oid: Oid) -> bool {
    repo.find_commit(oid).is_ok()
}

fn open_or_init_mirror(path: &Path, ctx: &FetchCtx) -> Result<Repository, WorkspaceError> {
    if path.exists() {
        match Repository::open_bare(path) {
            Ok(repo) => return Ok(repo),
            Err(e) => {
                warn!(mirror = %path.display(), error = %e.message(), "mirror unusable, recreating it");
                fs::remove_dir_all(path).map_err(|source| WorkspaceError::Io {
                    action: "removing broken mirror",
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
    }
    let mut opts = RepositoryInitOptions::new();
    opts.bare(true).mkpath(true);
    Repository::init_opts(path, &opts).map_err(|e| ctx.git_err("creating mirror", path, &e))
}

/// Brings the mirror to a state that contains the target commit.
fn fetch_target(
    ctx: &FetchCtx,
    mirror: &Path,
    target: &Target,
) -> Result<Resolved, WorkspaceError> {
    let repo = open_or_init_mirror(mirror, ctx)?;
    let invalid_sha = |sha: &str| WorkspaceError::InvalidTarget {
        url: ctx.shown.clone(),
        target: sha.to_string(),
        reason: "not a full 40-hex commit id",
    };
    match target {
        Target::Commit { sha, refname } => {
            let oid = parse_sha(sha).ok_or_else(|| invalid_sha(sha))?;
            fetch_commit(&repo, ctx, mirror, oid, refname.as_deref())
        }
        Target::Ref(name) => match parse_sha(name) {
            Some(oid) => fetch_commit(&repo, ctx, mirror, oid, None),
            None => fetch_ref(&repo, ctx, mirror, name),
        },
    }
}

/// Target is an exact commit: skip the network if it is mirrored, else fetch the ref
/// it was pushed to (all branches without a ref), then the commit itself by id.
fn fetch_commit(
    repo: &Repository,
    ctx: &FetchCtx,
    mirror: &Path,
    oid: Oid,
    refname: Option<&str>,
) -> Result<Resolved, WorkspaceError> {
    // The commit is what counts; a ref name git would refuse (a forged or
    // hostile payload) only loses the shortcut of fetching just that ref.
    let (refname, candidates) = match refname.map(|name| (name, validate_ref(ctx, name))) {
        Some((name, Ok(candidates))) => (Some(name), candidates),
        Some((name, Err(_))) => {
            warn!(url = %ctx.shown, refname = %name, "not a valid ref name; fetching all branches to find the commit");
            (None, Vec::new())
        }
        None => (None, Vec::new()),
    };
    let mut stats = FetchStats::default();
    let mut fetched_ref: Option<String> = None;
    if has_commit(repo, oid) {
        debug!(url = %ctx.shown, commit = %oid, "commit already mirrored, not fetching");
    } else {
        ctx.check_cancel("fetching")?;
        let describe = match refname {
            Some(name) => name.to_string(),
            None => "refs/heads/*".to_string(),
        };
        stats.add(fetch_session(repo, ctx, mirror, &describe, |advertised| {
            if candidates.is_empty() {
                return Ok(vec![ALL_HEADS.to_string()]);
            }
            fetched_ref = candidates
                .iter()
                .find(|c| advertised.iter().any(|(name, _)| name == *c))
                .cloned();
            // A ref that is gone on the remote falls through to fetching the id.
            Ok(fetched_ref.iter().map(|r| refspec_for(r)).collect())
        })?);
        if !has_commit(repo, oid) {
            ctx.check_cancel("fetching")?;
            let by_id = format!("+{oid}:refs/hookd/{oid}");
            match fetch_session(repo, ctx, mirror, &by_id, |_| Ok(vec![by_id.clone()])) {
                Ok(more) => stats.add(more),
                Err(
                    e @ (WorkspaceError::Cancelled { .. }
                    | WorkspaceError::AuthFailed { .. }
                    | WorkspaceError::HostKey { .. }),
                ) => return Err(e),
                Err(e) => debug!(error = %e, "fetching the commit by id failed"),
            }
        }
        if !has_commit(repo, oid) {
            return Err(WorkspaceError::CommitNotFound {
                url: ctx.shown.clone(),
                sha: oid.to_string(),
                context: format!("after fetching {describe} (mirror {})", mirror.display()),
            });
        }
    }
    // Which full ref the commit belongs to, as far as the mirror knows.
    let refname = fetched_ref.or_else(|| {
        candidates
            .into_iter()
            .find(|c| repo.refname_to_id(c).is_ok())
    });
    let ref_target = refname
        .as_deref()
        .and_then(|r| ref_target_for(repo, r, oid));
    Ok(Resolved {
        commit: oid,
        refname,
        ref_target,
        stats,
    })
}

/// What to write to `refname` in a working tree at `commit`: the mirror's value when
/// it peels to the commit (keeps annotated tags), else the commit.
fn ref_target_for(repo: &Repository, refname: &str, commit: Oid) -> Option<Oid> {
    if !(refname.starts_with("refs/heads/") || refname.starts_with("refs/tags/")) {
        return None;
    }
    let mirrored = repo.refname_to_id(refname).ok().filter(|id| {
        repo.find_object(*id, None)
            .and_then(|o| o.peel_to_commit())
            .is_ok_and(|c| c.id() == commit)
    });
    Some(mirrored.unwrap_or(commit))
}

/// Target is a ref name: list the remote, pick the branch (or else the tag), fetch it.
fn fetch_ref(
    repo: &Repository,
    ctx: &FetchCtx,
    mirror: &Path,
    name: &str,
) -> Result<Resolved, WorkspaceError> {
    let candidates = validate_ref(ctx, name)?;
    ctx.check_cancel("fetching")?;
    let mut chosen: Option<(String, Oid)> = None;
    let stats = fetch_session(repo, ctx, mirror, name, |advertised| {
        chosen = candidates
            .iter()
            .find_map(|c| advertised.iter().find(|(n, _)| n == c).cloned());
        match &chosen {
            Some((refname, _)) => Ok(vec![refspec_for(refname)]),
            None => Err(WorkspaceError::RefNotFound {
                url: ctx.shown.clone(),
                refname: name.to_string(),
                tried: candidates.join(", "),
            }),
        }
    })?;
    let Some((refname, oid)) = chosen else {
        return Err(WorkspaceError::RefNotFound {
            url: ctx.shown.clone(),
            refname: name.to_string(),
            tried: candidates.join(", "),
        });
    };
    let commit = repo
        .find_object(oid, None)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| WorkspaceError::CommitNotFound {
            url: ctx.shown.clone(),
            sha: oid.to_string(),
            context: format!(
                "after fetching {refname} (mirror {}): {}",
                mirror.display(),
                ctx.scrub(e.message())
            ),
        })?
        .id();
    let ref_target = ref_target_for(repo, &refname, commit);
    Ok(Resolved {
        commit,
        refname: (refname != "HEAD").then_some(refname),
        ref_target,
        stats,
    })
}

// ---------------------------------------------------------------------------
// Working trees

/// Everything the blocking checkout needs.
struct CheckoutJob {
    ctx: Arc<FetchCtx>,
    mirror: PathBuf,
    tree: PathBuf,
    commit: Oid,
    refname: Option<String>,
    ref_target: Option<Oid>,
    fresh: bool,
    submodules: bool,
}

fn remove_dir_if_exists(path: &Path, action: &'static str) -> Result<(), WorkspaceError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(WorkspaceError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Opens the tree's repository (recreating it when unusable) with its alternates
/// pointing at the mirror.
fn open_tree_repo(job: &CheckoutJob) -> Result<Repository, WorkspaceError> {
    let ctx = &job.ctx;
    let tree = &job.tree;
    // A tree whose `core.worktree` a step pointed elsewhere would have the
    // checkout write, and the clean-up judge, another directory.
    let usable = tree.join(".git").is_dir()
        && Repository::open(tree).is_ok_and(|r| {
            !r.is_bare()
                && r.workdir()
                    .is_some_and(|w| fs::canonicalize(w).ok() == fs::canonicalize(tree).ok())
        });
    if !usable {
        if tree.exists() {
            warn!(tree = %tree.display(), "working tree is not a git checkout of its own directory (or a step moved its core.worktree), recreating it");
            remove_dir_if_exists(tree, "removing unusable working tree")?;
        }
        let mut opts = RepositoryInitOptions::new();
        opts.mkpath(true);
        Repository::init_opts(tree, &opts)
            .map_err(|e| ctx.git_err("creating working tree", tree, &e))?;
    }
    let info = tree.join(".git").join("objects").join("info");
    fs::create_dir_all(&info).map_err(|source| WorkspaceError::Io {
        action: "creating",
        path: info.clone(),
        source,
    })?;
    let alternates = info.join("alternates");
    let line = format!("{}\n", job.mirror.join("objects").display());
    // Rewritten only when it differs: each run would otherwise truncate and
    // write it again.
    if fs::read(&alternates).ok().as_deref() != Some(line.as_bytes()) {
        fs::write(&alternates, &line).map_err(|source| WorkspaceError::Io {
            action: "writing",
            path: alternates.clone(),
            source,
        })?;
    }
    // A step killed mid-way may leave the index locked.
    let index_lock = tree.join(".git").join("index.lock");
    if index_lock.exists() {
        warn!(path = %index_lock.display(), "removing stale index lock");
        fs::remove_file(&index_lock).map_err(|source| WorkspaceError::Io {
            action: "removing",
            path: index_lock.clone(),
            source,
        })?;
    }
    // Opened after writing alternates so the object database sees the mirror.
    let open = || Repository::open(tree).map_err(|e| ctx.git_err("opening working tree", tree, &e));
    let repo = open()?;
    let pinned = pin_checkout_config(&repo)
        .map_err(|e| ctx.git_err("pinning the checkout settings of", tree, &e))?;
    if pinned {
        // A fresh handle: libgit2 caches these settings per repository.
        drop(repo);
        return open();
    }
    Ok(repo)
}

/// Settings that decide what a checkout writes and what status notices,
/// with the values a tree must have to be exactly its commit: a step (or
/// the service user's global git config) that turned off file modes or
/// change times would hide changes from the reset, and line-ending
/// conversion would write other bytes than the commit's. An unset key
/// already has the wanted value (libgit2's defaults on Linux).
const PINNED_CONFIG: [(&str, bool); 5] = [
    ("core.filemode", true),
    ("core.trustctime", true),
    ("core.symlinks", true),
    ("core.ignorecase", false),
    ("core.autocrlf", false),
];

/// Writes [`PINNED_CONFIG`] into the tree's own config where the effective
/// value differs (only then: a config write is a lock file); `true` when
/// something was written.
fn pin_checkout_config(repo: &Repository) -> Result<bool, git2::Error> {
    let mut config = repo.config()?;
    let effective = config.snapshot()?;
    let mut local = None;
    for (key, want) in PINNED_CONFIG {
        // `core.autocrlf` may also be `input`, which is not a boolean.
        let is = match effective.get_bool(key) {
            Ok(value) => value,
            Err(e) if e.code() == git2::ErrorCode::NotFound => want,
            Err(_) => !want,
        };
        if is != want {
            if local.is_none() {
                local = Some(config.open_level(git2::ConfigLevel::Local)?);
            }
            if let Some(local) = local.as_mut() {
                local.set_bool(key, want)?;
            }
        }
    }
    Ok(local.is_some())
}

/// Reads objects from the mirrors without hashing each one again, as the git
/// CLI does (libgit2 re-hashes every object it reads by default: a checkout
/// or status of a 20,000-file tree re-hashed every tree it walked, 12–19 % of
/// the trigger path's CPU). What hookd stores was hashed when it arrived:
/// the indexer computes every fetched object's id from its content, so a
/// server cannot slip in an object under another's id; zlib still checks
/// each object's compressed stream when it is read. Objects written later by
/// a step (which runs as the daemon's user and could as well rewrite the
/// mirror's refs or another workspace's files) are trusted like the steps.
/// Process-wide and idempotent; called before every git operation.
fn trust_stored_objects() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| git2::opts::strict_hash_verification(false));
}

/// Whether reference `name` points straight at `oid` (a symbolic one, such
/// as a HEAD on a branch, does not).
fn points_at(repo: &Repository, name: &str, oid: Oid) -> bool {
    repo.find_reference(name)
        .is_ok_and(|r| r.target() == Some(oid))
}

/// Whether an index entry is marked assume-unchanged or skip-worktree (a step
/// may run `git update-index`): a status scan reports such a file unchanged
/// without looking at it, so it cannot prove the tree clean; the forced
/// checkout ignores the marks and puts the file back. An unreadable index
/// counts as hiding changes.
fn hides_changes(repo: &Repository) -> bool {
    let Ok(index) = repo.index() else {
        return true;
    };
    index.iter().any(|e| {
        git2::IndexEntryFlag::from_bits_truncate(e.flags).is_valid()
            || git2::IndexEntryExtendedFlag::from_bits_truncate(e.flags_extended).is_skip_worktree()
    })
}

/// Removes the symlinks a step left where the index has a directory (a
/// tracked `modules/` replaced by a link to a shared directory, say) or a
/// file (a tracked `terraform.tfvars` replaced by a link to a shared one).
/// libgit2's checkout follows them: it would write and delete the files of
/// that directory, or write that file, in the place the link points at,
/// outside the tree (a link to a directory where a file belongs failed
/// every run with "Is a directory"). Each link itself is unlinked (never
/// what it points at); the checkout then makes the directory or the file
/// again.
///
/// One `lstat` per directory of the index, and one listing of each
/// directory that holds files (the listing's entry types tell links apart
/// without an `lstat` per file: 20,000 of them cost ≈ 20 ms here).
fn unlink_index_symlinks(repo: &Repository, tree: &Path) -> Result<(), WorkspaceError> {
    let Ok(index) = repo.index() else {
        // Nothing known to be a directory; the checkout reports a broken index.
        return Ok(());
    };
    let mut links = ParentLinks::new(tree);
    let mut file_dirs: Vec<Vec<u8>> = Vec::new();
    for entry in index.iter() {
        let path = entry.path.as_slice();
        links.clear(path)?;
        if is_regular_file(entry.mode) && is_tree_path(path) {
            let dir = dir_of(path);
            if file_dirs.last().is_none_or(|last| last.as_slice() != dir) {
                file_dirs.push(dir.to_vec());
            }
        }
    }
    file_dirs.sort_unstable();
    file_dirs.dedup();
    for dir in &file_dirs {
        // A directory that is gone (a link unlinked above) or unreadable
        // holds nothing to unlink here; the checkout reports what is wrong.
        let Ok(listing) = fs::read_dir(repo_relative(tree, dir)) else {
            continue;
        };
        for item in listing.flatten() {
            if !item.file_type().is_ok_and(|t| t.is_symlink()) {
                continue;
            }
            let path = item.path();
            // A regular file of the index (a tracked link, or an ignored one
            // the index does not have, is another matter).
            let tracked_file = path
                .strip_prefix(tree)
                .ok()
                .and_then(|rel| index.get_path(rel, 0))
                .is_some_and(|e| is_regular_file(e.mode));
            if tracked_file {
                unlink_if_symlink(&path)?;
            }
        }
    }
    Ok(())
}

/// Unlinks the symlinks standing on the directories that paths of the tree
/// lie in, with one `lstat` per directory when the paths come sorted (as
/// index entries and diff deltas do): only the directories past the part a
/// path's directory shares with the previous path's are new, and a
/// directory the previous one lies in was looked at with it. Any order is
/// safe: nothing makes a link while it runs, so a directory looked at once
/// is no link (or is gone) afterwards.
struct ParentLinks<'t> {
    tree: &'t Path,
    previous: Vec<u8>,
}

impl<'t> ParentLinks<'t> {
    fn new(tree: &'t Path) -> Self {
        Self {
            tree,
            previous: Vec::new(),
        }
    }

    /// Unlinks the outermost symlink among the directories of `rel` (what
    /// was under it is gone with it). A path that is no plain path inside
    /// the tree ([`is_tree_path`]) is skipped: the checkout refuses it.
    fn clear(&mut self, rel: &[u8]) -> Result<(), WorkspaceError> {
        if !is_tree_path(rel) {
            return Ok(());
        }
        let dir = dir_of(rel);
        let seen = self.previous.starts_with(dir)
            && (dir.is_empty()
                || self.previous.len() == dir.len()
                || self.previous[dir.len()] == b'/');
        if seen {
            return Ok(());
        }
        // The directories of `dir` that the previous one did not have: each
        // ends at a `/` past the shared part, or at the end.
        let shared = dir
            .iter()
            .zip(&self.previous)
            .take_while(|(a, b)| a == b)
            .count();
        let ends = (shared..dir.len())
            .filter(|&i| dir[i] == b'/')
            .chain([dir.len()])
            .filter(|&end| end > 0);
        for end in ends {
            if unlink_if_symlink(&repo_relative(self.tree, &dir[..end]))? {
                break;
            }
        }
        self.previous.clear();
        self.previous.extend_from_slice(dir);
        Ok(())
    }
}

/// Whether an index entry's mode is a regular file's (`100644`, `100755`):
/// not a symlink, not a submodule.
fn is_regular_file(mode: u32) -> bool {
    mode & 0o170000 == 0o100000
}

/// The directory `rel` (a path relative to the tree) lies in: empty for a
/// top-level name.
fn dir_of(rel: &[u8]) -> &[u8] {
    &rel[..rel.iter().rposition(|&b| b == b'/').unwrap_or(0)]
}

/// Removes `path` if it is a symlink (the link, never what it points at):
/// whether it was one.
fn unlink_if_symlink(path: &Path) -> Result<bool, WorkspaceError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::remove_file(path).map_err(|source| WorkspaceError::Io {
                action: "removing a symlink a step left",
                path: path.to_path_buf(),
                source,
            })?;
            info!(path = %path.display(), "removed a symlink a step left on a path the checkout writes or deletes");
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Whether `rel`, a path from a commit's tree, names a place inside the
/// working tree that git would write: no empty, `.` or `..` component, no
/// `.git` (in any case), no NUL. Trees come from the pushed repository,
/// and nothing checks their names on the way in (libgit2 checks them only
/// when it writes): a tree with a `..` entry must not make hookd touch
/// the directory above the tree.
fn is_tree_path(rel: &[u8]) -> bool {
    !rel.contains(&0)
        && rel
            .split(|&b| b == b'/')
            .all(|c| !(c.is_empty() || c == b"." || c == b".." || c.eq_ignore_ascii_case(b".git")))
}

/// The directories `rel` (a path relative to the tree) lies in, outermost
/// first: `a`, `a/b` for `a/b/c`.
fn parent_dirs(rel: &[u8]) -> impl Iterator<Item = &[u8]> {
    rel.iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i > 0)
        .map(move |(i, _)| &rel[..i])
}

/// Whether a directory `rel` lies in is a symlink in the working tree.
fn under_a_symlink(tree: &Path, rel: &[u8]) -> bool {
    parent_dirs(rel).any(|dir| {
        fs::symlink_metadata(repo_relative(tree, dir)).is_ok_and(|m| m.file_type().is_symlink())
    })
}

/// Clears, before a forced checkout of `commit`, what a step left in the
/// way that the checkout cannot clear itself, on every path the checkout
/// may write or delete beyond the index's ([`unlink_index_symlinks`] covers
/// the index's files and their directories): the paths where `commit`
/// differs from the index, and those where HEAD (the checkout's baseline)
/// differs from `commit`.
///
/// - A symlink on any directory such a path lies in, or on the path itself
///   where `commit` differs from the index: libgit2 would write or delete
///   through it, outside the tree (an ignored `x.auto.tfvars` linked to a
///   shared file, a `modules/` a step untracked and linked elsewhere). The
///   link is unlinked, never what it points at.
/// - A real directory where `commit` has a file (not a submodule): whatever
///   it holds (ignored files a step left; untracked ones) kept libgit2 from
///   removing it, and every run failed. `git checkout` treats ignored files
///   as expendable, and so does this.
fn clear_the_way(
    repo: &Repository,
    ctx: &FetchCtx,
    tree: &Path,
    commit: &git2::Commit,
) -> Result<(), WorkspaceError> {
    let sha = commit.id();
    let git = |action: &str, e: git2::Error| ctx.git_err(format!("{action} {sha}"), tree, &e);
    let Ok(index) = repo.index() else {
        // The checkout reports a broken index.
        return Ok(());
    };
    let target = commit.tree().map_err(|e| git("reading the tree of", e))?;
    let mut opts = DiffOptions::new();
    opts.include_typechange(true);
    let mut links = ParentLinks::new(tree);

    // HEAD against the commit: what the checkout deletes or replaces as
    // HEAD's, wherever the index stands.
    if let Some(head) = repo.head().ok().and_then(|h| h.peel_to_tree().ok()) {
        if head.id() != target.id() {
            let diff = repo
                .diff_tree_to_tree(Some(&head), Some(&target), Some(&mut opts))
                .map_err(|e| git("comparing HEAD with", e))?;
            for delta in diff.deltas() {
                for rel in [delta.old_file().path_bytes(), delta.new_file().path_bytes()]
                    .into_iter()
                    .flatten()
                {
                    links.clear(rel)?;
                }
            }
        }
    }

    let diff = repo
        .diff_tree_to_index(Some(&target), Some(&index), Some(&mut opts))
        .map_err(|e| git("comparing the index with", e))?;
    for delta in diff.deltas() {
        // The tree is the old side: a path `commit` has.
        let file = delta.old_file();
        let Some(rel) = file
            .path_bytes()
            .filter(|rel| !file.id().is_zero() && is_tree_path(rel))
        else {
            // Not in `commit` (an index path: its directories are cleared
            // already), or a name the checkout refuses after this.
            continue;
        };
        links.clear(rel)?;
        let path = repo_relative(tree, rel);
        if unlink_if_symlink(&path)? || file.mode() == git2::FileMode::Commit {
            continue;
        }
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&path).map_err(|source| WorkspaceError::Io {
                action: "removing a directory in place of a tracked file",
                path: path.clone(),
                source,
            })?;
            info!(path = %path.display(), "removed a directory (untracked or ignored files only) in place of a tracked file before checkout");
        }
    }
    Ok(())
}

/// Forced checkout that leaves untracked and ignored files alone (libgit2's
/// `remove_untracked` would also delete ignored files inside untracked directories).
fn forced_checkout() -> CheckoutBuilder<'static> {
    let mut co = CheckoutBuilder::new();
    co.force();
    co
}

fn repo_relative(tree: &Path, rel: &[u8]) -> PathBuf {
    #[cfg(unix)]
    let rel = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(rel));
    #[cfg(not(unix))]
    let rel = PathBuf::from(String::from_utf8_lossy(rel).into_owned());
    tree.join(rel)
}

/// Removes what is at `path`: a directory with its contents, anything else
/// (a symlink too: never what it points at) by itself; nothing there is fine.
fn remove_entry(path: &Path, action: &'static str) -> Result<(), WorkspaceError> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(|source| WorkspaceError::Io {
        action,
        path: path.to_path_buf(),
        source,
    })
}

/// One status scan of the tree, submodules left out: tracked changes, and
/// untracked files (ignored ones never) when `untracked`. `action` names it
/// in an error.
fn scan<'r>(
    repo: &'r Repository,
    ctx: &FetchCtx,
    tree: &Path,
    commit: Oid,
    untracked: bool,
    action: &str,
) -> Result<git2::Statuses<'r>, WorkspaceError> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(untracked)
        .recurse_untracked_dirs(untracked)
        .include_ignored(false)
        .exclude_submodules(true);
    repo.statuses(Some(&mut opts))
        .map_err(|e| ctx.git_err(format!("{action} at {commit}"), tree, &e))
}

/// `git clean -fd` without `-x`: removes untracked files and directories (nested
/// repositories included), keeps ignored ones, then prunes directories left empty.
fn remove_untracked(
    repo: &Repository,
    ctx: &FetchCtx,
    tree: &Path,
    commit: Oid,
) -> Result<(), WorkspaceError> {
    let statuses = scan(repo, ctx, tree, commit, true, "listing untracked files")?;
    for entry in statuses
        .iter()
        .filter(|e| e.status().contains(git2::Status::WT_NEW))
    {
        let path = repo_relative(tree, entry.path_bytes());
        remove_entry(&path, "removing untracked")?;
        // Prune parents that are now empty (fails harmlessly on non-empty ones).
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != tree && d.starts_with(tree)) {
            if fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
    Ok(())
}

/// Whether a status scan with [`verify_clean`]'s options lists nothing: HEAD,
/// index and files agree and no untracked file is left (ignored ones may be).
fn status_is_empty(
    repo: &Repository,
    ctx: &FetchCtx,
    tree: &Path,
    commit: Oid,
) -> Result<bool, WorkspaceError> {
    let statuses = scan(repo, ctx, tree, commit, true, "reading status")?;
    Ok(statuses.is_empty())
}

/// Resets the working tree to the commit like `git reset --hard && git clean -fd`:
/// forced checkout from the previous HEAD (so files deleted since are removed),
/// detach HEAD, reset the index, remove untracked files (files a step staged are
/// untracked by then), keep ignored ones, check out once more against the new
/// HEAD as a safety net, write again the files that checkout took for
/// unchanged but are not ([`rewrite_stale_files`]), and verify. Before the
/// first checkout of a persistent tree, symlinks the checkout would write or
/// delete through and directories of ignored files where a file belongs are
/// removed ([`unlink_index_symlinks`], [`clear_the_way`]): ignored files stay
/// unless they stand where the commit puts a tracked path.
///
/// A tree whose HEAD is already the commit and whose status scan is empty is
/// left untouched (no checkout, no index write). A tree whose status scan is
/// empty at another HEAD gets only the paths the two commits differ in
/// ([`advance_clean_tree`]: a push of one commit to a large repository
/// writes and scans again a few files, not every one). Otherwise, usually the forced
/// checkout alone already leaves index and files exactly at the commit: one
/// status scan right after it (the options of [`verify_clean`],
/// HEAD detached at the commit) proves that, and the index reset, clean-up,
/// second checkout and verification — four more passes over every entry of a
/// tree that may hold tens of thousands of files — are skipped. Whatever the
/// scan finds (a staged file, a change, an untracked file) and submodules take
/// the full path.
fn checkout_job(job: CheckoutJob) -> Result<(), WorkspaceError> {
    let ctx = &*job.ctx;
    let tree = &job.tree;
    let sha = job.commit.to_string();
    if job.fresh {
        remove_dir_if_exists(tree, "removing old run tree")?;
    }
    ctx.check_cancel("checking out")?;
    let repo = open_tree_repo(&job)?;
    let git = |action: &str, e: git2::Error| ctx.git_err(format!("{action} {sha}"), tree, &e);

    match repo.find_remote("origin") {
        Ok(remote) if remote.url().ok() == Some(ctx.shown.as_str()) => {}
        Ok(_) => repo
            .remote_set_url("origin", &ctx.shown)
            .map_err(|e| git("setting origin for", e))?,
        Err(_) => {
            repo.remote("origin", &ctx.shown)
                .map_err(|e| git("setting origin for", e))?;
        }
    }

    let commit = repo
        .find_commit(job.commit)
        .map_err(|e| WorkspaceError::CommitNotFound {
            url: ctx.shown.clone(),
            sha: sha.clone(),
            context: format!(
                "through the alternates of {} ({})",
                tree.display(),
                ctx.scrub(e.message())
            ),
        })?;
    // A tree already at the commit (a retry, a re-run, the same push again,
    // a remediation run once more) is left as it is when one status scan
    // finds nothing to undo: a forced checkout would change no file but
    // still rewrite the whole index through a lock file, and a new file per
    // run is a new inode (a run's costliest file-system work). HEAD and the
    // ref are written only when they change, for the same reason.
    let head_at_commit = points_at(&repo, "HEAD", job.commit);
    let at_commit = !job.submodules
        && head_at_commit
        && !hides_changes(&repo)
        && status_is_empty(&repo, ctx, tree, job.commit)?;
    let clean = at_commit
        || (!head_at_commit
            && !job.submodules
            && !job.fresh
            && advance_clean_tree(&repo, ctx, tree, &commit)?)
        || {
            if !job.fresh {
                unlink_index_symlinks(&repo, tree)?;
                clear_the_way(&repo, ctx, tree, &commit)?;
            }
            repo.checkout_tree(commit.as_object(), Some(&mut forced_checkout()))
                .map_err(|e| git("checking out", e))?;
            if !head_at_commit {
                repo.set_head_detached(job.commit)
                    .map_err(|e| git("detaching HEAD at", e))?;
            }
            !job.submodules && status_is_empty(&repo, ctx, tree, job.commit)?
        };
    if !clean {
        let mut index = repo.index().map_err(|e| git("reading index for", e))?;
        let commit_tree = commit.tree().map_err(|e| git("reading tree of", e))?;
        index
            .read_tree(&commit_tree)
            .and_then(|()| index.write())
            .map_err(|e| git("resetting index to", e))?;
        remove_untracked(&repo, ctx, tree, job.commit)?;
        repo.checkout_head(Some(&mut forced_checkout()))
            .map_err(|e| git("checking out", e))?;
        rewrite_stale_files(&repo, ctx, tree, job.commit)?;
    }

    if let (Some(refname), Some(target)) = (&job.refname, job.ref_target) {
        if !points_at(&repo, refname, target) {
            repo.reference(refname, target, true, "hookd: checkout")
                .map_err(|e| git(&format!("writing {refname} for"), e))?;
        }
    }

    if job.submodules {
        update_submodules(&repo, ctx, 0)?;
    } else if clean {
        return Ok(());
    }

    verify_clean(&repo, ctx, tree, job.commit)
}

/// The files whose names change how a tree is read or written: a change to
/// one of them can change the status of paths the commits do not touch.
const TREE_RULE_FILES: [&[u8]; 3] = [b".gitignore", b".gitattributes", b".gitmodules"];

/// Moves a persistent tree that is clean at its HEAD to `commit` by checking
/// out only the paths that differ between the two commits, as `git
/// checkout` does from a clean tree. One status scan (the options of
/// [`verify_clean`]) first proves the tree clean at HEAD: then every other
/// tracked path is already what `commit` has (an ignored file may still
/// stand where `commit` adds a directory: the checkout fails, and the
/// caller's full path clears it), and the forced checkout of the whole
/// tree (which compares every file again) and the scan after it (a third
/// pass over every file, tens of thousands in an infrastructure repository)
/// are not needed. The paths written are scanned again; all of them when a
/// `.gitignore`, `.gitattributes` or `.gitmodules` changed, since those
/// change how other paths read.
///
/// `false`, with nothing changed or with the checkout left for the full
/// path to finish, when the tree is not clean, HEAD is no commit, an index
/// mark could hide a change, a changed path is no plain path inside the
/// tree ([`is_tree_path`]), lies under a symlink, or is a path HEAD lacks
/// with a symlink on it (an ignored one a step left: the checkout would
/// write through it; the full path unlinks it first), the checkout of the
/// changed paths or the scan after it fails, or that scan finds anything:
/// the caller then takes the full path (symlinks, stale files, untracked
/// files and all), which reports a fault that is real. The errors of the
/// first scan and of reading and comparing the two trees are returned.
fn advance_clean_tree(
    repo: &Repository,
    ctx: &FetchCtx,
    tree: &Path,
    commit: &git2::Commit,
) -> Result<bool, WorkspaceError> {
    let sha = commit.id();
    let git = |action: &str, e: git2::Error| ctx.git_err(format!("{action} {sha}"), tree, &e);
    let Some(head) = repo.head().ok().and_then(|h| h.peel_to_commit().ok()) else {
        return Ok(false);
    };
    if hides_changes(repo) || !status_is_empty(repo, ctx, tree, head.id())? {
        return Ok(false);
    }
    let (from, to) = head
        .tree()
        .and_then(|from| Ok((from, commit.tree()?)))
        .map_err(|e| git("reading the trees of HEAD and", e))?;
    let mut opts = DiffOptions::new();
    opts.include_typechange(true);
    let diff = repo
        .diff_tree_to_tree(Some(&from), Some(&to), Some(&mut opts))
        .map_err(|e| git("comparing HEAD with", e))?;
    // A path HEAD lacks may still hold something ignored: a symlink there
    // (to a file or a directory outside) would be written through.
    let added_on_a_link = diff.deltas().any(|d| {
        d.old_file().id().is_zero()
            && d.new_file().path_bytes().is_some_and(|rel| {
                fs::symlink_metadata(repo_relative(tree, rel))
                    .is_ok_and(|m| m.file_type().is_symlink())
            })
    });
    let mut paths: Vec<Vec<u8>> = diff
        .deltas()
        .flat_map(|d| [d.old_file().path_bytes(), d.new_file().path_bytes()])
        .flatten()
        .map(<[u8]>::to_vec)
        .collect();
    paths.sort_unstable();
    paths.dedup();
    if added_on_a_link
        || paths
            .iter()
            .any(|p| !is_tree_path(p) || under_a_symlink(tree, p))
    {
        return Ok(false);
    }
    match move_by_paths(repo, ctx, tree, commit, &paths) {
        Ok(clean) => Ok(clean),
        Err(e) => {
            // The full path starts from the same HEAD and knows how to clear
            // what got in the way (an ignored file where the commit adds a
            // directory); a real fault fails there with its own message.
            info!(tree = %tree.display(), error = %e, "moving by the changed paths failed; resetting the whole tree");
            Ok(false)
        }
    }
}

/// The second half of [`advance_clean_tree`]: forced checkout of `paths`
/// alone, HEAD detached at `commit`, and the scan that proves the tree clean
/// (of `paths`, or of the whole tree when a rule file is among them).
fn move_by_paths(
    repo: &Repository,
    ctx: &FetchCtx,
    tree: &Path,
    commit: &git2::Commit,
    paths: &[Vec<u8>],
) -> Result<bool, WorkspaceError> {
    let sha = commit.id();
    let git = |action: &str, e: git2::Error| ctx.git_err(format!("{action} {sha}"), tree, &e);
    if !paths.is_empty() {
        let mut co = forced_checkout();
        co.disable_pathspec_match(true);
        for p in paths {
            co.path(p.as_slice());
        }
        repo.checkout_tree(commit.as_object(), Some(&mut co))
            .map_err(|e| git("checking out the changed paths of", e))?;
    }
    repo.set_head_detached(sha)
        .map_err(|e| git("detaching HEAD at", e))?;
    let rules_changed = paths.iter().any(|p| {
        let name = p.rsplit(|&b| b == b'/').next().unwrap_or(p);
        TREE_RULE_FILES.contains(&name)
    });
    if rules_changed {
        return status_is_empty(repo, ctx, tree, sha);
    }
    if paths.is_empty() {
        return Ok(true);
    }
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true)
        .disable_pathspec_match(true);
    for p in paths {
        opts.pathspec(p.as_slice());
    }
    let statuses = repo
        .statuses(Some(&mut opts))
        .map_err(|e| git("reading the status of the changed paths at", e))?;
    Ok(statuses.is_empty())
}

/// Writes again, from the commit, every tracked file that a status scan still
/// finds changed after a forced checkout.
///
/// libgit2's checkout takes a file whose size and mtime match its index entry
/// for unchanged without reading it, while status also compares the ctime and
/// then the content. A step that rewrites a tracked file with the same size
/// and puts its mtime back (`touch -r`, `cp -p`, an archive extracted over
/// the tree), or a line-ending conversion a step switched on
/// (`core.autocrlf`), leaves a file that every later checkout would skip and
/// every verification would reject: the persistent tree would fail each run
/// until someone repaired it by hand. Removing such files first makes the
/// checkout write them; ignored files (`.terraform/`) stay, unlike with a
/// tree made anew.
fn rewrite_stale_files(
    repo: &Repository,
    ctx: &FetchCtx,
    tree: &Path,
    commit: Oid,
) -> Result<(), WorkspaceError> {
    let statuses = scan(repo, ctx, tree, commit, false, "reading status")?;
    let stale: Vec<Vec<u8>> = statuses
        .iter()
        .filter(|e| {
            e.status()
                .intersects(git2::Status::WT_MODIFIED | git2::Status::WT_TYPECHANGE)
        })
        .map(|e| e.path_bytes().to_vec())
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let mut co = forced_checkout();
    co.disable_pathspec_match(true);
    for rel in &stale {
        remove_entry(
            &repo_relative(tree, rel),
            "removing a changed file to write it again",
        )?;
        co.path(rel.as_slice());
    }
    repo.checkout_head(Some(&mut co))
        .map_err(|e| ctx.git_err(format!("writing changed files again at {commit}"), tree, &e))
}

/// Checks HEAD and that no tracked change or untracked file is left.
fn verify_clean(
    repo: &Repository,
    ctx: &FetchCtx,
    tree: &Path,
    commit: Oid,
) -> Result<(), WorkspaceError> {
    let head = repo
        .head()
        .ok()
        .and_then(|h| h.target())
        .map(|id| id.to_string())
        .unwrap_or_else(|| "nothing".to_string());
    if head != commit.to_string() {
        return Err(WorkspaceError::NotClean {
            url: ctx.shown.clone(),
            path: tree.to_path_buf(),
            commit: commit.to_string(),
            paths: format!("HEAD is at {head}"),
        });
    }
    let statuses = scan(repo, ctx, tree, commit, true, "reading status")?;
    let dirty: Vec<String> = statuses
        .iter()
        .filter(|s| s.status() != git2::Status::CURRENT)
        .map(|s| String::from_utf8_lossy(s.path_bytes()).into_owned())
        .collect();
    if dirty.is_empty() {
        Ok(())
    } else {
        let mut paths = dirty
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if dirty.len() > 10 {
            paths.push_str(&format!(" and {} more", dirty.len() - 10));
        }
        Err(WorkspaceError::NotClean {
            url: ctx.shown.clone(),
            path: tree.to_path_buf(),
            commit: commit.to_string(),
            paths,
        })
    }
}

/// Initializes and updates every submodule to its recorded commit, recursively.
/// Submodule repositories live in the tree's `.git/modules` and are fetched with the
/// same credentials (the token still only goes to the configured URL's host).
fn update_submodules(repo: &Repository, ctx: &FetchCtx, depth: u32) -> Result<(), WorkspaceError> {
    let Some(workdir) = repo.workdir().map(Path::to_path_buf) else {
        return Ok(());
    };
    let submodules = repo
        .submodules()
        .map_err(|e| ctx.git_err("listing submodules", &workdir, &e))?;
    for mut sm in submodules {
        ctx.check_cancel("updating submodules of")?;
        let name = String::from_utf8_lossy(sm.name_bytes()).into_owned();
        let path = workdir.join(sm.path());
        let sm_url = redact_url(&String::from_utf8_lossy(sm.opt_url_bytes().unwrap_or(b"")));
        let sub_err = |message: String| WorkspaceError::Submodule {
            name: name.clone(),
            url: sm_url.clone(),
            path: path.clone(),
            message,
        };
        if depth >= MAX_SUBMODULE_DEPTH {
            return Err(sub_err(format!(
                "submodules nested deeper than {MAX_SUBMODULE_DEPTH} levels"
            )));
        }
        sm.init(true)
            .map_err(|e| sub_err(format!("init failed: {}", ctx.scrub(e.message()))))?;
        let session = Session::new(ctx);
        let mut fetch = FetchOptions::new();
        fetch
            .remote_callbacks(session.callbacks())
            .download_tags(AutotagOption::None);
        let mut opts = SubmoduleUpdateOptions::new();
        opts.fetch(fetch)
            .checkout(forced_checkout())
            .allow_fetch(true);
        if let Err(e) = sm.update(true, Some(&mut opts)) {
            return Err(match session.error(&e, "submodule", &path) {
                cancelled @ WorkspaceError::Cancelled { .. } => cancelled,
                other => sub_err(format!("update failed: {other}")),
            });
        }
        let sub = sm
            .open()
            .map_err(|e| sub_err(format!("cannot open: {}", ctx.scrub(e.message()))))?;
        if let (Some(workdir), Some(head)) = (
            sub.workdir().map(Path::to_path_buf),
            sub.head().ok().and_then(|h| h.target()),
        ) {
            remove_untracked(&sub, ctx, &workdir, head)?;
        }
        update_submodules(&sub, ctx, depth + 1)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Public entry point

/// Mirrors and working trees under one base directory. Cheap to clone (shares state),
/// `Send + Sync`.
#[derive(Clone)]
pub struct Workspaces {
    inner: Arc<Inner>,
}

struct Inner {
    base: PathBuf,
    git_ops: Arc<Semaphore>,
    mirror_locks: LockMap<RwLock<()>>,
    tree_locks: LockMap<AsyncMutex<()>>,
}

impl fmt::Debug for Workspaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspaces")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl Workspaces {
    /// Uses `base` (made absolute) for mirrors and trees; at most
    /// `max_concurrent_git_ops` (at least 1) git operations run at once.
    pub fn new(base: &Path, max_concurrent_git_ops: usize) -> Workspaces {
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        Workspaces {
            inner: Arc::new(Inner {
                base,
                git_ops: Arc::new(Semaphore::new(max_concurrent_git_ops.max(1))),
                mirror_locks: LockMap::new(),
                tree_locks: LockMap::new(),
            }),
        }
    }

    /// The (absolute) base directory.
    pub fn base(&self) -> &Path {
        &self.inner.base
    }

    /// Where the bare mirror of `url` lives.
    pub fn mirror_path(&self, url: &str) -> PathBuf {
        self.inner.base.join("mirrors").join(mirror_dir_name(url))
    }

    /// Where the working tree of a workspace (and run, in fresh mode) lives.
    pub fn tree_path(
        &self,
        workspace_name: &str,
        mode: WorkspaceMode,
        run_id: i64,
    ) -> Result<PathBuf, WorkspaceError> {
        if !valid_workspace_name(workspace_name) {
            return Err(WorkspaceError::InvalidName {
                name: workspace_name.to_string(),
            });
        }
        let dir = self.inner.base.join("workspaces").join(workspace_name);
        Ok(match mode {
            WorkspaceMode::Persistent => dir.join("tree"),
            WorkspaceMode::Fresh => dir.join("runs").join(run_id.to_string()),
        })
    }

    /// Runs `f` on the blocking pool under a semaphore permit. With a token, firing it
    /// sets `flag` and still waits for `f` to return (it owns the locks).
    async fn run_git<T, F>(
        &self,
        action: &'static str,
        cancel: Option<(&CancellationToken, &FetchCtx)>,
        f: F,
    ) -> Result<T, WorkspaceError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, WorkspaceError> + Send + 'static,
    {
        let semaphore = Arc::clone(&self.inner.git_ops);
        let permit = match cancel {
            Some((token, ctx)) => token
                .run_until_cancelled(semaphore.acquire_owned())
                .await
                .ok_or_else(|| ctx.cancelled(action))?,
            None => semaphore.acquire_owned().await,
        }
        .map_err(|e| WorkspaceError::Internal {
            action,
            message: e.to_string(),
        })?;
        let mut handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Here, not at start-up: setting it initializes libgit2 (and
            // OpenSSL), 4 MiB of an idle daemon's memory until a run needs git.
            trust_stored_objects();
            f()
        });
        let joined = match cancel {
            Some((token, ctx)) => tokio::select! {
                joined = &mut handle => joined,
                () = token.cancelled() => {
                    ctx.cancel.set();
                    handle.await
                }
            },
            None => handle.await,
        };
        joined.map_err(|e| WorkspaceError::Internal {
            action,
            message: e.to_string(),
        })?
    }

    /// fetch (incrementally) and check out; returns when the tree is exactly at the commit
    ///
    /// The mirror is write-locked while fetching, then read-locked while the tree
    /// (locked too) is checked out. No network access happens when the commit of a
    /// [`Target::Commit`] is already mirrored.
    pub async fn prepare(
        &self,
        repo: &RepoSpec,
        target: &Target,
        mode: WorkspaceMode,
        workspace_name: &str,
        run_id: i64,
        cancel: &CancellationToken,
    ) -> Result<Checkout, WorkspaceError> {
        let tree = self.tree_path(workspace_name, mode, run_id)?;
        let ctx = Arc::new(self.fetch_ctx(repo)?);
        let _stop_on_drop = CancelOnDrop(ctx.cancel.clone());
        if cancel.is_cancelled() {
            return Err(ctx.cancelled("fetching"));
        }
        let mirror = self.mirror_path(&repo.url);
        let mirror_lock = self.inner.mirror_locks.get(&mirror);
        let write_guard = cancel
            .run_until_cancelled(mirror_lock.write_owned())
            .await
            .ok_or_else(|| ctx.cancelled("waiting for the mirror of"))?;

        let (resolved, fetch_duration, read_guard) = {
            let (ctx2, mirror2, target) = (Arc::clone(&ctx), mirror.clone(), target.clone());
            self.run_git("fetching", Some((cancel, &ctx)), move || {
                let started = Instant::now();
                let resolved = fetch_target(&ctx2, &mirror2, &target)?;
                Ok((resolved, started.elapsed(), write_guard.downgrade()))
            })
            .await?
        };

        let tree_lock = self.inner.tree_locks.get(&tree);
        let tree_guard = cancel
            .run_until_cancelled(tree_lock.lock_owned())
            .await
            .ok_or_else(|| ctx.cancelled("waiting for the working tree of"))?;
        let job = CheckoutJob {
            ctx: Arc::clone(&ctx),
            mirror: mirror.clone(),
            tree: tree.clone(),
            commit: resolved.commit,
            refname: resolved.refname.clone(),
            ref_target: resolved.ref_target,
            fresh: mode == WorkspaceMode::Fresh,
            submodules: repo.submodules,
        };
        self.run_git("checking out", Some((cancel, &ctx)), move || {
            let _guards = (read_guard, tree_guard);
            checkout_job(job)
        })
        .await?;
        info!(
            url = %ctx.shown,
            commit = %resolved.commit,
            tree = %tree.display(),
            "working tree ready"
        );
        Ok(Checkout {
            path: tree,
            commit: resolved.commit.to_string(),
            mirror,
            fetch_duration,
            refname: resolved.refname,
            fetch: resolved.stats,
        })
    }

    /// remove a fresh run tree (no-op for persistent)
    ///
    /// Only paths of the form `<base>/workspaces/<name>/runs/<id>` are removed.
    pub async fn cleanup(
        &self,
        checkout: &Checkout,
        mode: WorkspaceMode,
    ) -> Result<(), WorkspaceError> {
        if mode == WorkspaceMode::Persistent {
            return Ok(());
        }
        let path = checkout.path.clone();
        let is_run_dir = path.parent().and_then(Path::file_name) == Some("runs".as_ref())
            && path.starts_with(self.inner.base.join("workspaces"));
        if !is_run_dir {
            return Err(WorkspaceError::Io {
                action: "refusing to remove",
                path,
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a run directory"),
            });
        }
        let guard = self.inner.tree_locks.get(&path).lock_owned().await;
        self.run_git("removing run tree", None, move || {
            let _guard = guard;
            remove_dir_if_exists(&path, "removing run tree")
        })
        .await
    }

    /// files changed between two commits in the mirror of `url` (both must already be fetched), as repo-relative paths with '/' separators, sorted, deduplicated; renames count as both old and new path; `before` None or all-zero sha = compare against the empty tree
    pub async fn changed_paths(
        &self,
        url: &str,
        before: Option<&str>,
        after: &str,
    ) -> Result<Vec<String>, WorkspaceError> {
        let before = before
            .filter(|b| !crate::event::is_zero_sha(b))
            .map(str::to_string);
        let after = after.to_string();
        self.read_mirror(url, "diffing", move |repo, ctx, mirror| {
            let after_tree = find_commit_in(repo, ctx, mirror, &after)?
                .tree()
                .map_err(|e| ctx.git_err(format!("reading tree of {after}"), mirror, &e))?;
            let before_tree = match &before {
                Some(sha) => Some(
                    find_commit_in(repo, ctx, mirror, sha)?
                        .tree()
                        .map_err(|e| ctx.git_err(format!("reading tree of {sha}"), mirror, &e))?,
                ),
                None => None,
            };
            let mut opts = DiffOptions::new();
            opts.include_typechange(true);
            // Without rename detection a rename is a delete plus an add: both paths.
            let diff = repo
                .diff_tree_to_tree(before_tree.as_ref(), Some(&after_tree), Some(&mut opts))
                .map_err(|e| ctx.git_err(format!("diffing {after}"), mirror, &e))?;
            let mut paths: Vec<String> = diff
                .deltas()
                .flat_map(|d| [d.old_file().path_bytes(), d.new_file().path_bytes()])
                .flatten()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            paths.sort();
            paths.dedup();
            Ok(paths)
        })
        .await
    }

    /// merge base of two commits in the mirror (for "new branch: compare against its merge base with the default branch"); None if unrelated
    pub async fn merge_base(
        &self,
        url: &str,
        a: &str,
        b: &str,
    ) -> Result<Option<String>, WorkspaceError> {
        let (a, b) = (a.to_string(), b.to_string());
        self.read_mirror(url, "computing merge base", move |repo, ctx, mirror| {
            let ca = find_commit_in(repo, ctx, mirror, &a)?.id();
            let cb = find_commit_in(repo, ctx, mirror, &b)?.id();
            match repo.merge_base(ca, cb) {
                Ok(base) => Ok(Some(base.to_string())),
                Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
                Err(e) => {
                    Err(ctx.git_err(format!("computing merge base of {a} and {b}"), mirror, &e))
                }
            }
        })
        .await
    }

    /// fetch a ref into the mirror and return the commit it points at (used to resolve the default branch)
    ///
    /// `refname` is written as for [`Target::Ref`]; `"HEAD"` resolves the remote's
    /// default branch.
    pub async fn resolve_ref(
        &self,
        repo: &RepoSpec,
        refname: &str,
        cancel: &CancellationToken,
    ) -> Result<String, WorkspaceError> {
        let ctx = Arc::new(self.fetch_ctx(repo)?);
        let _stop_on_drop = CancelOnDrop(ctx.cancel.clone());
        if cancel.is_cancelled() {
            return Err(ctx.cancelled("fetching"));
        }
        let mirror = self.mirror_path(&repo.url);
        let guard = cancel
            .run_until_cancelled(self.inner.mirror_locks.get(&mirror).write_owned())
            .await
            .ok_or_else(|| ctx.cancelled("waiting for the mirror of"))?;
        let target = Target::Ref(refname.to_string());
        let ctx2 = Arc::clone(&ctx);
        let resolved = self
            .run_git("fetching", Some((cancel, &ctx)), move || {
                let _guard = guard;
                fetch_target(&ctx2, &mirror, &target)
            })
            .await?;
        Ok(resolved.commit.to_string())
    }

    fn fetch_ctx(&self, repo: &RepoSpec) -> Result<FetchCtx, WorkspaceError> {
        if repo.url.trim().is_empty() {
            return Err(WorkspaceError::InvalidUrl {
                url: String::new(),
                reason: "empty",
            });
        }
        Ok(FetchCtx::new(repo, CancelFlag::default()))
    }

    /// Runs a read-only operation on an existing mirror under its read lock.
    async fn read_mirror<T, F>(
        &self,
        url: &str,
        action: &'static str,
        f: F,
    ) -> Result<T, WorkspaceError>
    where
        T: Send + 'static,
        F: FnOnce(&Repository, &FetchCtx, &Path) -> Result<T, WorkspaceError> + Send + 'static,
    {
        let ctx = self.fetch_ctx(&RepoSpec {
            url: url.to_string(),
            ..RepoSpec::default()
        })?;
        let mirror = self.mirror_path(url);
        let guard = self.inner.mirror_locks.get(&mirror).read_owned().await;
        self.run_git(action, None, move || {
            let _guard = guard;
            if !mirror.exists() {
                return Err(WorkspaceError::MirrorMissing {
                    url: ctx.shown.clone(),
                    path: mirror,
                });
            }
            let repo = Repository::open_bare(&mirror)
                .map_err(|e| ctx.git_err("opening mirror", &mirror, &e))?;
            f(&repo, &ctx, &mirror)
        })
        .await
    }
}

fn find_commit_in<'r>(
    repo: &'r Repository,
    ctx: &FetchCtx,
    mirror: &Path,
    sha: &str,
) -> Result<git2::Commit<'r>, WorkspaceError> {
    let oid = parse_sha(sha).ok_or_else(|| WorkspaceError::InvalidTarget {
        url: ctx.shown.clone(),
        target: sha.to_string(),
        reason: "not a full 40-hex commit id",
    })?;
    repo.find_commit(oid)
        .map_err(|_| WorkspaceError::CommitNotFound {
            url: ctx.shown.clone(),
            sha: sha.to_string(),
            context: format!("in mirror {}", mirror.display()),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};

    // ---- helpers -------------------------------------------------------------

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args([
                "-c",
                "init.defaultBranch=main",
                "-c",
                "protocol.file.allow=always",
            ])
            .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn init_repo(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q"]);
        dir
    }

    fn write(dir: &Path, rel: &str, content: &str) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn read(dir: &Path, rel: &str) -> String {
        fs::read_to_string(dir.join(rel)).unwrap()
    }

    fn commit_all(dir: &Path, msg: &str) -> String {
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "--allow-empty", "-m", msg]);
        git(dir, &["rev-parse", "HEAD"])
    }

    fn file_url(path: &Path) -> String {
        format!("file://{}", path.display())
    }

    fn spec(url: &str) -> RepoSpec {
        RepoSpec {
            url: url.to_string(),
            ..RepoSpec::default()
        }
    }

    fn commit_target(sha: &str, refname: &str) -> Target {
        Target::Commit {
            sha: sha.to_string(),
            refname: Some(refname.to_string()),
        }
    }

    fn never() -> CancellationToken {
        CancellationToken::new()
    }

    /// `git status --porcelain` including untracked files.
    fn status(tree: &Path) -> String {
        git(tree, &["status", "--porcelain", "--untracked-files=all"])
    }

    /// A `git daemon` on 127.0.0.1 serving `dir`, killed on drop.
    struct Daemon {
        child: Child,
        port: u16,
    }

    impl Daemon {
        fn start(dir: &Path) -> Daemon {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("git")
                .arg("daemon")
                .arg("--reuseaddr")
                .arg(format!("--base-path={}", dir.display()))
                .arg("--export-all")
                .arg(format!("--port={port}"))
                .arg("--listen=127.0.0.1")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start git daemon");
            let daemon = Daemon { child, port };
            let deadline = Instant::now() + Duration::from_secs(15);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "git daemon did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            daemon
        }

        fn url(&self, name: &str) -> String {
            format!("git://127.0.0.1:{}/{name}", self.port)
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    // ---- pure helpers --------------------------------------------------------

    #[test]
    fn urls_are_redacted_and_named() {
        assert_eq!(
            redact_url("https://user:pw@host.example/acme/infra.git"),
            "https://host.example/acme/infra.git"
        );
        assert_eq!(
            redact_url("https://ghp_token@host.example/acme/infra.git"),
            "https://host.example/acme/infra.git"
        );
        assert_eq!(
            redact_url("ssh://git:pw@host.example:2222/acme/infra.git"),
            "ssh://git@host.example:2222/acme/infra.git"
        );
        assert_eq!(
            redact_url("git@github.com:acme/infra.git"),
            "git@github.com:acme/infra.git"
        );
        assert_eq!(redact_url("/srv/git/infra"), "/srv/git/infra");

        assert_eq!(
            url_host("https://u:p@Host.Example:8443/x").as_deref(),
            Some("host.example")
        );
        assert_eq!(
            url_host("git@github.com:acme/infra.git").as_deref(),
            Some("github.com")
        );
        assert_eq!(url_host("ssh://[::1]:22/x").as_deref(), Some("::1"));
        assert_eq!(url_host("file:///tmp/x"), None);
        assert_eq!(url_host("/tmp/x"), None);
        assert_eq!(split_url("ssh://git@h.example:2222/x").port, Some(2222));

        assert_eq!(readable_name("https://host/acme/infra.git"), "infra");
        assert_eq!(readable_name("git@github.com:acme/my repo.git/"), "my_repo");
        assert_eq!(readable_name("git@github.com:infra"), "infra");
        assert_eq!(readable_name("https://host/"), "repo");
        assert_eq!(readable_name("/"), "repo");
        assert_eq!(readable_name("https://host/..git"), "repo");

        let name = mirror_dir_name("https://host/acme/infra.git");
        assert!(
            name.starts_with("infra-") && name.ends_with(".git"),
            "{name}"
        );
        assert_eq!(name.len(), "infra-".len() + 16 + ".git".len());
        // A password does not change the mirror; another URL does.
        assert_eq!(
            mirror_dir_name("https://bot:secret@host/acme/infra.git"),
            mirror_dir_name("https://bot@host/acme/infra.git")
        );
        assert_ne!(name, mirror_dir_name("https://host/other/infra.git"));

        assert!(parse_sha("0123456789abcdef0123456789ABCDEF01234567").is_some());
        assert!(parse_sha("0123456789abcdef").is_none());
        assert!(parse_sha("main").is_none());
        assert!(valid_workspace_name("infra_prod-1.x"));
        assert!(!valid_workspace_name(".."));
        assert!(!valid_workspace_name("a/b"));
        assert!(!valid_workspace_name(""));
    }

    #[test]
    fn token_only_goes_to_the_configured_host() {
        let ctx = FetchCtx::new(
            &spec("https://git.example.com/acme/infra.git"),
            CancelFlag::default(),
        );
        assert!(ctx.token_allowed_for("https://git.example.com/acme/other.git"));
        assert!(ctx.token_allowed_for("https://GIT.example.com:443/x"));
        assert!(!ctx.token_allowed_for("https://evil.example.com/acme/infra.git"));
        assert!(!ctx.token_allowed_for("/local/path"));
        let local = FetchCtx::new(&spec("/srv/git/infra"), CancelFlag::default());
        assert!(!local.token_allowed_for("/srv/git/infra"));
    }

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        let mut repo = spec("https://bob:hunter2@host.example/acme/infra.git");
        repo.credentials.token = Some("tok-123".into());
        let ctx = FetchCtx::new(&repo, CancelFlag::default());
        let scrubbed =
            ctx.scrub("failed for https://bob:hunter2@host.example/acme/infra.git with tok-123.");
        assert_eq!(
            scrubbed,
            "failed for https://host.example/acme/infra.git with ***"
        );
        assert!(!format!("{repo:?}").contains("hunter2"));
        assert!(!format!("{repo:?}").contains("tok-123"));
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), expected);
        }
    }

    #[test]
    fn known_hosts_lines_are_matched() {
        let mut key = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20".to_vec();
        key.extend([7u8; 32]);
        let other: Vec<u8> = key.iter().map(|b| b ^ 1).collect();
        let b64 = base64_encode(&key);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        fs::write(
            &file,
            format!(
                "# comment\n\n\
                 example.com,10.0.0.1 ssh-ed25519 {b64}\n\
                 [git.example.org]:2222 ssh-ed25519 {b64} comment here\n\
                 *.wild.net,!bad.wild.net ssh-ed25519 {b64}\n\
                 |1|c2FsdA==|aGFzaA== ssh-ed25519 {b64}\n\
                 revoked.org ssh-ed25519 {b64}\n\
                 @revoked revoked.org ssh-ed25519 {b64}\n\
                 @cert-authority *.ca.org ssh-ed25519 {b64}\n\
                 garbage\n"
            ),
        )
        .unwrap();
        let check = |host: &str, port: u16, key: &[u8]| {
            check_known_hosts(&file, host, port, "ssh-ed25519", key)
        };
        assert_eq!(check("example.com", 22, &key), Ok(()));
        assert_eq!(check("EXAMPLE.com", 22, &key), Ok(()));
        assert_eq!(check("10.0.0.1", 22, &key), Ok(()));
        assert_eq!(check("git.example.org", 2222, &key), Ok(()));
        assert!(check("git.example.org", 22, &key)
            .unwrap_err()
            .contains("no entry"));
        assert_eq!(check("a.wild.net", 22, &key), Ok(()));
        assert!(check("bad.wild.net", 22, &key).is_err());
        assert!(check("example.com", 22, &other)
            .unwrap_err()
            .contains("does not match"));
        assert!(check_known_hosts(&file, "example.com", 22, "ssh-rsa", &key).is_err());
        assert!(check("revoked.org", 22, &key)
            .unwrap_err()
            .contains("revoked"));
        assert!(check("x.ca.org", 22, &key).is_err());
        assert!(check("unknown.net", 22, &key)
            .unwrap_err()
            .contains("hashed"));
        assert!(check_known_hosts(
            &dir.path().join("missing"),
            "example.com",
            22,
            "ssh-ed25519",
            &key
        )
        .unwrap_err()
        .contains("cannot read"));
        assert!(glob_match("a*b?c", "axxbyc"));
        assert!(!glob_match("a*b?c", "axxbc"));
    }

    // ---- over file:// --------------------------------------------------------

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prepare_checks_out_exact_commit_and_fetches_incrementally() {
        let tmp = tempfile::tempdir().unwrap();
        let src = init_repo(tmp.path(), "infra");
        write(&src, "README", "one\n");
        write(&src, "env/prod/main.tf", "resource {}\n");
        let c1 = commit_all(&src, "one");
        let data = tmp.path().join("data");
        let ws = Workspaces::new(&data, 2);
        let repo = spec(&file_url(&src));

        let ck = ws
            .prepare(
                &repo,
                &commit_target(&c1, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "p1",
                1,
                &never(),
            )
            .await
            .unwrap();
        assert_eq!(ck.path, data.join("workspaces/p1/tree"));
        assert_eq!(ck.commit, c1);
        assert_eq!(ck.refname.as_deref(), Some("refs/heads/main"));
        assert_eq!(ck.mirror.parent().unwrap(), data.join("mirrors"));
        let mirror_name = ck
            .mirror
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            mirror_name.starts_with("infra-") && mirror_name.ends_with(".git"),
            "{mirror_name}"
        );
        assert!(Repository::open_bare(&ck.mirror).unwrap().is_bare());
        assert_eq!(read(&ck.path, "README"), "one\n");
        assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), c1);
        assert_eq!(git(&ck.path, &["rev-parse", "refs/heads/main"]), c1);
        assert_eq!(status(&ck.path), "");
        assert_eq!(git(&ck.path, &["log", "--format=%s"]), "one");
        assert!(read(&ck.path, ".git/objects/info/alternates")
            .contains(&ck.mirror.display().to_string()));
        assert!(ck.fetch.network);
        let first = ck.fetch.received_objects;
        assert!(first >= 5, "{:?}", ck.fetch);

        // A rerun of a mirrored commit does not touch the network, and
        // writes neither the branch (libgit2 would create and remove a lock
        // file beside it, a new inode per run), nor the alternates, nor the
        // index (a clean tree at the commit is not checked out again).
        let written = |tree: &Path| -> Vec<std::time::SystemTime> {
            ["refs/heads", "objects/info/alternates", "index"]
                .iter()
                .map(|f| {
                    fs::metadata(tree.join(".git").join(f))
                        .unwrap()
                        .modified()
                        .unwrap()
                })
                .collect()
        };
        let before = written(&ck.path);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let again = ws
            .prepare(
                &repo,
                &commit_target(&c1, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "p1",
                2,
                &never(),
            )
            .await
            .unwrap();
        assert!(!again.fetch.network);
        assert_eq!(again.fetch.received_objects, 0);
        assert_eq!(written(&again.path), before);
        assert_eq!(git(&again.path, &["rev-parse", "HEAD"]), c1);

        // A new commit: only its objects (commit, root tree, one blob) are transferred.
        write(&src, "second.txt", "two\n");
        let c2 = commit_all(&src, "two");
        let ck2 = ws
            .prepare(
                &repo,
                &commit_target(&c2, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "p1",
                3,
                &never(),
            )
            .await
            .unwrap();
        assert_eq!(git(&ck2.path, &["rev-parse", "HEAD"]), c2);
        assert_eq!(git(&ck2.path, &["rev-parse", "refs/heads/main"]), c2);
        assert_ne!(written(&ck2.path)[0], before[0]);
        assert_eq!(read(&ck2.path, "second.txt"), "two\n");
        assert_eq!(ck2.fetch.received_objects, 3, "{:?}", ck2.fetch);
        assert_eq!(status(&ck2.path), "");

        // Fetching an unchanged ref transfers nothing.
        let ck3 = ws
            .prepare(
                &repo,
                &Target::Ref("main".into()),
                WorkspaceMode::Persistent,
                "p1",
                4,
                &never(),
            )
            .await
            .unwrap();
        assert_eq!(ck3.commit, c2);
        assert!(ck3.fetch.network);
        assert_eq!(ck3.fetch.received_objects, 0, "{:?}", ck3.fetch);

        // Going back in history works as well.
        let back = ws
            .prepare(
                &repo,
                &commit_target(&c1, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "p1",
                5,
                &never(),
            )
            .await
            .unwrap();
        assert!(!back.path.join("second.txt").exists());
        assert_eq!(git(&back.path, &["rev-parse", "HEAD"]), c1);
        assert_eq!(status(&back.path), "");
    }

    /// A persistent-mode checkout of `sha` (on `main`) in workspace `tf`.
    async fn prepare_tf(ws: &Workspaces, repo: &RepoSpec, sha: &str, run: i64) -> Checkout {
        ws.prepare(
            repo,
            &commit_target(sha, "refs/heads/main"),
            WorkspaceMode::Persistent,
            "tf",
            run,
            &never(),
        )
        .await
        .unwrap()
    }

    /// A source repository with `files` committed once, and workspaces
    /// under the same temp dir: (temp dir, source, workspaces, spec, commit).
    fn tf_fixture(
        files: &[(&str, &str)],
    ) -> (tempfile::TempDir, PathBuf, Workspaces, RepoSpec, String) {
        let tmp = tempfile::tempdir().unwrap();
        let src = init_repo(tmp.path(), "infra");
        for (rel, content) in files {
            write(&src, rel, content);
        }
        let c1 = commit_all(&src, "one");
        let ws = Workspaces::new(&tmp.path().join("data"), 2);
        let repo = spec(&file_url(&src));
        (tmp, src, ws, repo, c1)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_resets_and_keeps_ignored_files() {
        let tmp = tempfile::tempdir().unwrap();
        let src = init_repo(tmp.path(), "infra");
        write(&src, ".gitignore", ".terraform/\n*.log\n");
        write(&src, "main.tf", "v1\n");
        write(&src, "old.txt", "old\n");
        let c1 = commit_all(&src, "one");
        let ws = Workspaces::new(&tmp.path().join("data"), 2);
        let repo = spec(&file_url(&src));
        let ck = prepare_tf(&ws, &repo, &c1, 1).await;
        let tree = ck.path.clone();

        // What a run leaves behind.
        write(&tree, ".terraform/state/terraform.tfstate", "state");
        write(&tree, "build/keep.log", "log");
        write(&tree, "build/junk.txt", "junk");
        write(&tree, "untracked.txt", "x");
        write(&tree, "untracked_dir/a/b.txt", "x");
        write(&tree, "main.tf", "modified\n");
        write(&tree, "staged.txt", "staged");
        git(&tree, &["add", "staged.txt"]);
        fs::remove_file(tree.join(".gitignore")).unwrap();
        write(&tree, ".gitignore", ".terraform/\n*.log\n");
        fs::remove_file(tree.join("old.txt")).unwrap();

        // Same commit again: everything but ignored files is reset.
        let ck = prepare_tf(&ws, &repo, &c1, 2).await;
        assert_eq!(ck.path, tree);
        assert_eq!(read(&tree, "main.tf"), "v1\n");
        assert!(!tree.join("untracked.txt").exists());
        assert!(!tree.join("untracked_dir/a/b.txt").exists());
        assert!(!tree.join("build/junk.txt").exists());
        assert!(!tree.join("staged.txt").exists());
        assert_eq!(read(&tree, ".terraform/state/terraform.tfstate"), "state");
        assert_eq!(read(&tree, "build/keep.log"), "log");
        assert_eq!(read(&tree, "old.txt"), "old\n");
        assert_eq!(status(&tree), "");

        // Only a file's mode changed (the tree is otherwise clean at the
        // commit): it is put back too.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(tree.join("main.tf"), fs::Permissions::from_mode(0o755)).unwrap();
            prepare_tf(&ws, &repo, &c1, 6).await;
            let mode = fs::metadata(tree.join("main.tf"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0, "{mode:o}");
            assert_eq!(status(&tree), "");
        }

        // A change hidden from status by an index mark (a step's `git
        // update-index`): put back all the same, and the mark cleared.
        for (n, mark) in [(7, "--assume-unchanged"), (8, "--skip-worktree")] {
            git(&tree, &["update-index", mark, "main.tf"]);
            write(&tree, "main.tf", "hidden change\n");
            assert_eq!(status(&tree), "", "{mark} hides the change from status");
            prepare_tf(&ws, &repo, &c1, n).await;
            assert_eq!(read(&tree, "main.tf"), "v1\n", "{mark}");
            assert_eq!(
                git(&tree, &["ls-files", "-v", "main.tf"]),
                "H main.tf",
                "{mark}"
            );
        }

        // A change staged, then undone in the file only: the files already
        // match the commit, the index does not.
        write(&tree, "main.tf", "staged change\n");
        git(&tree, &["add", "main.tf"]);
        write(&tree, "main.tf", "v1\n");
        prepare_tf(&ws, &repo, &c1, 5).await;
        assert_eq!(read(&tree, "main.tf"), "v1\n");
        assert_eq!(status(&tree), "");

        // Next commit deletes and adds files.
        fs::remove_file(src.join("old.txt")).unwrap();
        write(&src, "main.tf", "v2\n");
        write(&src, "modules/net/net.tf", "net\n");
        let c2 = commit_all(&src, "two");
        write(&tree, "stray.txt", "x");
        let ck = prepare_tf(&ws, &repo, &c2, 3).await;
        assert_eq!(git(&tree, &["rev-parse", "HEAD"]), c2);
        assert!(!tree.join("old.txt").exists());
        assert!(!tree.join("stray.txt").exists());
        assert_eq!(read(&tree, "main.tf"), "v2\n");
        assert_eq!(read(&tree, "modules/net/net.tf"), "net\n");
        assert_eq!(read(&tree, ".terraform/state/terraform.tfstate"), "state");
        assert_eq!(status(&ck.path), "");

        // A persistent tree that was damaged is recreated.
        fs::remove_dir_all(tree.join(".git")).unwrap();
        let ck = prepare_tf(&ws, &repo, &c2, 4).await;
        assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), c2);
        assert_eq!(status(&ck.path), "");
    }

    /// Fetches `sha` into the mirror of `repo` and moves the persistent tree
    /// `tree` to it with [`advance_clean_tree`] alone; its answer.
    fn advance_to(ws: &Workspaces, repo: &RepoSpec, tree: &Path, sha: &str) -> bool {
        let ctx = ws.fetch_ctx(repo).unwrap();
        let target = commit_target(sha, "refs/heads/main");
        fetch_target(&ctx, &ws.mirror_path(&repo.url), &target).unwrap();
        let tree_repo = Repository::open(tree).unwrap();
        let commit = tree_repo.find_commit(Oid::from_str(sha).unwrap()).unwrap();
        advance_clean_tree(&tree_repo, &ctx, tree, &commit).unwrap()
    }

    /// A tree clean at its HEAD moves to the next commit by the paths the
    /// two commits differ in: files changed and added in new directories, a
    /// directory deleted, a file that becomes a directory, a mode, a
    /// symlink; ignored files stay. What a reset of the whole tree finds
    /// besides — a change of the ignore rules, a file rewritten behind the
    /// index's back — still gets the whole reset.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_moves_a_clean_tree_by_the_changed_paths_only() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, src, ws, repo, c1) = tf_fixture(&[
            (".gitignore", "*.log\n"),
            ("keep/a.tf", "a\n"),
            ("keep/b.tf", "b\n"),
            ("gone/only.tf", "gone\n"),
            ("main.tf", "v1\n"),
            ("run.sh", "echo hi\n"),
            ("node", "a file\n"),
        ]);
        let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
        write(&tree, "apply.log", "ignored output\n");

        fs::remove_dir_all(src.join("gone")).unwrap();
        write(&src, "main.tf", "v2\n");
        write(&src, "new/deep/x.tf", "x\n");
        fs::remove_file(src.join("node")).unwrap();
        write(&src, "node/inner.tf", "now a directory\n");
        fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("keep/a.tf", src.join("link")).unwrap();
        let c2 = commit_all(&src, "two");

        assert!(
            advance_to(&ws, &repo, &tree, &c2),
            "a clean tree moves by its changed paths"
        );
        assert_eq!(git(&tree, &["rev-parse", "HEAD"]), c2);
        assert_eq!(status(&tree), "");
        assert_eq!(
            git(&tree, &["ls-files", "-s"]),
            git(&src, &["ls-files", "-s"])
        );
        assert!(!tree.join("gone").exists());
        assert_eq!(read(&tree, "main.tf"), "v2\n");
        assert_eq!(read(&tree, "new/deep/x.tf"), "x\n");
        assert_eq!(read(&tree, "node/inner.tf"), "now a directory\n");
        let mode = fs::metadata(tree.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{mode:o}");
        assert_eq!(
            fs::read_link(tree.join("link")).unwrap(),
            Path::new("keep/a.tf")
        );
        assert_eq!(read(&tree, "keep/b.tf"), "b\n");
        assert_eq!(read(&tree, "apply.log"), "ignored output\n");

        // The next commit stops ignoring `*.log`: `apply.log` is now an
        // untracked file, which a reset removes, though no commit touched it.
        write(&src, ".gitignore", "");
        let c3 = commit_all(&src, "three");
        prepare_tf(&ws, &repo, &c3, 2).await;
        assert_eq!(git(&tree, &["rev-parse", "HEAD"]), c3);
        assert!(!tree.join("apply.log").exists());
        assert_eq!(status(&tree), "");

        // A file the next commit does not touch, rewritten with its size
        // and mtime kept: the scan before sees it, and the whole reset puts
        // it back.
        let file = tree.join("keep/b.tf");
        let mtime = fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        fs::write(&file, "B\n").unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        write(&src, "main.tf", "v4\n");
        let c4 = commit_all(&src, "four");
        assert!(
            !advance_to(&ws, &repo, &tree, &c4),
            "the rewritten file is seen"
        );
        prepare_tf(&ws, &repo, &c4, 3).await;
        assert_eq!(read(&tree, "keep/b.tf"), "b\n");
        assert_eq!(read(&tree, "main.tf"), "v4\n");
        assert_eq!(status(&tree), "");
    }

    /// An ignored file where the pushed commit adds a directory (`cache`
    /// ignored, then `cache/x` committed with `git add -f`): the checkout of
    /// the changed paths cannot make the directory, and the whole reset,
    /// which can, takes over, this run and every later one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_clears_an_ignored_file_where_a_directory_comes() {
        let (_tmp, src, ws, repo, c1) = tf_fixture(&[(".gitignore", "cache\n"), ("keep", "k\n")]);
        let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
        write(&tree, "cache", "ignored file\n");
        write(&src, "cache/x", "x\n");
        git(&src, &["add", "-f", "cache/x"]);
        write(&src, "keep", "k2\n");
        let c2 = commit_all(&src, "two");

        assert!(
            !advance_to(&ws, &repo, &tree, &c2),
            "the changed paths alone cannot replace the ignored file"
        );
        for run in [2, 3] {
            let ck = prepare_tf(&ws, &repo, &c2, run).await;
            assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), c2);
            assert_eq!(read(&tree, "cache/x"), "x\n");
            assert_eq!(read(&tree, "keep"), "k2\n");
            assert_eq!(status(&tree), "");
        }
    }

    /// A step linked an ignored `.terraform` to a directory outside the
    /// tree, and the pushed commit adds `.terraform/lock`: the link goes
    /// (what it points at stays as it was) and the file is written in the
    /// tree, by neither the changed paths nor the whole reset through it.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_never_writes_through_a_link_where_a_directory_comes() {
        let (tmp, src, ws, repo, c1) =
            tf_fixture(&[(".gitignore", ".terraform\n"), ("keep", "k\n")]);
        let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
        let outside = tmp.path().join("outside");
        write(&outside, "plugin", "p\n");
        std::os::unix::fs::symlink(&outside, tree.join(".terraform")).unwrap();
        write(&src, ".terraform/lock", "tracked\n");
        git(&src, &["add", "-f", ".terraform/lock"]);
        write(&src, "keep", "k2\n");
        let c2 = commit_all(&src, "two");
        let listing = || {
            let mut names: Vec<String> = fs::read_dir(&outside)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };

        assert!(
            !advance_to(&ws, &repo, &tree, &c2),
            "the changed paths lead through a link"
        );
        assert_eq!(listing(), ["plugin"]);
        let ck = prepare_tf(&ws, &repo, &c2, 2).await;
        assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), c2);
        assert_eq!(listing(), ["plugin"]);
        assert_eq!(read(&outside, "plugin"), "p\n");
        let meta = fs::symlink_metadata(tree.join(".terraform")).unwrap();
        assert!(meta.is_dir(), "{meta:?}");
        assert_eq!(read(&tree, ".terraform/lock"), "tracked\n");
        assert_eq!(status(&tree), "");
    }

    /// A tracked directory the pushed commit replaces by a file, with an
    /// ignored file a step left in it: the directory goes with the ignored
    /// file (as `git checkout` treats ignored files: expendable), where it
    /// made every run fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_clears_a_directory_of_ignored_files_where_a_file_comes() {
        let (_tmp, src, ws, repo, c1) =
            tf_fixture(&[(".gitignore", "*.log\n"), ("d/x", "x\n"), ("keep", "k\n")]);
        let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
        write(&tree, "d/apply.log", "ignored\n");
        fs::remove_dir_all(src.join("d")).unwrap();
        write(&src, "d", "now a file\n");
        let c2 = commit_all(&src, "two");
        for run in [2, 3] {
            let ck = prepare_tf(&ws, &repo, &c2, run).await;
            assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), c2);
            assert_eq!(read(&tree, "d"), "now a file\n");
            assert_eq!(status(&tree), "");
        }
    }

    /// A symlink a step left, ignored, on the very path the pushed commit
    /// adds (`git add -f`): a link to a file outside where a tracked file
    /// comes, or a link to a directory outside where a tracked file comes.
    /// The link goes, what it points at stays as it was, and the tracked
    /// file is written in the tree, by the changed paths and by the whole
    /// reset alike.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_never_writes_through_an_ignored_link_on_a_path_that_comes() {
        for (rel, target) in [("x.auto.tfvars", "secret.tfvars"), ("cache", "dir")] {
            let (tmp, src, ws, repo, c1) =
                tf_fixture(&[(".gitignore", "*.auto.tfvars\ncache\n"), ("keep", "k\n")]);
            let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
            let outside = tmp.path().join("outside");
            write(&outside, "secret.tfvars", "outside\n");
            write(&outside, "dir/plugin", "p\n");
            std::os::unix::fs::symlink(outside.join(target), tree.join(rel)).unwrap();
            write(&src, rel, "tracked\n");
            git(&src, &["add", "-f", rel]);
            write(&src, "keep", "k2\n");
            let c2 = commit_all(&src, "two");
            let untouched = || {
                assert_eq!(read(&outside, "secret.tfvars"), "outside\n", "{rel}");
                assert_eq!(read(&outside, "dir/plugin"), "p\n", "{rel}");
                assert_eq!(fs::read_dir(outside.join("dir")).unwrap().count(), 1);
            };

            assert!(
                !advance_to(&ws, &repo, &tree, &c2),
                "{rel}: the changed path is a link a step left"
            );
            untouched();
            for run in [2, 3] {
                let ck = prepare_tf(&ws, &repo, &c2, run).await;
                assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), c2);
                untouched();
                let meta = fs::symlink_metadata(tree.join(rel)).unwrap();
                assert!(meta.is_file(), "{rel}: {meta:?}");
                assert_eq!(read(&tree, rel), "tracked\n");
                assert_eq!(read(&tree, "keep"), "k2\n");
                assert_eq!(status(&tree), "");
            }
        }
    }

    /// A tracked file a step replaced by a symlink to a file or a directory
    /// outside: the same commit again, a commit that leaves the file alone,
    /// and a commit whose content for it the step had staged (the index
    /// then matches the commit there, HEAD does not). The link goes, what
    /// it points at stays as it was, and the run does not fail.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_never_writes_through_a_link_on_a_tracked_file() {
        for (case, rel, target) in [
            ("same commit", "vars.tfvars", "secret.tfvars"),
            ("same commit", "env/prod/vars.tfvars", "secret.tfvars"),
            ("untouched by the commit", "vars.tfvars", "secret.tfvars"),
            ("untouched by the commit", "env/prod/vars.tfvars", "dir"),
            (
                "staged as the commit has it",
                "vars.tfvars",
                "secret.tfvars",
            ),
        ] {
            let (tmp, src, ws, repo, c1) =
                tf_fixture(&[(rel, "v1\n"), ("env/prod/main.tf", "m\n"), ("keep", "k\n")]);
            let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
            let outside = tmp.path().join("outside");
            write(&outside, "secret.tfvars", "outside\n");
            write(&outside, "dir/plugin", "p\n");
            let mut want = "v1\n";
            let next = match case {
                "same commit" => c1,
                "untouched by the commit" => {
                    write(&src, "keep", "k2\n");
                    commit_all(&src, "two")
                }
                _ => {
                    write(&tree, rel, "v2\n");
                    git(&tree, &["add", rel]);
                    write(&src, rel, "v2\n");
                    want = "v2\n";
                    commit_all(&src, "two")
                }
            };
            fs::remove_file(tree.join(rel)).unwrap();
            std::os::unix::fs::symlink(outside.join(target), tree.join(rel)).unwrap();

            let ck = prepare_tf(&ws, &repo, &next, 2).await;
            assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), next, "{case}");
            assert_eq!(
                read(&outside, "secret.tfvars"),
                "outside\n",
                "{case}, {rel}"
            );
            assert_eq!(read(&outside, "dir/plugin"), "p\n", "{case}");
            assert_eq!(fs::read_dir(outside.join("dir")).unwrap().count(), 1);
            let meta = fs::symlink_metadata(tree.join(rel)).unwrap();
            assert!(meta.is_file(), "{case}, {rel}, {target}: {meta:?}");
            assert_eq!(read(&tree, rel), want, "{case}, {rel}");
            assert_eq!(status(&tree), "", "{case}");
        }
    }

    /// A step untracked a directory (`git rm -r --cached modules`) and put a
    /// link to a directory outside in its place; the pushed commit deletes
    /// the directory. The checkout deletes what HEAD had there: never
    /// through the link.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_never_deletes_through_a_link_on_an_untracked_directory() {
        let (tmp, src, ws, repo, c1) = tf_fixture(&[
            ("modules/net.tf", "net\n"),
            ("modules/dns/dns.tf", "dns\n"),
            ("keep", "k\n"),
        ]);
        let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
        let outside = tmp.path().join("shared-modules");
        write(&outside, "net.tf", "shared net\n");
        write(&outside, "dns/dns.tf", "shared dns\n");
        git(&tree, &["rm", "-r", "-q", "--cached", "modules"]);
        fs::remove_dir_all(tree.join("modules")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("modules")).unwrap();
        fs::remove_dir_all(src.join("modules")).unwrap();
        write(&src, "keep", "k2\n");
        let c2 = commit_all(&src, "two");

        let ck = prepare_tf(&ws, &repo, &c2, 2).await;
        assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), c2);
        assert_eq!(read(&outside, "net.tf"), "shared net\n");
        assert_eq!(read(&outside, "dns/dns.tf"), "shared dns\n");
        assert!(fs::symlink_metadata(tree.join("modules")).is_err());
        assert_eq!(read(&tree, "keep"), "k2\n");
        assert_eq!(status(&tree), "");
    }

    /// [`ParentLinks`] in any order of paths, as it gets them from two diffs
    /// and the index: after `clear(p)` no directory of `p` is a symlink, and
    /// nothing outside the tree is touched. Random trees of directories,
    /// links and files under look-alike names (`a`, `a.b`, `ab`, `A`),
    /// random unsorted paths; a fixed seed.
    #[cfg(unix)]
    #[test]
    fn parent_links_leave_no_link_above_a_cleared_path_in_any_order() {
        let names: [&[u8]; 5] = [b"a", b"a.b", b"ab", b"A", b"b"];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut dirs: Vec<Vec<u8>> = vec![];
        for a in names {
            dirs.push(a.to_vec());
            for b in names {
                dirs.push([a, b"/", b].concat());
                for c in names {
                    dirs.push([a, b"/", b, b"/", c].concat());
                }
            }
        }
        dirs.sort_by_key(|d| d.iter().filter(|&&x| x == b'/').count());
        for round in 0..300 {
            let tmp = tempfile::tempdir().unwrap();
            let tree = tmp.path().join("tree");
            let outside = tmp.path().join("outside");
            fs::create_dir_all(&tree).unwrap();
            write(&outside, "keep", "k");
            for d in &dirs {
                let p = repo_relative(&tree, d);
                let parent = p.parent().unwrap();
                if !fs::symlink_metadata(parent).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                match rnd(5) {
                    0 | 1 => fs::create_dir(&p).unwrap(),
                    2 => std::os::unix::fs::symlink(&outside, &p).unwrap(),
                    3 => fs::write(&p, "f").unwrap(),
                    _ => {}
                }
            }
            let mut links = ParentLinks::new(&tree);
            for _ in 0..12 {
                let d = &dirs[rnd(dirs.len() as u64) as usize];
                let p = if rnd(4) == 0 {
                    b"f".to_vec()
                } else {
                    [d.as_slice(), b"/f"].concat()
                };
                links.clear(&p).unwrap();
                assert!(
                    !under_a_symlink(&tree, &p),
                    "round {round}: {}",
                    String::from_utf8_lossy(&p)
                );
            }
            assert_eq!(read(&outside, "keep"), "k");
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        }
    }

    /// A tracked symlink a step pointed at a directory outside, and a
    /// tracked executable a step replaced by a link to a file outside: the
    /// same commit again puts both back and leaves what they pointed at.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_puts_back_a_tracked_link_a_step_repointed() {
        use std::os::unix::fs::PermissionsExt;
        let (tmp, src, ws, repo, _) = tf_fixture(&[("v1/x", "x\n"), ("run.sh", "echo\n")]);
        std::os::unix::fs::symlink("v1", src.join("cur")).unwrap();
        fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let c1 = commit_all(&src, "link");
        let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
        let outside = tmp.path().join("outside");
        write(&outside, "dir/x", "outside x\n");
        write(&outside, "run.sh", "outside run\n");
        fs::remove_file(tree.join("cur")).unwrap();
        std::os::unix::fs::symlink(outside.join("dir"), tree.join("cur")).unwrap();
        fs::remove_file(tree.join("run.sh")).unwrap();
        std::os::unix::fs::symlink(outside.join("run.sh"), tree.join("run.sh")).unwrap();
        prepare_tf(&ws, &repo, &c1, 2).await;
        assert_eq!(read(&outside, "dir/x"), "outside x\n");
        assert_eq!(read(&outside, "run.sh"), "outside run\n");
        assert_eq!(fs::read_link(tree.join("cur")).unwrap(), Path::new("v1"));
        assert_eq!(read(&tree, "run.sh"), "echo\n");
        assert_eq!(status(&tree), "");
    }

    /// What [`is_tree_path`] lets through: plain relative paths only.
    #[test]
    fn tree_paths_are_plain_and_inside() {
        for ok in [
            "a",
            "a/b",
            ".terraform/lock",
            "a.git",
            ".gitignore",
            "..a",
            "a/.b/c",
        ] {
            assert!(is_tree_path(ok.as_bytes()), "{ok:?}");
        }
        for bad in [
            "",
            "a/",
            "/a",
            "a//b",
            ".",
            "./a",
            "a/.",
            "..",
            "../a",
            "a/../b",
            "a/..",
            ".git",
            ".GIT/x",
            "a/.Git/config",
            "a\0b",
        ] {
            assert!(!is_tree_path(bad.as_bytes()), "{bad:?}");
        }
    }

    /// Writes `bytes` as a loose object of `kind` without git's checks of
    /// its content; its id.
    fn hash_literally(dir: &Path, kind: &str, bytes: &[u8]) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("git")
            .args(["hash-object", "-t", kind, "--literally", "-w", "--stdin"])
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A pushed commit whose tree has a `..` entry holding a file where a
    /// directory stands beside the working tree, and a file in a directory
    /// where a symlink stands beside it: the run fails on the commit, and
    /// nothing outside the tree is touched (the clearing before the
    /// checkout would have removed that directory and that link).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_touches_nothing_outside_for_a_dot_dot_entry() {
        let (_tmp, src, ws, repo, c1) = tf_fixture(&[("keep", "k\n")]);
        let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
        let victim = tree.parent().unwrap().join("victim");
        write(&victim, "precious", "p\n");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&victim, tree.parent().unwrap().join("linked")).unwrap();

        let oid = |sha: String| Oid::from_str(&sha).unwrap();
        let entry = |mode: &str, name: &str, id: Oid| {
            let mut e = format!("{mode} {name}\0").into_bytes();
            e.extend_from_slice(id.as_bytes());
            e
        };
        let blob = oid(hash_literally(&src, "blob", b"x\n"));
        let keep = oid(git(&src, &["rev-parse", "HEAD:keep"]));
        let linked = oid(hash_literally(&src, "tree", &entry("100644", "f", blob)));
        let dotdot = [
            entry("40000", "linked", linked),
            entry("100644", "victim", blob),
        ]
        .concat();
        let dotdot = oid(hash_literally(&src, "tree", &dotdot));
        let root = [entry("40000", "..", dotdot), entry("100644", "keep", keep)].concat();
        let root = hash_literally(&src, "tree", &root);
        let c2 = git(&src, &["commit-tree", &root, "-p", &c1, "-m", "dot dot"]);
        git(&src, &["update-ref", "refs/heads/main", &c2]);

        let err = ws
            .prepare(
                &repo,
                &commit_target(&c2, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "tf",
                2,
                &never(),
            )
            .await
            .map(|ck| ck.path)
            .unwrap_err();
        assert!(err.to_string().contains(&c2), "{err}");
        assert_eq!(read(&victim, "precious"), "p\n");
        #[cfg(unix)]
        assert!(fs::symlink_metadata(tree.parent().unwrap().join("linked"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    /// Files that libgit2's checkout takes for unchanged (size and mtime as
    /// in the index) but status does not: written again from the commit, so
    /// the persistent tree does not fail every later run as not clean.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_rewrites_files_checkout_takes_for_unchanged() {
        let (_tmp, _src, ws, repo, c1) = tf_fixture(&[
            (".gitignore", ".terraform/\n"),
            ("main.tf", "v1\n"),
            ("vars.tf", "vars\n"),
        ]);
        let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
        write(&tree, ".terraform/plugins/p", "plugin");

        // Same size, mtime put back (`cp -p`, `touch -r`, an archive): only
        // the ctime tells the change apart, and checkout does not look at it.
        // (A second apart, for file systems with coarse timestamps.)
        let file = tree.join("main.tf");
        let mtime = fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        fs::write(&file, "v9\n").unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        prepare_tf(&ws, &repo, &c1, 2).await;
        assert_eq!(read(&tree, "main.tf"), "v1\n");
        assert_eq!(status(&tree), "");

        // A step switched line-ending conversion on and left a CRLF copy
        // of a file: the conversion is switched off again and the file is
        // the commit's, every run.
        git(&tree, &["config", "core.autocrlf", "true"]);
        write(&tree, "vars.tf", "vars\r\n");
        for run in [3, 4] {
            prepare_tf(&ws, &repo, &c1, run).await;
            assert_eq!(read(&tree, "vars.tf"), "vars\n");
            assert_eq!(status(&tree), "");
        }
        assert_eq!(git(&tree, &["config", "core.autocrlf"]), "false");
        assert_eq!(read(&tree, ".terraform/plugins/p"), "plugin");
    }

    /// A step that switched off file modes (or change times) in the tree's
    /// config would hide its changes from the reset: the settings are
    /// pinned again and the change is undone.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_pins_the_settings_that_decide_what_a_reset_sees() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, _src, ws, repo, c1) = tf_fixture(&[("main.tf", "m1\n")]);
        let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
        let config = tree.join(".git/config");
        let mtime = fs::metadata(&config).unwrap().modified().unwrap();
        prepare_tf(&ws, &repo, &c1, 2).await;
        assert_eq!(
            fs::metadata(&config).unwrap().modified().unwrap(),
            mtime,
            "a config already as wanted is not written again"
        );

        git(&tree, &["config", "core.filemode", "false"]);
        git(&tree, &["config", "core.trustctime", "false"]);
        fs::set_permissions(tree.join("main.tf"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(status(&tree), "", "the mode change is hidden");
        prepare_tf(&ws, &repo, &c1, 3).await;
        let mode = fs::metadata(tree.join("main.tf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0, "{mode:o}");
        assert_eq!(git(&tree, &["config", "core.filemode"]), "true");
        assert_eq!(git(&tree, &["config", "core.trustctime"]), "true");
        assert_eq!(status(&tree), "");
    }

    /// A tracked directory a step replaced with a symlink to a directory
    /// outside the tree: the next checkout neither writes nor deletes files
    /// there (libgit2 would follow the link), and the directory comes back.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_never_checks_out_through_a_symlinked_directory() {
        let (tmp, src, ws, repo, c1) = tf_fixture(&[
            ("d/f", "v1\n"),
            ("d/old", "old\n"),
            ("m/sub/h", "h1\n"),
            ("main.tf", "m1\n"),
        ]);
        fs::remove_file(src.join("d/old")).unwrap();
        write(&src, "d/f", "v2\n");
        write(&src, "m/sub/h", "h2\n");
        let c2 = commit_all(&src, "two");
        let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;

        // Outside directories laid out like the ones they replace.
        let shared = tmp.path().join("shared");
        write(&shared, "f", "outside f\n");
        write(&shared, "old", "outside old\n");
        let nested = tmp.path().join("nested");
        write(&nested, "h", "outside h\n");
        fs::remove_dir_all(tree.join("d")).unwrap();
        std::os::unix::fs::symlink(&shared, tree.join("d")).unwrap();
        fs::remove_dir_all(tree.join("m/sub")).unwrap();
        std::os::unix::fs::symlink(&nested, tree.join("m/sub")).unwrap();

        // The next push: d/f and m/sub/h change, d/old is deleted.
        prepare_tf(&ws, &repo, &c2, 2).await;
        assert_eq!(read(&shared, "f"), "outside f\n");
        assert_eq!(read(&shared, "old"), "outside old\n");
        assert_eq!(read(&nested, "h"), "outside h\n");
        for dir in ["d", "m/sub"] {
            assert!(
                fs::symlink_metadata(tree.join(dir)).unwrap().is_dir(),
                "{dir}"
            );
        }
        assert_eq!(read(&tree, "d/f"), "v2\n");
        assert_eq!(read(&tree, "m/sub/h"), "h2\n");
        assert!(!tree.join("d/old").exists());
        assert_eq!(status(&tree), "");

        // The same commit again, after the same replacement.
        fs::remove_dir_all(tree.join("d")).unwrap();
        std::os::unix::fs::symlink(&shared, tree.join("d")).unwrap();
        prepare_tf(&ws, &repo, &c2, 3).await;
        assert_eq!(read(&shared, "f"), "outside f\n");
        assert_eq!(read(&tree, "d/f"), "v2\n");
        assert_eq!(status(&tree), "");
    }

    /// A step that pointed the tree's `core.worktree` elsewhere: the next
    /// checkout neither writes nor cleans there; the tree is made anew.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_mode_ignores_a_worktree_moved_by_a_step() {
        let (tmp, _src, ws, repo, c1) = tf_fixture(&[("main.tf", "m1\n")]);
        let tree = prepare_tf(&ws, &repo, &c1, 1).await.path;
        let elsewhere = tmp.path().join("elsewhere");
        write(&elsewhere, "keep.txt", "mine\n");
        git(
            &tree,
            &["config", "core.worktree", elsewhere.to_str().unwrap()],
        );
        write(&tree, "main.tf", "changed by the step\n");

        prepare_tf(&ws, &repo, &c1, 2).await;
        assert_eq!(read(&elsewhere, "keep.txt"), "mine\n");
        assert!(!elsewhere.join("main.tf").exists());
        assert_eq!(read(&tree, "main.tf"), "m1\n");
        assert_eq!(status(&tree), "");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fresh_mode_gives_new_trees_and_cleanup_removes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let src = init_repo(tmp.path(), "infra");
        write(&src, "a.txt", "a\n");
        let c1 = commit_all(&src, "one");
        let data = tmp.path().join("data");
        let ws = Workspaces::new(&data, 2);
        let repo = spec(&file_url(&src));
        let target = commit_target(&c1, "refs/heads/main");

        let run7 = ws
            .prepare(&repo, &target, WorkspaceMode::Fresh, "ci", 7, &never())
            .await
            .unwrap();
        assert_eq!(run7.path, data.join("workspaces/ci/runs/7"));
        write(&run7.path, ".terraform/x", "ignored? not here");
        let run8 = ws
            .prepare(&repo, &target, WorkspaceMode::Fresh, "ci", 8, &never())
            .await
            .unwrap();
        assert_eq!(run8.path, data.join("workspaces/ci/runs/8"));
        assert!(!run8.path.join(".terraform").exists());
        assert_eq!(git(&run8.path, &["rev-parse", "HEAD"]), c1);
        assert_eq!(read(&run8.path, "a.txt"), "a\n");

        ws.cleanup(&run7, WorkspaceMode::Fresh).await.unwrap();
        assert!(!run7.path.exists());
        assert!(run8.path.exists());
        // Idempotent.
        ws.cleanup(&run7, WorkspaceMode::Fresh).await.unwrap();

        // Persistent cleanup is a no-op; odd paths are refused.
        let persistent = ws
            .prepare(&repo, &target, WorkspaceMode::Persistent, "ci", 9, &never())
            .await
            .unwrap();
        ws.cleanup(&persistent, WorkspaceMode::Persistent)
            .await
            .unwrap();
        assert!(persistent.path.exists());
        let err = ws
            .cleanup(&persistent, WorkspaceMode::Fresh)
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::Io { .. }), "{err}");
        assert!(persistent.path.exists());

        // A rerun with the same run id starts from an empty tree again.
        write(&run8.path, "leftover.txt", "x");
        let rerun = ws
            .prepare(&repo, &target, WorkspaceMode::Fresh, "ci", 8, &never())
            .await
            .unwrap();
        assert!(!rerun.path.join("leftover.txt").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_commits_and_refs_give_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let src = init_repo(tmp.path(), "infra");
        write(&src, "a.txt", "a\n");
        commit_all(&src, "one");
        let ws = Workspaces::new(&tmp.path().join("data"), 2);
        let url = file_url(&src);
        let repo = spec(&url);

        let bogus = "0123456789abcdef0123456789abcdef01234567";
        let err = ws
            .prepare(
                &repo,
                &commit_target(bogus, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "p",
                1,
                &never(),
            )
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, WorkspaceError::CommitNotFound { .. }),
            "{msg}"
        );
        assert!(
            msg.starts_with(&format!(
                "commit {bogus} not found in {url} after fetching refs/heads/main"
            )),
            "{msg}"
        );

        let err = ws
            .prepare(
                &repo,
                &Target::Ref("nope".into()),
                WorkspaceMode::Persistent,
                "p",
                1,
                &never(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::RefNotFound { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("ref nope not found in {url} (tried refs/heads/nope, refs/tags/nope)")
        );

        for bad in [
            Target::Commit {
                sha: "xyz".into(),
                refname: None,
            },
            Target::Ref("bad..name".into()),
            Target::Ref("a:b".into()),
        ] {
            let err = ws
                .prepare(&repo, &bad, WorkspaceMode::Persistent, "p", 1, &never())
                .await
                .unwrap_err();
            assert!(
                matches!(err, WorkspaceError::InvalidTarget { .. }),
                "{bad:?}: {err}"
            );
        }
        // An invalid ref name beside a commit only costs the shortcut: all
        // branches are fetched and the commit is looked for there.
        let err = ws
            .prepare(
                &repo,
                &Target::Commit {
                    sha: bogus.into(),
                    refname: Some("refs/heads/*".into()),
                },
                WorkspaceMode::Persistent,
                "p",
                1,
                &never(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, WorkspaceError::CommitNotFound { .. }),
            "{err}"
        );
        let err = ws
            .prepare(
                &repo,
                &Target::Ref("main".into()),
                WorkspaceMode::Persistent,
                "../x",
                1,
                &never(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::InvalidName { .. }), "{err}");

        let missing = tmp.path().join("does-not-exist");
        let err = ws
            .prepare(
                &spec(&file_url(&missing)),
                &Target::Ref("main".into()),
                WorkspaceMode::Persistent,
                "p",
                1,
                &never(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::Fetch { .. }), "{err}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refs_tags_and_shas_resolve() {
        let tmp = tempfile::tempdir().unwrap();
        let src = init_repo(tmp.path(), "infra");
        write(&src, "a.txt", "1\n");
        let c1 = commit_all(&src, "one");
        git(&src, &["tag", "-a", "v1", "-m", "release 1"]);
        git(&src, &["branch", "dup"]);
        write(&src, "a.txt", "2\n");
        let c2 = commit_all(&src, "two");
        git(&src, &["tag", "light"]);
        git(&src, &["tag", "dup"]);
        let ws = Workspaces::new(&tmp.path().join("data"), 2);
        let repo = spec(&file_url(&src));
        let prepare = |target: Target| {
            let (ws, repo) = (ws.clone(), repo.clone());
            async move {
                ws.prepare(&repo, &target, WorkspaceMode::Persistent, "r", 1, &never())
                    .await
                    .unwrap()
            }
        };

        let ck = prepare(Target::Ref("main".into())).await;
        assert_eq!(
            (ck.commit.as_str(), ck.refname.as_deref()),
            (c2.as_str(), Some("refs/heads/main"))
        );

        let ck = prepare(Target::Ref("v1".into())).await;
        assert_eq!(
            (ck.commit.as_str(), ck.refname.as_deref()),
            (c1.as_str(), Some("refs/tags/v1"))
        );
        assert_eq!(read(&ck.path, "a.txt"), "1\n");
        assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), c1);
        // The annotated tag object itself is in the tree's refs.
        assert_eq!(git(&ck.path, &["cat-file", "-t", "refs/tags/v1"]), "tag");
        assert_eq!(git(&ck.path, &["describe", "--tags"]), "v1");

        let ck = prepare(Target::Ref("light".into())).await;
        assert_eq!(ck.commit, c2);
        let ck = prepare(Target::Ref("refs/heads/main".into())).await;
        assert_eq!(ck.commit, c2);
        let ck = prepare(Target::Ref("dup".into())).await;
        assert_eq!(
            (ck.commit.as_str(), ck.refname.as_deref()),
            (c1.as_str(), Some("refs/heads/dup"))
        );
        let ck = prepare(Target::Ref("refs/tags/dup".into())).await;
        assert_eq!(ck.commit, c2);
        let ck = prepare(Target::Ref(c1.clone())).await;
        assert_eq!((ck.commit.as_str(), ck.fetch.network), (c1.as_str(), false));
        let ck = prepare(commit_target(&c1, "v1")).await;
        assert_eq!(
            (ck.commit.as_str(), ck.refname.as_deref()),
            (c1.as_str(), Some("refs/tags/v1"))
        );

        assert_eq!(ws.resolve_ref(&repo, "main", &never()).await.unwrap(), c2);
        assert_eq!(ws.resolve_ref(&repo, "v1", &never()).await.unwrap(), c1);
        assert_eq!(ws.resolve_ref(&repo, "HEAD", &never()).await.unwrap(), c2);
        let err = ws
            .resolve_ref(&repo, "missing", &never())
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::RefNotFound { .. }), "{err}");

        // A sha not yet mirrored is found by fetching all branches.
        git(&src, &["checkout", "-q", "-b", "feature"]);
        write(&src, "f.txt", "f\n");
        let f1 = commit_all(&src, "feature");
        let ck = prepare(Target::Ref(f1.clone())).await;
        assert_eq!((ck.commit.as_str(), ck.fetch.network), (f1.as_str(), true));
        assert_eq!(read(&ck.path, "f.txt"), "f\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn force_pushed_commit_is_not_found_over_file() {
        let tmp = tempfile::tempdir().unwrap();
        let src = init_repo(tmp.path(), "infra");
        write(&src, "a.txt", "1\n");
        let c1 = commit_all(&src, "one");
        write(&src, "a.txt", "2\n");
        let gone = commit_all(&src, "pushed then force-pushed away");
        git(&src, &["reset", "-q", "--hard", &c1]);
        let ws = Workspaces::new(&tmp.path().join("data"), 2);
        // libgit2's local transport cannot fetch an object by id.
        let err = ws
            .prepare(
                &spec(&file_url(&src)),
                &commit_target(&gone, "refs/heads/main"),
                WorkspaceMode::Fresh,
                "p",
                1,
                &never(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, WorkspaceError::CommitNotFound { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&gone), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changed_paths_and_merge_base() {
        let tmp = tempfile::tempdir().unwrap();
        let src = init_repo(tmp.path(), "infra");
        for f in ["a.txt", "b.txt", "c.txt", "keep.txt", "dir/sub/d.txt"] {
            write(&src, f, &format!("content of {f}\n"));
        }
        let c1 = commit_all(&src, "one");
        write(&src, "a.txt", "changed\n");
        fs::remove_file(src.join("b.txt")).unwrap();
        git(&src, &["mv", "c.txt", "renamed.txt"]);
        write(&src, "dir/sub/e.txt", "new\n");
        write(&src, "new.txt", "new\n");
        let c2 = commit_all(&src, "two");
        git(&src, &["checkout", "-q", "-b", "feature", &c1]);
        write(&src, "feature.txt", "f\n");
        let f1 = commit_all(&src, "feature");
        git(&src, &["checkout", "-q", "--orphan", "lonely"]);
        let lonely = commit_all(&src, "unrelated");
        git(&src, &["checkout", "-q", "main"]);

        let ws = Workspaces::new(&tmp.path().join("data"), 2);
        let url = file_url(&src);
        let err = ws.changed_paths(&url, None, &c2).await.unwrap_err();
        assert!(matches!(err, WorkspaceError::MirrorMissing { .. }), "{err}");

        let repo = spec(&url);
        for name in ["main", "feature", "lonely"] {
            ws.resolve_ref(&repo, name, &never()).await.unwrap();
        }
        assert_eq!(
            ws.changed_paths(&url, Some(&c1), &c2).await.unwrap(),
            [
                "a.txt",
                "b.txt",
                "c.txt",
                "dir/sub/e.txt",
                "new.txt",
                "renamed.txt"
            ]
        );
        let all = ["a.txt", "b.txt", "c.txt", "dir/sub/d.txt", "keep.txt"];
        assert_eq!(ws.changed_paths(&url, None, &c1).await.unwrap(), all);
        let zero = "0".repeat(40);
        assert_eq!(ws.changed_paths(&url, Some(&zero), &c1).await.unwrap(), all);
        assert!(ws
            .changed_paths(&url, Some(&c2), &c2)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            ws.changed_paths(&url, Some(&c2), &c1).await.unwrap(),
            [
                "a.txt",
                "b.txt",
                "c.txt",
                "dir/sub/e.txt",
                "new.txt",
                "renamed.txt"
            ]
        );

        assert_eq!(
            ws.merge_base(&url, &c2, &f1).await.unwrap(),
            Some(c1.clone())
        );
        assert_eq!(
            ws.merge_base(&url, &f1, &c2).await.unwrap(),
            Some(c1.clone())
        );
        assert_eq!(ws.merge_base(&url, &c2, &lonely).await.unwrap(), None);

        let bogus = "0123456789abcdef0123456789abcdef01234567";
        let err = ws.changed_paths(&url, Some(bogus), &c2).await.unwrap_err();
        assert!(
            matches!(err, WorkspaceError::CommitNotFound { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains(bogus) && err.to_string().contains(&url),
            "{err}"
        );
        let err = ws.merge_base(&url, "main", &c2).await.unwrap_err();
        assert!(matches!(err, WorkspaceError::InvalidTarget { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submodules_are_checked_out_recursively() {
        let tmp = tempfile::tempdir().unwrap();
        let leaf = init_repo(tmp.path(), "leaf");
        write(&leaf, "leaf.txt", "leaf\n");
        commit_all(&leaf, "leaf");
        let lib = init_repo(tmp.path(), "lib");
        write(&lib, "lib.txt", "v1\n");
        git(
            &lib,
            &[
                "submodule",
                "add",
                "-q",
                leaf.to_str().unwrap(),
                "deps/leaf",
            ],
        );
        let l1 = commit_all(&lib, "lib v1");
        let top = init_repo(tmp.path(), "top");
        write(&top, "main.tf", "x\n");
        git(
            &top,
            &[
                "submodule",
                "add",
                "-q",
                lib.to_str().unwrap(),
                "modules/lib",
            ],
        );
        let s1 = commit_all(&top, "with lib");

        let ws = Workspaces::new(&tmp.path().join("data"), 2);
        let mut repo = spec(&file_url(&top));
        repo.submodules = true;
        let ck = ws
            .prepare(
                &repo,
                &commit_target(&s1, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "sm",
                1,
                &never(),
            )
            .await
            .unwrap();
        assert_eq!(read(&ck.path, "modules/lib/lib.txt"), "v1\n");
        assert_eq!(read(&ck.path, "modules/lib/deps/leaf/leaf.txt"), "leaf\n");
        assert_eq!(
            git(&ck.path.join("modules/lib"), &["rev-parse", "HEAD"]),
            l1
        );
        assert_eq!(status(&ck.path), "");

        // Move the submodule forward; the persistent tree follows.
        write(&lib, "lib.txt", "v2\n");
        let l2 = commit_all(&lib, "lib v2");
        git(&top.join("modules/lib"), &["fetch", "-q", "origin"]);
        git(&top.join("modules/lib"), &["checkout", "-q", &l2]);
        let s2 = commit_all(&top, "lib v2");
        write(&ck.path, "modules/lib/lib.txt", "local edit\n");
        let ck = ws
            .prepare(
                &repo,
                &commit_target(&s2, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "sm",
                2,
                &never(),
            )
            .await
            .unwrap();
        assert_eq!(
            git(&ck.path.join("modules/lib"), &["rev-parse", "HEAD"]),
            l2
        );
        assert_eq!(read(&ck.path, "modules/lib/lib.txt"), "v2\n");
        assert_eq!(status(&ck.path), "");

        // Without `submodules`, submodule directories stay empty.
        repo.submodules = false;
        let plain = ws
            .prepare(
                &repo,
                &commit_target(&s2, "refs/heads/main"),
                WorkspaceMode::Fresh,
                "sm",
                3,
                &never(),
            )
            .await
            .unwrap();
        assert!(!plain.path.join("modules/lib/lib.txt").exists());

        // A submodule that cannot be fetched is reported by name.
        fs::rename(&lib, tmp.path().join("lib-moved")).unwrap();
        repo.submodules = true;
        let err = ws
            .prepare(
                &repo,
                &commit_target(&s2, "refs/heads/main"),
                WorkspaceMode::Fresh,
                "sm",
                4,
                &never(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::Submodule { .. }), "{err}");
        assert!(err.to_string().contains("modules/lib"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_runs_of_one_pipeline_do_not_interfere() {
        let tmp = tempfile::tempdir().unwrap();
        let src = init_repo(tmp.path(), "infra");
        let mut commits = Vec::new();
        for i in 0..4 {
            for j in 0..20 {
                write(&src, &format!("dir{j}/file.txt"), &format!("{i}-{j}\n"));
            }
            commits.push(commit_all(&src, &format!("c{i}")));
        }
        let ws = Workspaces::new(&tmp.path().join("data"), 2);
        let repo = spec(&file_url(&src));
        for mode in [WorkspaceMode::Persistent, WorkspaceMode::Fresh] {
            let handles: Vec<_> = commits
                .iter()
                .enumerate()
                .map(|(i, sha)| {
                    let (ws, repo, target) = (
                        ws.clone(),
                        repo.clone(),
                        commit_target(sha, "refs/heads/main"),
                    );
                    tokio::spawn(async move {
                        ws.prepare(&repo, &target, mode, "conc", i as i64, &never())
                            .await
                    })
                })
                .collect();
            let mut results = Vec::new();
            for h in handles {
                results.push(h.await.unwrap().unwrap());
            }
            for (i, ck) in results.iter().enumerate() {
                assert_eq!(ck.commit, commits[i]);
                if mode == WorkspaceMode::Fresh {
                    assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), commits[i]);
                    assert_eq!(read(&ck.path, "dir7/file.txt"), format!("{i}-7\n"));
                }
            }
            let tree = &results[0].path;
            let head = git(tree, &["rev-parse", "HEAD"]);
            let i = commits.iter().position(|c| *c == head).unwrap();
            assert_eq!(read(tree, "dir3/file.txt"), format!("{i}-3\n"));
            assert_eq!(status(tree), "");
        }
        let mirror = ws.mirror_path(&repo.url);
        git(&mirror, &["fsck", "--no-progress"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_token_stops_before_fetching() {
        let tmp = tempfile::tempdir().unwrap();
        let src = init_repo(tmp.path(), "infra");
        write(&src, "a.txt", "1\n");
        let c1 = commit_all(&src, "one");
        let ws = Workspaces::new(&tmp.path().join("data"), 2);
        let repo = spec(&file_url(&src));
        let token = CancellationToken::new();
        token.cancel();
        let err = ws
            .prepare(
                &repo,
                &commit_target(&c1, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "p",
                1,
                &token,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::Cancelled { .. }), "{err}");
        assert!(err.to_string().contains(&repo.url), "{err}");
        assert!(!ws.mirror_path(&repo.url).exists());
        let err = ws.resolve_ref(&repo, "main", &token).await.unwrap_err();
        assert!(matches!(err, WorkspaceError::Cancelled { .. }), "{err}");
    }

    // ---- over git:// (git daemon on 127.0.0.1) ------------------------------

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn git_daemon_fetches_incrementally() {
        let tmp = tempfile::tempdir().unwrap();
        let served = tmp.path().join("served");
        let src = init_repo(&served, "infra");
        write(&src, "README", "one\n");
        write(&src, "env/prod/main.tf", "x\n");
        let c1 = commit_all(&src, "one");
        let daemon = Daemon::start(&served);
        let url = daemon.url("infra");
        let repo = spec(&url);
        let ws = Workspaces::new(&tmp.path().join("data"), 2);

        let ck = ws
            .prepare(
                &repo,
                &commit_target(&c1, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "d",
                1,
                &never(),
            )
            .await
            .unwrap();
        assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), c1);
        assert_eq!(read(&ck.path, "README"), "one\n");
        assert!(ck.fetch.received_objects >= 5, "{:?}", ck.fetch);

        // Pushed later: only the new objects cross the wire.
        write(&src, "second.txt", "two\n");
        let c2 = commit_all(&src, "two");
        let ck = ws
            .prepare(
                &repo,
                &commit_target(&c2, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "d",
                2,
                &never(),
            )
            .await
            .unwrap();
        assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), c2);
        assert_eq!(ck.fetch.received_objects, 3, "{:?}", ck.fetch);
        assert_eq!(status(&ck.path), "");

        let ck = ws
            .prepare(
                &repo,
                &Target::Ref("main".into()),
                WorkspaceMode::Fresh,
                "d",
                3,
                &never(),
            )
            .await
            .unwrap();
        assert_eq!(
            (
                ck.commit.as_str(),
                ck.fetch.network,
                ck.fetch.received_objects
            ),
            (c2.as_str(), true, 0)
        );
        assert_eq!(
            ws.changed_paths(&url, Some(&c1), &c2).await.unwrap(),
            ["second.txt"]
        );

        // A commit force-pushed away: the server refuses unadvertised ids.
        write(&src, "third.txt", "3\n");
        let gone = commit_all(&src, "gone");
        git(&src, &["reset", "-q", "--hard", &c2]);
        let err = ws
            .prepare(
                &repo,
                &commit_target(&gone, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "d",
                4,
                &never(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, WorkspaceError::CommitNotFound { .. }),
            "{err}"
        );
        assert!(
            err.to_string().starts_with(&format!(
                "commit {gone} not found in {url} after fetching refs/heads/main"
            )),
            "{err}"
        );

        // A server that allows any id in "want" lets the commit be fetched by id.
        git(&src, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
        let ck = ws
            .prepare(
                &repo,
                &commit_target(&gone, "refs/heads/main"),
                WorkspaceMode::Persistent,
                "d",
                5,
                &never(),
            )
            .await
            .unwrap();
        assert_eq!(git(&ck.path, &["rev-parse", "HEAD"]), gone);
        assert_eq!(read(&ck.path, "third.txt"), "3\n");
        let mirror = Repository::open_bare(&ck.mirror).unwrap();
        let kept = mirror.refname_to_id(&format!("refs/hookd/{gone}")).unwrap();
        assert_eq!(kept.to_string(), gone);
    }

    #[test]
    fn cancel_flag_stops_a_running_fetch_in_callbacks() {
        let tmp = tempfile::tempdir().unwrap();
        let served = tmp.path().join("served");
        let src = init_repo(&served, "infra");
        for i in 0..50 {
            write(&src, &format!("f{i}.txt"), &format!("{i}\n").repeat(100));
        }
        commit_all(&src, "many");
        let daemon = Daemon::start(&served);
        let flag = CancelFlag::default();
        flag.set();
        // No pre-check here: the connection opens and the libgit2 callbacks must stop it.
        let ctx = FetchCtx::new(&spec(&daemon.url("infra")), flag);
        let mirror = tmp.path().join("mirror.git");
        let repo = open_or_init_mirror(&mirror, &ctx).unwrap();
        let err = fetch_session(&repo, &ctx, &mirror, "all", |_| {
            Ok(vec![ALL_HEADS.to_string()])
        })
        .unwrap_err();
        assert!(matches!(err, WorkspaceError::Cancelled { .. }), "{err}");
        assert_eq!(repo.references().unwrap().count(), 0);
        // The same fetch without the flag works.
        let ctx = FetchCtx::new(&spec(&daemon.url("infra")), CancelFlag::default());
        let stats = fetch_session(&repo, &ctx, &mirror, "all", |_| {
            Ok(vec![ALL_HEADS.to_string()])
        })
        .unwrap();
        assert!(stats.received_objects > 50, "{stats:?}");
        assert_eq!(repo.references().unwrap().count(), 1);
    }

    // ---- authentication against a 401-only HTTP server ----------------------

    /// Answers every request with 401 and records the request heads.
    async fn serve_401() -> (u16, Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        let handle = tokio::spawn(async move {
            for _ in 0..50 {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk)).await
                    {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                seen2
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                let _ = sock
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = sock.shutdown().await;
            }
        });
        (port, seen, handle)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rejected_credentials_fail_after_a_few_attempts() {
        let (port, seen, server) = serve_401().await;
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspaces::new(&tmp.path().join("data"), 2);
        let url = format!("http://127.0.0.1:{port}/acme/infra.git");
        let mut repo = spec(&url);
        repo.credentials.token = Some("s3cr3t-token".into());
        let err = tokio::time::timeout(
            Duration::from_secs(60),
            ws.prepare(
                &repo,
                &Target::Ref("main".into()),
                WorkspaceMode::Persistent,
                "a",
                1,
                &never(),
            ),
        )
        .await
        .expect("credential loop must end")
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, WorkspaceError::AuthFailed { .. }), "{msg}");
        assert!(
            msg.starts_with(&format!("authentication failed for {url}")),
            "{msg}"
        );
        assert!(!msg.contains("s3cr3t"), "{msg}");
        let requests = seen.lock().unwrap().clone();
        let basic = format!("Basic {}", base64_encode(b"x-access-token:s3cr3t-token"));
        assert!(requests.iter().any(|r| r.contains(&basic)), "{requests:?}");
        assert!(
            requests.len() <= MAX_AUTH_ATTEMPTS as usize + 2,
            "{}",
            requests.len()
        );

        // A password in the URL never shows up; without a token nothing is offered.
        let url = format!("http://bob:hunter2@127.0.0.1:{port}/acme/infra.git");
        let err = tokio::time::timeout(
            Duration::from_secs(60),
            ws.prepare(
                &spec(&url),
                &Target::Ref("main".into()),
                WorkspaceMode::Persistent,
                "a",
                2,
                &never(),
            ),
        )
        .await
        .expect("credential loop must end")
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, WorkspaceError::AuthFailed { .. }), "{msg}");
        assert!(!msg.contains("hunter2") && !msg.contains("bob"), "{msg}");
        assert!(
            msg.contains(&format!("http://127.0.0.1:{port}/acme/infra.git")),
            "{msg}"
        );
        server.abort();
    }

    #[test]
    fn workspaces_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Workspaces>();
        fn check_error<T: std::error::Error + Send + Sync + 'static>() {}
        check_error::<WorkspaceError>();
    }
}
