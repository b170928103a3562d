//! Pipeline definitions: one YAML file each in `pipelines_dir`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::label_matcher::LabelMatcher;
use super::{
    is_env_name, is_safe_name, parse_yaml, resolve_path, ConfigError, ConfigErrors, DaemonConfig,
    Errors, Pattern, PatternList,
};

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Unique name (default: the file's stem).
    pub name: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// What starts it; any one trigger suffices.
    pub triggers: Vec<Trigger>,
    /// Which repository to check out; `None`: the event's clone URL with defaults.
    pub repo: Repo,
    /// Pipeline-wide environment for every step, in file order.
    pub env: Vec<(String, String)>,
    /// Commands, run in order; the first failure fails the run.
    pub steps: Vec<Step>,
    /// Limit for the whole run.
    pub timeout: Option<Duration>,
    /// Runs of one group never overlap (default: the pipeline's name).
    pub concurrency_group: String,
    /// What a new event does to the group's queued and running runs.
    pub on_new_event: OnNewEvent,
    /// Retries of failed, timed-out and interrupted runs.
    pub retry: Retry,
    /// Let a push of an older commit than the last applied one run.
    pub allow_rollback: bool,
    /// Guard rails of alert-triggered runs.
    pub remediation: Option<Remediation>,
    /// Escalation steps: run when a run failed, timed out, was suppressed or
    /// proved ineffective, as part of that run.
    pub on_failure: Vec<Step>,
}

/// `remediation:` — guard rails for alert-triggered runs, per pipeline and
/// alert fingerprint. Repeats of one firing episode (same fingerprint and
/// `startsAt`) never run twice, whatever is set here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remediation {
    /// No new run for the same fingerprint within this time of the last one.
    pub cooldown: Option<Duration>,
    /// At most this many runs of the pipeline per `window`; past it a
    /// `suppressed` run is recorded and the escalation runs once per window.
    pub max_runs: Option<u32>,
    /// The sliding window of `max_runs` (default 1h).
    pub window: Duration,
    /// A resolved notification cancels a running remediation of the alert.
    pub cancel_on_resolved: bool,
    /// A finished remediation is effective only if the alert resolves within this.
    pub verify_resolved_within: Option<Duration>,
}

/// `concurrency.on_new_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNewEvent {
    /// Run every event, in arrival order (the default).
    Queue,
    /// A newer event replaces every queued-but-not-started run of the group.
    Supersede,
    /// Like supersede, and the running run is stopped too.
    Cancel,
}

/// `retry:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all, including the first (1: no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one, with ±20% jitter.
    pub backoff: Duration,
}

impl Pipeline {
    /// True when the pipeline may be started by an operator.
    pub fn has_manual_trigger(&self) -> bool {
        self.triggers.iter().any(|t| matches!(t, Trigger::Manual))
    }
}

/// One entry of `on:`.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// `push:` with its filters.
    Push(Box<PushTrigger>),
    /// `manual: {}`: `hookd trigger` and the API may start it.
    Manual,
    /// `alert:` with its matchers.
    Alert(AlertTrigger),
}

/// Which alert notifications start the pipeline.
#[derive(Debug, Clone)]
pub struct AlertTrigger {
    /// Source names; `None`: any source.
    pub sources: Option<Vec<String>>,
    /// Every matcher must hold on the alert's labels.
    pub matchers: Vec<LabelMatcher>,
    /// Which status starts it.
    pub status: AlertStatusFilter,
}

/// `alert.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatusFilter {
    /// Firing alerts only (the default).
    Firing,
    /// Resolved alerts only.
    Resolved,
    /// Both.
    Any,
}

/// Filters of a push trigger; `None` means "not filtered on this".
#[derive(Debug, Clone)]
pub struct PushTrigger {
    /// Source names; `None`: any push source.
    pub sources: Option<Vec<String>>,
    /// Glob on `owner/name`, case-insensitive.
    pub repository: Option<Pattern>,
    /// Branch globs; with only `tags` set, branches never match.
    pub branches: Option<PatternList>,
    /// Tag globs; with only `branches` set, tags never match.
    pub tags: Option<PatternList>,
    /// Changed-path globs: the run starts if one changed file matches (and
    /// no `paths_ignore` glob). Computed with git after the fetch; not
    /// applied to tag pushes.
    pub paths: Option<PatternList>,
    /// Changed-path globs whose files do not count.
    pub paths_ignore: Option<PatternList>,
}

impl PushTrigger {
    /// True when the trigger filters on changed paths.
    pub fn has_path_filter(&self) -> bool {
        self.paths.is_some() || self.paths_ignore.is_some()
    }

    /// Does one of `changed` count? A file counts if it matches `paths` (or
    /// `paths` is omitted) and no `paths_ignore` pattern.
    pub fn paths_match<'a>(&self, changed: &'a [String]) -> Option<&'a str> {
        changed
            .iter()
            .find(|f| {
                self.paths.as_ref().is_none_or(|p| p.is_match(f))
                    && !self.paths_ignore.as_ref().is_some_and(|p| p.is_match(f))
            })
            .map(String::as_str)
    }
}

/// How to bring up the working tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceMode {
    /// One tree per pipeline, reset hard and cleaned (ignored files kept) for each run.
    Persistent,
    /// A new tree for each run, removed afterwards.
    Fresh,
}

/// The `repo:` block.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Clone URL; `None`: the push event's clone URL.
    pub url: Option<String>,
    /// What manual runs check out (default `main`... or the remote's HEAD).
    pub git_ref: Option<String>,
    /// SSH private key for `ssh://` and `git@host:` URLs.
    pub ssh_key_file: Option<PathBuf>,
    /// File holding an HTTPS token.
    pub token_file: Option<PathBuf>,
    /// User name sent with the token (default `x-access-token`).
    pub token_username: Option<String>,
    /// OpenSSH known_hosts file to check SSH host keys against.
    pub known_hosts_file: Option<PathBuf>,
    /// Persistent (default) or fresh working tree.
    pub workspace: WorkspaceMode,
    /// Check out submodules too.
    pub submodules: bool,
}

/// What a step executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepCommand {
    /// `run:` — a script for `/bin/sh -c`.
    Shell(String),
    /// `argv:` — executed directly, no shell.
    Argv(Vec<String>),
}

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name (default `step-N`, 1-based).
    pub name: String,
    /// The command.
    pub command: StepCommand,
    /// Working directory relative to the checkout (never escapes it).
    pub dir: Option<PathBuf>,
    /// Limit for this step.
    pub timeout: Option<Duration>,
    /// Step environment, applied after the pipeline's.
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: Option<Spanned<String>>,
    on: Spanned<Vec<RawTrigger>>,
    repo: Option<RawRepo>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    steps: Spanned<Vec<Spanned<RawStep>>>,
    timeout: Option<Spanned<String>>,
    concurrency: Option<RawConcurrency>,
    retry: Option<RawRetry>,
    allow_rollback: Option<bool>,
    remediation: Option<RawRemediation>,
    #[serde(default)]
    on_failure: Vec<Spanned<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemediation {
    cooldown: Option<Spanned<String>>,
    max_runs: Option<Spanned<u32>>,
    window: Option<Spanned<String>>,
    cancel_on_resolved: Option<bool>,
    verify_resolved_within: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    sources: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    matchers: Vec<Spanned<String>>,
    status: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConcurrency {
    group: Option<Spanned<String>>,
    on_new_event: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    attempts: Option<Spanned<u32>>,
    backoff: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum RawTrigger {
    Push(RawPush),
    Manual(RawManual),
    Alert(RawAlert),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    sources: Option<Vec<Spanned<String>>>,
    repository: Option<Spanned<String>>,
    branches: Option<Vec<Spanned<String>>>,
    tags: Option<Vec<Spanned<String>>>,
    paths: Option<Vec<Spanned<String>>>,
    paths_ignore: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManual {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    url: Option<Spanned<String>>,
    #[serde(rename = "ref")]
    git_ref: Option<Spanned<String>>,
    ssh_key_file: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    token_username: Option<Spanned<String>>,
    known_hosts_file: Option<Spanned<String>>,
    workspace: Option<Spanned<String>>,
    submodules: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Option<Spanned<String>>,
    run: Option<Spanned<String>>,
    argv: Option<Spanned<Vec<String>>>,
    dir: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
}

/// Loads every `*.yaml` / `*.yml` file of the daemon's `pipelines_dir`
/// (sorted by file name), returning all errors of all files at once.
pub fn load_pipelines(daemon: &DaemonConfig) -> Result<Vec<Pipeline>, ConfigErrors> {
    let dir = &daemon.pipelines_dir;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !daemon.pipelines_dir_explicit => {
            tracing::warn!(dir = %dir.display(), "pipelines directory does not exist; no pipelines loaded");
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError::file(
                dir,
                format!("cannot read pipelines directory: {e}"),
            )]))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) && p.is_file()
        })
        .collect();
    files.sort();

    let mut errors = Vec::new();
    let mut pipelines: Vec<Pipeline> = Vec::new();
    let mut seen: HashMap<String, (PathBuf, Location)> = HashMap::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ConfigError::file(&file, format!("cannot read: {e}")));
                continue;
            }
        };
        match parse_with_location(&file, &text, daemon) {
            Ok((p, name_loc)) => {
                if let Some((other, _)) = seen.get(&p.name) {
                    errors.push(ConfigError::at(
                        &file,
                        name_loc,
                        format!(
                            "name: pipeline name {:?} is already used by {}",
                            p.name,
                            other.display()
                        ),
                    ));
                } else {
                    seen.insert(p.name.clone(), (file.clone(), name_loc));
                    pipelines.push(p);
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(pipelines)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Parses and validates one pipeline file's text.
pub fn parse_pipeline(
    file: &Path,
    text: &str,
    daemon: &DaemonConfig,
) -> Result<Pipeline, Vec<ConfigError>> {
    parse_with_location(file, text, daemon).map(|(p, _)| p)
}

fn parse_with_location(
    file: &Path,
    text: &str,
    daemon: &DaemonConfig,
) -> Result<(Pipeline, Location), Vec<ConfigError>> {
    let raw: RawPipeline = parse_yaml(file, text).map_err(|e| vec![e])?;
    validate(file, raw, daemon)
}

fn validate(
    file: &Path,
    raw: RawPipeline,
    daemon: &DaemonConfig,
) -> Result<(Pipeline, Location), Vec<ConfigError>> {
    let mut errs = Errors::new(file);
    let base = file.parent().unwrap_or(Path::new("."));

    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (name, name_loc) = match &raw.name {
        Some(n) => (n.value.clone(), n.referenced),
        None => (stem, Location::UNKNOWN),
    };
    if !is_safe_name(&name) {
        let msg = format!(
            "name: {name:?} is not a valid pipeline name (letters, digits, '.', '_', '-'; at most 128)"
        );
        if raw.name.is_some() {
            errs.at(name_loc, msg);
        } else {
            errs.whole(format!("{msg}; rename the file or set name:"));
        }
    }

    let raw_on_at = raw.on.referenced;
    if raw.on.value.is_empty() {
        errs.at(
            raw.on.referenced,
            "on: at least one trigger is needed (push, manual)",
        );
    }
    let mut triggers = Vec::new();
    for (i, t) in raw.on.value.into_iter().enumerate() {
        match t {
            RawTrigger::Manual(RawManual {}) => triggers.push(Trigger::Manual),
            RawTrigger::Push(p) => {
                triggers.push(Trigger::Push(Box::new(validate_push(
                    &mut errs, i, p, daemon,
                ))));
            }
            RawTrigger::Alert(a) => {
                triggers.push(Trigger::Alert(validate_alert(&mut errs, i, a, daemon)))
            }
        }
    }

    let repo = validate_repo(&mut errs, base, raw.repo);
    let has_push = triggers.iter().any(|t| matches!(t, Trigger::Push(_)));
    if let Some(i) = triggers.iter().position(|t| matches!(t, Trigger::Manual)) {
        if repo.url.is_none() && has_push {
            errs.at(
                raw_on_at,
                format!("on[{i}].manual: push runs check out the webhook's clone URL, but a manual run has none; set repo.url"),
            );
        }
    }
    let env = validate_env(&mut errs, "env", raw.env);

    if raw.steps.value.is_empty() {
        errs.at(raw.steps.referenced, "steps: at least one step is needed");
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut step_names: HashMap<String, usize> = HashMap::new();
    for (i, s) in raw.steps.value.into_iter().enumerate() {
        let at = s.referenced;
        if let Some(step) = validate_step(&mut errs, i, s.value) {
            if let Some(first) = step_names.insert(step.name.clone(), i) {
                errs.at(
                    at,
                    format!(
                        "steps[{i}].name: {:?} is already the name of steps[{first}]",
                        step.name
                    ),
                );
            }
            steps.push(step);
        }
    }
    let timeout = raw
        .timeout
        .as_ref()
        .and_then(|t| errs.duration("timeout", t));
    let (group, on_new_event) = validate_concurrency(&mut errs, &name, raw.concurrency);
    let retry = validate_retry(&mut errs, raw.retry);
    let has_alert = triggers.iter().any(|t| matches!(t, Trigger::Alert(_)));
    let remediation = raw
        .remediation
        .map(|r| validate_remediation(&mut errs, raw_on_at, has_alert, r));
    let mut on_failure = Vec::new();
    for (i, s) in raw.on_failure.into_iter().enumerate() {
        if let Some(mut step) = validate_step(&mut errs, i, s.value) {
            if step.name.starts_with("step-") {
                step.name = format!("on-failure-{}", i + 1);
            }
            on_failure.push(step);
        }
    }

    if !errs.is_empty() {
        return Err(errs.into_vec());
    }
    Ok((
        Pipeline {
            concurrency_group: group,
            on_new_event,
            retry,
            allow_rollback: raw.allow_rollback.unwrap_or(false),
            remediation,
            on_failure,
            name,
            file: file.to_path_buf(),
            triggers,
            repo,
            env,
            steps,
            timeout,
        },
        name_loc,
    ))
}

fn validate_concurrency(
    errs: &mut Errors,
    name: &str,
    raw: Option<RawConcurrency>,
) -> (String, OnNewEvent) {
    let Some(raw) = raw else {
        return (name.to_string(), OnNewEvent::Queue);
    };
    let group = match raw.group {
        Some(g) if !is_safe_name(&g.value) => {
            errs.at(
                g.referenced,
                format!(
                    "concurrency.group: {:?} is not a valid group name (letters, digits, '.', '_', '-')",
                    g.value
                ),
            );
            name.to_string()
        }
        Some(g) => g.value,
        None => name.to_string(),
    };
    let policy = match raw
        .on_new_event
        .as_ref()
        .map(|p| (p.value.as_str(), p.referenced))
    {
        None | Some(("queue", _)) => OnNewEvent::Queue,
        Some(("supersede", _)) => OnNewEvent::Supersede,
        Some(("cancel", _)) => OnNewEvent::Cancel,
        Some((other, at)) => {
            errs.at(
                at,
                format!(
                    "concurrency.on_new_event: {other:?} is not one of queue, supersede, cancel"
                ),
            );
            OnNewEvent::Queue
        }
    };
    (group, policy)
}

/// A trigger's `sources:`, each checked against the daemon's sources.
fn trigger_sources(
    errs: &mut Errors,
    field: &str,
    list: &Option<Vec<Spanned<String>>>,
    daemon: &DaemonConfig,
) -> Option<Vec<String>> {
    let list = list.as_ref()?;
    for (j, s) in list.iter().enumerate() {
        if !daemon.sources.contains_key(&s.value) {
            let known: Vec<&str> = daemon.sources.keys().map(String::as_str).collect();
            errs.at(
                s.referenced,
                format!(
                    "{field}.sources[{j}]: unknown source {:?} (configured: {})",
                    s.value,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    }
    Some(list.iter().map(|s| s.value.clone()).collect())
}

fn validate_alert(errs: &mut Errors, i: usize, a: RawAlert, daemon: &DaemonConfig) -> AlertTrigger {
    let field = format!("on[{i}].alert");
    let sources = trigger_sources(errs, &field, &a.sources, daemon);
    let mut matchers = Vec::new();
    for (j, m) in a.matchers.iter().enumerate() {
        match LabelMatcher::parse(&m.value) {
            Ok(m) => matchers.push(m),
            Err(e) => errs.at(m.referenced, format!("{field}.matchers[{j}]: {e}")),
        }
    }
    let status = match a.status.as_ref().map(|s| (s.value.as_str(), s.referenced)) {
        None | Some(("firing", _)) => AlertStatusFilter::Firing,
        Some(("resolved", _)) => AlertStatusFilter::Resolved,
        Some(("any", _)) => AlertStatusFilter::Any,
        Some((other, at)) => {
            errs.at(
                at,
                format!("{field}.status: {other:?} is not one of firing, resolved, any"),
            );
            AlertStatusFilter::Firing
        }
    };
    AlertTrigger {
        sources,
        matchers,
        status,
    }
}

fn validate_remediation(
    errs: &mut Errors,
    on_at: Location,
    has_alert: bool,
    r: RawRemediation,
) -> Remediation {
    if !has_alert {
        errs.at(
            on_at,
            "remediation: applies to alert-triggered runs; add an `alert:` trigger",
        );
    }
    let max_runs = match r.max_runs {
        Some(m) if m.value == 0 => {
            errs.at(m.referenced, "remediation.max_runs: must be at least 1");
            None
        }
        Some(m) => Some(m.value),
        None => None,
    };
    Remediation {
        cooldown: r
            .cooldown
            .as_ref()
            .and_then(|c| errs.duration("remediation.cooldown", c)),
        max_runs,
        window: r
            .window
            .as_ref()
            .and_then(|w| errs.duration("remediation.window", w))
            .unwrap_or(Duration::from_secs(3600)),
        cancel_on_resolved: r.cancel_on_resolved.unwrap_or(false),
        verify_resolved_within: r
            .verify_resolved_within
            .as_ref()
            .and_then(|v| errs.duration("remediation.verify_resolved_within", v)),
    }
}

fn validate_retry(errs: &mut Errors, raw: Option<RawRetry>) -> Retry {
    let default = Retry {
        attempts: 1,
        backoff: Duration::from_secs(30),
    };
    let Some(raw) = raw else { return default };
    let attempts = match raw.attempts {
        Some(a) if a.value == 0 || a.value > 100 => {
            errs.at(
                a.referenced,
                "retry.attempts: counts every try including the first; use 1 to 100",
            );
            1
        }
        Some(a) => a.value,
        None => default.attempts,
    };
    let backoff = raw
        .backoff
        .as_ref()
        .and_then(|b| errs.duration("retry.backoff", b))
        .unwrap_or(default.backoff);
    Retry { attempts, backoff }
}

fn patterns(
    errs: &mut Errors,
    field: &str,
    values: &Option<Vec<Spanned<String>>>,
    case_insensitive: bool,
) -> Option<PatternList> {
    let values = values.as_ref()?;
    if values.is_empty() {
        // An empty list filters nothing in; say so instead of silently never matching.
        errs.whole(format!(
            "{field}: empty list; omit the key to match everything"
        ));
        return None;
    }
    match PatternList::new(values.iter().map(|v| v.value.as_str()), case_insensitive) {
        Ok(l) => Some(l),
        Err(bad) => {
            for (i, msg) in bad {
                errs.at(values[i].referenced, format!("{field}[{i}]: {msg}"));
            }
            None
        }
    }
}

fn validate_push(errs: &mut Errors, i: usize, p: RawPush, daemon: &DaemonConfig) -> PushTrigger {
    let field = format!("on[{i}].push");
    let sources = trigger_sources(errs, &field, &p.sources, daemon);
    let repository = p.repository.as_ref().and_then(|r| {
        Pattern::new(&r.value, true)
            .map_err(|e| errs.at(r.referenced, format!("{field}.repository: {e}")))
            .ok()
    });
    let branches = patterns(errs, &format!("{field}.branches"), &p.branches, false);
    let tags = patterns(errs, &format!("{field}.tags"), &p.tags, false);
    let paths = patterns(errs, &format!("{field}.paths"), &p.paths, false);
    let paths_ignore = patterns(
        errs,
        &format!("{field}.paths_ignore"),
        &p.paths_ignore,
        false,
    );
    PushTrigger {
        sources,
        repository,
        branches,
        tags,
        paths,
        paths_ignore,
    }
}

fn validate_repo(errs: &mut Errors, base: &Path, raw: Option<RawRepo>) -> Repo {
    let Some(raw) = raw else {
        return Repo {
            url: None,
            git_ref: None,
            ssh_key_file: None,
            token_file: None,
            token_username: None,
            known_hosts_file: None,
            workspace: WorkspaceMode::Persistent,
            submodules: false,
        };
    };
    let path = |v: &Option<Spanned<String>>| v.as_ref().map(|v| resolve_path(base, &v.value));
    let workspace = match raw
        .workspace
        .as_ref()
        .map(|w| (w.value.as_str(), w.referenced))
    {
        None | Some(("persistent", _)) => WorkspaceMode::Persistent,
        Some(("fresh", _)) => WorkspaceMode::Fresh,
        Some((other, at)) => {
            errs.at(
                at,
                format!("repo.workspace: {other:?} is neither persistent nor fresh"),
            );
            WorkspaceMode::Persistent
        }
    };
    if let (Some(k), Some(_)) = (&raw.ssh_key_file, &raw.token_file) {
        errs.at(
            k.referenced,
            "repo: set ssh_key_file (SSH URLs) or token_file (HTTPS URLs), not both",
        );
    }
    if let Some(u) = &raw.url {
        if u.value.trim().is_empty() {
            errs.at(u.referenced, "repo.url: empty");
        }
    } else {
        // Credentials go only to a URL the operator wrote, never to one a
        // payload names.
        for (key, v) in [
            ("ssh_key_file", &raw.ssh_key_file),
            ("token_file", &raw.token_file),
        ] {
            if let Some(v) = v {
                errs.at(
                    v.referenced,
                    format!("repo.{key}: needs repo.url (without it the clone URL comes from the webhook, and credentials are never sent to a URL a payload names)"),
                );
            }
        }
    }
    Repo {
        url: raw.url.map(|u| u.value),
        git_ref: raw.git_ref.map(|r| r.value),
        ssh_key_file: path(&raw.ssh_key_file),
        token_file: path(&raw.token_file),
        token_username: raw.token_username.map(|u| u.value),
        known_hosts_file: path(&raw.known_hosts_file),
        workspace,
        submodules: raw.submodules.unwrap_or(false),
    }
}

fn validate_env(
    errs: &mut Errors,
    field: &str,
    env: BTreeMap<String, Spanned<String>>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in env {
        if !is_env_name(&k) {
            errs.at(
                v.referenced,
                format!("{field}.{k}: not a valid variable name"),
            );
        } else if k.starts_with("HOOKD_") {
            errs.at(
                v.referenced,
                format!("{field}.{k}: HOOKD_* variables are set by hookd and cannot be overridden"),
            );
        } else {
            out.push((k, v.value));
        }
    }
    out
}

fn validate_step(errs: &mut Errors, i: usize, s: RawStep) -> Option<Step> {
    let at = s
        .name
        .as_ref()
        .map(|n| n.referenced)
        .or(s.run.as_ref().map(|r| r.referenced))
        .or(s.argv.as_ref().map(|a| a.referenced))
        .unwrap_or(Location::UNKNOWN);
    let name = match &s.name {
        Some(n) if n.value.trim().is_empty() || n.value.contains(['\n', '\r']) => {
            errs.at(
                n.referenced,
                format!("steps[{i}].name: must be a non-empty single line"),
            );
            n.value.clone()
        }
        Some(n) => n.value.clone(),
        None => format!("step-{}", i + 1),
    };
    let command = match (s.run, s.argv) {
        (Some(r), None) => {
            if r.value.trim().is_empty() {
                errs.at(r.referenced, format!("steps[{i}].run: empty command"));
            }
            Some(StepCommand::Shell(r.value))
        }
        (None, Some(a)) => {
            if a.value.is_empty() || a.value[0].is_empty() {
                errs.at(
                    a.referenced,
                    format!("steps[{i}].argv: needs at least the program"),
                );
            }
            Some(StepCommand::Argv(a.value))
        }
        (Some(r), Some(_)) => {
            errs.at(
                r.referenced,
                format!("steps[{i}]: set run or argv, not both"),
            );
            None
        }
        (None, None) => {
            errs.at(
                at,
                format!(
                    "steps[{i}]: needs run (a shell script) or argv (a program and its arguments)"
                ),
            );
            None
        }
    };
    let dir = s.dir.as_ref().and_then(|d| {
        let p = PathBuf::from(&d.value);
        let escapes = p.is_absolute()
            || p.components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if escapes {
            errs.at(
                d.referenced,
                format!(
                    "steps[{i}].dir: {:?} must be a relative path inside the checkout",
                    d.value
                ),
            );
            None
        } else {
            Some(p)
        }
    });
    let timeout = s
        .timeout
        .as_ref()
        .and_then(|t| errs.duration(&format!("steps[{i}].timeout"), t));
    let env = validate_env(errs, &format!("steps[{i}].env"), s.env);
    Some(Step {
        name,
        command: command?,
        dir,
        timeout,
        env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon() -> DaemonConfig {
        DaemonConfig::from_yaml(Path::new("hookd.yaml"), "").expect("defaults")
    }

    fn parse(text: &str) -> Result<Pipeline, String> {
        parse_pipeline(Path::new("pipelines/infra.yaml"), text, &daemon()).map_err(|errs| {
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    #[test]
    fn contract_example_parses() {
        let p = parse(
            r#"
name: infra-apply
on:
  - push:
      sources: [github]
      repository: acme/infra
      branches: [main, "release/*"]
      tags: ["v*"]
  - manual: {}
repo:
  url: https://git.example.com/acme/infra.git
  ref: main
  token_file: /etc/hookd/tokens/infra
  workspace: fresh
env: { TF_IN_AUTOMATION: "1" }
steps:
  - name: plan
    run: terraform plan -input=false -out=tfplan
    dir: terraform
    timeout: 10m
  - argv: [terraform, apply, -input=false, tfplan]
    env: { TF_LOG: "" }
timeout: 30m
concurrency:
  group: terraform-prod
  on_new_event: supersede
retry: { attempts: 2, backoff: 30s }
"#,
        )
        .expect("valid");
        assert_eq!(p.name, "infra-apply");
        assert_eq!(p.triggers.len(), 2);
        assert!(p.has_manual_trigger());
        assert_eq!(p.steps[1].name, "step-2");
        assert_eq!(p.steps[0].timeout, Some(Duration::from_secs(600)));
        assert_eq!(p.timeout, Some(Duration::from_secs(1800)));
        assert_eq!(p.repo.workspace, WorkspaceMode::Fresh);
        assert_eq!(p.env, vec![("TF_IN_AUTOMATION".into(), "1".into())]);
        assert_eq!(p.concurrency_group, "terraform-prod");
        assert_eq!(p.on_new_event, OnNewEvent::Supersede);
        assert_eq!(
            p.retry,
            Retry {
                attempts: 2,
                backoff: Duration::from_secs(30)
            }
        );
        assert!(!p.allow_rollback);
        let defaults = parse("on: [{push: {}}]\nsteps: [{run: x}]\n").expect("valid");
        assert_eq!(defaults.concurrency_group, "infra");
        assert_eq!(defaults.on_new_event, OnNewEvent::Queue);
        assert_eq!(defaults.retry.attempts, 1);
    }

    #[test]
    fn name_defaults_to_file_stem() {
        let p = parse("on: [{push: {}}]\nsteps: [{run: 'true'}]\n").expect("valid");
        assert_eq!(p.name, "infra");
    }

    /// Each invalid pipeline and the located message it must produce.
    #[test]
    fn errors_name_file_line_column_and_key() {
        let cases = [
            (
                "on: [{push: {}}]\nsteps:\n  - run: x\n    bogus: 1\n",
                "pipelines/infra.yaml:4:5: unknown field `bogus`",
            ),
            (
                "on: [{push: {}}]\nsteps:\n  - run: x\n    timeout: ten minutes\n",
                "pipelines/infra.yaml:4:14: steps[0].timeout: invalid duration \"ten minutes\"",
            ),
            (
                "on: [{push: {}}]\nsteps:\n  - name: a\n",
                "pipelines/infra.yaml:3:11: steps[0]: needs run (a shell script) or argv",
            ),
            (
                "on: [{push: {}}]\nsteps:\n  - run: a\n    argv: [b]\n",
                "pipelines/infra.yaml:3:10: steps[0]: set run or argv, not both",
            ),
            (
                "on:\n  - push:\n      branches: [main, '[oops']\nsteps: [{run: x}]\n",
                "pipelines/infra.yaml:3:24: on[0].push.branches[1]: invalid glob \"[oops\"",
            ),
            (
                "on:\n  - push:\n      sources: [gitlub]\nsteps: [{run: x}]\n",
                "pipelines/infra.yaml:3:17: on[0].push.sources[0]: unknown source \"gitlub\" (configured: github)",
            ),
            (
                "on:\n  - pull_request: {}\nsteps: [{run: x}]\n",
                "pipelines/infra.yaml:2:5: unknown variant `pull_request`",
            ),
            (
                "on: [{push: {}}]\nsteps:\n  - run: x\n    timeout: [1]\n",
                "pipelines/infra.yaml:4:14: ",
            ),
            (
                "on: [{push: {}}]\nsteps:\n  - {name: a, run: x}\n  - {name: a, run: y}\n",
                "pipelines/infra.yaml:4:5: steps[1].name: \"a\" is already the name of steps[0]",
            ),
            (
                "on: [{push: {}}]\nsteps:\n  - {run: x, dir: ../etc}\n",
                "steps[0].dir: \"../etc\" must be a relative path inside the checkout",
            ),
            (
                "on: [{push: {}}]\nenv: {HOOKD_COMMIT: x}\nsteps: [{run: x}]\n",
                "pipelines/infra.yaml:2:21: env.HOOKD_COMMIT: HOOKD_* variables are set by hookd",
            ),
            (
                "on: [{push: {}}]\nrepo: {workspace: temp}\nsteps: [{run: x}]\n",
                "pipelines/infra.yaml:2:19: repo.workspace: \"temp\" is neither persistent nor fresh",
            ),
            ("on: []\nsteps: [{run: x}]\n", "pipelines/infra.yaml:1:5: on: at least one trigger"),
            (
                "on: [{manual: {}}, {push: {}}]\nsteps: [{run: x}]\n",
                "pipelines/infra.yaml:1:5: on[0].manual: push runs check out the webhook's clone URL, but a manual run has none; set repo.url",
            ),
            (
                "on: [{alert: {matchers: ['severity=~\"(\"']}}]\nsteps: [{run: x}]\n",
                "on[0].alert.matchers[0]: invalid regex",
            ),
            (
                "on: [{alert: {status: sometimes}}]\nsteps: [{run: x}]\n",
                "on[0].alert.status: \"sometimes\" is not one of firing, resolved, any",
            ),
            (
                "on: [{push: {}}]\nrepo: {token_file: /etc/t}\nsteps: [{run: x}]\n",
                "pipelines/infra.yaml:2:20: repo.token_file: needs repo.url",
            ),
            (
                "on: [{push: {}}]\nremediation: {cooldown: 10m}\nsteps: [{run: x}]\n",
                "pipelines/infra.yaml:1:5: remediation: applies to alert-triggered runs",
            ),
            (
                "on: [{alert: {}}]\nremediation: {max_runs: 0}\nsteps: [{run: x}]\n",
                "remediation.max_runs: must be at least 1",
            ),
            (
                "on: [{push: {}}]\nconcurrency: {on_new_event: replace}\nsteps: [{run: x}]\n",
                "pipelines/infra.yaml:2:29: concurrency.on_new_event: \"replace\" is not one of queue, supersede, cancel",
            ),
            (
                "on: [{push: {}}]\nretry: {attempts: 0}\nsteps: [{run: x}]\n",
                "pipelines/infra.yaml:2:19: retry.attempts: counts every try including the first",
            ),
            (
                "on: [{push: {}}]\nretry: {backoff: later}\nsteps: [{run: x}]\n",
                "pipelines/infra.yaml:2:18: retry.backoff: invalid duration \"later\"",
            ),
            ("steps: [{run: x}]\n", "missing field `on`"),
            ("name: 'a b'\non: [{push: {}}]\nsteps: [{run: x}]\n", "pipelines/infra.yaml:1:7: name: \"a b\" is not a valid pipeline name"),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.contains(expected),
                "for {text:?}:\n got: {err}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn all_errors_of_a_file_are_reported() {
        let err = parse(
            "on: [{push: {}}]\nsteps:\n  - {run: x, timeout: soon}\n  - {name: b}\ntimeout: never\n",
        )
        .expect_err("invalid");
        assert_eq!(err.lines().count(), 3, "{err}");
    }

    #[test]
    fn duplicate_names_across_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = "name: same\non: [{push: {}}]\nsteps: [{run: x}]\n";
        std::fs::write(dir.path().join("a.yaml"), body).expect("write");
        std::fs::write(dir.path().join("b.yml"), body).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not yaml").expect("write");
        let mut d = daemon();
        d.pipelines_dir = dir.path().to_path_buf();
        let err = load_pipelines(&d).expect_err("duplicate").to_string();
        assert!(
            err.contains("b.yml:1:7: name: pipeline name \"same\" is already used by"),
            "{err}"
        );
        assert!(err.contains("a.yaml"), "{err}");
    }
}
