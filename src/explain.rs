//! `hookd explain`: what the daemon would do with one payload, worked out
//! offline with the daemon's own code. The request is built as
//! `server::hooks` builds it (method POST, a loopback peer, the given headers
//! and the exact body bytes), the source authenticates and parses it, and
//! the matcher's `match_one` and `path_filters` say for every pipeline
//! whether it would run and, if not, the precise reason.
//!
//! Authentication runs only when headers were given: a payload file alone
//! carries no signature. A credential whose header (or query parameter) is
//! absent altogether is reported as not checked; one that is present and
//! fails is a failed authentication (the daemon would answer 401). Without
//! an event-type header, the source infers the type from the payload's shape
//! ([`Source::infer_event_type`]) and it is added to the request before
//! parsing, as the sender would have sent it.
//!
//! Invariants: no I/O here (the CLI reads the files and prints), and no
//! provider knowledge either: header names and payload shapes stay in
//! `source`.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::{DaemonConfig, Pipeline, PushTrigger, SourceConfig};
use crate::event::{Event, PushEvent, RefKind};
use crate::matcher::{match_one, path_filters};
use crate::source::{self, AuthError, EventTypeHint, Headers, ParseError, Request, Source};

/// Why a payload cannot be explained (the CLI then exits non-zero).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// No source of that name in the config.
    #[error("unknown source {name:?} (configured: {})", configured_list(.configured))]
    UnknownSource {
        /// The name asked for.
        name: String,
        /// The configured source names.
        configured: Vec<String>,
    },
    /// A `-H` argument that is not `Name: value`.
    #[error("header {0:?} is not of the form 'Name: value'")]
    BadHeader(String),
    /// The body is larger than the daemon accepts.
    #[error(
        "payload is {size} bytes, more than max_body_bytes ({limit}): the daemon would answer 413"
    )]
    TooLarge {
        /// The body's size.
        size: usize,
        /// The configured `max_body_bytes`.
        limit: usize,
    },
    /// No event-type header, and the payload's shape says nothing the source knows.
    #[error("cannot infer the event type of this {kind} payload: {why}; pass -H '{header}: TYPE'")]
    CannotInfer {
        /// The source's kind.
        kind: &'static str,
        /// The header that names the event type.
        header: &'static str,
        /// What the payload lacks.
        why: String,
    },
    /// The source cannot parse the payload (the daemon would answer 400).
    #[error("the daemon would refuse this payload as malformed (400){}", inferred_note(.inferred))]
    Parse {
        /// What is wrong with it.
        #[source]
        error: ParseError,
        /// The inferred event-type header it was parsed with, `Name: value`.
        inferred: Option<String>,
    },
}

fn configured_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn inferred_note(inferred: &Option<String>) -> String {
    inferred
        .as_ref()
        .map(|h| format!(" as {h} (inferred from the payload)"))
        .unwrap_or_default()
}

/// Whether the request's credentials were checked, and the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Authentication {
    /// Not checked: no headers were given, or none carrying a credential.
    NotChecked {
        /// Why not, e.g. `no headers given`.
        reason: String,
    },
    /// Every configured credential verified (or the source has none).
    Ok {
        /// What was accepted.
        reason: String,
    },
    /// A credential was given and does not verify: the daemon would answer 401.
    Failed {
        /// The source's verdict, e.g. `X-Hub-Signature-256 does not match …`.
        reason: String,
    },
}

impl Authentication {
    /// True when the daemon would refuse the request with 401.
    pub fn is_failed(&self) -> bool {
        matches!(self, Authentication::Failed { .. })
    }
}

/// The provider's event type and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventType {
    /// As the provider names it (`push`, `Tag Push Hook`, `repo:refs_changed`).
    pub name: String,
    /// The header that would carry it, when it was inferred from the payload
    /// because no header named it; `None` when a header gave it (or the kind
    /// needs none).
    pub inferred_header: Option<&'static str>,
}

/// One pipeline's verdict for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Pipeline name.
    pub pipeline: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// It would get a run.
    pub matched: bool,
    /// Index in the pipeline's `on:` of the trigger that matched.
    pub trigger: Option<usize>,
    /// When the run depends on the changed paths, decided after the fetch:
    /// the filters, e.g. `paths [terraform/**] minus paths_ignore [**/*.md]`.
    pub paths: Option<String>,
    /// Why it would not run (the matcher's reason).
    pub reason: Option<String>,
}

/// One normalized event and every pipeline's verdict on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainedEvent {
    /// The event as the source normalized it.
    pub event: Event,
    /// One verdict per pipeline, in load order.
    pub pipelines: Vec<Verdict>,
}

/// Everything `hookd explain` found out about one payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The source name.
    pub source: String,
    /// Its kind.
    pub kind: &'static str,
    /// The authentication verdict.
    pub authentication: Authentication,
    /// `None` when authentication failed: nothing was parsed.
    pub event_type: Option<EventType>,
    /// The provider's delivery id, when a header gave one.
    pub delivery_id: Option<String>,
    /// A connectivity check: the daemon answers 200 and runs nothing.
    pub ping: bool,
    /// The normalized events (empty when authentication failed).
    pub events: Vec<ExplainedEvent>,
}

impl Report {
    /// The verdicts that would start a run, with the index of their event.
    pub fn runs(&self) -> impl Iterator<Item = (usize, &Verdict)> {
        self.events
            .iter()
            .enumerate()
            .flat_map(|(i, e)| e.pipelines.iter().map(move |v| (i, v)))
            .filter(|(_, v)| v.matched)
    }
}

/// Parses a `-H` argument, `Name: value`, as the server hands headers to
/// sources: the name lower-cased, the value trimmed.
pub fn parse_header(arg: &str) -> Result<(String, String), ExplainError> {
    let bad = || ExplainError::BadHeader(arg.to_string());
    let (name, value) = arg.split_once(':').ok_or_else(bad)?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok((name.to_ascii_lowercase(), value.trim().to_string()))
}

/// The configured source `name`, or an error listing the configured ones.
pub fn source_config<'a>(
    daemon: &'a DaemonConfig,
    name: &str,
) -> Result<&'a SourceConfig, ExplainError> {
    daemon
        .sources
        .get(name)
        .ok_or_else(|| ExplainError::UnknownSource {
            name: name.to_string(),
            configured: daemon.sources.keys().cloned().collect(),
        })
}

/// Explains what the daemon configured by `daemon` would do with a POST of
/// `body` with `headers` (names lower-cased) to `/hooks/{source}`.
pub fn explain(
    daemon: &DaemonConfig,
    pipelines: &[Pipeline],
    source_name: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Report, ExplainError> {
    let config = source_config(daemon, source_name)?;
    if body.len() > daemon.max_body_bytes {
        return Err(ExplainError::TooLarge {
            size: body.len(),
            limit: daemon.max_body_bytes,
        });
    }
    let source = source::build(config);
    let kind = source.kind().as_str();
    // What server::hooks builds from an HTTP request, from a loopback peer.
    fn request<'a>(headers: &'a dyn Headers, body: &'a [u8]) -> Request<'a> {
        Request {
            method: "POST",
            headers,
            query: "",
            body,
            from_loopback: true,
        }
    }
    let authentication = authenticate(
        source.as_ref(),
        &request(&headers, body),
        config.credentials.is_empty(),
    );
    let mut report = Report {
        source: source_name.to_string(),
        kind,
        authentication,
        event_type: None,
        delivery_id: None,
        ping: false,
        events: Vec::new(),
    };
    if report.authentication.is_failed() {
        return Ok(report);
    }

    let hint = source.infer_event_type(&request(&headers, body));
    let mut headers = headers.to_vec();
    let inferred_header = match hint {
        EventTypeHint::Given => None,
        EventTypeHint::Inferred { header, event_type } => {
            headers.push((header.to_ascii_lowercase(), event_type));
            Some(header)
        }
        EventTypeHint::Unknown { header, why } => {
            return Err(ExplainError::CannotInfer { kind, header, why })
        }
    };
    let request = request(&headers, body);
    let parsed = source
        .parse(&request)
        .map_err(|error| ExplainError::Parse {
            error,
            inferred: inferred_header.and_then(|h| {
                let value = request.header(h)?;
                Some(format!("{h}: {value}"))
            }),
        })?;
    report.event_type = Some(EventType {
        name: parsed.event_type,
        inferred_header,
    });
    report.delivery_id = parsed.delivery_id;
    report.ping = parsed.is_ping;
    report.events = parsed
        .events
        .into_iter()
        .map(|event| ExplainedEvent {
            pipelines: pipelines
                .iter()
                .map(|p| verdict(source_name, &event, p))
                .collect(),
            event,
        })
        .collect();
    Ok(report)
}

/// The source's verdict on the request as given. A credential that is
/// absent altogether was not offered for checking; anything else that fails
/// is what the daemon would answer 401 to.
fn authenticate(source: &dyn Source, request: &Request, no_credentials: bool) -> Authentication {
    if request.headers.is_empty() {
        return Authentication::NotChecked {
            reason: "no headers given".to_string(),
        };
    }
    match source.authenticate(request) {
        // A payload file given without a content type is taken as JSON, as
        // forges and curl --json send it.
        Err(AuthError::BrowserSendable) if request.header("content-type").is_none() => {
            Authentication::Ok {
                reason: "the source has no credentials; the daemon accepts loopback senders only"
                    .to_string(),
            }
        }
        Ok(()) if no_credentials => Authentication::Ok {
            reason: "the source has no credentials; the daemon accepts loopback senders only"
                .to_string(),
        },
        Ok(()) => Authentication::Ok {
            reason: "every configured credential verifies".to_string(),
        },
        Err(AuthError::MissingHeader(h)) => Authentication::NotChecked {
            reason: format!("no {h} header given"),
        },
        Err(AuthError::MissingQueryParameter(p)) => Authentication::NotChecked {
            reason: format!("the {p} query parameter cannot be given to explain"),
        },
        Err(e) => Authentication::Failed {
            reason: e.to_string(),
        },
    }
}

/// One pipeline's verdict on one event: the matcher's, as the server gets it.
fn verdict(source: &str, event: &Event, pipeline: &Pipeline) -> Verdict {
    let (matched, trigger, paths, reason) = match match_one(source, event, pipeline) {
        Ok(trigger) => (
            true,
            Some(trigger),
            path_filters(source, event, pipeline).map(|f| describe_paths(&f)),
            None,
        ),
        Err(reason) => (false, None, None, Some(reason)),
    };
    Verdict {
        pipeline: pipeline.name.clone(),
        file: pipeline.file.clone(),
        matched,
        trigger,
        paths,
        reason,
    }
}

/// `paths [a/**] minus paths_ignore [**/*.md]`, one alternative per trigger.
fn describe_paths(filters: &[&PushTrigger]) -> String {
    filters
        .iter()
        .map(|t| match (&t.paths, &t.paths_ignore) {
            (Some(p), Some(i)) => {
                format!("paths {} minus paths_ignore {}", p.describe(), i.describe())
            }
            (Some(p), None) => format!("paths {}", p.describe()),
            (None, Some(i)) => format!("every path minus paths_ignore {}", i.describe()),
            (None, None) => "every path".to_string(),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The report as text, for people.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let line = |out: &mut String, label: &str, value: &str| {
        let _ = writeln!(out, "{:<16}{value}", format!("{label}:"));
    };
    line(
        &mut out,
        "source",
        &format!("{} (kind {})", report.source, report.kind),
    );
    let auth = match &report.authentication {
        Authentication::NotChecked { reason } => format!("not checked ({reason})"),
        Authentication::Ok { reason } => format!("ok ({reason})"),
        Authentication::Failed { reason } => {
            format!(
                "FAILED: {reason}\n{:16}the daemon would answer 401 and run nothing",
                ""
            )
        }
    };
    line(&mut out, "authentication", &auth);
    let Some(event_type) = &report.event_type else {
        return out;
    };
    let described = match event_type.inferred_header {
        Some(header) => format!(
            "{name} (inferred from the payload; pass -H '{header}: {name}' to set it)",
            name = event_type.name
        ),
        None => event_type.name.clone(),
    };
    line(&mut out, "event type", &described);
    line(
        &mut out,
        "delivery id",
        report.delivery_id.as_deref().unwrap_or("none"),
    );
    if report.ping {
        line(
            &mut out,
            "ping",
            "yes: the daemon answers 200 and runs nothing",
        );
    }
    let total = report.events.len();
    for (i, explained) in report.events.iter().enumerate() {
        let _ = writeln!(
            out,
            "\nevent {} of {total}: {}",
            i + 1,
            explained.event.kind()
        );
        render_event(&mut out, &explained.event);
        render_verdicts(&mut out, &explained.pipelines);
    }
    let runs: Vec<String> = report
        .runs()
        .map(|(i, v)| {
            let mut notes = Vec::new();
            if total > 1 {
                notes.push(format!("event {}", i + 1));
            }
            if v.paths.is_some() {
                notes.push("paths decided after fetch".to_string());
            }
            if notes.is_empty() {
                v.pipeline.clone()
            } else {
                format!("{} ({})", v.pipeline, notes.join(", "))
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "\nwould run: {}",
        if runs.is_empty() {
            "nothing".to_string()
        } else {
            runs.join(", ")
        }
    );
    out
}

fn render_event(out: &mut String, event: &Event) {
    let field = |out: &mut String, label: &str, value: &str| {
        let _ = writeln!(out, "  {:<13}{value}", format!("{label}:"));
    };
    match event {
        Event::Push(p) => {
            field(out, "repository", &p.repository);
            field(out, "ref", &describe_ref(p));
            field(
                out,
                "before",
                p.before.as_deref().unwrap_or("none (the ref is new)"),
            );
            field(
                out,
                "after",
                p.after.as_deref().unwrap_or("none (the ref was deleted)"),
            );
            field(out, "clone URL", p.clone_url.as_deref().unwrap_or("none"));
            field(out, "pusher", p.pusher.as_deref().unwrap_or("unknown"));
            field(out, "creation", yes_no(p.is_creation()));
            field(out, "deletion", yes_no(p.is_deletion()));
            field(out, "forced", yes_no(p.forced));
        }
        Event::Ignored(ignored) => field(out, "reason", &ignored.reason),
        other => field(
            out,
            "event",
            &serde_json::to_string(other).unwrap_or_else(|e| e.to_string()),
        ),
    }
}

fn describe_ref(p: &PushEvent) -> String {
    match p.ref_kind {
        RefKind::Branch => format!("{} (branch {})", p.git_ref, p.ref_name),
        RefKind::Tag => format!("{} (tag {})", p.git_ref, p.ref_name),
        RefKind::Other => format!("{} (neither a branch nor a tag)", p.git_ref),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn render_verdicts(out: &mut String, verdicts: &[Verdict]) {
    if verdicts.is_empty() {
        let _ = writeln!(out, "  pipelines:   none loaded");
        return;
    }
    let _ = writeln!(out, "  pipelines:");
    let width = verdicts
        .iter()
        .map(|v| v.pipeline.chars().count())
        .max()
        .unwrap_or(0);
    for v in verdicts {
        let _ = writeln!(
            out,
            "    {:<width$}  {}",
            v.pipeline,
            verdict_text(v),
            width = width
        );
    }
}

/// `matched (on[0])`, `matched (on[0]); paths: decided after fetch (…)` or
/// `not matched: <reason>`.
fn verdict_text(v: &Verdict) -> String {
    if !v.matched {
        return format!("not matched: {}", v.reason.as_deref().unwrap_or(""));
    }
    let mut text = format!("matched (on[{}])", v.trigger.unwrap_or(0));
    if let Some(paths) = &v.paths {
        let _ = write!(text, "; paths: decided after fetch ({paths})");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::config::{parse_pipeline, Secret};
    use crate::matcher::{match_events, PipelineSet};
    use crate::source::test_support::{fixture, fixture_count};

    /// One source of every kind, named after its fixture directory; the
    /// generic one maps Gitea's payload (there is no generic fixture).
    const CONFIG: &str = "\
sources:
  github: {kind: github}
  gitlab: {kind: gitlab}
  gitea: {kind: gitea}
  bitbucket-cloud: {kind: bitbucket-cloud}
  bitbucket-server: {kind: bitbucket-server}
  generic:
    kind: generic
    push: {repository: /repository/full_name, clone_url: /repository/clone_url, pusher: /pusher/login}
";

    fn daemon() -> DaemonConfig {
        DaemonConfig::from_yaml(Path::new("/etc/hookd/hookd.yaml"), CONFIG)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn pipeline(daemon: &DaemonConfig, name: &str, on: &str) -> Pipeline {
        let text = format!(
            "name: {name}\non:\n{on}\nrepo: {{url: 'file:///srv/git/x'}}\nsteps: [{{run: 'true'}}]\n"
        );
        parse_pipeline(Path::new(&format!("{name}.yaml")), &text, daemon)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    /// `name: matched (on[0])` / `name: not matched: …`, as the text shows it.
    fn verdict_lines(report: &Report) -> Vec<String> {
        report
            .events
            .iter()
            .flat_map(|e| &e.pipelines)
            .map(|v| format!("{}: {}", v.pipeline, verdict_text(v)))
            .collect()
    }

    /// Expected push: repository, ref, before, after, clone URL, pusher.
    type Push = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    struct Case {
        source: &'static str,
        dir: &'static str,
        file: &'static str,
        event_type: &'static str,
        inferred_header: Option<&'static str>,
        push: Push,
        /// What the pipelines below are made for.
        repository: &'static str,
        branch: &'static str,
        verdicts: [&'static str; 5],
    }

    /// For every kind, a real payload explains into its push event and the
    /// matcher's verdicts on five pipelines: one that matches, one failing
    /// on the branch, one on the repository, one filtering tags only, and one
    /// with a path filter, which is decided after the fetch.
    #[test]
    fn every_kind_explains_a_real_push() {
        let cases = [
            Case {
                source: "github",
                dir: "github",
                file: "push-branch-commits.json",
                event_type: "push",
                inferred_header: Some("X-GitHub-Event"),
                push: (
                    "binkkatal/sample_app",
                    "refs/heads/master",
                    Some("737d38c599c1b2991664dfc6155d6bf516fcce36"),
                    Some("fd489864e7642b48eaad6e3f155c10e46810ec72"),
                    Some("https://github.com/binkkatal/sample_app.git"),
                    Some("binkkatal"),
                ),
                repository: "binkkatal/*",
                branch: "master",
                verdicts: [
                    "match: matched (on[0])",
                    "branch: not matched: branch \"master\" matches none of branches [main, release/*]",
                    "repo: not matched: repository \"binkkatal/sample_app\" does not match \"acme/*\"",
                    "tags: not matched: branch \"master\" pushed, but the trigger filters only tags",
                    "paths: matched (on[0]); paths: decided after fetch (paths [terraform/**] minus paths_ignore [**/*.md])",
                ],
            },
            Case {
                source: "gitlab",
                dir: "gitlab",
                file: "push-hook.json",
                event_type: "Push Hook",
                inferred_header: Some("X-Gitlab-Event"),
                push: (
                    "gitlab-org/hello-world",
                    "refs/heads/master",
                    Some("9217710ce8c7e1eae7a5d1c45f6e43e1c769f866"),
                    Some("2adc9465c4edfc33834e173fe89436a7cb899a1d"),
                    Some("https://gitlab.com/gitlab-org/hello-world.git"),
                    Some("sytses"),
                ),
                repository: "GitLab-Org/*",
                branch: "master",
                verdicts: [
                    "match: matched (on[0])",
                    "branch: not matched: branch \"master\" matches none of branches [main, release/*]",
                    "repo: not matched: repository \"gitlab-org/hello-world\" does not match \"acme/*\"",
                    "tags: not matched: branch \"master\" pushed, but the trigger filters only tags",
                    "paths: matched (on[0]); paths: decided after fetch (paths [terraform/**] minus paths_ignore [**/*.md])",
                ],
            },
            Case {
                source: "gitea",
                dir: "gitea",
                file: "push.json",
                event_type: "push",
                inferred_header: Some("X-Gitea-Event"),
                push: (
                    "gogits/hello-world",
                    "refs/heads/master",
                    Some("9836a96a253cce25d17988fcf41b8c4205cf779f"),
                    Some("4522cbcefc20728a5b72b3a86af35e608622c514"),
                    Some("http://try.gitea.io/gogits/hello-world.git"),
                    Some("unknwon"),
                ),
                repository: "gogits/hello-world",
                branch: "master",
                verdicts: [
                    "match: matched (on[0])",
                    "branch: not matched: branch \"master\" matches none of branches [main, release/*]",
                    "repo: not matched: repository \"gogits/hello-world\" does not match \"acme/*\"",
                    "tags: not matched: branch \"master\" pushed, but the trigger filters only tags",
                    "paths: matched (on[0]); paths: decided after fetch (paths [terraform/**] minus paths_ignore [**/*.md])",
                ],
            },
            Case {
                source: "bitbucket-cloud",
                dir: "bitbucket-cloud",
                file: "repo-push.json",
                event_type: "repo:push",
                inferred_header: Some("X-Event-Key"),
                push: (
                    "team_name/repo_name",
                    "refs/heads/name-of-branch",
                    Some("1e65c05c1d5171631d92438a13901ca7dae9618c"),
                    Some("709d658dc5b6d6afcd46049c2f332ee3f515a67d"),
                    Some("https://api.bitbucket.org/bitbucket/bitbucket.git"),
                    Some("emmap1"),
                ),
                repository: "team_name/*",
                branch: "name-of-*",
                verdicts: [
                    "match: matched (on[0])",
                    "branch: not matched: branch \"name-of-branch\" matches none of branches [main, release/*]",
                    "repo: not matched: repository \"team_name/repo_name\" does not match \"acme/*\"",
                    "tags: not matched: branch \"name-of-branch\" pushed, but the trigger filters only tags",
                    "paths: matched (on[0]); paths: decided after fetch (paths [terraform/**] minus paths_ignore [**/*.md])",
                ],
            },
            Case {
                source: "bitbucket-server",
                dir: "bitbucket-server",
                file: "repo-refs_changed-update.json",
                event_type: "repo:refs_changed",
                inferred_header: Some("X-Event-Key"),
                push: (
                    "PRJ/my-repo",
                    "refs/heads/master",
                    Some("5c64a07cd6c0f21b753bf261ef059c7e7633c50a"),
                    Some("823b2230a56056231c9425d63758fa87078a66b4"),
                    None,
                    Some("jcitizen"),
                ),
                repository: "prj/my-repo",
                branch: "master",
                verdicts: [
                    "match: matched (on[0])",
                    "branch: not matched: branch \"master\" matches none of branches [main, release/*]",
                    "repo: not matched: repository \"PRJ/my-repo\" does not match \"acme/*\"",
                    "tags: not matched: branch \"master\" pushed, but the trigger filters only tags",
                    "paths: matched (on[0]); paths: decided after fetch (paths [terraform/**] minus paths_ignore [**/*.md])",
                ],
            },
            Case {
                source: "generic",
                dir: "gitea",
                file: "push.json",
                event_type: "push",
                inferred_header: None,
                push: (
                    "gogits/hello-world",
                    "refs/heads/master",
                    Some("9836a96a253cce25d17988fcf41b8c4205cf779f"),
                    Some("4522cbcefc20728a5b72b3a86af35e608622c514"),
                    Some("http://try.gitea.io/gogits/hello-world.git"),
                    Some("unknwon"),
                ),
                repository: "gogits/*",
                branch: "master",
                verdicts: [
                    "match: matched (on[0])",
                    "branch: not matched: branch \"master\" matches none of branches [main, release/*]",
                    "repo: not matched: repository \"gogits/hello-world\" does not match \"acme/*\"",
                    "tags: not matched: branch \"master\" pushed, but the trigger filters only tags",
                    "paths: matched (on[0]); paths: decided after fetch (paths [terraform/**] minus paths_ignore [**/*.md])",
                ],
            },
        ];
        let daemon = daemon();
        for case in cases {
            let what = format!("{} {}/{}", case.source, case.dir, case.file);
            let pipelines = [
                pipeline(
                    &daemon,
                    "match",
                    &format!(
                        "  - push: {{repository: '{}', branches: ['{}']}}",
                        case.repository, case.branch
                    ),
                ),
                pipeline(&daemon, "branch", "  - push: {branches: [main, 'release/*']}"),
                pipeline(&daemon, "repo", "  - push: {repository: 'acme/*'}"),
                pipeline(&daemon, "tags", "  - push: {tags: ['v*']}"),
                pipeline(
                    &daemon,
                    "paths",
                    &format!(
                        "  - push: {{branches: ['{}'], paths: ['terraform/**'], paths_ignore: ['**/*.md']}}",
                        case.branch
                    ),
                ),
            ];
            let body = fixture(case.dir, case.file);
            let report = explain(&daemon, &pipelines, case.source, &[], &body)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(report.kind, case.source, "{what}");
            assert_eq!(
                report.authentication,
                Authentication::NotChecked {
                    reason: "no headers given".into()
                },
                "{what}"
            );
            assert_eq!(
                report.event_type,
                Some(EventType {
                    name: case.event_type.into(),
                    inferred_header: case.inferred_header,
                }),
                "{what}"
            );
            assert_eq!(report.events.len(), 1, "{what}");
            let Event::Push(p) = &report.events[0].event else {
                panic!("{what}: not a push: {:?}", report.events[0].event);
            };
            let (repository, git_ref, before, after, clone_url, pusher) = case.push;
            assert_eq!(p.repository, repository, "{what}");
            assert_eq!(p.git_ref, git_ref, "{what}");
            assert_eq!(p.before.as_deref(), before, "{what}");
            assert_eq!(p.after.as_deref(), after, "{what}");
            assert_eq!(p.clone_url.as_deref(), clone_url, "{what}");
            assert_eq!(p.pusher.as_deref(), pusher, "{what}");
            assert_eq!(verdict_lines(&report), case.verdicts, "{what}");
            let runs: Vec<&str> = report.runs().map(|(_, v)| v.pipeline.as_str()).collect();
            assert_eq!(runs, ["match", "paths"], "{what}");
        }
    }

    /// Every fixture of every kind, sent without its event-type header,
    /// explains with the type its sender would have named.
    #[test]
    fn the_event_type_is_inferred_for_every_fixture() {
        // (kind, the header that names the type, [(fixture, inferred type)])
        type Fixtures = &'static [(&'static str, &'static str)];
        let kinds: &[(&str, &str, Fixtures)] = &[
            (
                "github",
                "X-GitHub-Event",
                &[
                    ("ping.json", "ping"),
                    ("ping-github-app.json", "ping"),
                    ("pull_request-opened.json", "pull_request"),
                    ("push-branch-commits.json", "push"),
                    ("push-branch-create.json", "push"),
                    ("push-branch-delete.json", "push"),
                    ("push-tag-create.json", "push"),
                    ("push-tag-create-with-base-ref.json", "push"),
                    ("push-tag-delete.json", "push"),
                ],
            ),
            (
                "gitlab",
                "X-Gitlab-Event",
                &[
                    ("push-hook.json", "Push Hook"),
                    ("push-hook.docs.json", "Push Hook"),
                    ("push-hook-branch-create.json", "Push Hook"),
                    ("push-hook-branch-delete.json", "Push Hook"),
                    ("tag-push-hook-create.json", "Tag Push Hook"),
                    ("tag-push-hook-delete.json", "Tag Push Hook"),
                    ("tag-push-hook.docs.json", "Tag Push Hook"),
                ],
            ),
            (
                "gitea",
                "X-Gitea-Event",
                &[
                    ("push.json", "push"),
                    ("push.docs.json", "push"),
                    ("push-branch-create.json", "push"),
                ],
            ),
            (
                "bitbucket-cloud",
                "X-Event-Key",
                &[
                    ("repo-push.json", "repo:push"),
                    ("repo-push-go-scm.json", "repo:push"),
                    ("repo-push-branch-create.json", "repo:push"),
                    ("repo-push-branch-delete.json", "repo:push"),
                    ("repo-push-tag-create.json", "repo:push"),
                    ("repo-push-tag-delete.json", "repo:push"),
                ],
            ),
            (
                "bitbucket-server",
                "X-Event-Key",
                &[
                    ("repo-refs_changed-update.json", "repo:refs_changed"),
                    ("repo-refs_changed-update-v5.json", "repo:refs_changed"),
                    ("repo-refs_changed-branch-create.json", "repo:refs_changed"),
                    ("repo-refs_changed-branch-delete.json", "repo:refs_changed"),
                    (
                        "repo-refs_changed-branch-delete-go-playground.json",
                        "repo:refs_changed",
                    ),
                    ("repo-refs_changed-tag-create.json", "repo:refs_changed"),
                    ("repo-refs_changed-tag-delete.json", "repo:refs_changed"),
                ],
            ),
        ];
        for (kind, _, files) in kinds {
            assert_eq!(
                files.len(),
                fixture_count(kind),
                "a {kind} fixture has no expected event type here"
            );
        }
        let cases = kinds.iter().flat_map(|(kind, header, files)| {
            files
                .iter()
                .map(move |(file, event_type)| (kind, file, header, event_type))
        });
        let daemon = daemon();
        for (kind, file, header, event_type) in cases {
            let body = fixture(kind, file);
            let source = source::build(&daemon.sources[*kind]);
            let request = Request {
                method: "POST",
                headers: &[],
                query: "",
                body: &body,
                from_loopback: true,
            };
            assert_eq!(
                source.infer_event_type(&request),
                EventTypeHint::Inferred {
                    header,
                    event_type: event_type.to_string()
                },
                "{kind}/{file}"
            );
            // ... and the request then parses as the daemon would parse it.
            let report = explain(&daemon, &[], kind, &[], &body)
                .unwrap_or_else(|e| panic!("{kind}/{file}: {e}"));
            assert_eq!(
                report.event_type,
                Some(EventType {
                    name: event_type.to_string(),
                    inferred_header: Some(header),
                }),
                "{kind}/{file}"
            );
            assert!(!report.events.is_empty(), "{kind}/{file}");
        }
    }

    #[test]
    fn payloads_of_no_known_shape_say_which_header_to_pass() {
        let alerts = fixture("alertmanager", "captured-0.25-firing.json");
        let github_push = fixture("github", "push-branch-commits.json");
        let gitlab_push = fixture("gitlab", "push-hook.json");
        let cloud_push = fixture("bitbucket-cloud", "repo-push.json");
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "github",
                &alerts,
                "cannot infer the event type of this github payload: it has none of the shapes of ping (zen, hook_id), pull_request (pull_request) or push (ref, before, after, repository); pass -H 'X-GitHub-Event: TYPE'",
            ),
            (
                "github",
                b"{not json",
                "cannot infer the event type of this github payload: body is not valid JSON: key must be a string at line 1 column 2; pass -H 'X-GitHub-Event: TYPE'",
            ),
            (
                "gitlab",
                &github_push,
                "cannot infer the event type of this gitlab payload: it has no object_kind field; pass -H 'X-Gitlab-Event: TYPE'",
            ),
            (
                "gitlab",
                br#"{"object_kind": "merge_request"}"#,
                "cannot infer the event type of this gitlab payload: its object_kind is \"merge_request\"; only push and tag_push are inferred; pass -H 'X-Gitlab-Event: TYPE'",
            ),
            (
                "gitea",
                &cloud_push,
                "cannot infer the event type of this gitea payload: it lacks a push's fields (ref, before, after, repository); pass -H 'X-Gitea-Event: TYPE'",
            ),
            (
                "bitbucket-cloud",
                &gitlab_push,
                "cannot infer the event type of this bitbucket-cloud payload: it has no push.changes list; pass -H 'X-Event-Key: TYPE'",
            ),
            (
                "bitbucket-server",
                &cloud_push,
                "cannot infer the event type of this bitbucket-server payload: it has no eventKey field; pass -H 'X-Event-Key: TYPE'",
            ),
        ];
        let daemon = daemon();
        for (source, body, expected) in cases {
            let err = explain(&daemon, &[], source, &[], body).expect_err(source);
            assert!(matches!(err, ExplainError::CannotInfer { .. }), "{err:?}");
            assert_eq!(err.to_string(), *expected);
        }
    }

    #[test]
    fn a_given_event_type_is_not_second_guessed() {
        let daemon = daemon();
        let body = fixture("github", "push-branch-commits.json");
        // The header wins over the payload's shape: a push sent as `issues` runs nothing.
        let h = headers(&[("X-GitHub-Event", "issues"), ("X-GitHub-Delivery", "d-1")]);
        let report = explain(&daemon, &[], "github", &h, &body).expect("explains");
        assert_eq!(
            report.event_type,
            Some(EventType {
                name: "issues".into(),
                inferred_header: None
            })
        );
        assert_eq!(report.delivery_id.as_deref(), Some("d-1"));
        assert!(matches!(&report.events[0].event, Event::Ignored(_)));
        // Gitea's Forgejo header counts as the event header too.
        let body = fixture("gitea", "push.json");
        let source = source::build(&daemon.sources["gitea"]);
        let h = headers(&[("X-Forgejo-Event", "push")]);
        let request = Request {
            method: "POST",
            headers: &h,
            query: "",
            body: &body,
            from_loopback: true,
        };
        assert_eq!(source.infer_event_type(&request), EventTypeHint::Given);
        // The generic kind needs no event type.
        let source = source::build(&daemon.sources["generic"]);
        let request = Request {
            headers: &[],
            ..request
        };
        assert_eq!(source.infer_event_type(&request), EventTypeHint::Given);
    }

    /// Authentication runs only when headers are given; a credential that
    /// was not given is not checked, one that was and fails is a failure.
    #[test]
    fn authentication_is_checked_only_when_headers_are_given() {
        let mut daemon = daemon();
        let secret = "It's a Secret to Everybody";
        if let Some(github) = daemon.sources.get_mut("github") {
            github.credentials.hmac_secret = Some(Secret::new(secret));
        }
        if let Some(gitlab) = daemon.sources.get_mut("gitlab") {
            gitlab.credentials.token = Some(Secret::new("gl-token"));
        }
        let pipelines = [pipeline(&daemon, "any", "  - push: {}")];
        let github_push = fixture("github", "push-branch-commits.json");
        let gitlab_push = fixture("gitlab", "push-hook.json");
        let gitea_push = fixture("gitea", "push.json");
        let signature = format!(
            "sha256={}",
            crate::source::hmac_sha256_hex(secret.as_bytes(), &github_push)
        );
        let wrong = format!("sha256={}", "0".repeat(64));
        let not_checked = |reason: &str| Authentication::NotChecked {
            reason: reason.into(),
        };
        let failed = |reason: &str| Authentication::Failed {
            reason: reason.into(),
        };
        let ok = |reason: &str| Authentication::Ok {
            reason: reason.into(),
        };
        // (source, body, headers, verdict)
        type AuthCase<'a> = (&'a str, &'a [u8], Vec<(String, String)>, Authentication);
        let cases: Vec<AuthCase> = vec![
            (
                "github",
                &github_push,
                vec![],
                not_checked("no headers given"),
            ),
            (
                "github",
                &github_push,
                headers(&[("X-Hub-Signature-256", &signature)]),
                ok("every configured credential verifies"),
            ),
            (
                "github",
                &github_push,
                headers(&[("X-Hub-Signature-256", &wrong)]),
                failed("X-Hub-Signature-256 does not match the body and the configured secret"),
            ),
            (
                "github",
                &github_push,
                headers(&[("X-GitHub-Event", "push")]),
                not_checked("no X-Hub-Signature-256 header given"),
            ),
            (
                "gitlab",
                &gitlab_push,
                headers(&[("X-Gitlab-Token", "not-it")]),
                failed("X-Gitlab-Token does not match the configured token"),
            ),
            (
                "gitlab",
                &gitlab_push,
                headers(&[("X-Gitlab-Token", "gl-token")]),
                ok("every configured credential verifies"),
            ),
            (
                "gitea",
                &gitea_push,
                headers(&[("X-Gitea-Delivery", "d-2")]),
                ok("the source has no credentials; the daemon accepts loopback senders only"),
            ),
        ];
        for (source, body, h, expected) in cases {
            let report = explain(&daemon, &pipelines, source, &h, body)
                .unwrap_or_else(|e| panic!("{source} {h:?}: {e}"));
            assert_eq!(report.authentication, expected, "{source} {h:?}");
            if expected.is_failed() {
                // The daemon would answer 401: nothing is parsed or matched.
                assert_eq!(report.event_type, None);
                assert!(report.events.is_empty());
                assert!(render_text(&report).contains("the daemon would answer 401"));
            } else {
                assert_eq!(report.runs().count(), 1, "{source} {h:?}");
            }
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let mut daemon = daemon();
        let err = explain(&daemon, &[], "nope", &[], b"{}").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown source \"nope\" (configured: bitbucket-cloud, bitbucket-server, generic, gitea, github, gitlab)"
        );
        // A GitLab push has a GitHub push's top-level fields, but not its repository.
        let err = explain(
            &daemon,
            &[],
            "github",
            &[],
            &fixture("gitlab", "push-hook.json"),
        )
        .expect_err("malformed");
        assert_eq!(
            err,
            ExplainError::Parse {
                error: ParseError::Field {
                    field: "/repository/full_name".into(),
                    reason: "missing".into()
                },
                inferred: Some("X-GitHub-Event: push".into()),
            }
        );
        assert_eq!(
            err.to_string(),
            "the daemon would refuse this payload as malformed (400) as X-GitHub-Event: push (inferred from the payload)"
        );
        daemon.max_body_bytes = 10;
        assert_eq!(
            explain(&daemon, &[], "github", &[], b"{\"zen\": \"too long\"}")
                .expect_err("too large")
                .to_string(),
            "payload is 19 bytes, more than max_body_bytes (10): the daemon would answer 413"
        );
    }

    #[test]
    fn header_arguments_are_name_colon_value() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("X-GitHub-Event: push", Some(("x-github-event", "push"))),
            ("X-GitHub-Event:push", Some(("x-github-event", "push"))),
            (
                "  X-Event-Key :  repo:push ",
                Some(("x-event-key", "repo:push")),
            ),
            (
                "Authorization: Basic dTpw",
                Some(("authorization", "Basic dTpw")),
            ),
            ("X-Empty:", Some(("x-empty", ""))),
            ("X-GitHub-Event push", None),
            (": push", None),
            ("X GitHub: push", None),
        ];
        for (arg, expected) in cases {
            let got = parse_header(arg);
            match expected {
                Some((k, v)) => assert_eq!(got, Ok((k.to_string(), v.to_string())), "{arg:?}"),
                None => assert_eq!(
                    got,
                    Err(ExplainError::BadHeader(arg.to_string())),
                    "{arg:?}"
                ),
            }
        }
    }

    /// Explain's verdicts are the server's: the same matches (trigger and
    /// pending path filter) and the same skip reasons as `match_events`,
    /// for every fixture of every kind.
    #[test]
    fn verdicts_agree_with_match_events_for_every_fixture() {
        let daemon = daemon();
        let pipelines = vec![
            pipeline(&daemon, "any", "  - push: {}"),
            pipeline(&daemon, "main", "  - push: {branches: [main, master]}"),
            pipeline(&daemon, "tags", "  - push: {tags: ['v*']}"),
            pipeline(&daemon, "docs", "  - push: {paths_ignore: ['**/*.md']}"),
            pipeline(
                &daemon,
                "mixed",
                "  - manual: {}\n  - push: {repository: '*/hello-world'}",
            ),
            pipeline(&daemon, "gitlab-only", "  - push: {sources: [gitlab]}"),
        ];
        let shared = PipelineSet::new(pipelines.iter().cloned().map(Arc::new).collect());
        for kind in [
            "github",
            "gitlab",
            "gitea",
            "bitbucket-cloud",
            "bitbucket-server",
        ] {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures")
                .join(kind);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .expect("fixtures")
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            for file in files {
                let report = explain(&daemon, &pipelines, kind, &[], &fixture(kind, &file))
                    .unwrap_or_else(|e| panic!("{kind}/{file}: {e}"));
                let events: Vec<Event> = report.events.iter().map(|e| e.event.clone()).collect();
                let outcome = match_events(kind, &events, &shared);
                let mut matches = Vec::new();
                let mut skipped = outcome.skipped().map(|s| s.to_skip());
                for (pi, p) in pipelines.iter().enumerate() {
                    for (ei, e) in report.events.iter().enumerate() {
                        let v = &e.pipelines[pi];
                        assert_eq!(v.pipeline, p.name);
                        if v.matched {
                            matches.push((pi, ei, v.trigger, v.paths.is_some()));
                        } else {
                            let skip = skipped.next().expect("a skip per unmatched verdict");
                            assert_eq!(skip.pipeline, p.name, "{kind}/{file}");
                            assert_eq!(
                                Some(skip.reason.as_str()),
                                v.reason.as_deref(),
                                "{kind}/{file}"
                            );
                        }
                    }
                }
                let expected: Vec<_> = outcome
                    .matches
                    .iter()
                    .map(|m| (m.pipeline, m.event, Some(m.trigger), m.paths_pending))
                    .collect();
                assert_eq!(matches, expected, "{kind}/{file}");
                assert!(skipped.next().is_none(), "{kind}/{file}");
            }
        }
    }

    /// The text output, in full, for a GitHub push (the README shows it too).
    #[test]
    fn text_output() {
        let daemon = daemon();
        let pipelines = [
            pipeline(
                &daemon,
                "infra-apply",
                "  - push: {repository: 'binkkatal/*', branches: [master]}",
            ),
            pipeline(
                &daemon,
                "docs",
                "  - push: {branches: [master], paths: ['docs/**'], paths_ignore: ['**/*.png']}",
            ),
            pipeline(
                &daemon,
                "release",
                "  - push: {tags: ['v*']}\n  - manual: {}",
            ),
            pipeline(&daemon, "staging", "  - push: {repository: acme/infra}"),
        ];
        let body = fixture("github", "push-branch-commits.json");
        let report = explain(&daemon, &pipelines, "github", &[], &body).expect("explains");
        let expected = r#"source:         github (kind github)
authentication: not checked (no headers given)
event type:     push (inferred from the payload; pass -H 'X-GitHub-Event: push' to set it)
delivery id:    none

event 1 of 1: push
  repository:  binkkatal/sample_app
  ref:         refs/heads/master (branch master)
  before:      737d38c599c1b2991664dfc6155d6bf516fcce36
  after:       fd489864e7642b48eaad6e3f155c10e46810ec72
  clone URL:   https://github.com/binkkatal/sample_app.git
  pusher:      binkkatal
  creation:    no
  deletion:    no
  forced:      no
  pipelines:
    infra-apply  matched (on[0])
    docs         matched (on[0]); paths: decided after fetch (paths [docs/**] minus paths_ignore [**/*.png])
    release      not matched: on[0]: branch "master" pushed, but the trigger filters only tags; on[1]: manual trigger: only `hookd trigger` or the API starts it
    staging      not matched: repository "binkkatal/sample_app" does not match "acme/infra"

would run: infra-apply, docs (paths decided after fetch)
"#;
        assert_eq!(render_text(&report), expected);
    }

    /// A delivery with several ref changes: one block per event, and the
    /// summary says which event each run is for.
    #[test]
    fn several_events_are_explained_one_by_one() {
        let daemon = daemon();
        let mut json: serde_json::Value = serde_json::from_slice(&fixture(
            "bitbucket-server",
            "repo-refs_changed-update.json",
        ))
        .expect("json");
        let mut tag = json["changes"][0].clone();
        tag["ref"]["id"] = "refs/tags/v1.0".into();
        tag["refId"] = "refs/tags/v1.0".into();
        if let Some(changes) = json["changes"].as_array_mut() {
            changes.push(tag);
        }
        let body = serde_json::to_vec(&json).expect("json");
        let pipelines = [pipeline(&daemon, "release", "  - push: {tags: ['v*']}")];
        let report =
            explain(&daemon, &pipelines, "bitbucket-server", &[], &body).expect("explains");
        assert_eq!(
            verdict_lines(&report),
            [
                "release: not matched: branch \"master\" pushed, but the trigger filters only tags",
                "release: matched (on[0])",
            ]
        );
        let text = render_text(&report);
        assert!(text.contains("\nevent 1 of 2: push\n"), "{text}");
        assert!(
            text.contains("  ref:         refs/tags/v1.0 (tag v1.0)\n"),
            "{text}"
        );
        assert!(text.ends_with("\nwould run: release (event 2)\n"), "{text}");
    }

    /// Pings and unsupported event types run nothing; the reason says why.
    #[test]
    fn pings_run_nothing() {
        let daemon = daemon();
        let pipelines = [pipeline(&daemon, "any", "  - push: {}")];
        let report = explain(
            &daemon,
            &pipelines,
            "github",
            &[],
            &fixture("github", "ping.json"),
        )
        .expect("explains");
        assert!(report.ping);
        let text = render_text(&report);
        assert!(
            text.contains("ping:           yes: the daemon answers 200 and runs nothing\n"),
            "{text}"
        );
        assert!(
            text.contains("  reason:      ping: GitHub checks that the hook is reachable\n"),
            "{text}"
        );
        assert!(
            text.contains("    any  not matched: ping: GitHub checks that the hook is reachable\n"),
            "{text}"
        );
        assert!(text.ends_with("\nwould run: nothing\n"), "{text}");
    }

    #[test]
    fn json_output_carries_every_verdict() {
        let daemon = daemon();
        let pipelines = [
            pipeline(&daemon, "main", "  - push: {branches: [main]}"),
            pipeline(&daemon, "docs", "  - push: {paths: ['docs/**']}"),
        ];
        let body = fixture("gitea", "push-branch-create.json");
        let report = explain(&daemon, &pipelines, "gitea", &[], &body).expect("explains");
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["authentication"]["status"], "not_checked");
        assert_eq!(json["event_type"]["name"], "push");
        assert_eq!(json["event_type"]["inferred_header"], "X-Gitea-Event");
        assert_eq!(json["events"][0]["event"]["type"], "push");
        assert_eq!(
            json["events"][0]["event"]["before"],
            serde_json::Value::Null
        );
        let verdicts = &json["events"][0]["pipelines"];
        assert_eq!(verdicts[0]["pipeline"], "main");
        assert_eq!(verdicts[0]["matched"], false);
        assert_eq!(
            verdicts[0]["reason"],
            "branch \"master\" matches none of branches [main]"
        );
        assert_eq!(verdicts[1]["matched"], true);
        assert_eq!(verdicts[1]["trigger"], 0);
        assert_eq!(verdicts[1]["paths"], "paths [docs/**]");
    }
}
