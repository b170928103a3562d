//! Pipelines × events → which pipelines run, and for every other pipeline
//! the precise reason it does not. Pure and synchronous: the server uses it
//! on each delivery and `hookd explain` uses it offline, so both always agree.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{AlertStatusFilter, AlertTrigger, Pipeline, PushTrigger, Trigger};
use crate::event::{AlertEvent, AlertStatus, Event, PushEvent, RefKind};

/// One pipeline to run for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The run's path filter is decided after the fetch (`paths:` /
    /// `paths_ignore:` of the matching triggers).
    pub paths_pending: bool,
    /// Index into the pipelines given to [`match_events`].
    pub pipeline: usize,
    /// Index into the events given to [`match_events`].
    pub event: usize,
    /// Index of the trigger in the pipeline's `on:` that matched.
    pub trigger: usize,
}

/// A pipeline that does not run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    /// Pipeline name.
    pub pipeline: String,
    /// Why not, e.g. `branch "dev" matches none of branches [main]`.
    pub reason: String,
}

/// The matcher's answer for one delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// What runs, in pipeline order then event order.
    pub matches: Vec<Match>,
    /// What does not run, one entry per pipeline and event that did not match.
    pub skipped: Vec<Skip>,
}

/// Matches every event of a delivery from `source` against every pipeline.
pub fn match_events(source: &str, events: &[Event], pipelines: &[Arc<Pipeline>]) -> Outcome {
    let mut out = Outcome::default();
    for (pi, pipeline) in pipelines.iter().enumerate() {
        for (ei, event) in events.iter().enumerate() {
            match match_one(source, event, pipeline) {
                Ok(trigger) => out.matches.push(Match {
                    paths_pending: path_filters(source, event, pipeline).is_some(),
                    pipeline: pi,
                    event: ei,
                    trigger,
                }),
                Err(reason) => {
                    let reason = if events.len() > 1 {
                        format!("event {ei} ({}): {reason}", describe(event))
                    } else {
                        reason
                    };
                    out.skipped.push(Skip {
                        pipeline: pipeline.name.clone(),
                        reason,
                    });
                }
            }
        }
    }
    out
}

/// Which trigger of `pipeline` matches `event`, or why none does.
pub fn match_one(source: &str, event: &Event, pipeline: &Pipeline) -> Result<usize, String> {
    if let Event::Ignored(ignored) = event {
        return Err(ignored.reason.clone());
    }
    let mut reasons = Vec::with_capacity(pipeline.triggers.len());
    for (ti, trigger) in pipeline.triggers.iter().enumerate() {
        let verdict = match (trigger, event) {
            (Trigger::Push(t), Event::Push(p)) => match_push(source, t, p),
            (Trigger::Alert(t), Event::Alert(a)) => match_alert(source, t, a),
            (Trigger::Alert(_), other) => Err(format!("{} event, trigger is alert", other.kind())),
            (Trigger::Manual, Event::Manual(_)) => Ok(()),
            (Trigger::Manual, _) => {
                Err("manual trigger: only `hookd trigger` or the API starts it".to_string())
            }
            (Trigger::Push(_), other) => Err(format!("{} event, trigger is push", other.kind())),
        };
        match verdict {
            Ok(()) => return Ok(ti),
            Err(r) => reasons.push(r),
        }
    }
    if reasons.len() == 1 {
        Err(reasons.remove(0))
    } else {
        Err(reasons
            .iter()
            .enumerate()
            .map(|(i, r)| format!("on[{i}]: {r}"))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// The push triggers of `pipeline` that match `event`, when every one of them
/// filters on changed paths (the run then depends on the changed files);
/// `None` when some matching trigger has no path filter (it runs anyway), the
/// event is not a push, or it is a tag push (path filters do not apply).
pub fn path_filters<'p>(
    source: &str,
    event: &Event,
    pipeline: &'p Pipeline,
) -> Option<Vec<&'p PushTrigger>> {
    let Event::Push(push) = event else {
        return None;
    };
    if push.ref_kind == RefKind::Tag {
        return None;
    }
    let mut filters = Vec::new();
    for trigger in &pipeline.triggers {
        if let Trigger::Push(t) = trigger {
            if match_push(source, t, push).is_ok() {
                if !t.has_path_filter() {
                    return None;
                }
                filters.push(t.as_ref());
            }
        }
    }
    (!filters.is_empty()).then_some(filters)
}

fn match_push(source: &str, t: &PushTrigger, p: &PushEvent) -> Result<(), String> {
    if let Some(sources) = &t.sources {
        if !sources.iter().any(|s| s == source) {
            return Err(format!(
                "source {source:?} is not in sources [{}]",
                sources.join(", ")
            ));
        }
    }
    if p.is_deletion() {
        return Err(format!("{} was deleted; deletions never run", p.git_ref));
    }
    if let Some(repo) = &t.repository {
        if !repo.is_match(&p.repository) {
            return Err(format!(
                "repository {:?} does not match {:?}",
                p.repository,
                repo.as_str()
            ));
        }
    }
    let name = &p.ref_name;
    match (p.ref_kind, &t.branches, &t.tags) {
        (RefKind::Branch, Some(b), _) if !b.is_match(name) => Err(format!(
            "branch {name:?} matches none of branches {}",
            b.describe()
        )),
        (RefKind::Branch, None, Some(_)) => Err(format!(
            "branch {name:?} pushed, but the trigger filters only tags"
        )),
        (RefKind::Tag, _, Some(tags)) if !tags.is_match(name) => Err(format!(
            "tag {name:?} matches none of tags {}",
            tags.describe()
        )),
        (RefKind::Tag, Some(_), None) => Err(format!(
            "tag {name:?} pushed, but the trigger filters only branches"
        )),
        (RefKind::Other, _, _) => Err(format!("ref {:?} is neither a branch nor a tag", p.git_ref)),
        _ => Ok(()),
    }
}

fn match_alert(source: &str, t: &AlertTrigger, a: &AlertEvent) -> Result<(), String> {
    if let Some(sources) = &t.sources {
        if !sources.iter().any(|s| s == source) {
            return Err(format!(
                "source {source:?} is not in sources [{}]",
                sources.join(", ")
            ));
        }
    }
    let wanted = matches!(
        (t.status, a.status),
        (AlertStatusFilter::Any, _)
            | (AlertStatusFilter::Firing, AlertStatus::Firing)
            | (AlertStatusFilter::Resolved, AlertStatus::Resolved)
    );
    if !wanted {
        let want = match t.status {
            AlertStatusFilter::Firing => "firing",
            AlertStatusFilter::Resolved => "resolved",
            AlertStatusFilter::Any => "any",
        };
        return Err(format!(
            "alert {:?} is {}, the trigger wants {want}",
            a.name,
            a.status.as_str()
        ));
    }
    match t.matchers.iter().find(|m| !m.matches(&a.labels)) {
        None => Ok(()),
        Some(m) => Err(format!(
            "alert {:?}: matcher {m} does not hold ({} is {})",
            a.name,
            m.name,
            a.labels
                .get(&m.name)
                .map_or_else(|| "absent".to_string(), |v| format!("{v:?}"))
        )),
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Push(p) => format!("push to {}", p.git_ref),
        Event::Alert(a) => format!("alert {} {}", a.name, a.status.as_str()),
        other => other.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_pipeline, DaemonConfig};
    use crate::event::{IgnoredEvent, ZERO_SHA};
    use std::path::Path;

    fn pipeline(name: &str, on: &str) -> Arc<Pipeline> {
        let daemon = DaemonConfig::from_yaml(
            Path::new("hookd.yaml"),
            "sources:\n  github: {kind: github}\n  gh2: {kind: github}\n",
        )
        .expect("config");
        let text = format!(
            "name: {name}\non:\n{on}\nrepo: {{url: 'file:///srv/git/x'}}\nsteps: [{{run: 'true'}}]\n"
        );
        Arc::new(
            parse_pipeline(Path::new("p.yaml"), &text, &daemon).unwrap_or_else(|e| panic!("{e:?}")),
        )
    }

    fn push(repo: &str, git_ref: &str) -> Event {
        Event::Push(PushEvent::new(
            repo.into(),
            git_ref.into(),
            ZERO_SHA,
            "abc1",
            None,
            None,
        ))
    }

    fn check(on: &str, source: &str, event: Event, expected: Result<usize, &str>) {
        let p = pipeline("p", on);
        assert_eq!(
            match_one(source, &event, &p),
            expected.map_err(str::to_string),
            "on: {on}\nevent: {event:?}"
        );
    }

    #[test]
    fn push_filters_follow_the_contract() {
        let main_only = "  - push: {branches: [main]}";
        check(
            main_only,
            "github",
            push("acme/infra", "refs/heads/main"),
            Ok(0),
        );
        check(
            main_only,
            "github",
            push("acme/infra", "refs/heads/dev"),
            Err("branch \"dev\" matches none of branches [main]"),
        );
        check(
            main_only,
            "github",
            push("acme/infra", "refs/tags/v1"),
            Err("tag \"v1\" pushed, but the trigger filters only branches"),
        );
        let tags_only = "  - push: {tags: ['v*']}";
        check(
            tags_only,
            "github",
            push("acme/infra", "refs/tags/v1.2"),
            Ok(0),
        );
        check(
            tags_only,
            "github",
            push("acme/infra", "refs/heads/main"),
            Err("branch \"main\" pushed, but the trigger filters only tags"),
        );
        check(
            tags_only,
            "github",
            push("acme/infra", "refs/tags/release"),
            Err("tag \"release\" matches none of tags [v*]"),
        );
        let any = "  - push: {}";
        check(any, "github", push("acme/infra", "refs/heads/x/y"), Ok(0));
        check(any, "github", push("acme/infra", "refs/tags/v1"), Ok(0));
        check(
            any,
            "github",
            push("acme/infra", "refs/notes/commits"),
            Err("ref \"refs/notes/commits\" is neither a branch nor a tag"),
        );
        let repo = "  - push: {repository: 'acme/*'}";
        check(repo, "github", push("Acme/Infra", "refs/heads/main"), Ok(0));
        check(
            repo,
            "github",
            push("other/infra", "refs/heads/main"),
            Err("repository \"other/infra\" does not match \"acme/*\""),
        );
        let src = "  - push: {sources: [gh2]}";
        check(
            src,
            "github",
            push("a/b", "refs/heads/main"),
            Err("source \"github\" is not in sources [gh2]"),
        );
        check(src, "gh2", push("a/b", "refs/heads/main"), Ok(0));
    }

    #[test]
    fn deletions_never_match() {
        let deleted = Event::Push(PushEvent::new(
            "a/b".into(),
            "refs/heads/main".into(),
            "abc",
            ZERO_SHA,
            None,
            None,
        ));
        check(
            "  - push: {}",
            "github",
            deleted,
            Err("refs/heads/main was deleted; deletions never run"),
        );
    }

    #[test]
    fn several_triggers_explain_each() {
        check(
            "  - push: {branches: [main]}\n  - manual: {}",
            "github",
            push("a/b", "refs/heads/dev"),
            Err("on[0]: branch \"dev\" matches none of branches [main]; on[1]: manual trigger: only `hookd trigger` or the API starts it"),
        );
        check(
            "  - manual: {}\n  - push: {}",
            "github",
            push("a/b", "refs/heads/dev"),
            Ok(1),
        );
    }

    #[test]
    fn path_filters_are_pending_for_branches_only() {
        let p = pipeline(
            "tf",
            "  - push: {branches: [main], paths: ['terraform/**']}\n  - push: {tags: ['v*']}",
        );
        let filters = path_filters("github", &push("a/b", "refs/heads/main"), &p).expect("pending");
        assert_eq!(filters.len(), 1);
        let changed = |files: &[&str]| files.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        assert_eq!(
            filters[0].paths_match(&changed(&["docs/a.md", "terraform/main.tf"])),
            Some("terraform/main.tf")
        );
        assert_eq!(filters[0].paths_match(&changed(&["docs/a.md"])), None);
        assert!(
            path_filters("github", &push("a/b", "refs/tags/v1"), &p).is_none(),
            "tags ignore paths"
        );
        let ignore = pipeline("i", "  - push: {paths_ignore: ['**/*.md']}");
        let f = path_filters("github", &push("a/b", "refs/heads/x"), &ignore).expect("pending");
        assert_eq!(
            f[0].paths_match(&changed(&["README.md", "docs/x.md"])),
            None
        );
        assert_eq!(
            f[0].paths_match(&changed(&["README.md", "src/x.rs"])),
            Some("src/x.rs")
        );
        // One matching trigger without a path filter: the run does not depend on paths.
        let mixed = pipeline(
            "m",
            "  - push: {paths: ['a/**']}\n  - push: {branches: [main]}",
        );
        assert!(path_filters("github", &push("a/b", "refs/heads/main"), &mixed).is_none());
    }

    #[test]
    fn outcome_lists_matches_and_skips() {
        let pipelines = vec![
            pipeline("deploy", "  - push: {branches: [main]}"),
            pipeline("release", "  - push: {tags: ['v*']}"),
        ];
        let out = match_events("github", &[push("a/b", "refs/heads/main")], &pipelines);
        assert_eq!(
            out.matches,
            vec![Match {
                paths_pending: false,
                pipeline: 0,
                event: 0,
                trigger: 0
            }]
        );
        assert_eq!(out.skipped.len(), 1);
        assert_eq!(out.skipped[0].pipeline, "release");
        let ignored = Event::Ignored(IgnoredEvent {
            reason: "github event type \"issues\" starts no pipeline".into(),
        });
        let out = match_events("github", &[ignored], &pipelines);
        assert!(out.matches.is_empty());
        assert!(out.skipped.iter().all(|s| s.reason.contains("\"issues\"")));
    }
}
