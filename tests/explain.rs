//! `hookd explain` as a user runs it: the real binary, a temp hookd.yaml
//! (a `github` source with a secret) and a pipelines directory, real
//! GitHub payloads. No daemon runs.

mod common;

use std::process::Command;

use common::*;
use hookd::source::hmac_sha256_hex;

const PUSH: &str = "github/push-branch-commits.json";

/// Three pipelines for the push fixture (binkkatal/sample_app, master):
/// one matches, one is path-filtered, one wants another branch.
fn env() -> Env {
    Env::new(
        "",
        &[
            (
                "deploy",
                "on: [{push: {repository: 'binkkatal/*', branches: [master]}}]\nsteps: [{run: 'true'}]\n",
            ),
            (
                "docs",
                "on: [{push: {paths: ['docs/**'], paths_ignore: ['**/*.png']}}]\nsteps: [{run: 'true'}]\n",
            ),
            (
                "release",
                "on: [{push: {branches: [main, 'release/*']}}]\nsteps: [{run: 'true'}]\n",
            ),
        ],
    )
}

fn explain(env: &Env, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["explain", "--source", "github"];
    all.extend_from_slice(args);
    let payload = fixture_path(PUSH);
    all.push(payload.to_str().expect("utf-8 path"));
    env.cli(&all)
}

#[test]
fn without_headers_it_infers_the_event_and_explains_every_pipeline() {
    let env = env();
    let (code, stdout, stderr) = explain(&env, &[]);
    assert_eq!(code, 0, "{stderr}");
    for expected in [
        "source:         github (kind github)\n",
        "authentication: not checked (no headers given)\n",
        "event type:     push (inferred from the payload; pass -H 'X-GitHub-Event: push' to set it)\n",
        "  repository:  binkkatal/sample_app\n",
        "  ref:         refs/heads/master (branch master)\n",
        "  after:       fd489864e7642b48eaad6e3f155c10e46810ec72\n",
        "    deploy   matched (on[0])\n",
        "    docs     matched (on[0]); paths: decided after fetch (paths [docs/**] minus paths_ignore [**/*.png])\n",
        "    release  not matched: branch \"master\" matches none of branches [main, release/*]\n",
        "\nwould run: deploy, docs (paths decided after fetch)\n",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    // Nothing was stored or started: there is no daemon, and no data dir.
    assert!(!env.path().join("data").exists());
}

#[test]
fn a_correct_signature_is_reported_ok() {
    let env = env();
    let body = std::fs::read(fixture_path(PUSH)).expect("fixture");
    let signature = format!(
        "X-Hub-Signature-256: sha256={}",
        hmac_sha256_hex(SECRET.as_bytes(), &body)
    );
    let (code, stdout, stderr) = explain(
        &env,
        &[
            "-H",
            &signature,
            "-H",
            "X-GitHub-Event: push",
            "--header",
            "X-GitHub-Delivery: 72d3162e-cc78-11e3-81ab-4c9367dc0958",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("authentication: ok (every configured credential verifies)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("event type:     push\n"), "{stdout}");
    assert!(
        stdout.contains("delivery id:    72d3162e-cc78-11e3-81ab-4c9367dc0958\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    deploy   matched (on[0])\n"),
        "{stdout}"
    );
}

#[test]
fn a_wrong_signature_exits_1_with_the_reason() {
    let env = env();
    let wrong = format!("X-Hub-Signature-256: sha256={}", "0".repeat(64));
    let (code, stdout, stderr) = explain(&env, &["-H", &wrong]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "authentication: FAILED: X-Hub-Signature-256 does not match the body and the configured secret\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("the daemon would answer 401 and run nothing"),
        "{stdout}"
    );
    assert!(!stdout.contains("would run:"), "{stdout}");
    // Given without the signature, the event header alone checks nothing.
    let (code, stdout, stderr) = explain(&env, &["-H", "X-GitHub-Event: push"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("authentication: not checked (no X-Hub-Signature-256 header given)\n"),
        "{stdout}"
    );
}

#[test]
fn json_output_has_the_verdict_of_every_pipeline() {
    let env = env();
    let (code, stdout, stderr) = explain(&env, &["--json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["source"], "github");
    assert_eq!(report["authentication"]["status"], "not_checked");
    assert_eq!(report["event_type"]["name"], "push");
    assert_eq!(report["event_type"]["inferred_header"], "X-GitHub-Event");
    assert_eq!(
        report["events"][0]["event"]["repository"],
        "binkkatal/sample_app"
    );
    let verdicts = report["events"][0]["pipelines"]
        .as_array()
        .expect("pipelines array");
    let summary: Vec<(String, bool)> = verdicts
        .iter()
        .map(|v| {
            (
                v["pipeline"].as_str().unwrap_or("?").to_string(),
                v["matched"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("deploy".to_string(), true),
            ("docs".to_string(), true),
            ("release".to_string(), false)
        ]
    );
    assert_eq!(
        verdicts[1]["paths"],
        "paths [docs/**] minus paths_ignore [**/*.png]"
    );
    assert_eq!(
        verdicts[2]["reason"],
        "branch \"master\" matches none of branches [main, release/*]"
    );

    // A failed authentication is JSON too, and still exits 1.
    let wrong = format!("X-Hub-Signature-256: sha256={}", "0".repeat(64));
    let (code, stdout, _) = explain(&env, &["--json", "-H", &wrong]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["authentication"]["status"], "failed");
    assert_eq!(report["events"], serde_json::json!([]));
}

#[test]
fn an_unknown_source_lists_the_configured_ones() {
    let env = Env::new("  gitlab: { kind: gitlab }\n", &[]);
    let payload = fixture_path(PUSH);
    let (code, stdout, stderr) = env.cli(&[
        "explain",
        "--source",
        "gitlub",
        payload.to_str().expect("utf-8 path"),
    ]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains("unknown source \"gitlub\" (configured: github, gitlab)"),
        "{stderr}"
    );
}

#[test]
fn unexplainable_input_exits_non_zero_with_the_reason() {
    let env = env();
    // A payload whose event type cannot be inferred.
    let alerts = fixture_path("alertmanager/captured-0.25-firing.json");
    let (code, _, stderr) = env.cli(&[
        "explain",
        "--source",
        "github",
        alerts.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot infer the event type of this github payload")
            && stderr.contains("pass -H 'X-GitHub-Event: TYPE'"),
        "{stderr}"
    );
    // A header argument without a colon.
    let (code, _, stderr) = explain(&env, &["-H", "X-GitHub-Event push"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("header \"X-GitHub-Event push\" is not of the form 'Name: value'"),
        "{stderr}"
    );
    // A missing file.
    let (code, _, stderr) = env.cli(&["explain", "--source", "github", "nope.json"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read payload nope.json"), "{stderr}");
    // A payload the source cannot parse as the inferred type.
    let gitlab = fixture_path("gitlab/push-hook.json");
    let (code, _, stderr) = env.cli(&[
        "explain",
        "--source",
        "github",
        gitlab.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("the daemon would refuse this payload as malformed (400) as X-GitHub-Event: push (inferred from the payload): payload field /repository/full_name: missing"),
        "{stderr}"
    );
}

#[test]
fn the_payload_can_come_from_stdin_and_the_config_default_applies() {
    // No hookd.yaml in the working directory: built-in defaults (one
    // `github` source without credentials, ./pipelines).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("pipelines")).expect("pipelines dir");
    std::fs::write(
        dir.path().join("pipelines/any.yaml"),
        "on: [{push: {}}]\nsteps: [{run: 'true'}]\n",
    )
    .expect("pipeline");
    let out = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .args(["explain", "--source", "github", "-"])
        .current_dir(dir.path())
        .stdin(std::fs::File::open(fixture_path(PUSH)).expect("fixture"))
        .output()
        .expect("run hookd");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("    any  matched (on[0])\n"), "{stdout}");
}
