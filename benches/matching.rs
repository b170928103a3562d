//! `hookd::matcher::match_events` for one push event against 10, 1,000 and
//! 10,000 pipelines (criterion). The pipelines mix the filters people write,
//! without path filters (those are decided after the fetch): exact and glob
//! repositories, exact, `*`, `**` and negated branch globs, tag-only
//! triggers, source lists, catch-alls, and a manual trigger next to a push
//! one. The event (a push to `main` of `org-7/repo-7` from source `github`)
//! matches a few of them, as a real event would; every other pipeline gets
//! its skip reason, as the server's answer requires.
//!
//! What is timed is what the server does per event: `match_events` against
//! a `PipelineSet` and dropping its `Outcome`. The set and its index are
//! built once, outside the loop, as the daemon builds them once per load
//! (start-up, hot reload). The outcome holds everything every skip reason
//! needs — the matches, the repository glob set's answer and the miss of
//! each evaluated trigger — but not the reasons' text, which is written
//! when the skips are serialized (the store, the 202 answer). That
//! serialization costs time proportional to the pipelines, so it is timed
//! too, apart: `match_and_serialize` is `match_events` plus writing the
//! skips as the JSON the store records. The first event of a new
//! repository name costs more than the timed ones: the glob set's lazy DFA
//! builds its states on first use.
//!
//! `cargo bench --bench matching`. Besides criterion's own report, prints
//! min / median / max of the per-iteration time over criterion's samples.

use std::path::Path;
use std::sync::Arc;

use criterion::BenchmarkId;
use hookd::config::{parse_pipeline, DaemonConfig};
use hookd::event::{Event, PushEvent};
use hookd::matcher::{match_events, PipelineSet};

mod support;

const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn on(i: usize) -> String {
    let org = i % 50;
    match i % 8 {
        0 => format!("  - push: {{repository: org-{org}/repo-{i}, branches: [main]}}"),
        1 => format!("  - push: {{repository: 'org-{org}/*', branches: ['release/*']}}"),
        2 => format!("  - push: {{repository: 'org-{org}/*', tags: ['v*']}}"),
        3 => format!("  - push: {{repository: 'org-{org}/svc-*', branches: [main, 'feature/**', '!feature/wip-*']}}"),
        4 => format!("  - push: {{sources: [gitlab], repository: 'org-{org}/*', branches: [main]}}"),
        5 => format!("  - push: {{repository: 'team-{i}/*'}}"),
        6 => format!("  - push: {{repository: 'org-{org}/repo-{i}', branches: ['env/*/{i}']}}\n  - manual: {{}}"),
        _ => format!("  - push: {{repository: 'org-*/repo-{i}', branches: ['**']}}"),
    }
}

fn pipelines(n: usize, daemon: &DaemonConfig) -> Arc<PipelineSet> {
    let pipelines = (0..n)
        .map(|i| {
            let text = format!(
                "name: p{i}\non:\n{}\nrepo: {{url: 'file:///srv/git/x'}}\nsteps: [{{run: 'true'}}]\n",
                on(i)
            );
            Arc::new(
                parse_pipeline(Path::new("p.yaml"), &text, daemon)
                    .unwrap_or_else(|e| panic!("pipeline {i}: {e:?}\n{text}")),
            )
        })
        .collect();
    Arc::new(PipelineSet::new(pipelines))
}

fn event() -> Vec<Event> {
    vec![Event::Push(PushEvent::new(
        "org-7/repo-7".into(),
        "refs/heads/main".into(),
        "737d38c599c1b2991664dfc6155d6bf516fcce36",
        "fd489864e7642b48eaad6e3f155c10e46810ec72",
        None,
        None,
    ))]
}

fn main() {
    let daemon = DaemonConfig::from_yaml(
        Path::new("hookd.yaml"),
        "sources:\n  github: {kind: github}\n  gitlab: {kind: gitlab}\n",
    )
    .expect("daemon config");
    let (mut c, out_dir) = support::criterion(20);
    let events = event();
    let mut matched = Vec::new();
    let sets: Vec<_> = SIZES.iter().map(|&n| (n, pipelines(n, &daemon))).collect();
    {
        let mut group = c.benchmark_group("match_events");
        for (n, ps) in &sets {
            let outcome = match_events("github", &events, ps);
            // Every skip has its reason: write them all once, as the store does.
            assert!(outcome.skipped().all(|s| !s.reason.to_string().is_empty()));
            matched.push((*n, outcome.matches.len(), outcome.skipped_len()));
            group.bench_with_input(BenchmarkId::from_parameter(n), ps, |b, ps| {
                b.iter(|| match_events("github", std::hint::black_box(&events), ps))
            });
        }
        group.finish();
    }
    {
        let mut group = c.benchmark_group("match_and_serialize");
        for (n, ps) in &sets {
            group.bench_with_input(BenchmarkId::from_parameter(n), ps, |b, ps| {
                b.iter(|| {
                    let outcome = match_events("github", std::hint::black_box(&events), ps);
                    serde_json::to_string(&outcome.into_skip_list(ps)).map(|j| j.len())
                })
            });
        }
        group.finish();
    }
    c.final_summary();

    support::header("matching: match_events, one push event, criterion samples");
    for (group, (n, matches, skipped)) in matched
        .iter()
        .map(|m| ("match_events", *m))
        .chain(matched.iter().map(|m| ("match_and_serialize", *m)))
    {
        let Some(per_iter_us) = support::criterion_samples_us(&out_dir, &format!("{group}/{n}"))
        else {
            continue;
        };
        let note = if n == 10_000 && group == "match_events" {
            format!(
                "{matches} match, {skipped} skipped; goal <= 50 us: {}",
                support::verdict(support::median(&per_iter_us) <= 50.0)
            )
        } else if group == "match_events" {
            format!("{matches} match, {skipped} skipped")
        } else {
            format!("{skipped} skip reasons written as the store's JSON")
        };
        support::row(
            "matching",
            &format!("{group}, {n} pipelines, per event"),
            &per_iter_us,
            "us",
            &note,
        );
    }
}
