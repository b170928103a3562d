//! The operator's side against a real daemon: `hookd logs -f`, metrics that
//! promtool accepts, hot reload, the systemd notify protocol, log fields.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn push_one(daemon: &Daemon, repo: &GitRepo, delivery: &str) -> Value {
    let body = github_push(
        "acme/infra",
        &repo.url(),
        "refs/heads/main",
        ZERO,
        &repo.head(),
    );
    let (status, answer) = daemon.push(&body, delivery);
    assert_eq!(status, 202, "{answer}");
    answer
}

fn run_of(answer: &Value, pipeline: &str) -> i64 {
    answer["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["pipeline"] == pipeline))
        .and_then(|r| r["id"].as_i64())
        .unwrap_or_else(|| panic!("no run of {pipeline} in {answer}"))
}

/// Reads a child's stdout lines on a thread.
fn lines_of(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|l| l.contains(needle)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line containing {needle:?}; got:\n{}", seen.join("\n")),
        }
    }
}

#[test]
fn logs_follow_prints_lines_as_they_come_and_exits_with_the_run_outcome() {
    let repo = GitRepo::new();
    repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "",
        &[(
            "gated",
            "on: [{push: {}}]\nenv: {OUT: $OUT}\nsteps:\n  - name: gate\n    run: |\n      echo before-the-gate\n      while [ ! -e \"$OUT/go\" ]; do sleep 0.05; done\n      echo after-the-gate\n      exit 3\n",
        )],
    );
    let daemon = env.start();
    let run = run_of(&push_one(&daemon, &repo, "follow-1"), "gated");

    let mut child = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .args([
            "logs",
            &run.to_string(),
            "-f",
            "--url",
            &daemon.base,
            "--config",
        ])
        .arg(env.path().join("hookd.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hookd logs -f");
    let rx = lines_of(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    wait_line(&rx, "gate out | before-the-gate", &mut seen);
    // The run is still waiting at its gate: the line came live, and the CLI waits.
    assert_eq!(
        daemon.get_json(&format!("/api/v1/runs/{run}"))["status"],
        "running"
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "logs -f exited early"
    );
    assert!(!seen.iter().any(|l| l.contains("after-the-gate")));
    std::fs::write(env.out().join("go"), "").expect("open the gate");
    wait_line(&rx, "gate out | after-the-gate", &mut seen);
    let status = wait_until(Duration::from_secs(30), "logs -f to exit", || {
        child.try_wait().expect("try_wait")
    });
    assert_eq!(status.code(), Some(1), "a failed run exits 1");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(stderr.contains(&format!("run {run} failed")), "{stderr}");

    // A run that succeeded (already over when followed): everything, then exit 0.
    env.write_pipeline(
        "gated",
        "on: [{push: {}}]\nsteps:\n  - name: quick\n    run: echo quick-and-fine\n",
    );
    wait_until(Duration::from_secs(5), "the edit to be live", || {
        let p = daemon.get_json("/api/v1/pipelines");
        (p["pipelines"][0]["steps"] == 1
            && p["pipelines"][0]["file"].is_string()
            && daemon.log_text().contains("pipelines reloaded"))
        .then_some(())
    });
    let run = run_of(&push_one(&daemon, &repo, "follow-2"), "gated");
    daemon.wait_run(run, RUN_TIMEOUT);
    let (code, stdout, stderr) = env.cli(&["logs", &run.to_string(), "-f", "--url", &daemon.base]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("quick out | quick-and-fine"), "{stdout}");
}

#[test]
fn promtool_accepts_a_scrape_taken_after_runs_of_every_status() {
    let repo = GitRepo::new();
    repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "",
        &[
            (
                "fine",
                "on: [{push: {}}]\nsteps:\n  - name: ok\n    run: 'true'\n",
            ),
            (
                "broken",
                "on: [{push: {}}]\nsteps:\n  - name: fail\n    run: exit 1\n",
            ),
            (
                "slow",
                "on: [{push: {}}]\nsteps:\n  - name: hang\n    timeout: 1s\n    run: sleep 30\n",
            ),
        ],
    );
    let daemon = env.start();
    let answer = push_one(&daemon, &repo, "metrics-1");
    for (pipeline, expected) in [
        ("fine", "succeeded"),
        ("broken", "failed"),
        ("slow", "timed_out"),
    ] {
        let run = daemon.wait_run(run_of(&answer, pipeline), RUN_TIMEOUT);
        assert_eq!(run["status"], expected, "{run}");
    }
    // Deliveries of other outcomes: duplicate, unauthorized, unknown source, malformed.
    let body = github_push(
        "acme/infra",
        &repo.url(),
        "refs/heads/main",
        ZERO,
        &repo.head(),
    );
    assert_eq!(daemon.push(&body, "metrics-1").0, 200);
    let mut forged = github_headers("push", &body, "metrics-2");
    forged.retain(|(k, _)| k != "X-Hub-Signature-256");
    forged.push((
        "X-Hub-Signature-256".into(),
        format!("sha256={}", "0".repeat(64)),
    ));
    assert_eq!(
        daemon.request("POST", "/hooks/github", &forged, &body).0,
        401
    );
    assert_eq!(daemon.request("POST", "/hooks/nope", &[], b"{}").0, 404);
    let junk = b"not json";
    assert_eq!(
        daemon
            .request(
                "POST",
                "/hooks/github",
                &github_headers("push", junk, "m-3"),
                junk
            )
            .0,
        400
    );

    let (status, scrape) = daemon.request("GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "{scrape}");
    for expected in [
        "hookd_runs_total{pipeline=\"fine\",status=\"succeeded\"} 1",
        "hookd_runs_total{pipeline=\"broken\",status=\"failed\"} 1",
        "hookd_runs_total{pipeline=\"slow\",status=\"timed_out\"} 1",
        "hookd_deliveries_total{source=\"github\",outcome=\"accepted\"} 1",
        "hookd_deliveries_total{source=\"github\",outcome=\"duplicate\"} 1",
        "hookd_deliveries_total{source=\"github\",outcome=\"unauthorized\"} 1",
        "hookd_deliveries_total{source=\"github\",outcome=\"malformed\"} 1",
        "hookd_deliveries_total{source=\"(unknown)\",outcome=\"unknown_source\"} 1",
        "hookd_step_duration_seconds_bucket{pipeline=\"slow\",step=\"hang\",status=\"timed_out\",le=\"+Inf\"} 1",
        "hookd_run_duration_seconds_count{pipeline=\"fine\",status=\"succeeded\"} 1",
        "hookd_git_fetch_duration_seconds_count 3",
        "hookd_queue_depth 0",
        "hookd_runs_running 0",
        "hookd_config_last_reload_successful 1",
        "hookd_build_info{version=",
    ] {
        assert!(scrape.contains(expected), "missing {expected:?} in:\n{scrape}");
    }
    let file = env.path().join("scrape.txt");
    std::fs::write(&file, &scrape).expect("write scrape");
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("open scrape"))
        .output()
        .expect("promtool must be installed (Debian package prometheus; .ci/run installs it)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}\n{scrape}"
    );
    assert!(report.trim().is_empty(), "promtool has remarks:\n{report}");
}

#[test]
fn an_invalid_edit_keeps_the_old_pipelines_and_a_valid_one_is_live_within_two_seconds() {
    let repo = GitRepo::new();
    repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "",
        &[(
            "deploy",
            "on: [{push: {}}]\nsteps:\n  - name: say\n    run: echo version-one\n",
        )],
    );
    let daemon = env.start();

    env.write_pipeline(
        "deploy",
        "on: [{push: {}}]\nsteps:\n  - name: say\n    run: echo version-two\n    colour: blue\n",
    );
    let file = env.path().join("pipelines").join("deploy.yaml");
    let ready = wait_until(
        Duration::from_secs(10),
        "the failed reload in /readyz",
        || {
            let (status, body) = daemon.request("GET", "/readyz", &[], b"");
            assert_eq!(status, 200, "a failed reload keeps hookd ready: {body}");
            body.contains("FAILED").then_some(body)
        },
    );
    assert!(
        ready.contains(&format!("{}:5:5: unknown field `colour`", file.display())),
        "{ready}"
    );
    assert!(daemon.log_text().contains("unknown field `colour`"));
    let (_, metrics) = daemon.request("GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("hookd_config_last_reload_successful 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hookd_config_reloads_total{result=\"failure\"}"),
        "{metrics}"
    );
    // The previous definition still serves.
    let run = run_of(&push_one(&daemon, &repo, "reload-1"), "deploy");
    daemon.wait_run(run, RUN_TIMEOUT);
    let (_, log) = daemon.request("GET", &format!("/api/v1/runs/{run}/log"), &[], b"");
    assert!(log.contains("say out | version-one"), "{log}");

    // A valid edit, plus a new pipeline, is live within 2 s without a restart.
    let edited = Instant::now();
    env.write_pipeline(
        "deploy",
        "on: [{push: {}}]\nsteps:\n  - name: say\n    run: echo version-two\n",
    );
    env.write_pipeline("extra", "on: [{push: {}}]\nsteps: [{run: 'true'}]\n");
    wait_until(Duration::from_secs(2), "the valid edit to be live", || {
        let p = daemon.get_json("/api/v1/pipelines");
        (p["pipelines"].as_array().map(Vec::len) == Some(2)).then_some(())
    });
    let took = edited.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let (_, ready) = daemon.request("GET", "/readyz", &[], b"");
    assert!(ready.contains("last reload: ok"), "{ready}");
    let (code, table, stderr) = env.cli(&["pipelines", "--url", &daemon.base]);
    assert_eq!(code, 0, "{stderr}");
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("deploy ")
            && l.contains("succeeded")
            && l.contains("push: any")),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("extra ")), "{table}");
    let run = run_of(&push_one(&daemon, &repo, "reload-2"), "deploy");
    daemon.wait_run(run, RUN_TIMEOUT);
    let (_, log) = daemon.request("GET", &format!("/api/v1/runs/{run}/log"), &[], b"");
    assert!(log.contains("say out | version-two"), "{log}");
}

/// Receives notify datagrams until one contains `needle`; returns it.
fn expect_notify(sock: &UnixDatagram, needle: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    loop {
        if Instant::now() > deadline {
            panic!("no {needle:?} from hookd; got {seen:?}");
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(msg.clone());
                if msg.lines().any(|l| l == needle || l.starts_with(needle)) {
                    return msg;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
}

#[test]
fn systemd_hears_ready_reloading_stopping_and_watchdog_and_steps_never_see_the_socket() {
    let repo = GitRepo::new();
    repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "",
        &[(
            "envdump",
            "on: [{push: {}}]\nenv: {OUT: $OUT}\nsteps:\n  - run: env > \"$OUT/env\"\n",
        )],
    );
    let sock_path = env.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let sock_env = sock_path.display().to_string();
    let daemon = env.start_with_env(&[("NOTIFY_SOCKET", &sock_env), ("WATCHDOG_USEC", "400000")]);
    let mut seen = Vec::new();
    let ready = expect_notify(&sock, "READY=1", &mut seen);
    assert!(ready.contains("STATUS=serving 1 pipelines"), "{ready}");
    // READY=1 comes once the server listens.
    assert_eq!(daemon.request("GET", "/healthz", &[], b"").0, 200);
    expect_notify(&sock, "WATCHDOG=1", &mut seen);

    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let reloading = expect_notify(&sock, "RELOADING=1", &mut seen);
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{reloading}");
    expect_notify(&sock, "READY=1", &mut seen);

    let run = run_of(&push_one(&daemon, &repo, "notify-1"), "envdump");
    let run = daemon.wait_run(run, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run}");
    let step_env = std::fs::read_to_string(env.out().join("env")).expect("env file");
    assert!(!step_env.contains("NOTIFY_SOCKET"), "{step_env}");
    assert!(!step_env.contains("WATCHDOG_USEC"), "{step_env}");

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    expect_notify(&sock, "STOPPING=1", &mut seen);
    let exit = daemon.stop();
    assert!(exit.success(), "{exit}");
}

#[test]
fn delivery_and_run_ids_are_fields_in_json_logs() {
    let repo = GitRepo::new();
    repo.commit(&[("f", "x")], "c");
    let env = Env::new("", &[("p", "on: [{push: {}}]\nsteps: [{run: 'true'}]\n")]);
    let daemon = env.start_with(&["--log-format", "json"], &[]);
    let answer = push_one(&daemon, &repo, "json-1");
    let delivery = answer["delivery"].as_i64().expect("delivery");
    let run = run_of(&answer, "p");
    daemon.wait_run(run, RUN_TIMEOUT);
    let lines: Vec<Value> =
        wait_until(Duration::from_secs(10), "the run-finished log line", || {
            let lines: Vec<Value> = daemon
                .log_text()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            lines
                .iter()
                .any(|l| l["fields"]["message"] == "run finished")
                .then_some(lines)
        });
    let accepted = lines
        .iter()
        .find(|l| l["fields"]["message"] == "accepted delivery")
        .expect("accepted delivery line");
    assert_eq!(accepted["fields"]["delivery"], delivery, "{accepted}");
    let finished = lines
        .iter()
        .find(|l| l["fields"]["message"] == "run finished")
        .expect("run finished line");
    assert_eq!(finished["span"]["run"], run, "{finished}");
    assert_eq!(finished["span"]["pipeline"], "p", "{finished}");
}
