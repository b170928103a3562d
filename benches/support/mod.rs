//! Helpers shared by the side-by-side benchmarks (`benches/run.sh`): result
//! rows, min/median/max, the push fixture, a hookd started from its release
//! binary, and what `/proc` says about a process.
//!
//! Every figure is printed as a row `section | what | min | median | max |
//! unit | note` and, when `HOOKD_BENCH_RESULTS` names a file, appended to it
//! tab-separated so that `benches/run.sh` prints one table at the end.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "bench-secret-of-the-github-source";

/// min, median, max (the median of an even count is the upper middle, as in
/// `benches/store_ingest.rs`).
pub fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

pub fn median(values: &[f64]) -> f64 {
    stats(values).1
}

/// Formats a number for the table: no decimals from 100 on, else 3 significant digits.
pub fn fmt(x: f64) -> String {
    if x.is_nan() {
        "-".to_string()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Prints one result row and appends it to `$HOOKD_BENCH_RESULTS`.
pub fn row(section: &str, what: &str, values: &[f64], unit: &str, note: &str) {
    let (min, med, max) = stats(values);
    println!(
        "{section:<9} {what:<52} {:>10} {:>10} {:>10} {unit:<8} {note}",
        fmt(min),
        fmt(med),
        fmt(max)
    );
    if let Some(path) = std::env::var_os("HOOKD_BENCH_RESULTS") {
        let line = format!(
            "{section}\t{what}\t{}\t{}\t{}\t{unit}\t{note}\n",
            fmt(min),
            fmt(med),
            fmt(max)
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Prints the column header once per bench binary.
pub fn header(title: &str) {
    println!("\n== {title}");
    println!(
        "{:<9} {:<52} {:>10} {:>10} {:>10} {:<8} note",
        "section", "what", "min", "median", "max", "unit"
    );
}

/// `goal met` / `goal MISSED` text for a note.
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "goal met"
    } else {
        "goal MISSED"
    }
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory on the build's disk (under target/), removed on drop.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("scratch dir under target/")
}

/// The ~8 KB signed GitHub push body: the shared fixture next to the
/// repository, else the copy committed under `benches/data/`.
pub fn push_fixture() -> (PathBuf, Vec<u8>) {
    let shared = root().join("../shared/fixtures/github/push-branch-commits.json");
    let local = root().join("benches/data/push-branch-commits.json");
    for p in [shared, local] {
        if let Ok(body) = std::fs::read(&p) {
            return (p, body);
        }
    }
    panic!("no push fixture: neither ../shared/fixtures/github/push-branch-commits.json nor benches/data/push-branch-commits.json");
}

pub fn sign(body: &[u8]) -> String {
    format!(
        "sha256={}",
        hookd::source::hmac_sha256_hex(SECRET.as_bytes(), body)
    )
}

/// Runs a command to completion; panics with its output when it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    sh(Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com"))
    .trim()
    .to_string()
}

/// Whether `taskset` can pin (it fails in some containers).
pub fn taskset_works() -> bool {
    Command::new("taskset")
        .args(["-c", "0", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// `cmd` prefixed with `taskset -c CPU` when pinning works and `cpu` is given.
pub fn pinned(cpu: Option<u32>, program: &Path) -> Command {
    match cpu {
        Some(c) if taskset_works() && online_cpus() > 1 => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program);
            cmd
        }
        _ => Command::new(program),
    }
}

/// The CPUs online, whatever this process is pinned to (which
/// `available_parallelism` would count instead).
pub fn online_cpus() -> usize {
    Command::new("getconf")
        .arg("_NPROCESSORS_ONLN")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Pins this process's main thread, and so every thread it starts from now
/// on, to `cpu` (when pinning works): the harness's own work, such as
/// draining the servers' logs, then stays off the server's CPU.
pub fn pin_self(cpu: u32) {
    if taskset_works() && online_cpus() > 1 {
        let _ = Command::new("taskset")
            .args([
                "-p",
                "-c",
                &cpu.to_string(),
                &std::process::id().to_string(),
            ])
            .stdout(Stdio::null())
            .status();
    }
}

/// Clock ticks per second for `/proc/<pid>/stat`.
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// (own CPU seconds, waited-for children's CPU seconds) of a process.
pub fn cpu_seconds(pid: u32) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (f64::NAN, f64::NAN);
    };
    // Fields after the command name (which may hold spaces) start at state.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // rest[0] = state (field 3); utime = field 14 → rest[11]; stime 15, cutime 16, cstime 17.
    let tck = clk_tck();
    if f.len() < 15 {
        return (f64::NAN, f64::NAN);
    }
    ((f[11] + f[12]) / tck, (f[13] + f[14]) / tck)
}

/// CPU seconds (user + system) of each thread of a process, summed by thread
/// name (`comm`), e.g. `actix-server`, `hookd-store-wri`, `hookd`.
pub fn cpu_by_thread(pid: u32) -> Vec<(String, f64)> {
    let tck = clk_tck();
    let mut out: Vec<(String, f64)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.filter_map(Result::ok) {
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("stat")),
        ) else {
            continue;
        };
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        if f.len() < 13 {
            continue;
        }
        let secs = (f[11] + f[12]) / tck;
        let name = comm.trim().to_string();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => *s += secs,
            None => out.push((name, secs)),
        }
    }
    out
}

/// A `VmRSS`/`VmHWM`-style field of `/proc/<pid>/status`, in MiB.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A port nobody listens on now (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Waits until `f` returns `Some`, polling every 5 ms.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A server child process whose stderr is collected; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Spawns `cmd` (stderr piped) and waits until a stderr or stdout line
    /// contains `ready` (or, with `ready` empty, until `port` accepts).
    pub fn start(mut cmd: Command, port: u16, ready: &str) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut l) = sink.lock() {
                        // Keep the first lines (start-up) and a bounded tail.
                        if l.len() > 2000 {
                            l.drain(100..1100);
                        }
                        l.push(line);
                    }
                }
            });
        }
        let base = format!("http://127.0.0.1:{port}");
        let mut server = Server { child, base, log };
        let what = format!("{cmd:?} to listen on {port}");
        wait_until(Duration::from_secs(30), &what, || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{what}: exited with {status}:\n{}", server.log_text());
            }
            let up = if ready.is_empty() {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                server.log_text().contains(ready)
            };
            up.then_some(())
        });
        server.base = format!("http://127.0.0.1:{port}");
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would; waits for the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill9();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// The release hookd this bench was built with (`cargo bench` builds it with
/// the `bench` profile, which is `release`), or `$HOOKD_BENCH_HOOKD` (to
/// compare two builds of hookd with the same harness).
pub fn hookd_bin() -> PathBuf {
    std::env::var_os("HOOKD_BENCH_HOOKD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hookd")))
}

/// A hookd data layout in `dir`: hookd.yaml, the github source's secret,
/// and `pipelines/` with the given files.
pub fn write_hookd_config(dir: &Path, port: u16, extra: &str, pipelines: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("pipelines")).expect("pipelines dir");
    std::fs::write(dir.join("github.secret"), format!("{SECRET}\n")).expect("secret");
    std::fs::write(
        dir.join("hookd.yaml"),
        format!(
            "listen: 127.0.0.1:{port}\ndata_dir: ./data\npipelines_dir: ./pipelines\nsources:\n  github: {{ kind: github, secret_file: ./github.secret }}\n{extra}"
        ),
    )
    .expect("hookd.yaml");
    for (name, text) in pipelines {
        std::fs::write(dir.join("pipelines").join(format!("{name}.yaml")), text).expect("pipeline");
    }
}

/// Starts `hookd serve` on the config in `dir`, pinned to `cpu` when given,
/// with the default log level (info) as an operator would run it.
pub fn start_hookd(dir: &Path, port: u16, cpu: Option<u32>) -> Server {
    let mut cmd = pinned(cpu, &hookd_bin());
    cmd.arg("serve")
        .arg("--config")
        .arg(dir.join("hookd.yaml"))
        .current_dir(dir)
        .env_remove("HOOKD_LOG");
    Server::start(cmd, port, "hookd listening on http://")
}

/// One HTTP request; (status, body).
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let result = if method == "GET" {
        let mut r = agent.get(url);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        r.call()
    } else {
        let mut r = agent.post(url);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        r.send(body)
    };
    let mut resp = result.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .unwrap_or_default();
    Ok((status, text))
}

/// Headers GitHub sends with a push.
pub fn github_headers(body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/json".to_string()),
        ("X-GitHub-Event", "push".to_string()),
        ("X-GitHub-Delivery", delivery.to_string()),
        ("X-Hub-Signature-256", sign(body)),
    ]
}

/// Criterion as the side-by-side benchmarks run it (`sample_size` samples,
/// 0.5 s warm-up, 2 s of measurement, command-line arguments honoured), and
/// the directory it writes to, which [`criterion_samples_us`] reads.
pub fn criterion(sample_size: usize) -> (criterion::Criterion, PathBuf) {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("criterion");
    let c = criterion::Criterion::default()
        .output_directory(&out_dir)
        .sample_size(sample_size)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    (c, out_dir)
}

/// Criterion's per-iteration times in microseconds for one benchmark, from
/// `<out_dir>/<id>/new/sample.json` (one value per sample); `None`, with a
/// note on stderr, when there are none (the benchmark was filtered out).
pub fn criterion_samples_us(out_dir: &Path, id: &str) -> Option<Vec<f64>> {
    let sample = out_dir.join(id).join("new/sample.json");
    let Ok(text) = std::fs::read_to_string(&sample) else {
        eprintln!(
            "no criterion samples at {} (filtered out?)",
            sample.display()
        );
        return None;
    };
    let v: serde_json::Value = serde_json::from_str(&text).expect("sample.json");
    Some(
        v["iters"]
            .as_array()
            .expect("iters")
            .iter()
            .zip(v["times"].as_array().expect("times"))
            .map(|(i, t)| t.as_f64().unwrap_or(f64::NAN) / i.as_f64().unwrap_or(f64::NAN) / 1e3)
            .collect(),
    )
}

/// A numeric knob from the environment (`HOOKD_BENCH_*`), or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A stored GitHub push of `body` to `repo` on `git_ref`, with one run of a
/// pipeline `apply` (superseding its queued runs or not): what the store
/// benchmarks write, through the store API, without HTTP.
pub fn push_delivery(
    delivery_id: String,
    received_at: i64,
    body: &[u8],
    (repo, git_ref, pusher): (&str, &str, &str),
    supersede: bool,
) -> hookd::store::NewDelivery {
    use hookd::event::{Event, PushEvent};
    use hookd::store::{NewDelivery, NewRun, RunOrigin};
    let event = Event::Push(PushEvent::new(
        repo.into(),
        git_ref.into(),
        "737d38c599c1b2991664dfc6155d6bf516fcce36",
        "fd489864e7642b48eaad6e3f155c10e46810ec72",
        Some(format!("https://github.com/{repo}.git")),
        Some(pusher.into()),
    ));
    NewDelivery {
        source: "github".into(),
        event_type: "push".into(),
        provider_delivery_id: Some(delivery_id),
        received_at,
        headers: vec![("x-github-event".into(), "push".into())],
        body: body.to_vec(),
        events: vec![event.clone()],
        skipped: Default::default(),
        runs: vec![NewRun {
            pipeline: "apply".into(),
            concurrency_group: "apply".into(),
            trigger: "push".into(),
            event,
            git_ref: Some(git_ref.into()),
            commit: Some("fd489864e7642b48eaad6e3f155c10e46810ec72".into()),
            origin: RunOrigin::Webhook,
            supersede,
            alert: None,
        }],
        replay_of: None,
        alert_updates: Vec::new(),
    }
}
