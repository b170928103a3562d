//! `GithubSource::parse` on the ~8 KB push fixture (criterion), the ingest
//! hot path's payload parse; a `ping` for comparison (its body is only
//! checked to be JSON).
//!
//! `cargo bench --bench parse`. Besides criterion's own report, prints
//! min / median / max of the per-iteration time over criterion's samples.

use std::path::Path;

use hookd::config::{DaemonConfig, SourceKind};
use hookd::event::Event;
use hookd::source::Request;

mod support;

const PING: &[u8] = br#"{"zen": "Keep it logically awesome.", "hook_id": 1, "hook": {"type": "Repository", "id": 1, "active": true, "events": ["push"], "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://example.com/hooks/github"}}}"#;

fn main() {
    let daemon = DaemonConfig::from_yaml(
        Path::new("hookd.yaml"),
        "sources:\n  github: {kind: github}\n",
    )
    .expect("daemon config");
    let config = &daemon.sources["github"];
    assert_eq!(config.kind, SourceKind::Github);
    let source = hookd::source::build(config);
    let (fixture, push_body) = support::push_fixture();
    let headers = |event: &str| {
        vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-github-event".to_string(), event.to_string()),
            (
                "x-github-delivery".to_string(),
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string(),
            ),
        ]
    };
    let (push_headers, ping_headers) = (headers("push"), headers("ping"));
    let request = |headers, body| Request {
        method: "POST",
        headers,
        query: "",
        body,
        from_loopback: false,
    };
    let push = request(&push_headers, &push_body);
    let ping = request(&ping_headers, PING);
    let parsed = source.parse(&push).expect("the push fixture parses");
    assert!(matches!(&parsed.events[..], [Event::Push(_)]));
    assert!(source.parse(&ping).expect("ping parses").is_ping);

    let (mut c, out_dir) = support::criterion(50);
    let cases = [
        ("push", &push, push_body.len()),
        ("ping", &ping, PING.len()),
    ];
    {
        let mut group = c.benchmark_group("github_parse");
        for (name, req, _) in &cases {
            group.bench_function(*name, |b| {
                b.iter(|| source.parse(std::hint::black_box(req)))
            });
        }
        group.finish();
    }
    c.final_summary();

    support::header("parse: GithubSource::parse, criterion samples");
    for (name, _, len) in &cases {
        let Some(per_iter_us) =
            support::criterion_samples_us(&out_dir, &format!("github_parse/{name}"))
        else {
            continue;
        };
        let note = if *name == "push" {
            format!("{len} B body ({})", fixture.display())
        } else {
            format!("{len} B body")
        };
        support::row(
            "parse",
            &format!("github {name}, per request"),
            &per_iter_us,
            "us",
            &note,
        );
    }
}
