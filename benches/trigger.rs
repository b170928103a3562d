//! Trigger latency: time from sending a push webhook (one new commit) to the
//! first step of the run starting, on a repository of `HOOKD_BENCH_FILES`
//! (20,000) files, against `git fetch` + `git checkout -f` of the same commit
//! with the git CLI, in the same run.
//!
//! Both fetch from the same `git daemon` on 127.0.0.1 and both start from the
//! same state: hookd's persistent working tree and the CLI's clone are at the
//! previous commit. Per push (`HOOKD_BENCH_PUSHES`, 20): commit one changed
//! file, push it to the served repository, then measure hookd and the CLI one
//! after the other, alternating which goes first. hookd's figure ends when the
//! step `date +%s%N` runs (so it includes starting `sh` and `date`); the CLI's
//! when `git checkout -f` exits.
//!
//! `cargo bench --bench trigger` (needs git with `git daemon`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

fn main() {
    let files = env_num("HOOKD_BENCH_FILES", 20_000) as usize;
    let pushes = env_num("HOOKD_BENCH_PUSHES", 20) as usize;
    let scratch = scratch("trigger-");
    let dir = scratch.path();
    let began = Instant::now();

    // The repository: `files` files in 200 directories.
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    git(&work, &["init", "-q", "-b", "main"]);
    let dirs = 200;
    for d in 0..dirs {
        let sub = work.join(format!("stack-{d:03}"));
        std::fs::create_dir_all(&sub).expect("dir");
        for f in 0..files.div_ceil(dirs) {
            if d * files.div_ceil(dirs) + f >= files {
                break;
            }
            std::fs::write(
                sub.join(format!("resource-{f:04}.tf")),
                format!("resource \"null_resource\" \"r_{d}_{f}\" {{\n  triggers = {{ v = \"{d}-{f}\" }}\n}}\n"),
            )
            .expect("write file");
        }
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "initial"]);
    let served = dir.join("served");
    std::fs::create_dir_all(&served).expect("served dir");
    git(
        dir,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().expect("utf-8 path"),
            served.join("infra.git").to_str().expect("utf-8"),
        ],
    );
    git(
        &work,
        &[
            "remote",
            "add",
            "served",
            served.join("infra.git").to_str().expect("utf-8"),
        ],
    );

    let git_port = free_port();
    let mut daemon_cmd = Command::new("git");
    daemon_cmd
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={git_port}"))
        .arg(format!("--base-path={}", served.display()))
        .arg(&served);
    let _git_daemon = Server::start(daemon_cmd, git_port, "");
    let url = format!("git://127.0.0.1:{git_port}/infra.git");

    // hookd with a persistent workspace (the default).
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let hookd_dir = dir.join("hookd");
    let port = free_port();
    let pipeline = format!(
        "name: apply\non:\n  - push: {{branches: [main]}}\nrepo: {{url: '{url}'}}\nenv: {{OUT_DIR: '{}'}}\nsteps:\n  - name: first\n    run: 'date +%s%N > \"$OUT_DIR/started-$HOOKD_RUN_ID\"'\n",
        out.display()
    );
    write_hookd_config(&hookd_dir, port, "", &[("apply", &pipeline)]);
    let hookd = start_hookd(&hookd_dir, port, None);

    // Same starting state for both: the first commit checked out.
    let mut head = git(&work, &["rev-parse", "HEAD"]);
    let t = Instant::now();
    let first = push_and_wait(
        &hookd,
        &url,
        "0000000000000000000000000000000000000000",
        &head,
        &out,
        0,
    );
    eprintln!(
        "  hookd initial checkout of {files} files: {:.1} s (run {first:?})",
        t.elapsed().as_secs_f64()
    );
    let base = dir.join("cli");
    let t = Instant::now();
    git(dir, &["clone", "-q", &url, base.to_str().expect("utf-8")]);
    eprintln!(
        "  git clone of {files} files: {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pushes {
        let before = head.clone();
        let f = work.join(format!("stack-{:03}/resource-{:04}.tf", i % dirs, i));
        let mut text = std::fs::read_to_string(&f).unwrap_or_default();
        text.push_str(&format!("# change {i}\n"));
        std::fs::write(&f, text).expect("change a file");
        git(&work, &["commit", "-q", "-am", &format!("change {i}")]);
        git(&work, &["push", "-q", "served", "main"]);
        head = git(&work, &["rev-parse", "HEAD"]);

        let cli = || {
            let t = Instant::now();
            git(&base, &["fetch", "-q", "origin"]);
            git(&base, &["checkout", "-q", "-f", &head]);
            t.elapsed().as_secs_f64() * 1e3
        };
        let (h, c) = if i % 2 == 0 {
            let h = push_and_wait(&hookd, &url, &before, &head, &out, i + 1).1;
            (h, cli())
        } else {
            let c = cli();
            (
                push_and_wait(&hookd, &url, &before, &head, &out, i + 1).1,
                c,
            )
        };
        eprintln!(
            "  push {:>2}: hookd {h:>7.1} ms, git fetch+checkout {c:>7.1} ms",
            i + 1
        );
        ours.push(h);
        theirs.push(c);
        ratios.push(h / c);
    }
    header(&format!(
        "trigger latency: {files}-file repository over git:// on 127.0.0.1, {pushes} pushes of one commit"
    ));
    row(
        "trigger",
        "hookd: webhook sent -> first step running",
        &ours,
        "ms",
        "persistent workspace, libgit2",
    );
    row(
        "trigger",
        "git CLI: git fetch + git checkout -f",
        &theirs,
        "ms",
        "clone at the previous commit",
    );
    let ratio_of_medians = median(&ours) / median(&theirs);
    row(
        "ratio",
        "hookd trigger / git CLI, per push",
        &ratios,
        "x",
        &format!(
            "ratio of medians {:.2}x; goal <= 1.2x: {}",
            ratio_of_medians,
            verdict(median(&ratios) <= 1.2)
        ),
    );
    if std::env::var_os("HOOKD_BENCH_VERBOSE").is_some() {
        // Where the last push's time went: hookd's log and the run log.
        let text = hookd.log_text();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!(
            "--- hookd log (last 25 lines)\n{}",
            lines[lines.len().saturating_sub(25)..].join("\n")
        );
        let runs = hookd_dir.join("data/runs");
        if let Some(last) = std::fs::read_dir(&runs).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
                .max()
        }) {
            let log = std::fs::read_to_string(runs.join(last.to_string()).join("log"))
                .unwrap_or_default();
            eprintln!("--- run {last} log\n{log}");
        }
    }
    drop(hookd);
    eprintln!("trigger took {:.0} s", began.elapsed().as_secs_f64());
}

/// Sends the push webhook for `after`, waits for the step's timestamp and
/// for the run to end; returns (run id, ms from sending to the step running).
fn push_and_wait(
    hookd: &Server,
    url: &str,
    before: &str,
    after: &str,
    out: &Path,
    n: usize,
) -> (i64, f64) {
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "repository": {"full_name": "acme/infra", "name": "infra", "clone_url": url},
        "pusher": {"name": "bench"},
        "head_commit": {"id": after, "message": format!("change {n}")},
        "commits": [{"id": after, "message": format!("change {n}")}],
    })
    .to_string()
    .into_bytes();
    let headers = github_headers(&body, &format!("trigger-{n}-{after}"));
    let sent = now_ns();
    let (status, text) = http(
        "POST",
        &format!("{}/hooks/github", hookd.base),
        &headers,
        &body,
    )
    .expect("send push");
    assert_eq!(status, 202, "push not accepted: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json answer");
    let id = v["runs"][0]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no run queued: {text}"));
    let marker = out.join(format!("started-{id}"));
    let started: u128 = wait_until(Duration::from_secs(120), "the step to start", || {
        std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    let ms = (started.saturating_sub(sent)) as f64 / 1e6;
    let run = wait_until(Duration::from_secs(120), "the run to end", || {
        let (_, text) = http("GET", &format!("{}/api/v1/runs/{id}", hookd.base), &[], b"").ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let status = v["status"].as_str()?.to_string();
        (status != "queued" && status != "running").then_some(v)
    });
    assert_eq!(run["status"], "succeeded", "run {id}: {run}");
    (id, ms)
}
