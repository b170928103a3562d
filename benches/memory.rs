//! Memory of the hookd daemon (release build), each figure over
//! `HOOKD_BENCH_ROUNDS` (5) fresh starts:
//!
//! - idle: RSS (VmRSS) one second after it listens, with one pipeline;
//! - with 100,000 stored runs (`HOOKD_BENCH_STORED_RUNS`): the database is
//!   filled once through the store API in this process (the fastest way:
//!   `record_delivery` from 64 tasks, group commit; each delivery is the real
//!   ~8 KB push body with one run, `supersede` on, so every run but the last
//!   ends `superseded`, as runs of an apply pipeline do), then hookd starts on
//!   it and serves the run and delivery listings, the web UI's runs page and
//!   `/metrics` (which counts the queue); VmRSS after that and VmHWM;
//! - while a step prints 1 GiB as fast as it can (`yes | head -c 1073741824`:
//!   512 Mi short lines) with the run log at its default 16 MiB cap: VmRSS
//!   sampled every 10 ms, the peak of the samples and VmHWM (the process's
//!   lifetime peak), and the log's size and truncation marker checked.
//!
//! `cargo bench --bench memory`.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookd::store::{SqliteStore, Store};
use support::*;

const GIB: u64 = 1 << 30;

fn main() {
    let rounds = env_num("HOOKD_BENCH_ROUNDS", 5) as usize;
    let stored = env_num("HOOKD_BENCH_STORED_RUNS", 100_000) as usize;
    let flood_bytes = env_num("HOOKD_BENCH_FLOOD_BYTES", GIB);
    let scratch = scratch("memory-");
    let dir = scratch.path();
    let began = Instant::now();

    // A tiny local repository for runs to check out.
    let repo = dir.join("app");
    std::fs::create_dir_all(&repo).expect("repo dir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "app\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);

    // Idle.
    let (mut idle, mut idle_anon) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let d = dir.join(format!("idle-{round}"));
        let port = free_port();
        write_hookd_config(&d, port, "", &[("apply", &apply_pipeline(&repo))]);
        let mut hookd = start_hookd(&d, port, None);
        std::thread::sleep(Duration::from_secs(1));
        idle.push(status_mib(hookd.pid(), "VmRSS"));
        idle_anon.push(status_mib(hookd.pid(), "RssAnon"));
        hookd.stop(Duration::from_secs(10));
    }

    // 100,000 stored runs.
    let seeded = dir.join("seeded");
    let t = Instant::now();
    seed(&seeded.join("data"), stored);
    let seed_s = t.elapsed().as_secs_f64();
    // The database and its WAL (close() leaves what was not checkpointed there).
    let db_mib = ["data/hookd.db", "data/hookd.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(seeded.join(f)).ok())
        .map(|m| m.len() as f64 / 1048576.0)
        .sum::<f64>();
    eprintln!("  seeded {stored} runs in {seed_s:.1} s ({db_mib:.0} MiB database)");
    let (mut with_runs, mut with_runs_hwm) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let port = free_port();
        write_hookd_config(&seeded, port, "", &[("apply", &apply_pipeline(&repo))]);
        let mut hookd = start_hookd(&seeded, port, None);
        std::thread::sleep(Duration::from_millis(500));
        for path in [
            "/api/v1/runs?limit=100",
            "/api/v1/runs?status=superseded&limit=1000",
            "/api/v1/deliveries?limit=100",
            "/",
            "/metrics",
        ] {
            let (status, body) =
                http("GET", &format!("{}{path}", hookd.base), &[], b"").expect("GET");
            assert!(status == 200, "GET {path}: {status} {body}");
        }
        std::thread::sleep(Duration::from_millis(500));
        with_runs.push(status_mib(hookd.pid(), "VmRSS"));
        with_runs_hwm.push(status_mib(hookd.pid(), "VmHWM"));
        hookd.stop(Duration::from_secs(10));
    }

    // A step printing 1 GiB.
    let (mut flood_peak, mut flood_hwm, mut flood_mbs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let d = dir.join(format!("flood-{round}"));
        let port = free_port();
        let pipeline = format!(
            "name: flood\non:\n  - manual: {{}}\nrepo: {{url: 'file://{}', ref: main}}\nsteps:\n  - name: print\n    run: 'yes | head -c {flood_bytes}'\n",
            repo.display()
        );
        write_hookd_config(&d, port, "", &[("flood", &pipeline)]);
        let mut hookd = start_hookd(&d, port, None);
        let pid = hookd.pid();
        let (status, text) = http(
            "POST",
            &format!("{}/api/v1/pipelines/flood/trigger", hookd.base),
            // Without an admin token the API takes only POSTs a web page
            // cannot send (src/server/auth.rs).
            &[("Content-Type", "application/json".to_string())],
            b"",
        )
        .expect("trigger");
        assert_eq!(status, 202, "trigger: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let id = v["runs"][0]["id"].as_i64().expect("run id");
        let t = Instant::now();
        let mut peak: f64 = 0.0;
        let mut last_poll = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(300);
        let run = loop {
            peak = peak.max(status_mib(pid, "VmRSS"));
            if last_poll.elapsed() > Duration::from_millis(100) {
                last_poll = Instant::now();
                let (_, text) = http("GET", &format!("{}/api/v1/runs/{id}", hookd.base), &[], b"")
                    .expect("run");
                let v: serde_json::Value = serde_json::from_str(&text).expect("json");
                let s = v["status"].as_str().unwrap_or("").to_string();
                if s != "queued" && s != "running" {
                    break v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the flooding step did not end within 300 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(run["status"], "succeeded", "{run}");
        flood_peak.push(peak);
        flood_hwm.push(status_mib(pid, "VmHWM"));
        flood_mbs.push(flood_bytes as f64 / 1048576.0 / secs);
        let log = d.join(format!("data/runs/{id}/log"));
        let size = std::fs::metadata(&log).map_or(0, |m| m.len());
        let text = std::fs::read(&log).unwrap_or_default();
        let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(4096)..]).into_owned();
        assert!(
            size <= 16 * 1048576 + 4096 && tail.contains("log truncated: reached the cap"),
            "run log not at its cap: {size} bytes, tail {tail:?}"
        );
        hookd.stop(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&d);
    }

    let size = if flood_bytes.is_multiple_of(GIB) {
        format!("{} GiB", flood_bytes / GIB)
    } else {
        format!("{} MiB", flood_bytes >> 20)
    };
    header(&format!("memory: hookd daemon, {rounds} fresh starts each"));
    row(
        "memory",
        "idle RSS, 1 s after start",
        &idle,
        "MiB",
        &format!("goal <= 15 MiB: {}", verdict(median(&idle) <= 15.0)),
    );
    row(
        "memory",
        "idle RSS: anonymous part (RssAnon)",
        &idle_anon,
        "MiB",
        "the rest is file-backed: executable and libraries",
    );
    row(
        "memory",
        &format!("RSS with {stored} stored runs, after API/UI/metrics reads"),
        &with_runs,
        "MiB",
        &format!(
            "goal <= 50 MiB: {}; {db_mib:.0} MiB database",
            verdict(median(&with_runs) <= 50.0)
        ),
    );
    row(
        "memory",
        &format!("peak RSS (VmHWM) with {stored} stored runs"),
        &with_runs_hwm,
        "MiB",
        "",
    );
    row(
        "memory",
        &format!("RSS while a step prints {size} (peak of 10 ms samples)"),
        &flood_peak,
        "MiB",
        &format!(
            "goal <= 128 MiB: {}; log at its 16 MiB cap",
            verdict(median(&flood_peak) <= 128.0 && median(&flood_hwm) <= 128.0)
        ),
    );
    row(
        "memory",
        &format!("peak RSS (VmHWM) while a step prints {size}"),
        &flood_hwm,
        "MiB",
        "",
    );
    row(
        "memory",
        &format!("step output drained while printing {size}"),
        &flood_mbs,
        "MiB/s",
        &format!("yes | head -c {flood_bytes}"),
    );
    eprintln!("memory took {:.0} s", began.elapsed().as_secs_f64());
}

fn apply_pipeline(repo: &Path) -> String {
    format!(
        "name: apply\non:\n  - push: {{branches: [master]}}\n  - manual: {{}}\nrepo: {{url: 'file://{}', ref: main}}\nsteps:\n  - name: apply\n    run: 'true'\nconcurrency: {{on_new_event: supersede}}\n",
        repo.display()
    )
}

/// Writes `n` deliveries with one run each through the store API.
fn seed(data_dir: &Path, n: usize) {
    let (_, body) = push_fixture();
    let body = Arc::new(body);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let store = Arc::new(SqliteStore::open(data_dir).expect("open store"));
        let mut tasks = Vec::new();
        const TASKS: usize = 64;
        for t in 0..TASKS {
            let (store, body) = (Arc::clone(&store), Arc::clone(&body));
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    store
                        .record_delivery(push_delivery(
                            format!("seed-{i}"),
                            1_700_000_000_000 + i as i64,
                            &body,
                            ("binkkatal/sample_app", "refs/heads/master", "binkkatal"),
                            true,
                        ))
                        .await
                        .expect("record");
                    i += TASKS;
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let store = Arc::try_unwrap(store).ok().expect("only owner");
        tokio::task::spawn_blocking(move || store.close())
            .await
            .expect("close");
    });
}
