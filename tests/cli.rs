//! The CLI as a user runs it: validate, sign (with curl), runs, logs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn validate_prints_every_error_with_file_line_and_column() {
    let env = Env::new("", &[]);
    env.write_pipeline(
        "good",
        "on: [{push: {branches: [main]}}]\nsteps: [{run: 'true'}]\n",
    );
    let (code, stdout, stderr) = env.cli(&["validate"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("ok: config"), "{stdout}");
    assert!(stdout.contains("1 pipeline(s)"), "{stdout}");
    assert!(stdout.contains("good (1 step(s))"), "{stdout}");

    env.write_pipeline(
        "bad",
        "on:\n  - push:\n      branches: ['[oops']\nsteps:\n  - run: a\n    argv: [b]\n  - run: c\n    timeout: ten minutes\n",
    );
    env.write_pipeline(
        "worse",
        "on: [{push: {}}]\nsteps:\n  - run: x\n    colour: blue\n",
    );
    let (code, _, stderr) = env.cli(&["validate"]);
    assert_eq!(code, 1, "{stderr}");
    let path = env.path().join("pipelines");
    let expected = [
        format!(
            "{}/bad.yaml:3:18: on[0].push.branches[0]: invalid glob \"[oops\"",
            path.display()
        ),
        format!(
            "{}/bad.yaml:5:10: steps[0]: set run or argv, not both",
            path.display()
        ),
        format!(
            "{}/bad.yaml:8:14: steps[1].timeout: invalid duration \"ten minutes\"",
            path.display()
        ),
        format!("{}/worse.yaml:4:5: unknown field `colour`", path.display()),
        "4 error(s)".to_string(),
    ];
    for e in expected {
        assert!(stderr.contains(&e), "missing {e:?} in:\n{stderr}");
    }

    // A broken daemon config is reported the same way, and serve refuses to start.
    std::fs::write(
        env.path().join("broken.yaml"),
        "listen: 127.0.0.1:0\nmax_parallel_runs: -1\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .args(["validate", "--config"])
        .arg(env.path().join("broken.yaml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.yaml:2:20: "), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .args(["serve", "--config"])
        .arg(env.path().join("broken.yaml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid configuration"));
}

#[test]
fn serve_starts_on_built_in_defaults_without_a_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .arg("validate")
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "config built-in defaults, 1 source(s), 0 pipeline(s) in {}",
        dir.path().join("pipelines").display()
    );
    assert!(stdout.contains(&expected), "{stdout}");
}

#[test]
fn signed_headers_from_hookd_sign_work_with_curl() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "",
        &[("hello", "on: [{push: {branches: [main]}}]\nsteps:\n  - run: echo \"hello from $HOOKD_COMMIT\"\n")],
    );
    let daemon = env.start();
    let payload = env.path().join("payload.json");
    std::fs::write(
        &payload,
        github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a),
    )
    .expect("write");
    let (code, headers, stderr) = env.cli(&[
        "sign",
        "--source",
        "github",
        payload.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        headers.contains("X-Hub-Signature-256: sha256="),
        "{headers}"
    );
    assert!(headers.contains("X-GitHub-Event: push"), "{headers}");
    let headers_file = env.path().join("headers.txt");
    std::fs::write(&headers_file, &headers).expect("write");

    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-H"])
        .arg(format!("@{}", headers_file.display()))
        .arg("--data-binary")
        .arg(format!("@{}", payload.display()))
        .arg(format!("{}/hooks/github", daemon.base))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n202"), "{text}");
    let answer: serde_json::Value =
        serde_json::from_str(text.lines().next().unwrap_or("")).expect("json");
    let run_id = answer["runs"][0]["id"].as_i64().expect("run id");
    let run = daemon.wait_run(run_id, Duration::from_secs(60));
    assert_eq!(run["status"], "succeeded", "{run}");
    let (code, log, _) = env.cli(&["logs", &run_id.to_string(), "--url", &daemon.base]);
    assert_eq!(code, 0);
    assert!(log.contains(&format!("hello from {a}")), "{log}");

    // The same request again is a duplicate (same delivery id in headers.txt).
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("@{}", headers_file.display()))
        .arg("--data-binary")
        .arg(format!("@{}", payload.display()))
        .arg(format!("{}/hooks/github", daemon.base))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

#[test]
fn the_api_requires_the_admin_token_when_one_is_configured() {
    let env = Env::new("admin_token_file: ./admin.token\n", &[]);
    std::fs::write(env.path().join("admin.token"), "t0ken-for-tests\n").expect("write");
    let daemon = env.start();
    let (status, body) = daemon.request("GET", "/api/v1/runs", &[], b"");
    assert_eq!(status, 401, "{body}");
    let wrong = [("Authorization".to_string(), "Bearer nope".to_string())];
    assert_eq!(daemon.request("GET", "/api/v1/runs", &wrong, b"").0, 401);
    let right = [(
        "Authorization".to_string(),
        "Bearer t0ken-for-tests".to_string(),
    )];
    let (status, body) = daemon.request("GET", "/api/v1/runs", &right, b"");
    assert_eq!(status, 200, "{body}");
    // The CLI finds the token in the config.
    let (code, stdout, stderr) = env.cli(&["runs", "--url", &daemon.base]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("    ID"), "{stdout}");
    assert_eq!(
        daemon.request("GET", "/api/v1/runs/999", &right, b"").0,
        404
    );
    assert_eq!(daemon.request("GET", "/healthz", &[], b"").0, 200);
    assert_eq!(daemon.request("GET", "/readyz", &[], b"").0, 200);
}

/// The shipped examples stay valid.
#[test]
fn the_example_pipelines_validate() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("am.token"), "t\n").expect("token");
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/self-healing/pipelines");
    let pipelines = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for (dir_under_test, sources) in [
        (
            examples,
            "sources:\n  alerts: { kind: alertmanager, bearer_token_file: ./am.token }\n",
        ),
        (pipelines, ""),
    ] {
        let config = dir.path().join("hookd.yaml");
        std::fs::write(
            &config,
            format!("pipelines_dir: {}\n{sources}", dir_under_test.display()),
        )
        .expect("config");
        let out = Command::new(env!("CARGO_BIN_EXE_hookd"))
            .args(["validate", "--config"])
            .arg(&config)
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            dir_under_test.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Without an admin token the API trusts only this machine: not a reverse
/// proxy on it, not a DNS-rebinding page, not a form a web page could post.
#[test]
fn without_a_token_only_direct_loopback_json_requests_are_trusted() {
    let env = Env::new("", &[("m", "on: [{manual: {}}]\nsteps: [{run: 'true'}]\n")]);
    let daemon = env.start();
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(daemon.request("GET", "/api/v1/runs", &[], b"").0, 200);
    let proxied = h(&[("X-Forwarded-For", "203.0.113.9")]);
    assert_eq!(daemon.request("GET", "/api/v1/runs", &proxied, b"").0, 403);
    let rebound = h(&[("Host", "evil.example:8080")]);
    assert_eq!(daemon.request("GET", "/api/v1/runs", &rebound, b"").0, 403);
    let form = h(&[("Content-Type", "application/x-www-form-urlencoded")]);
    let (status, text) = daemon.request("POST", "/api/v1/pipelines/m/trigger", &form, b"");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("application/json"), "{text}");
    assert!(daemon.runs().is_empty());
    let json = h(&[("Content-Type", "application/json")]);
    assert_eq!(
        daemon
            .request("POST", "/api/v1/pipelines/m/trigger", &json, b"{}")
            .0,
        202
    );
    // The same for a source without credentials.
    let github = std::fs::read(fixture_path("github/ping.json")).expect("fixture");
    let unsigned = |extra: &[(&str, &str)]| {
        let mut v = h(&[("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", "p")]);
        v.extend(h(extra));
        v
    };
    drop(daemon);
    std::fs::write(
        env.path().join("hookd.yaml"),
        "listen: 127.0.0.1:0\nsources:\n  open: { kind: github }\n",
    )
    .expect("config");
    let daemon = env.start();
    let (status, text) = daemon.request(
        "POST",
        "/hooks/open",
        &unsigned(&[("Content-Type", "text/plain")]),
        &github,
    );
    assert_eq!(status, 401, "{text}");
    let (status, _) = daemon.request(
        "POST",
        "/hooks/open",
        &unsigned(&[
            ("Content-Type", "application/json"),
            ("X-Real-IP", "203.0.113.9"),
        ]),
        &github,
    );
    assert_eq!(status, 401);
    let (status, text) = daemon.request(
        "POST",
        "/hooks/open",
        &unsigned(&[("Content-Type", "application/json")]),
        &github,
    );
    assert_eq!(status, 200, "{text}");
}
