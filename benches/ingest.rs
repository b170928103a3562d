//! Ingest side by side: hookd (release, SQLite with fsync) against
//! adnanh/webhook 2.8 configured equivalently, and against the no-durability
//! ceiling (`support/ceiling.rs`: actix-web that only verifies the HMAC).
//!
//! Run by `benches/run.sh` (which installs `wrk` and `webhook`), or alone
//! with `cargo bench --bench ingest`. Every server gets the same signed
//! ~8 KB GitHub push body from `wrk` (`benches/wrk/post.lua`: a new
//! `X-GitHub-Delivery` per request), at 16 and 64 connections for
//! `HOOKD_BENCH_SECONDS` (10) each, `HOOKD_BENCH_ROUNDS` (5) rounds; the
//! server pinned to CPU 0 and `wrk` to CPU 1 with `taskset`. Each server
//! starts fresh for each measurement (hookd in an empty data dir); the order
//! of the servers rotates from round to round so that machine noise hits all
//! alike, and each ratio is computed within a round.
//!
//! Servers:
//! - `webhook`: one hook, `payload-hmac-sha256` trigger rule on
//!   `X-Hub-Signature-256`, `execute-command: /bin/true`, mismatch → 401.
//! - `ceiling`: verify the HMAC, answer 202.
//! - `hookd supersede`: a pipeline on pushes to `master` whose one step is
//!   `true`, `on_new_event: supersede` (how an apply pipeline is set up); its
//!   runs really execute (fetch from a local repository whose commits the
//!   body names, checkout, step) while the load runs.
//! - `hookd queue`: the same with `on_new_event: queue` (64 connections).
//!
//! Per measurement: accepted (2xx) requests/s, p50/p99 latency (wrk), CPU
//! seconds of the server during the load (utime+stime from /proc; its
//! children separately) and its peak RSS (VmHWM). Then the rejection path:
//! the same body with a wrong signature (401) at 64 connections. After each
//! hookd measurement hookd is killed with SIGKILL and its database must hold
//! at least every delivery a 2xx was sent for.

#[path = "support/ceiling.rs"]
mod ceiling;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const SERVER_CPU: u32 = 0;
const CLIENT_CPU: u32 = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Webhook,
    Ceiling,
    HookdSupersede,
    HookdQueue,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Webhook => "adnanh/webhook 2.8",
            Kind::Ceiling => "ceiling (actix + HMAC only)",
            Kind::HookdSupersede => "hookd, on_new_event: supersede",
            Kind::HookdQueue => "hookd, on_new_event: queue",
        }
    }
    fn is_hookd(self) -> bool {
        matches!(self, Kind::HookdSupersede | Kind::HookdQueue)
    }
}

#[derive(Debug, Clone, Copy)]
struct Wrk {
    requests: f64,
    seconds: f64,
    status_errors: f64,
    socket_errors: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Wrk {
    fn ok(&self) -> f64 {
        self.requests - self.status_errors
    }
    fn ok_per_s(&self) -> f64 {
        self.ok() / self.seconds
    }
    fn all_per_s(&self) -> f64 {
        self.requests / self.seconds
    }
}

#[derive(Debug, Clone)]
struct Measured {
    wrk: Wrk,
    cpu_s: f64,
    child_cpu_s: f64,
    peak_rss_mib: f64,
    rss_after_mib: f64,
    client_cpu_s: f64,
    /// CPU seconds during the load by thread name (threads that exited
    /// during the load are missed; hookd's are long-lived).
    threads: Vec<(String, f64)>,
}

struct Setup {
    dir: PathBuf,
    body_file: PathBuf,
    body: Vec<u8>,
    good_sig: String,
    bad_sig: String,
    lua: PathBuf,
    app_repo: PathBuf,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-ceiling") {
        let (addr, secret) = (&args[2], &args[3]);
        if let Err(e) = ceiling::serve(addr, secret) {
            eprintln!("ceiling: {e}");
            std::process::exit(1);
        }
        return;
    }
    for tool in ["wrk", "webhook", "taskset"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("ingest: `{tool}` is missing; benches/run.sh installs it (apt-get install -y webhook wrk)");
            std::process::exit(2);
        }
    }
    let rounds = env_num("HOOKD_BENCH_ROUNDS", 5) as usize;
    let secs = env_num("HOOKD_BENCH_SECONDS", 10);
    let reject_secs = env_num("HOOKD_BENCH_REJECT_SECONDS", 3);
    let pinning = taskset_works() && online_cpus() > 1;
    // The harness is the client's side: its threads (the servers' log
    // drains among them) run beside wrk, not on the server's CPU.
    pin_self(CLIENT_CPU);

    let scratch = scratch("ingest-");
    let setup = prepare(scratch.path());
    let fsync_us = fdatasync_probe(scratch.path());
    header(&format!(
        "ingest: {} byte signed push ({}), wrk -t1, {secs} s per measurement, {rounds} rounds, {}",
        setup.body.len(),
        push_fixture().0.display(),
        if pinning {
            "server pinned to CPU 0, wrk and this harness to CPU 1"
        } else {
            "NOT pinned (taskset unusable or one CPU)"
        }
    ));

    let plan: Vec<(u32, Vec<Kind>)> = vec![
        (16, vec![Kind::Webhook, Kind::Ceiling, Kind::HookdSupersede]),
        (
            64,
            vec![
                Kind::Webhook,
                Kind::Ceiling,
                Kind::HookdSupersede,
                Kind::HookdQueue,
            ],
        ),
    ];
    // results[(conns, kind)] = one Measured per round; rejects[kind] likewise.
    let mut results: Vec<((u32, Kind), Vec<Measured>)> = Vec::new();
    let mut rejects: Vec<(Kind, Vec<Measured>)> = Vec::new();
    let mut stored_runs: Vec<f64> = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        for (conns, kinds) in &plan {
            let mut order = kinds.clone();
            order.rotate_left(round % kinds.len());
            for kind in order {
                let reject = *conns == 64 && kind != Kind::HookdQueue;
                let (m, r, runs) = measure(
                    &setup,
                    kind,
                    *conns,
                    secs,
                    reject.then_some(reject_secs),
                    round,
                );
                eprintln!(
                    "  round {} {:>2} conns {:<32} {:>8.0} ok/s p50 {:>6.2} ms p99 {:>7.2} ms cpu {:>5.2}+{:.2} s rss {:>6.1} MiB{}",
                    round + 1,
                    conns,
                    kind.label(),
                    m.wrk.ok_per_s(),
                    m.wrk.p50_ms,
                    m.wrk.p99_ms,
                    m.cpu_s,
                    m.child_cpu_s,
                    m.peak_rss_mib,
                    r.as_ref().map(|r| format!(" | reject {:.0}/s p99 {:.2} ms", r.wrk.all_per_s(), r.wrk.p99_ms)).unwrap_or_default()
                );
                match results.iter_mut().find(|(k, _)| *k == (*conns, kind)) {
                    Some((_, v)) => v.push(m),
                    None => results.push(((*conns, kind), vec![m])),
                }
                if let Some(r) = r {
                    match rejects.iter_mut().find(|(k, _)| *k == kind) {
                        Some((_, v)) => v.push(r),
                        None => rejects.push((kind, vec![r])),
                    }
                }
                if let Some(n) = runs {
                    if *conns == 64 && kind == Kind::HookdSupersede {
                        stored_runs.push(n);
                    }
                }
            }
        }
    }

    let get = |conns: u32, kind: Kind| -> &Vec<Measured> {
        &results
            .iter()
            .find(|(k, _)| *k == (conns, kind))
            .expect("measured")
            .1
    };
    for (conns, kinds) in &plan {
        for kind in kinds {
            let ms = get(*conns, *kind);
            let what = |m: &str| format!("{}, {conns} conns: {m}", kind.label());
            let col = |f: fn(&Measured) -> f64| ms.iter().map(f).collect::<Vec<_>>();
            let wrk_cpu = median(&col(|m| m.client_cpu_s)) / secs as f64;
            row(
                "ingest",
                &what("accepted req/s"),
                &col(|m| m.wrk.ok_per_s()),
                "req/s",
                &format!("wrk used {:.0}% of its CPU", wrk_cpu * 100.0),
            );
            row(
                "ingest",
                &what("p50 latency"),
                &col(|m| m.wrk.p50_ms),
                "ms",
                "",
            );
            let p99_note = if kind.is_hookd() && *conns == 64 && *kind == Kind::HookdSupersede {
                let p99 = median(&col(|m| m.wrk.p99_ms));
                format!("goal <= 15 ms: {}", verdict(p99 <= 15.0))
            } else {
                String::new()
            };
            row(
                "ingest",
                &what("p99 latency"),
                &col(|m| m.wrk.p99_ms),
                "ms",
                &p99_note,
            );
            row(
                "ingest",
                &what("server CPU during the load"),
                &col(|m| m.cpu_s),
                "s",
                &format!(
                    "children: {} s (median)",
                    fmt(median(&col(|m| m.child_cpu_s)))
                ),
            );
            row(
                "ingest",
                &what("CPU per accepted request"),
                &col(|m| m.cpu_s / m.wrk.ok() * 1e6),
                "us",
                "server's own CPU / 2xx answers",
            );
            row(
                "ingest",
                &what("peak RSS (VmHWM)"),
                &col(|m| m.peak_rss_mib),
                "MiB",
                "",
            );
            if kind.is_hookd() {
                row(
                    "ingest",
                    &what("RSS after the load (VmRSS)"),
                    &col(|m| m.rss_after_mib),
                    "MiB",
                    "right after the load",
                );
            }
            if kind.is_hookd() && *conns == 64 {
                // Where hookd's CPU goes, per accepted request, by thread
                // (names are cut to 15 bytes: "actix-server wo" is a worker).
                type Class = fn(&str) -> bool;
                let classes: [(&str, &str, Class); 4] = [
                    (
                        "HTTP worker (actix-server*)",
                        "read, verify, parse, match, answer",
                        |n| n.starts_with("actix-server"),
                    ),
                    (
                        "store writer thread",
                        "SQLite inserts, body segment write, fdatasyncs, commit",
                        |n| n == "hookd-store-wri",
                    ),
                    (
                        "WAL checkpoint thread",
                        "copies WAL pages into the database",
                        |n| n == "hookd-store-che",
                    ),
                    (
                        "other threads (tokio, blocking)",
                        "scheduler, runs, reads, logging",
                        |n| !n.starts_with("actix-server") && !n.starts_with("hookd-store-"),
                    ),
                ];
                for (name, label, class) in classes {
                    let v: Vec<f64> = ms.iter().map(|m| thread_us_per_request(m, class)).collect();
                    row(
                        "ingest",
                        &what(&format!("CPU/request, {name}")),
                        &v,
                        "us",
                        label,
                    );
                }
            }
        }
    }
    for (kind, rs) in &rejects {
        let col = |f: fn(&Measured) -> f64| rs.iter().map(f).collect::<Vec<_>>();
        let what = |m: &str| format!("{}, 64 conns, wrong signature: {m}", kind.label());
        let non401 = rs
            .iter()
            .map(|m| m.wrk.requests - m.wrk.status_errors)
            .sum::<f64>();
        let code = if *kind == Kind::Webhook {
            "500 (webhook's answer to a bad signature)"
        } else {
            "401"
        };
        row(
            "reject",
            &what("refusals/s"),
            &col(|m| m.wrk.all_per_s()),
            "req/s",
            &if non401 > 0.0 {
                format!("{non401} answers were 2xx!")
            } else {
                format!("every answer {code}")
            },
        );
        row(
            "reject",
            &what("p99 latency"),
            &col(|m| m.wrk.p99_ms),
            "ms",
            "",
        );
        row(
            "reject",
            &what("server CPU during the load"),
            &col(|m| m.cpu_s),
            "s",
            &format!("{reject_secs} s of load"),
        );
    }
    // Ratios, each within one round.
    let ratio = |conns: u32, a: Kind, b: Kind| -> Vec<f64> {
        get(conns, a)
            .iter()
            .zip(get(conns, b))
            .map(|(x, y)| x.wrk.ok_per_s() / y.wrk.ok_per_s())
            .collect()
    };
    for conns in [16, 64] {
        let r = ratio(conns, Kind::HookdSupersede, Kind::Webhook);
        let note = if conns == 64 {
            format!("goal >= 20x: {}", verdict(median(&r) >= 20.0))
        } else {
            String::new()
        };
        row(
            "ratio",
            &format!("hookd supersede / webhook, {conns} conns, accepted req/s"),
            &r,
            "x",
            &note,
        );
        let r = ratio(conns, Kind::HookdSupersede, Kind::Ceiling);
        let note = if conns == 64 {
            format!("goal >= 0.5x: {}", verdict(median(&r) >= 0.5))
        } else {
            String::new()
        };
        row(
            "ratio",
            &format!("hookd supersede / ceiling, {conns} conns, accepted req/s"),
            &r,
            "x",
            &note,
        );
    }
    bounds(
        &get(64, Kind::Ceiling)[..],
        &get(64, Kind::HookdSupersede)[..],
        get(64, Kind::Webhook),
    );
    row(
        "ratio",
        "hookd queue / webhook, 64 conns, accepted req/s",
        &ratio(64, Kind::HookdQueue, Kind::Webhook),
        "x",
        "",
    );
    row(
        "ratio",
        "hookd queue / ceiling, 64 conns, accepted req/s",
        &ratio(64, Kind::HookdQueue, Kind::Ceiling),
        "x",
        "",
    );
    row(
        "disk",
        "one fdatasync of a 4 KiB overwrite (before the loads)",
        &fsync_us,
        "us",
        "how fast this disk syncs right now; SQLite syncs once per group commit",
    );
    if !stored_runs.is_empty() {
        row(
            "ingest",
            "hookd supersede, 64 conns: runs stored per measurement",
            &stored_runs,
            "runs",
            "every 2xx found in the database after SIGKILL",
        );
    }
    eprintln!("ingest took {:.0} s", started.elapsed().as_secs_f64());
}

/// Microseconds of `fdatasync` after overwriting 4 KiB of a preallocated
/// file, 200 times (the disk's sync latency at the time of the run).
/// CPU microseconds per accepted request of `m`'s threads whose names
/// `class` takes.
fn thread_us_per_request(m: &Measured, class: impl Fn(&str) -> bool) -> f64 {
    m.threads
        .iter()
        .filter(|(n, _)| class(n))
        .map(|(_, s)| s)
        .sum::<f64>()
        / m.wrk.ok()
        * 1e6
}

/// What one CPU allows hookd at most, from costs measured in the same
/// round (64 connections): answering a request as the ceiling does (its
/// CPU per request: HTTP and the HMAC) plus hookd's store writer thread
/// per delivery (SQLite, the body segment, the syncs), and then also its
/// other threads (the runs, which really execute). Each bound assumes the
/// CPU is busy all the time and every other cost is zero, so hookd's own
/// figure can only be below it: a ratio goal above a bound's ratio cannot
/// be met without making those costs themselves smaller.
fn bounds(ceiling: &[Measured], hookd: &[Measured], webhook: &[Measured]) {
    let writer = |m: &Measured| thread_us_per_request(m, |n| n.starts_with("hookd-store-"));
    let runs = |m: &Measured| {
        thread_us_per_request(m, |n| {
            !n.starts_with("actix-server") && !n.starts_with("hookd-store-")
        })
    };
    let rounds = || ceiling.iter().zip(hookd).zip(webhook);
    let ceiling_us: Vec<f64> = ceiling.iter().map(|c| c.cpu_s / c.wrk.ok() * 1e6).collect();
    row(
        "bound",
        "ceiling, 64 conns: CPU per answered request",
        &ceiling_us,
        "us",
        "HTTP + HMAC, what any server here pays per request",
    );
    type Cost<'a> = &'a dyn Fn(&Measured) -> f64;
    let cases: [(&str, Cost); 2] = [
        ("ceiling's CPU + hookd's store threads", &writer),
        ("ceiling's CPU + hookd's store threads + runs", &|m| {
            writer(m) + runs(m)
        }),
    ];
    for (label, hookd_us) in cases {
        let per_s = |((c, h), _): ((&Measured, &Measured), &Measured)| {
            1e6 / (c.cpu_s / c.wrk.ok() * 1e6 + hookd_us(h))
        };
        row(
            "bound",
            &format!("at most, {label}: req/s"),
            &rounds().map(per_s).collect::<Vec<_>>(),
            "req/s",
            "one CPU busy all the time, nothing else costing",
        );
        row(
            "bound",
            &format!("at most, {label}: / ceiling"),
            &rounds()
                .map(|r| per_s(r) / (r.0).0.wrk.ok_per_s())
                .collect::<Vec<_>>(),
            "x",
            "the most the >= 0.5x goal can see",
        );
        row(
            "bound",
            &format!("at most, {label}: / webhook"),
            &rounds()
                .map(|r| per_s(r) / r.1.wrk.ok_per_s())
                .collect::<Vec<_>>(),
            "x",
            "the most the >= 20x goal can see",
        );
    }
}

fn fdatasync_probe(dir: &Path) -> Vec<f64> {
    use std::io::{Seek, SeekFrom, Write};
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    f.write_all(&vec![0u8; 1 << 20]).expect("preallocate");
    f.sync_all().expect("sync");
    let page = vec![7u8; 4096];
    let mut out = Vec::new();
    for i in 0..200u64 {
        f.seek(SeekFrom::Start((i % 256) * 4096)).expect("seek");
        f.write_all(&page).expect("write");
        let t = Instant::now();
        f.sync_data().expect("fdatasync");
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let _ = std::fs::remove_file(&path);
    out
}

/// Scratch layout: a local repository whose two commits the push body names
/// (same byte length as the fixture), the body, signatures, webhook's hooks.json.
fn prepare(dir: &Path) -> Setup {
    let (_, fixture) = push_fixture();
    let text = String::from_utf8(fixture).expect("fixture is UTF-8");
    let v: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let (before, after) = (
        v["before"].as_str().expect("before").to_string(),
        v["after"].as_str().expect("after").to_string(),
    );
    let repo = dir.join("app");
    std::fs::create_dir_all(&repo).expect("repo dir");
    git(&repo, &["init", "-q", "-b", "master"]);
    std::fs::write(repo.join("main.tf"), "# v1\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let c0 = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("main.tf"), "# v2\n").expect("write");
    git(&repo, &["commit", "-q", "-am", "two"]);
    let c1 = git(&repo, &["rev-parse", "HEAD"]);
    // Same length (40 hex), so the body keeps its size.
    let body = text.replace(&after, &c1).replace(&before, &c0).into_bytes();
    let body_file = dir.join("push.json");
    std::fs::write(&body_file, &body).expect("body");
    let good_sig = sign(&body);
    let bad_sig = sign(b"not the body");
    let hooks = serde_json::json!([{
        "id": "github",
        "execute-command": "/bin/true",
        "command-working-directory": dir.display().to_string(),
        "http-methods": ["POST"],
        "trigger-rule-mismatch-http-response-code": 401,
        "trigger-rule": {"match": {
            "type": "payload-hmac-sha256",
            "secret": SECRET,
            "parameter": {"source": "header", "name": "X-Hub-Signature-256"}
        }}
    }]);
    std::fs::write(dir.join("hooks.json"), hooks.to_string()).expect("hooks.json");
    std::fs::write(dir.join("github.secret"), format!("{SECRET}\n")).expect("secret");
    Setup {
        dir: dir.to_path_buf(),
        body_file,
        body,
        good_sig,
        bad_sig,
        lua: root().join("benches/wrk/post.lua"),
        app_repo: repo,
    }
}

fn pipeline(repo: &Path, mode: &str) -> String {
    format!(
        "name: apply\non:\n  - push: {{branches: [master]}}\nrepo: {{url: 'file://{}'}}\nsteps:\n  - name: apply\n    run: 'true'\nconcurrency: {{on_new_event: {mode}}}\n",
        repo.display()
    )
}

fn start(
    setup: &Setup,
    kind: Kind,
    round: usize,
    conns: u32,
) -> (Server, Option<tempfile::TempDir>) {
    let port = free_port();
    match kind {
        Kind::Webhook => {
            let mut cmd = pinned(Some(SERVER_CPU), Path::new("webhook"));
            cmd.arg("-hooks")
                .arg(setup.dir.join("hooks.json"))
                .args(["-ip", "127.0.0.1", "-port", &port.to_string()])
                .current_dir(&setup.dir);
            (Server::start(cmd, port, ""), None)
        }
        Kind::Ceiling => {
            let exe = std::env::current_exe().expect("own executable");
            let mut cmd = pinned(Some(SERVER_CPU), &exe);
            cmd.arg("--serve-ceiling")
                .arg(format!("127.0.0.1:{port}"))
                .arg(setup.dir.join("github.secret"));
            (Server::start(cmd, port, "ceiling listening"), None)
        }
        Kind::HookdSupersede | Kind::HookdQueue => {
            let mode = if kind == Kind::HookdSupersede {
                "supersede"
            } else {
                "queue"
            };
            let d = tempfile::Builder::new()
                .prefix(&format!("hookd-{mode}-{conns}-{round}-"))
                .tempdir_in(&setup.dir)
                .expect("hookd dir");
            write_hookd_config(
                d.path(),
                port,
                "",
                &[("apply", &pipeline(&setup.app_repo, mode))],
            );
            (start_hookd(d.path(), port, Some(SERVER_CPU)), Some(d))
        }
    }
}

fn sanity(setup: &Setup, server: &Server, kind: Kind) {
    let url = format!("{}/hooks/github", server.base);
    let mut headers = github_headers(&setup.body, &format!("sanity-{}", std::process::id()));
    let (status, text) = http("POST", &url, &headers, &setup.body).expect("sanity request");
    assert!(
        (200..300).contains(&status),
        "{kind:?} refused a good delivery: {status} {text}"
    );
    headers.retain(|(k, _)| *k != "X-Hub-Signature-256");
    headers.push(("X-Hub-Signature-256", setup.bad_sig.clone()));
    let (status, text) = http("POST", &url, &headers, &setup.body).expect("sanity request");
    // adnanh/webhook treats a bad signature as an error evaluating the rule:
    // 500 "Error occurred while evaluating hook rules.", not the mismatch code.
    let expected = if kind == Kind::Webhook { 500 } else { 401 };
    assert_eq!(
        status, expected,
        "{kind:?} answered a wrong signature with {status} {text}"
    );
}

fn run_wrk(setup: &Setup, base: &str, conns: u32, secs: u64, sig: &str, tag: &str) -> (Wrk, f64) {
    let mut cmd = pinned(Some(CLIENT_CPU), Path::new("wrk"));
    cmd.args([
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--timeout",
        "5s",
        "-s",
    ])
    .arg(&setup.lua)
    .arg(base)
    .arg("--")
    .arg(&setup.body_file)
    .arg(sig)
    .arg("/hooks/github")
    .arg(tag);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wrk");
    let pid = child.id();
    // wrk bounds itself by -d; this bounds a wedged wrk.
    let deadline = Instant::now() + Duration::from_secs(secs + 30);
    let mut cpu = 0.0;
    let mut child = child;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        let (s, _) = cpu_seconds(pid);
        if !s.is_nan() {
            cpu = s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("wrk output");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("WRKSUMMARY"))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no summary:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    (
        Wrk {
            requests: field("requests"),
            seconds: field("duration_us") / 1e6,
            status_errors: field("status_errors"),
            socket_errors: field("connect") + field("read") + field("write") + field("timeout"),
            p50_ms: field("p50_us") / 1e3,
            p99_ms: field("p99_us") / 1e3,
        },
        cpu,
    )
}

fn measure(
    setup: &Setup,
    kind: Kind,
    conns: u32,
    secs: u64,
    reject_secs: Option<u64>,
    round: usize,
) -> (Measured, Option<Measured>, Option<f64>) {
    let (mut server, dir) = start(setup, kind, round, conns);
    sanity(setup, &server, kind);
    let pid = server.pid();
    let one = |sig: &str, secs: u64, tag: &str| -> Measured {
        let (cpu0, child0) = cpu_seconds(pid);
        let threads0 = cpu_by_thread(pid);
        let (wrk, client_cpu_s) = run_wrk(setup, &server.base, conns, secs, sig, tag);
        let (cpu1, child1) = cpu_seconds(pid);
        let threads = cpu_by_thread(pid)
            .into_iter()
            .map(|(name, s)| {
                let before = threads0
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0.0, |(_, b)| *b);
                (name, s - before)
            })
            .collect();
        Measured {
            wrk,
            cpu_s: cpu1 - cpu0,
            child_cpu_s: child1 - child0,
            peak_rss_mib: status_mib(pid, "VmHWM"),
            rss_after_mib: status_mib(pid, "VmRSS"),
            client_cpu_s,
            threads,
        }
    };
    let accepted = one(&setup.good_sig, secs, &format!("r{round}"));
    if accepted.wrk.socket_errors > 0.0 {
        eprintln!(
            "  note: {} socket errors against {}",
            accepted.wrk.socket_errors,
            kind.label()
        );
    }
    let rejected = reject_secs.map(|s| one(&setup.bad_sig, s, &format!("x{round}")));
    let mut runs = None;
    if kind.is_hookd() {
        // Durability: a crash right now must lose nothing that got a 2xx.
        server.kill9();
        let dir = dir.as_ref().expect("hookd dir");
        let db = dir.path().join("data/hookd.db");
        let conn = rusqlite::Connection::open(&db).expect("open hookd.db");
        let deliveries: f64 = conn
            .query_row("SELECT count(*) FROM deliveries", [], |r| {
                r.get::<_, i64>(0)
            })
            .expect("count deliveries") as f64;
        let stored: f64 = conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
            .expect("count runs") as f64;
        // +1: the sanity delivery.
        assert!(
            deliveries >= accepted.wrk.ok() + 1.0,
            "{kind:?}: {} deliveries in the database after SIGKILL, {} were acknowledged",
            deliveries,
            accepted.wrk.ok() + 1.0
        );
        runs = Some(stored);
    } else {
        server.kill9();
    }
    (accepted, rejected, runs)
}
