//! Timeouts, crashes and shutdown against a real daemon and real processes.

mod common;

use std::time::{Duration, Instant};

use common::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn group_alive(pgid: i32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
}

/// A step that ignores SIGTERM and forks children that ignore it too is
/// killed with its whole process group at its timeout.
#[test]
fn a_step_ignoring_sigterm_is_killed_with_its_whole_group_at_its_timeout() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "",
        &[(
            "stubborn",
            r#"on: [{push: {}}]
env: {OUT: $OUT}
steps:
  - name: hang
    timeout: 1s
    run: |
      trap '' TERM
      echo $$ > "$OUT/pgid"
      (trap '' TERM; sleep 1000) &
      sh -c 'trap "" TERM; sleep 1000' &
      sleep 1000 &
      echo started
      wait
  - name: never
    run: touch "$OUT/second-step-ran"
"#,
        )],
    );
    let daemon = env.start();
    let body = github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a);
    let (status, answer) = daemon.push(&body, "t-1");
    assert_eq!(status, 202, "{answer}");
    let started = Instant::now();
    let run = daemon.wait_run(
        answer["runs"][0]["id"].as_i64().expect("run id"),
        RUN_TIMEOUT,
    );
    let took = started.elapsed();
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["steps"][0]["status"], "timed_out", "{run}");
    assert_eq!(
        run["steps"].as_array().map(Vec::len),
        Some(1),
        "the next step must not start: {run}"
    );
    assert!(
        run["reason"]
            .as_str()
            .unwrap_or("")
            .contains("exceeded its timeout of 1s"),
        "{run}"
    );
    // timeout 1s + kill_grace 1s + checkout and bookkeeping.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let pgid: i32 = std::fs::read_to_string(env.out().join("pgid"))
        .expect("pgid file")
        .trim()
        .parse()
        .expect("pgid");
    assert!(
        !group_alive(pgid),
        "process group {pgid} survived the timeout"
    );
    assert!(!env.out().join("second-step-ran").exists());
    let (_, log) = daemon.request("GET", &format!("/api/v1/runs/{}/log", run["id"]), &[], b"");
    assert!(log.contains("hang out | started"), "{log}");
    assert!(log.contains("timed out"), "{log}");
}

/// `kill -9` right after a 202: after a restart the delivery and its run are
/// there, and the run completes or is marked interrupted.
#[test]
fn kill_9_after_202_loses_nothing() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "x")], "c");
    let pipeline = "on: [{push: {}}]\nenv: {OUT: $OUT}\nsteps:\n  - run: sleep 1; echo done > \"$OUT/$HOOKD_RUN_ID\"\n";
    let env = Env::new("", &[("slow", pipeline)]);

    for round in 0..3 {
        let daemon = env.start();
        let body = github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a);
        let (status, answer) = daemon.push(&body, &format!("crash-{round}"));
        assert_eq!(status, 202, "{answer}");
        let delivery = answer["delivery"].as_i64().expect("delivery");
        let run_id = answer["runs"][0]["id"].as_i64().expect("run");
        daemon.crash();

        let daemon = env.start();
        let stored = daemon.get_json(&format!("/api/v1/deliveries/{delivery}"));
        assert_eq!(stored["provider_delivery_id"], format!("crash-{round}"));
        assert_eq!(stored["runs"][0]["id"], run_id);
        let run = daemon.wait_run(run_id, RUN_TIMEOUT);
        let status = run["status"].as_str().unwrap_or("");
        assert!(
            status == "succeeded" || status == "interrupted",
            "round {round}: {run}"
        );
        if status == "interrupted" {
            assert!(
                run["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("hookd stopped"),
                "{run}"
            );
        }
        // The same delivery again is a duplicate, not a second run.
        let (status, again) = daemon.push(&body, &format!("crash-{round}"));
        assert_eq!(status, 200, "{again}");
        daemon.stop();
    }
}

/// SIGTERM: a step that finishes within the grace period completes; one that
/// does not is stopped and its run is `interrupted`; the daemon exits 0.
#[test]
fn sigterm_drains_then_interrupts() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "",
        &[
            ("quick", "on: [{push: {}}]\nenv: {OUT: $OUT}\nsteps:\n  - run: echo started > \"$OUT/quick-started\"; sleep 1; echo done > \"$OUT/quick\"\n  - run: touch \"$OUT/quick-second\"\n"),
            ("long", "on: [{push: {}}]\nenv: {OUT: $OUT}\nsteps:\n  - run: echo started > \"$OUT/long-started\"; sleep 1000\n"),
        ],
    );
    let daemon = env.start();
    let body = github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a);
    let (status, answer) = daemon.push(&body, "term-1");
    assert_eq!(status, 202, "{answer}");
    let ids: Vec<i64> = answer["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 2);
    wait_until(Duration::from_secs(20), "both steps to start", || {
        (env.out().join("quick-started").exists() && env.out().join("long-started").exists())
            .then_some(())
    });
    let started = Instant::now();
    let exit = daemon.stop();
    assert!(exit.success(), "hookd exited with {exit}");
    // shutdown_grace 2s + kill_grace 1s + bookkeeping
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        env.out().join("quick").exists(),
        "the quick step was not allowed to finish"
    );
    assert!(
        !env.out().join("quick-second").exists(),
        "no new step starts during shutdown"
    );

    let daemon = env.start();
    let runs = daemon.runs();
    let status_of = |pipeline: &str| {
        runs.iter()
            .find(|r| r["pipeline"] == pipeline)
            .map(|r| r["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(status_of("quick"), "interrupted", "{runs:?}");
    assert_eq!(status_of("long"), "interrupted", "{runs:?}");
    let long = runs
        .iter()
        .find(|r| r["pipeline"] == "long")
        .expect("long run");
    assert!(
        long["reason"].as_str().unwrap_or("").contains("shut down"),
        "{long}"
    );
}
