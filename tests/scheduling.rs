//! Scheduling you can trust: concurrency groups, supersede, cancel, retries,
//! manual runs, replay, stale pushes, store failures and crashes.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(90);

fn run_ids(answer: &Value) -> Vec<i64> {
    answer["runs"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["id"].as_i64()).collect())
        .unwrap_or_default()
}

fn wait_all_terminal(daemon: &Daemon, n: usize) -> Vec<Value> {
    wait_until(RUN_TIMEOUT, "all runs to end", || {
        let runs = daemon.runs();
        (runs.len() >= n
            && runs
                .iter()
                .all(|r| !matches!(r["status"].as_str(), Some("queued" | "running"))))
        .then_some(runs)
    })
}

fn group_alive(pgid: i32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
}

#[test]
fn pipelines_sharing_a_concurrency_group_never_overlap() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "x")], "c");
    let step = "env: {OUT: $OUT}\nconcurrency: {group: shared-state}\nsteps:\n  - run: |\n      echo \"start $(date +%s%N) $HOOKD_PIPELINE\" >> \"$OUT/intervals\"\n      sleep 0.3\n      echo \"end $(date +%s%N) $HOOKD_PIPELINE\" >> \"$OUT/intervals\"\n";
    let env = Env::new(
        "max_parallel_runs: 8\n",
        &[
            ("plan", &format!("on: [{{push: {{}}}}]\n{step}")),
            ("apply", &format!("on: [{{push: {{}}}}]\n{step}")),
            (
                "unrelated",
                "on: [{push: {}}]\nsteps: [{run: 'sleep 0.3'}]\n",
            ),
        ],
    );
    let daemon = env.start();
    for i in 0..3 {
        let body = github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a);
        let (status, answer) = daemon.push(&body, &format!("group-{i}"));
        assert_eq!(status, 202, "{answer}");
    }
    let runs = wait_all_terminal(&daemon, 9);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    let text = std::fs::read_to_string(env.out().join("intervals")).expect("intervals");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12, "{text}");
    // Serial means: start, end, start, end, ... strictly alternating.
    for (i, line) in lines.iter().enumerate() {
        let want = if i % 2 == 0 { "start" } else { "end" };
        assert!(line.starts_with(want), "overlap at line {i}:\n{text}");
    }
    let times: Vec<u128> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{text}");
}

#[test]
fn a_burst_under_supersede_runs_the_running_one_and_the_newest_only() {
    let repo = GitRepo::new();
    let env = Env::new(
        "",
        &[(
            "apply",
            // Each run holds until the test has sent the whole burst.
            "on: [{push: {branches: [main]}}]\nenv: {OUT: $OUT}\nconcurrency: {on_new_event: supersede}\nsteps:\n  - timeout: 60s\n    run: until [ -f \"$OUT/release\" ]; do sleep 0.05; done; echo \"$HOOKD_COMMIT\" >> \"$OUT/applied\"\n",
        )],
    );
    let daemon = env.start();
    let mut before = ZERO.to_string();
    let mut commits = Vec::new();
    for i in 0..20 {
        let c = repo.commit(&[("f", &i.to_string())], &format!("c{i}"));
        let body = github_push("acme/infra", &repo.url(), "refs/heads/main", &before, &c);
        let (status, answer) = daemon.push(&body, &format!("burst-{i}"));
        assert_eq!(status, 202, "{answer}");
        before = c.clone();
        commits.push(c);
    }
    std::fs::write(env.out().join("release"), "").expect("release");
    let runs = wait_all_terminal(&daemon, 20);
    let executed: Vec<&Value> = runs.iter().filter(|r| r["status"] == "succeeded").collect();
    assert!(
        executed.len() <= 2 && !executed.is_empty(),
        "executed {}: {runs:?}",
        executed.len()
    );
    let superseded: Vec<&Value> = runs
        .iter()
        .filter(|r| r["status"] == "superseded")
        .collect();
    assert_eq!(superseded.len() + executed.len(), 20, "{runs:?}");
    for r in &superseded {
        let by = r["superseded_by"].as_i64().expect("superseded_by");
        assert!(by > r["id"].as_i64().expect("id"), "{r}");
    }
    let applied = std::fs::read_to_string(env.out().join("applied")).expect("applied");
    assert_eq!(
        applied.lines().last(),
        commits.last().map(String::as_str),
        "{applied}"
    );
}

#[test]
fn cancel_policy_stops_the_running_step_group_and_starts_the_newest() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "1")], "a");
    let env = Env::new(
        "",
        &[(
            "deploy",
            "on: [{push: {}}]\nenv: {OUT: $OUT}\nconcurrency: {on_new_event: cancel}\nsteps:\n  - run: |\n      if [ \"$HOOKD_COMMIT\" = \"$(cat \"$OUT/first\" 2>/dev/null)\" ]; then echo $$ > \"$OUT/pgid\"; trap '' TERM; sleep 1000 & wait; fi\n      echo \"$HOOKD_COMMIT\" > \"$OUT/done\"\n",
        )],
    );
    std::fs::write(env.out().join("first"), &a).expect("write");
    let daemon = env.start();
    let (_, first) = daemon.push(
        &github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a),
        "c-1",
    );
    let first_id = run_ids(&first)[0];
    let pgid: i32 = wait_until(Duration::from_secs(30), "the first step to start", || {
        std::fs::read_to_string(env.out().join("pgid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let b = repo.commit(&[("f", "2")], "b");
    let (status, second) = daemon.push(
        &github_push("acme/infra", &repo.url(), "refs/heads/main", &a, &b),
        "c-2",
    );
    assert_eq!(status, 202);
    let second_id = run_ids(&second)[0];
    let run = daemon.wait_run(first_id, RUN_TIMEOUT);
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        run["reason"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("run {second_id}")),
        "{run}"
    );
    assert!(
        !group_alive(pgid),
        "the cancelled step's process group survived"
    );
    let run = daemon.wait_run(second_id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        std::fs::read_to_string(env.out().join("done"))
            .expect("done")
            .trim(),
        b
    );
}

#[test]
fn a_step_failing_once_is_retried_and_succeeds_on_attempt_2() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "",
        &[(
            "flaky",
            "on: [{push: {}}]\nenv: {OUT: $OUT}\nretry: {attempts: 3, backoff: 1s}\nsteps:\n  - run: |\n      echo \"attempt $HOOKD_ATTEMPT\" >> \"$OUT/attempts\"\n      if [ ! -f \"$OUT/failed-once\" ]; then touch \"$OUT/failed-once\"; exit 7; fi\n",
        )],
    );
    let daemon = env.start();
    let (_, answer) = daemon.push(
        &github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a),
        "r-1",
    );
    let first = run_ids(&answer)[0];
    let run = daemon.wait_run(first, RUN_TIMEOUT);
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["steps"][0]["exit_code"], 7);
    let retry = wait_until(RUN_TIMEOUT, "the retry to succeed", || {
        daemon
            .runs()
            .into_iter()
            .find(|r| r["retry_of"] == first && r["status"] == "succeeded")
    });
    assert_eq!(retry["attempt"], 2, "{retry}");
    let started = retry["started_at"].as_str().unwrap_or("");
    let failed = run["finished_at"].as_str().unwrap_or("");
    assert!(started > failed, "the retry started after the failure");
    assert_eq!(
        std::fs::read_to_string(env.out().join("attempts")).expect("attempts"),
        "attempt 1\nattempt 2\n"
    );
    let (_, log) = daemon.request("GET", &format!("/api/v1/runs/{first}/log"), &[], b"");
    assert!(
        log.contains("run failed; retrying (attempt 2 of 3) in "),
        "{log}"
    );
    // Nothing more: attempt 2 succeeded, so no attempt 3.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(daemon.runs().len(), 2);
}

#[test]
fn trigger_wait_replay_and_cancel_through_the_cli() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "",
        &[
            (
                "ok",
                &format!("on: [{{manual: {{}}}}, {{push: {{}}}}]\nrepo: {{url: '{}', ref: main}}\nenv: {{OUT: $OUT}}\nsteps:\n  - run: echo \"$HOOKD_TRIGGER $HOOKD_COMMIT\" >> \"$OUT/ok\"\n", repo.url()),
            ),
            (
                "broken",
                &format!("on: [{{manual: {{}}}}]\nrepo: {{url: '{}'}}\nsteps:\n  - run: exit 3\n", repo.url()),
            ),
            (
                "forever",
                &format!("on: [{{manual: {{}}}}]\nrepo: {{url: '{}'}}\nenv: {{OUT: $OUT}}\nsteps:\n  - run: echo $$ > \"$OUT/forever-pgid\"; sleep 1000\n", repo.url()),
            ),
            ("webhook-only", "on: [{push: {}}]\nsteps: [{run: 'true'}]\n"),
        ],
    );
    let daemon = env.start();
    let url = daemon.base.clone();

    let (code, stdout, stderr) = env.cli(&["trigger", "ok", "--wait", "--url", &url]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(env.out().join("ok")).expect("ok"),
        format!("manual {a}\n")
    );
    let (code, stdout, _) = env.cli(&["trigger", "broken", "--wait", "--url", &url]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("failed"), "{stdout}");
    let (code, _, stderr) = env.cli(&["trigger", "webhook-only", "--url", &url]);
    assert_eq!(code, 1);
    assert!(stderr.contains("has no manual trigger"), "{stderr}");
    let (code, _, stderr) = env.cli(&["trigger", "nope", "--url", &url]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no pipeline \"nope\""), "{stderr}");

    // Replay: the stored delivery runs again, as a new delivery pointing at it.
    let (_, pushed) = daemon.push(
        &github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a),
        "replay-me",
    );
    let delivery = pushed["delivery"].as_i64().expect("delivery");
    daemon.wait_run(run_ids(&pushed)[0], RUN_TIMEOUT);
    let (code, stdout, stderr) = env.cli(&["replay", &delivery.to_string(), "--url", &url]);
    assert_eq!(code, 0, "{stderr}");
    let replayed: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(replayed["replay_of"], delivery);
    let run = daemon.wait_run(run_ids(&replayed)[0], RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["origin"], "replay");
    let stored = daemon.get_json(&format!("/api/v1/deliveries/{}", replayed["delivery"]));
    assert_eq!(stored["replay_of"], delivery);

    // Cancel a running run: its process group is stopped.
    let (code, stdout, _) = env.cli(&["trigger", "forever", "--url", &url]);
    assert_eq!(code, 0);
    let id: i64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("run id");
    let pgid: i32 = wait_until(Duration::from_secs(30), "the step to start", || {
        std::fs::read_to_string(env.out().join("forever-pgid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let (code, stdout, stderr) = env.cli(&["cancel", &id.to_string(), "--url", &url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("cancelling"), "{stdout}");
    let run = daemon.wait_run(id, RUN_TIMEOUT);
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["reason"], "cancelled by an operator");
    assert!(!group_alive(pgid));
    let (code, _, stderr) = env.cli(&["cancel", &id.to_string(), "--url", &url]);
    assert_eq!(code, 1);
    assert!(stderr.contains("already ended: cancelled"), "{stderr}");

    // A body that cannot be read back (its segment file removed by hand) is
    // a clear refusal naming the file, not "unavailable, retry".
    let bodies = env.path().join("data/bodies");
    for segment in std::fs::read_dir(&bodies).expect("bodies dir") {
        std::fs::remove_file(segment.expect("entry").path()).expect("remove segment");
    }
    let (status, answer) = daemon.request(
        "POST",
        &format!("/api/v1/deliveries/{delivery}/replay"),
        &[("content-type".to_string(), "application/json".to_string())],
        b"{}",
    );
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer.contains(".seg") && answer.contains("deleted by hand"),
        "{answer}"
    );
}

#[test]
fn a_replayed_old_push_is_skipped_as_stale() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "1")], "a");
    let b = repo.commit(&[("f", "2")], "b");
    let body = "on: [{push: {}}]\nsteps: [{run: 'true'}]\n";
    let env = Env::new(
        "",
        &[
            ("apply", body),
            ("rollback-ok", &format!("{body}allow_rollback: true\n")),
        ],
    );
    let daemon = env.start();
    let push_a = github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a);
    let (_, first) = daemon.push(&push_a, "s-1");
    for id in run_ids(&first) {
        daemon.wait_run(id, RUN_TIMEOUT);
    }
    let (_, second) = daemon.push(
        &github_push("acme/infra", &repo.url(), "refs/heads/main", &a, &b),
        "s-2",
    );
    for id in run_ids(&second) {
        assert_eq!(daemon.wait_run(id, RUN_TIMEOUT)["status"], "succeeded");
    }
    // The captured push of `a`, replayed under a fresh delivery id.
    let (status, replayed) = daemon.push(&push_a, "s-3-fresh-id");
    assert_eq!(status, 202);
    let runs: Vec<Value> = run_ids(&replayed)
        .into_iter()
        .map(|id| daemon.wait_run(id, RUN_TIMEOUT))
        .collect();
    let apply = runs
        .iter()
        .find(|r| r["pipeline"] == "apply")
        .expect("apply run");
    assert_eq!(apply["status"], "skipped", "{apply}");
    assert!(
        apply["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("stale: {a} is older than {b}")),
        "{apply}"
    );
    let allowed = runs
        .iter()
        .find(|r| r["pipeline"] == "rollback-ok")
        .expect("rollback run");
    assert_eq!(allowed["status"], "succeeded", "{allowed}");
    // An operator's replay of the old delivery is exempt.
    let (status, body) = daemon.request(
        "POST",
        &format!("/api/v1/deliveries/{}/replay", first["delivery"]),
        &[("Content-Type".to_string(), "application/json".to_string())],
        b"",
    );
    assert_eq!(status, 202, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    for id in run_ids(&answer) {
        assert_eq!(daemon.wait_run(id, RUN_TIMEOUT)["status"], "succeeded");
    }
}

#[test]
fn a_locked_store_answers_503_with_retry_after_and_loses_nothing() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "x")], "c");
    let env = Env::new("", &[("p", "on: [{push: {}}]\nsteps: [{run: 'true'}]\n")]);
    let daemon = env.start();
    let db = rusqlite::Connection::open(env.path().join("data/hookd.db")).expect("open db");
    db.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let body = github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a);
    let headers = github_headers("push", &body, "locked-1");
    let (status, text) = daemon.request("POST", "/hooks/github", &headers, &body);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("cannot store the delivery"), "{text}");
    db.execute_batch("ROLLBACK").expect("unlock");
    drop(db);
    // The sender retries the same delivery: now it is stored and runs once.
    let (status, answer) = daemon.push(&body, "locked-1");
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        daemon.wait_run(run_ids(&answer)[0], RUN_TIMEOUT)["status"],
        "succeeded"
    );
    assert_eq!(daemon.runs().len(), 1);
}

/// 500 signed deliveries from 16 concurrent clients, `kill -9` in the middle:
/// every delivery that got a 2xx is there after a restart, with its runs.
#[test]
fn crash_under_load_loses_no_acknowledged_delivery() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "max_parallel_runs: 2\n",
        &[("apply", "on: [{push: {}}]\nconcurrency: {on_new_event: supersede}\nsteps: [{run: 'sleep 0.2'}]\n")],
    );
    let daemon = env.start();
    let base = daemon.base.clone();
    let body = Arc::new(github_push(
        "acme/infra",
        &repo.url(),
        "refs/heads/main",
        ZERO,
        &a,
    ));
    // (provider delivery id, hookd delivery id, run ids) of every 2xx.
    type Acked = Vec<(String, i64, Vec<i64>)>;
    let acked: Arc<Mutex<Acked>> = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let total = 500;
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (body, acked, next, base) = (
            Arc::clone(&body),
            Arc::clone(&acked),
            Arc::clone(&next),
            base.clone(),
        );
        clients.push(std::thread::spawn(move || {
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .new_agent();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total || started.elapsed() > Duration::from_secs(120) {
                    return;
                }
                let id = format!("load-{i}");
                let mut req = agent.post(&format!("{base}/hooks/github"));
                for (k, v) in github_headers("push", &body, &id) {
                    req = req.header(&k, &v);
                }
                let Ok(mut resp) = req.send(&body[..]) else {
                    continue;
                };
                if resp.status().is_success() {
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    acked.lock().expect("acked").push((
                        id,
                        v["delivery"].as_i64().unwrap_or(-1),
                        run_ids(&v),
                    ));
                }
            }
        }));
    }
    wait_until(Duration::from_secs(120), "half of the deliveries", || {
        (acked.lock().expect("acked").len() >= total / 2).then_some(())
    });
    daemon.crash();
    for c in clients {
        c.join().expect("client");
    }
    let acked = acked.lock().expect("acked").clone();
    assert!(
        acked.len() >= total / 2 && acked.len() < total,
        "acked {}",
        acked.len()
    );

    let daemon = env.start();
    let mut lost = Vec::new();
    for (id, delivery, runs) in &acked {
        let (status, text) =
            daemon.request("GET", &format!("/api/v1/deliveries/{delivery}"), &[], b"");
        let stored: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != 200
            || stored["provider_delivery_id"] != id.as_str()
            || run_ids(&stored) != *runs
        {
            lost.push(id.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged deliveries lost: {lost:?}",
        lost.len()
    );
    let runs = wait_all_terminal(&daemon, acked.len());
    assert!(runs.iter().all(|r| r["status"] != "running"));
    eprintln!(
        "crash test: {} of {total} deliveries acknowledged before kill -9, 0 lost; runs after restart: {} succeeded, {} superseded, {} interrupted",
        acked.len(),
        runs.iter().filter(|r| r["status"] == "succeeded").count(),
        runs.iter().filter(|r| r["status"] == "superseded").count(),
        runs.iter().filter(|r| r["status"] == "interrupted").count(),
    );
}

#[test]
fn retention_prunes_old_runs_their_logs_and_deliveries() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "retention: { max_runs_per_pipeline: 2 }\n",
        &[("p", "on: [{push: {}}]\nsteps: [{run: 'echo hi'}]\n")],
    );
    let daemon = env.start();
    let mut ids = Vec::new();
    for i in 0..4 {
        let (_, answer) = daemon.push(
            &github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a),
            &format!("keep-{i}"),
        );
        let id = run_ids(&answer)[0];
        daemon.wait_run(id, RUN_TIMEOUT);
        ids.push(id);
    }
    assert!(ids
        .iter()
        .all(|id| env.path().join(format!("data/runs/{id}/log")).exists()));
    daemon.stop();
    // Retention runs at start-up (then every ten minutes).
    let daemon = env.start();
    let kept = wait_until(Duration::from_secs(20), "retention", || {
        let runs = daemon.runs();
        (runs.len() == 2).then_some(runs)
    });
    let kept: Vec<i64> = kept.iter().filter_map(|r| r["id"].as_i64()).collect();
    assert_eq!(kept, vec![ids[3], ids[2]], "the newest two stay");
    for id in &ids[..2] {
        assert!(
            !env.path().join(format!("data/runs/{id}")).exists(),
            "run {id}'s files remain"
        );
        let (status, _) = daemon.request("GET", &format!("/api/v1/runs/{id}"), &[], b"");
        assert_eq!(status, 404);
    }
    assert!(env
        .path()
        .join(format!("data/runs/{}/log", ids[3]))
        .exists());
}
