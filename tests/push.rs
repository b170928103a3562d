//! Push-to-apply, end to end: a real daemon, real git repositories, real
//! child processes, signed requests built from GitHub's own payloads.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A pipeline whose step records what it saw into $OUT/<run id>/.
const RECORDER: &str = r#"
on:
  - push:
      sources: [github]
      repository: acme/*
      branches: [main, "release/**"]
env:
  OUT: $OUT
steps:
  - name: record
    run: |
      set -eu
      d="$OUT/$HOOKD_RUN_ID"
      mkdir -p "$d"
      git rev-parse HEAD > "$d/head"
      env > "$d/env"
      cat "$HOOKD_CHANGED_FILES_FILE" > "$d/changed"
      cp "$HOOKD_EVENT_FILE" "$d/event.json"
      cmp "$HOOKD_PAYLOAD_FILE" "$HOOKD_PAYLOAD_FILE"
      cat app.txt > "$d/app.txt"
      echo "recorded run $HOOKD_RUN_ID"
"#;

fn env_of(env: &Env, run: i64) -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(env.out().join(run.to_string()).join("env")).expect("env file");
    text.lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn var<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn first_run(answer: &Value) -> i64 {
    answer["runs"][0]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no run in {answer}"))
}

#[test]
fn signed_push_runs_at_the_pushed_commit_with_the_documented_env() {
    let repo = GitRepo::new();
    let a = repo.commit(
        &[("app.txt", "one\n"), ("terraform/main.tf", "a\n")],
        "first",
    );
    let env = Env::new(
        "env_passthrough: [HOOKD_TEST_PASSED]\n",
        &[("deploy", RECORDER)],
    );
    let daemon = env.start_with_env(&[
        ("HOOKD_TEST_DAEMON_SECRET", "must-not-leak"),
        ("HOOKD_TEST_PASSED", "passed-through"),
    ]);

    let body = github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a);
    let (status, answer) = daemon.push(&body, "delivery-1");
    assert_eq!(status, 202, "{answer}");
    let run1 = first_run(&answer);
    assert_eq!(answer["runs"][0]["pipeline"], "deploy");
    assert!(answer["delivery"].as_i64().is_some());
    assert_eq!(answer["skipped"], Value::Array(vec![]));

    let run = daemon.wait_run(run1, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run}\n{}", daemon.log_text());
    assert_eq!(run["commit"], a.as_str());
    assert_eq!(run["trigger"], "push");
    assert_eq!(run["ref"], "refs/heads/main");
    assert_eq!(run["steps"][0]["name"], "record");
    assert_eq!(run["steps"][0]["exit_code"], 0);
    let out = env.out().join(run1.to_string());
    assert_eq!(
        std::fs::read_to_string(out.join("head"))
            .expect("head")
            .trim(),
        a
    );
    assert_eq!(
        std::fs::read_to_string(out.join("app.txt")).expect("app"),
        "one\n"
    );

    let vars = env_of(&env, run1);
    let expect = [
        ("HOOKD_RUN_ID", run1.to_string()),
        ("HOOKD_PIPELINE", "deploy".into()),
        ("HOOKD_TRIGGER", "push".into()),
        ("HOOKD_SOURCE", "github".into()),
        ("HOOKD_REPOSITORY", "acme/infra".into()),
        ("HOOKD_REF", "refs/heads/main".into()),
        ("HOOKD_BRANCH", "main".into()),
        ("HOOKD_TAG", "".into()),
        ("HOOKD_COMMIT", a.clone()),
        ("HOOKD_BEFORE", "".into()),
        ("HOOKD_PUSHER", "binkkatal".into()),
        ("OUT", env.out().display().to_string()),
        ("HOOKD_TEST_PASSED", "passed-through".into()),
    ];
    for (k, v) in &expect {
        assert_eq!(var(&vars, k), Some(v.as_str()), "{k} in {vars:?}");
    }
    for k in [
        "HOOKD_EVENT_FILE",
        "HOOKD_PAYLOAD_FILE",
        "HOOKD_CHANGED_FILES_FILE",
        "PATH",
        "HOME",
        "LANG",
    ] {
        assert!(
            var(&vars, k).is_some_and(|v| !v.is_empty()),
            "{k} missing in {vars:?}"
        );
    }
    assert_eq!(
        var(&vars, "HOOKD_TEST_DAEMON_SECRET"),
        None,
        "daemon env leaked"
    );
    assert_eq!(var(&vars, "NOTIFY_SOCKET"), None);
    let payload = std::fs::read(var(&vars, "HOOKD_PAYLOAD_FILE").expect("payload var"))
        .expect("payload file");
    assert_eq!(payload, body, "HOOKD_PAYLOAD_FILE holds the exact body");
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("event.json")).expect("event"))
            .expect("json");
    assert_eq!(event["repository"], "acme/infra");
    // A new branch (before = zeros): every file of the commit counts as changed.
    assert_eq!(
        std::fs::read_to_string(out.join("changed")).expect("changed"),
        "app.txt\nterraform/main.tf\n"
    );

    // A second push moves the working tree to the second commit.
    let b = repo.commit(&[("app.txt", "two\n")], "second");
    let body = github_push("acme/infra", &repo.url(), "refs/heads/main", &a, &b);
    let (status, answer) = daemon.push(&body, "delivery-2");
    assert_eq!(status, 202, "{answer}");
    let run2 = first_run(&answer);
    let run = daemon.wait_run(run2, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["commit"], b.as_str());
    let out = env.out().join(run2.to_string());
    assert_eq!(
        std::fs::read_to_string(out.join("head"))
            .expect("head")
            .trim(),
        b
    );
    assert_eq!(
        std::fs::read_to_string(out.join("app.txt")).expect("app"),
        "two\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("changed")).expect("changed"),
        "app.txt\n"
    );
    assert_eq!(var(&env_of(&env, run2), "HOOKD_BEFORE"), Some(a.as_str()));

    // The log holds the step's output with stream marks.
    let (status, log) = daemon.request("GET", &format!("/api/v1/runs/{run2}/log"), &[], b"");
    assert_eq!(status, 200);
    assert!(
        log.contains(&format!(" record out | recorded run {run2}")),
        "{log}"
    );
    assert!(log.contains(&format!("checked out {b}")), "{log}");

    // The CLI reads the same.
    let (code, stdout, stderr) = env.cli(&["runs", "--url", &daemon.base]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("deploy") && l.contains("succeeded")),
        "{stdout}"
    );
    let (code, stdout, stderr) = env.cli(&["logs", &run2.to_string(), "--url", &daemon.base]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("recorded run"), "{stdout}");

    // The delivery is stored with the provider id and the match explanation.
    let delivery = daemon.get_json(&format!("/api/v1/deliveries/{}", answer["delivery"]));
    assert_eq!(delivery["provider_delivery_id"], "delivery-2");
    assert_eq!(delivery["source"], "github");
    assert_eq!(delivery["event"], "push");
    assert_eq!(delivery["runs"][0]["id"], run2);
}

#[test]
fn bad_requests_are_refused_and_start_nothing() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("app.txt", "x")], "c");
    let env = Env::new("max_body_bytes: 20000\n", &[("deploy", RECORDER)]);
    let daemon = env.start();
    let body = github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a);

    let mut wrong = github_headers("push", &body, "d-wrong");
    wrong[4].1 = format!(
        "sha256={}",
        hookd::source::hmac_sha256_hex(b"not the secret", &body)
    );
    let (status, text) = daemon.request("POST", "/hooks/github", &wrong, &body);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("does not match"), "{text}");

    let mut missing = github_headers("push", &body, "d-missing");
    missing.remove(4);
    let (status, text) = daemon.request("POST", "/hooks/github", &missing, &body);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("missing X-Hub-Signature-256"), "{text}");

    // Tampered body, signature of the original.
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let (status, _) = daemon.request(
        "POST",
        "/hooks/github",
        &github_headers("push", &body, "d-t"),
        &tampered,
    );
    assert_eq!(status, 401);

    let (status, text) = daemon.request(
        "POST",
        "/hooks/nope",
        &github_headers("push", &body, "d-x"),
        &body,
    );
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("unknown source"), "{text}");

    let junk = b"{\"ref\": \"refs/heads/main\", oops";
    let (status, text) = daemon.request(
        "POST",
        "/hooks/github",
        &github_headers("push", junk, "d-j"),
        junk,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not valid JSON"), "{text}");

    let big = vec![b' '; 50_000];
    let (status, text) = daemon.request(
        "POST",
        "/hooks/github",
        &github_headers("push", &big, "d-big"),
        &big,
    );
    assert_eq!(status, 413, "{text}");

    // The GitHub docs test vector verifies end to end: it passes authentication
    // (and is then refused as malformed JSON, not as unauthenticated).
    let hello = b"Hello, World!";
    let mut vector = github_headers("push", hello, "d-vector");
    vector[4].1 = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".into();
    let (status, text) = daemon.request("POST", "/hooks/github", &vector, hello);
    assert_eq!(status, 400, "{text}");

    assert!(daemon.runs().is_empty(), "a refused request started a run");
    // Still serving: a good request works afterwards.
    let (status, answer) = daemon.push(&body, "d-good");
    assert_eq!(status, 202, "{answer}");
}

#[test]
fn duplicates_pings_unmatched_refs_and_deletions_start_nothing() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("app.txt", "x")], "c");
    let env = Env::new(
        "",
        &[
            ("deploy", RECORDER),
            (
                "release",
                "on:\n  - push: {tags: ['v*']}\nsteps: [{run: 'true'}]\n",
            ),
        ],
    );
    let daemon = env.start();
    let body = github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a);
    let (status, first) = daemon.push(&body, "same-id");
    assert_eq!(status, 202);
    assert_eq!(first["skipped"][0]["pipeline"], "release");
    assert_eq!(
        first["skipped"][0]["reason"],
        "branch \"main\" pushed, but the trigger filters only tags"
    );
    let (status, again) = daemon.push(&body, "same-id");
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["delivery"], first["delivery"]);
    assert_eq!(again["runs"], first["runs"]);

    // An unmatched branch is skipped with its reason.
    let dev = github_push("acme/infra", &repo.url(), "refs/heads/dev", ZERO, &a);
    let (status, answer) = daemon.push(&dev, "dev-id");
    assert_eq!(status, 202);
    assert_eq!(answer["runs"], Value::Array(vec![]));
    let reasons: Vec<&str> = answer["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .filter_map(|s| s["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"branch \"dev\" matches none of branches [main, release/**]"),
        "{answer}"
    );

    // Deleting a branch or a tag never runs anything.
    let delete = github_push("acme/infra", &repo.url(), "refs/heads/main", &a, ZERO);
    let (status, answer) = daemon.push(&delete, "del-id");
    assert_eq!(status, 202);
    assert_eq!(answer["runs"], Value::Array(vec![]));
    assert!(
        answer["skipped"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("deleted"),
        "{answer}"
    );
    let tag_delete = std::fs::read(fixture_path("github/push-tag-delete.json")).expect("fixture");
    let (status, answer) = daemon.push(&tag_delete, "tag-del-id");
    assert_eq!(status, 202);
    assert_eq!(answer["runs"], Value::Array(vec![]));

    // Ping: 200, stored, nothing runs. Other event types: 202 with the reason.
    let ping = std::fs::read(fixture_path("github/ping.json")).expect("fixture");
    let (status, answer) = daemon.github("ping", &ping, "ping-id");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["runs"], Value::Array(vec![]));
    let pr = std::fs::read(fixture_path("github/pull_request-opened.json")).expect("fixture");
    let (status, answer) = daemon.github("pull_request", &pr, "pr-id");
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["skipped"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("\"pull_request\" starts no pipeline"),
        "{answer}"
    );

    let runs = daemon.runs();
    assert_eq!(runs.len(), 1, "only the first push runs: {runs:?}");
    daemon.wait_run(first_run(&first), RUN_TIMEOUT);
}

#[test]
fn hostile_ref_names_and_commit_messages_reach_steps_verbatim_and_run_nothing() {
    let repo = GitRepo::new();
    let a = repo.commit(
        &[("app.txt", "x")],
        "msg with `touch backtick-pwned` and $(touch dollar-pwned)",
    );
    let env = Env::new(
        "",
        &[(
            "any",
            "on:\n  - push: {branches: ['**']}\nenv: {OUT: $OUT}\nsteps:\n  - run: printf '%s' \"$HOOKD_BRANCH\" > \"$OUT/branch\"; cp \"$HOOKD_EVENT_FILE\" \"$OUT/event.json\"\n",
        )],
    );
    let daemon = env.start();
    let hostile = "$(touch x)";
    let mut body: Value = serde_json::from_slice(&github_push(
        "acme/infra",
        &repo.url(),
        &format!("refs/heads/{hostile}"),
        ZERO,
        &a,
    ))
    .expect("json");
    body["head_commit"]["message"] = "`touch backtick-pwned` $(touch dollar-pwned)".into();
    let body = serde_json::to_vec(&body).expect("encode");
    let (status, answer) = daemon.push(&body, "hostile");
    assert_eq!(status, 202, "{answer}");
    let run = daemon.wait_run(first_run(&answer), RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run}\n{}", daemon.log_text());
    assert_eq!(
        std::fs::read_to_string(env.out().join("branch")).expect("branch"),
        hostile
    );
    for dir in [env.path().to_path_buf(), env.out(), env.path().join("data")] {
        for name in ["x", "backtick-pwned", "dollar-pwned"] {
            assert!(
                !dir.join(name).exists(),
                "{name} was created in {}",
                dir.display()
            );
        }
    }
    let found = std::process::Command::new("find")
        .args([
            env.path().to_str().expect("utf8"),
            "-name",
            "*pwned*",
            "-o",
            "-name",
            "x",
        ])
        .output()
        .expect("find");
    assert!(
        String::from_utf8_lossy(&found.stdout).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&found.stdout)
    );
}

/// Opens a connection to the daemon and sends a webhook's head plus
/// `partial` bytes of its body.
fn slow_sender(daemon: &Daemon, head_extra: &str, partial: &[u8]) -> std::net::TcpStream {
    use std::io::Write;
    let addr = daemon.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n{head_extra}\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(partial).expect("send part of the body");
    stream
}

/// The status line and body of the answer on `stream`.
fn answer_of(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut buf = vec![0; 4096];
    let n = stream.read(&mut buf).expect("an answer");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Bodies are read within `body_timeout`, and at most four times
/// `max_body_bytes` of them are held at once, counted as the bytes arrive:
/// a slow sender gets `408`, one past the budget `503` with `Retry-After`,
/// and nothing of either is stored. Declared lengths alone spend nothing.
#[test]
fn slow_bodies_time_out_and_too_many_at_once_are_refused() {
    let env = Env::new("max_body_bytes: 1000\nbody_timeout: 1s\n", &[]);
    let daemon = env.start();
    let body = format!("{{\"ref\": \"refs/heads/main\"{}}}", " ".repeat(80));
    let body = body.as_bytes();
    let push = |id: &str| {
        daemon.request(
            "POST",
            "/hooks/github",
            &github_headers("push", body, id),
            body,
        )
    };

    // Headers that declare the largest body, and no body: they cost a
    // sender nothing, so they hold no budget.
    let started = std::time::Instant::now();
    let mut slow: Vec<_> = (0..4)
        .map(|_| slow_sender(&daemon, "Content-Length: 1000\r\n", b""))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (status, text) = push("d-idle");
    assert_eq!(
        status, 400,
        "idle senders must not block deliveries: {text}"
    );

    // Four senders that send 990 of their 1000 bytes: 3,960 of the 4,000
    // bytes are held while they wait, and a 100-byte body does not fit.
    let partial = vec![b' '; 990];
    slow.extend((0..4).map(|_| slow_sender(&daemon, "Content-Length: 1000\r\n", &partial)));
    let refused = wait_until(Duration::from_secs(5), "the budget to be spent", || {
        let (status, text) = push("d-busy");
        (status == 503).then_some(text)
    });
    assert!(refused.contains("at once are spent"), "{refused}");

    // Each slow sender gets 408 once body_timeout has passed.
    for stream in &mut slow {
        let answer = answer_of(stream);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_timeout (1s)"), "{answer}");
    }
    assert!(started.elapsed() >= Duration::from_secs(1));

    // Their shares are back: a body without a declared length (chunked)
    // is read and answered as usual.
    let mut chunked = slow_sender(
        &daemon,
        "Transfer-Encoding: chunked\r\nX-Hub-Signature-256: sha256=00\r\n",
        format!("{:x}\r\n", body.len()).as_bytes(),
    );
    {
        use std::io::Write;
        chunked.write_all(body).expect("chunk");
        chunked.write_all(b"\r\n0\r\n\r\n").expect("last chunk");
    }
    let answer = answer_of(&mut chunked);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let (status, text) = push("d-after");
    assert_eq!(status, 400, "{text}");

    let deliveries = daemon.get_json("/api/v1/deliveries");
    assert_eq!(
        deliveries["deliveries"],
        serde_json::json!([]),
        "{deliveries}"
    );
    let (_, metrics) = daemon.request("GET", "/metrics", &[], b"");
    assert!(
        metrics.contains(r#"hookd_deliveries_total{source="github",outcome="unavailable"}"#),
        "{metrics}"
    );
}
