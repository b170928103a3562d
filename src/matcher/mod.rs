//! Pipelines × events → which pipelines run, and for every other pipeline
//! the precise reason it does not. Pure and synchronous: the server uses it
//! on each delivery and `hookd explain` uses it offline, so both always agree.
//!
//! The cost of [`match_events`] follows the candidates, not the pipelines:
//! the [`PipelineSet`] built at load time names, per event, the triggers
//! worth evaluating (for a push, those whose `repository:` glob matches and
//! those without one; see `matcher/index.rs`). Every other trigger fails
//! for a reason that follows from what the index found, so its skip is not
//! written out: the [`Outcome`] keeps, per event, the index's answer and
//! the miss (a small code) of each evaluated trigger, and a skip's text is
//! written by [`Reason`] when it is shown or stored ([`SkipList`] for the
//! store and the 202 answer). [`match_one`] is the same evaluation for one
//! pipeline, without the index (`hookd explain`).
//!
//! Invariant: an indexed outcome is exactly what evaluating every trigger
//! in order gives — the same matches and the same reason texts (tested
//! against the pre-index matcher on generated pipelines and events).

mod index;
#[cfg(test)]
mod reference;
mod skip;

use std::sync::Arc;

pub use index::{IndexError, PipelineSet};
pub(crate) use skip::Miss;
pub use skip::{Reason, Skip, SkipIter, SkipList, Skipped};

use index::Bits;
use skip::{Matched, Misses};

use crate::config::{AlertStatusFilter, AlertTrigger, Pattern, Pipeline, PushTrigger, Trigger};
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

/// What the matcher found out about one event, beyond its matches: enough
/// to write the reason of every pipeline that does not run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EventFacts {
    /// For a push: which repository patterns of the index matched.
    repos: Option<Bits>,
    /// The miss of every evaluated trigger that failed, by trigger id, ascending.
    misses: Vec<(u32, Miss)>,
}

impl EventFacts {
    /// The miss recorded for trigger `tid`, if it was evaluated.
    fn stored(&self, tid: u32) -> Option<Miss> {
        self.misses
            .binary_search_by_key(&tid, |(t, _)| *t)
            .ok()
            .map(|i| self.misses[i].1)
    }
}

/// The matcher's answer for one delivery.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// What runs, in pipeline order then event order.
    pub matches: Vec<Match>,
    source: &'a str,
    events: &'a [Event],
    set: &'a PipelineSet,
    /// One per event.
    facts: Vec<EventFacts>,
}

impl<'a> Outcome<'a> {
    /// What does not run: one entry per pipeline and event that did not
    /// match, in pipeline order then event order; the text of each reason
    /// is written when it is displayed.
    pub fn skipped(&self) -> SkipIter<'_> {
        SkipIter {
            source: self.source,
            events: self.events,
            set: self.set,
            matches: &self.matches,
            facts: &self.facts,
            pipeline: 0,
            event: 0,
            next_match: 0,
        }
    }

    /// How many entries [`Outcome::skipped`] yields.
    pub fn skipped_len(&self) -> usize {
        (self.set.len() * self.events.len()).saturating_sub(self.matches.len())
    }

    /// The skips, owned, for the store and the 202 answer. `set` must be
    /// the `Arc` of the set this outcome was matched against for the texts
    /// to stay unwritten until serialized; with another, they are written now.
    pub fn into_skip_list(self, set: &Arc<PipelineSet>) -> SkipList {
        // Every pipeline ran for every event: nothing to keep for the texts
        // (the common case of a one-pipeline setup, on the ingest hot path).
        if self.skipped_len() == 0 {
            return SkipList::default();
        }
        if !std::ptr::eq(self.set, Arc::as_ptr(set)) {
            return SkipList::from(self.skipped().map(|s| s.to_skip()).collect::<Vec<_>>());
        }
        SkipList::from_matched(Matched {
            set: Arc::clone(set),
            source: self.source.to_string(),
            events: self.events.to_vec(),
            matches: self.matches,
            facts: self.facts,
        })
    }
}

/// Matches every event of a delivery from `source` against every pipeline
/// of `set`, evaluating only the candidates its index names.
pub fn match_events<'a>(source: &'a str, events: &'a [Event], set: &'a PipelineSet) -> Outcome<'a> {
    let mut matches = Vec::new();
    let mut facts = Vec::with_capacity(events.len());
    let mut scratch = Vec::new();
    for (ei, event) in events.iter().enumerate() {
        let mut f = EventFacts::default();
        let pushed;
        let candidates: &[u32] = match event {
            // A deletion fails every push trigger before its repository is
            // looked at; an ignored event fails every trigger.
            Event::Push(p) if p.is_deletion() => &[],
            Event::Push(p) => {
                let (c, repos) = set.push_candidates(&p.repository, &mut scratch);
                f.repos = repos;
                pushed = c;
                &pushed
            }
            Event::Ignored(_) => &[],
            Event::Alert(_) => set.alert_triggers(),
            Event::Manual(_) => set.manual_triggers(),
        };
        // Candidates ascend, so a pipeline's first passing trigger is found
        // first; its later triggers do not matter.
        let mut matched_pipeline = None;
        for &tid in candidates {
            let (pi, ti) = set.locate(tid);
            if matched_pipeline == Some(pi) {
                continue;
            }
            let pipeline = &set[pi];
            let verdict = check(source, &pipeline.triggers[ti], event, |pattern, repo| {
                repo_matches(set, f.repos.as_ref(), tid, pattern, repo)
            });
            match verdict {
                Ok(()) => {
                    matched_pipeline = Some(pi);
                    matches.push(Match {
                        paths_pending: path_filters(source, event, pipeline).is_some(),
                        pipeline: pi,
                        event: ei,
                        trigger: ti,
                    });
                }
                Err(miss) => f.misses.push((tid, miss)),
            }
        }
        facts.push(f);
    }
    if events.len() > 1 {
        matches.sort_unstable_by_key(|m| (m.pipeline, m.event));
    }
    Outcome {
        matches,
        source,
        events,
        set,
        facts,
    }
}

/// Does trigger `tid`'s repository `pattern` match `repository`? The
/// index's answer when it has one, else the pattern's own.
fn repo_matches(
    set: &PipelineSet,
    repos: Option<&Bits>,
    tid: u32,
    pattern: &Pattern,
    repository: &str,
) -> bool {
    match (repos, set.repo_pattern(tid)) {
        (Some(bits), Some(pid)) => bits.contains(pid),
        _ => pattern.is_match(repository),
    }
}

/// The miss of a trigger the index did not evaluate for this event: it
/// follows from the index's answer (the repository did not match, or the
/// kinds differ) and the checks that come before it.
pub(crate) fn derived_miss(
    set: &PipelineSet,
    facts: &EventFacts,
    tid: u32,
    source: &str,
    trigger: &Trigger,
    event: &Event,
) -> Miss {
    let verdict = check(source, trigger, event, |pattern, repo| {
        repo_matches(set, facts.repos.as_ref(), tid, pattern, repo)
    });
    debug_assert!(verdict.is_err(), "a trigger the index skipped matches");
    verdict.err().unwrap_or(Miss::Unexplained)
}

/// Which trigger of `pipeline` matches `event`, or why none does: every
/// trigger evaluated in order, without an index.
pub fn match_one(source: &str, event: &Event, pipeline: &Pipeline) -> Result<usize, String> {
    let mut misses = Vec::with_capacity(pipeline.triggers.len());
    if !matches!(event, Event::Ignored(_)) {
        for (ti, trigger) in pipeline.triggers.iter().enumerate() {
            match check(source, trigger, event, |pattern, repo| {
                pattern.is_match(repo)
            }) {
                Ok(()) => return Ok(ti),
                Err(miss) => misses.push(miss),
            }
        }
    }
    Err(Reason {
        source,
        pipeline,
        event,
        numbered: None,
        misses: Misses::Listed(misses),
    }
    .to_string())
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
            if check_push(source, t, push, |pattern, repo| pattern.is_match(repo)).is_ok() {
                if !t.has_path_filter() {
                    return None;
                }
                filters.push(t.as_ref());
            }
        }
    }
    (!filters.is_empty()).then_some(filters)
}

/// One trigger against one event. `repo_ok` answers whether the trigger's
/// repository pattern matches the event's repository.
fn check(
    source: &str,
    trigger: &Trigger,
    event: &Event,
    repo_ok: impl FnOnce(&Pattern, &str) -> bool,
) -> Result<(), Miss> {
    match (trigger, event) {
        (_, Event::Ignored(_)) => Err(Miss::Ignored),
        (Trigger::Push(t), Event::Push(p)) => check_push(source, t, p, repo_ok),
        (Trigger::Alert(t), Event::Alert(a)) => check_alert(source, t, a),
        (Trigger::Manual, Event::Manual(_)) => Ok(()),
        (Trigger::Manual, _) => Err(Miss::ManualOnly),
        (Trigger::Alert(_) | Trigger::Push(_), _) => Err(Miss::WrongKind),
    }
}

fn check_push(
    source: &str,
    t: &PushTrigger,
    p: &PushEvent,
    repo_ok: impl FnOnce(&Pattern, &str) -> bool,
) -> Result<(), Miss> {
    if let Some(sources) = &t.sources {
        if !sources.iter().any(|s| s == source) {
            return Err(Miss::NotInSources);
        }
    }
    if p.is_deletion() {
        return Err(Miss::Deleted);
    }
    if let Some(repo) = &t.repository {
        if !repo_ok(repo, &p.repository) {
            return Err(Miss::Repository);
        }
    }
    let name = &p.ref_name;
    match (p.ref_kind, &t.branches, &t.tags) {
        (RefKind::Branch, Some(b), _) if !b.is_match(name) => Err(Miss::Branch),
        (RefKind::Branch, None, Some(_)) => Err(Miss::BranchButOnlyTags),
        (RefKind::Tag, _, Some(tags)) if !tags.is_match(name) => Err(Miss::Tag),
        (RefKind::Tag, Some(_), None) => Err(Miss::TagButOnlyBranches),
        (RefKind::Other, _, _) => Err(Miss::OtherRef),
        _ => Ok(()),
    }
}

fn check_alert(source: &str, t: &AlertTrigger, a: &AlertEvent) -> Result<(), Miss> {
    if let Some(sources) = &t.sources {
        if !sources.iter().any(|s| s == source) {
            return Err(Miss::NotInSources);
        }
    }
    let wanted = matches!(
        (t.status, a.status),
        (AlertStatusFilter::Any, _)
            | (AlertStatusFilter::Firing, AlertStatus::Firing)
            | (AlertStatusFilter::Resolved, AlertStatus::Resolved)
    );
    if !wanted {
        return Err(Miss::AlertStatus);
    }
    match t.matchers.iter().position(|m| !m.matches(&a.labels)) {
        None => Ok(()),
        Some(i) => Err(Miss::AlertMatcher(u32::try_from(i).unwrap_or(u32::MAX))),
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
        let pipelines = PipelineSet::new(vec![
            pipeline("deploy", "  - push: {branches: [main]}"),
            pipeline("release", "  - push: {tags: ['v*']}"),
        ]);
        let events = [push("a/b", "refs/heads/main")];
        let out = match_events("github", &events, &pipelines);
        assert_eq!(
            out.matches,
            vec![Match {
                paths_pending: false,
                pipeline: 0,
                event: 0,
                trigger: 0
            }]
        );
        let skipped: Vec<Skip> = out.skipped().map(|s| s.to_skip()).collect();
        assert_eq!(out.skipped_len(), 1);
        assert_eq!(
            skipped,
            vec![Skip {
                pipeline: "release".into(),
                reason: "branch \"main\" pushed, but the trigger filters only tags".into()
            }]
        );
        let ignored = [Event::Ignored(IgnoredEvent {
            reason: "github event type \"issues\" starts no pipeline".into(),
        })];
        let out = match_events("github", &ignored, &pipelines);
        assert!(out.matches.is_empty());
        assert_eq!(out.skipped().count(), 2);
        assert!(out
            .skipped()
            .all(|s| s.reason.to_string().contains("\"issues\"")));
    }

    /// Pipelines for the equivalence test: random mixes of every kind of
    /// filter, from pools chosen so that events hit and miss each of them.
    fn generated_pipelines(
        rng: &mut fastrand::Rng,
        daemon: &DaemonConfig,
        n: usize,
    ) -> Vec<Arc<Pipeline>> {
        const REPOS: &[&str] = &[
            "acme/infra",
            "ACME/Web",
            "acme/*",
            "*/infra",
            "org-?/repo-*",
            "acme/**",
            "team-[ab]/*",
            "other/x",
            "{acme,team-a}/svc",
            "*",
        ];
        const BRANCHES: &[&str] = &[
            "[main]",
            "['release/*']",
            "['**', '!wip/*']",
            "['feature/**', '!feature/wip-*', 'feature/wip-ok']",
            "['*']",
            "[main, dev]",
        ];
        const TAGS: &[&str] = &["['v*']", "['v[12].*']", "['**', '!v0*']"];
        const SOURCES: &[&str] = &["[github]", "[gh2]", "[gitlab]", "[github, gitlab]", "[am]"];
        const MATCHERS: &[&str] = &[
            "['alertname=\"HighLoad\"']",
            "['severity=~\"crit.*\"', 'env!=\"dev\"']",
            "['team!~\"a|b\"']",
            "[]",
        ];
        let pick = |rng: &mut fastrand::Rng, pool: &[&'static str]| pool[rng.usize(..pool.len())];
        (0..n)
            .map(|i| {
                let mut on = Vec::new();
                for _ in 0..rng.usize(1..=3) {
                    let trigger = match rng.u8(..10) {
                        0 => "  - manual: {}".to_string(),
                        1 | 2 => {
                            let mut f = Vec::new();
                            if rng.bool() {
                                f.push(format!("sources: {}", pick(rng, SOURCES)));
                            }
                            f.push(format!(
                                "status: {}",
                                pick(rng, &["firing", "resolved", "any"])
                            ));
                            f.push(format!("matchers: {}", pick(rng, MATCHERS)));
                            format!("  - alert: {{{}}}", f.join(", "))
                        }
                        _ => {
                            let mut f = Vec::new();
                            if rng.u8(..4) == 0 {
                                f.push(format!("sources: {}", pick(rng, SOURCES)));
                            }
                            if rng.u8(..5) != 0 {
                                f.push(format!("repository: '{}'", pick(rng, REPOS)));
                            }
                            if rng.bool() {
                                f.push(format!("branches: {}", pick(rng, BRANCHES)));
                            }
                            if rng.u8(..3) == 0 {
                                f.push(format!("tags: {}", pick(rng, TAGS)));
                            }
                            if rng.u8(..4) == 0 {
                                f.push("paths: ['src/**']".to_string());
                            }
                            format!("  - push: {{{}}}", f.join(", "))
                        }
                    };
                    on.push(trigger);
                }
                let text = format!(
                    "name: p{i}\non:\n{}\nrepo: {{url: 'file:///srv/git/x'}}\nsteps: [{{run: 'true'}}]\n",
                    on.join("\n")
                );
                Arc::new(
                    parse_pipeline(Path::new("p.yaml"), &text, daemon)
                        .unwrap_or_else(|e| panic!("{e:?}\n{text}")),
                )
            })
            .collect()
    }

    fn generated_daemon() -> DaemonConfig {
        DaemonConfig::from_yaml(
            Path::new("hookd.yaml"),
            "sources:\n  github: {kind: github}\n  gh2: {kind: github}\n  gitlab: {kind: gitlab}\n  am: {kind: alertmanager}\n",
        )
        .expect("config")
    }

    fn generated_event(rng: &mut fastrand::Rng) -> Event {
        const REPOS: &[&str] = &[
            "acme/infra",
            "ACME/Infra",
            "acme/web",
            "other/infra",
            "org-1/repo-x",
            "team-a/svc",
            "acme/infra/sub",
            "other/x",
            "zzz",
        ];
        const REFS: &[&str] = &[
            "refs/heads/main",
            "refs/heads/dev",
            "refs/heads/release/1",
            "refs/heads/wip/x",
            "refs/heads/feature/wip-a",
            "refs/heads/feature/wip-ok",
            "refs/heads/feature/a/b",
            "refs/tags/v1.0",
            "refs/tags/v0.9",
            "refs/tags/release",
            "refs/notes/commits",
        ];
        match rng.u8(..12) {
            0 => Event::Ignored(IgnoredEvent {
                reason: "github event type \"issues\" starts no pipeline".into(),
            }),
            1 => Event::Manual(crate::event::ManualEvent {
                git_ref: None,
                commit: None,
                requested_by: None,
            }),
            2 | 3 => {
                let mut labels = std::collections::BTreeMap::new();
                for (k, vs) in [
                    ("alertname", &["HighLoad", "DiskFull"][..]),
                    ("severity", &["critical", "warning"][..]),
                    ("env", &["dev", "prod"][..]),
                    ("team", &["a", "c"][..]),
                ] {
                    if rng.u8(..4) != 0 {
                        labels.insert(k.to_string(), vs[rng.usize(..vs.len())].to_string());
                    }
                }
                Event::Alert(AlertEvent {
                    status: if rng.bool() {
                        AlertStatus::Firing
                    } else {
                        AlertStatus::Resolved
                    },
                    name: labels.get("alertname").cloned().unwrap_or_default(),
                    fingerprint: "f".into(),
                    labels,
                    annotations: Default::default(),
                    starts_at: None,
                    ends_at: None,
                    generator_url: None,
                    group_labels: Default::default(),
                    group_key: None,
                    external_url: None,
                    extra: Default::default(),
                })
            }
            _ => {
                let after = if rng.u8(..8) == 0 { ZERO_SHA } else { "abc1" };
                Event::Push(PushEvent::new(
                    REPOS[rng.usize(..REPOS.len())].into(),
                    REFS[rng.usize(..REFS.len())].into(),
                    ZERO_SHA,
                    after,
                    None,
                    None,
                ))
            }
        }
    }

    /// The indexed matcher against the pre-index linear one, on generated
    /// pipelines and deliveries: the same matches (trigger, pending paths),
    /// the same skips in the same order with the same texts, the same JSON
    /// for the store, and `match_one` (explain) agreeing per pipeline.
    #[test]
    fn indexed_matching_equals_linear_evaluation() {
        let mut rng = fastrand::Rng::with_seed(7);
        // Compiling patterns is slow in debug builds: one pool, sampled per round.
        let pool = generated_pipelines(&mut rng, &generated_daemon(), 150);
        let mut compared = (0, 0);
        for round in 0..40 {
            let n = rng.usize(1..60);
            let pipelines: Vec<Arc<Pipeline>> = (0..n)
                .map(|_| Arc::clone(&pool[rng.usize(..pool.len())]))
                .collect();
            let indexed = Arc::new(PipelineSet::new(pipelines.clone()));
            let unindexed = PipelineSet::unindexed(pipelines.clone());
            assert!(indexed.index_error().is_none());
            for _ in 0..40 {
                let events: Vec<Event> = (0..rng.usize(1..=3))
                    .map(|_| generated_event(&mut rng))
                    .collect();
                let source = ["github", "gh2", "gitlab", "am"][rng.usize(..4)];
                let want = reference::match_events(source, &events, &pipelines);
                for set in [&*indexed, &unindexed] {
                    let got = match_events(source, &events, set);
                    let matches: Vec<_> = got
                        .matches
                        .iter()
                        .map(|m| (m.pipeline, m.event, m.trigger, m.paths_pending))
                        .collect();
                    let ctx = || format!("round {round}, source {source}, events {events:#?}");
                    assert_eq!(matches, want.matches, "{}", ctx());
                    let skipped: Vec<Skip> = got.skipped().map(|s| s.to_skip()).collect();
                    assert_eq!(skipped, want.skipped, "{}", ctx());
                    assert_eq!(got.skipped_len(), want.skipped.len());
                    for s in got.skipped() {
                        assert_eq!(s.name, pipelines[s.pipeline].name);
                    }
                }
                let list = match_events(source, &events, &indexed).into_skip_list(&indexed);
                assert_eq!(list.len(), want.skipped.len());
                assert_eq!(
                    serde_json::to_string(&list).expect("json"),
                    serde_json::to_string(&want.skipped).expect("json")
                );
                for (ei, e) in events.iter().enumerate() {
                    for p in &pipelines {
                        assert_eq!(
                            match_one(source, e, p),
                            reference::match_one(source, e, p),
                            "event {ei}"
                        );
                    }
                }
                compared.0 += want.matches.len();
                compared.1 += want.skipped.len();
            }
        }
        // The generator must exercise both sides.
        assert!(compared.0 > 1000 && compared.1 > 10_000, "{compared:?}");
    }

    #[test]
    fn skip_list_serializes_like_the_stored_form() {
        let set = Arc::new(PipelineSet::new(vec![
            pipeline("deploy", "  - push: {branches: [main]}"),
            pipeline("tags", "  - push: {tags: ['v*']}\n  - manual: {}"),
        ]));
        let events = [
            push("a/b", "refs/heads/main"),
            push("a/\"b", "refs/heads/x"),
        ];
        let mut list = match_events("github", &events, &set).into_skip_list(&set);
        list.push(Skip {
            pipeline: "deploy".into(),
            reason: "suppressed".into(),
        });
        let json = serde_json::to_string(&list).expect("json");
        let back: Vec<Skip> = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, list.to_vec());
        assert_eq!(back.len(), list.len());
        assert_eq!(
            back[1].reason,
            "event 0 (push to refs/heads/main): on[0]: branch \"main\" pushed, but the trigger filters only tags; on[1]: manual trigger: only `hookd trigger` or the API starts it"
        );
        assert_eq!(back.last().map(|s| s.reason.as_str()), Some("suppressed"));
        // Matched against another set than the one given: the texts are written at once.
        let other = Arc::new(PipelineSet::new(set.to_vec()));
        let eager = match_events("github", &events, &set).into_skip_list(&other);
        assert_eq!(
            eager.to_vec(),
            match_events("github", &events, &set)
                .into_skip_list(&set)
                .to_vec()
        );
    }
}
