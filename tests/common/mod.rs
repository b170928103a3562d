//! Shared integration-test helpers: a real `hookd serve` started on port 0 in
//! a temp dir, real git repositories made with the git CLI, signed requests
//! built from the real GitHub fixtures, and `wait_until` instead of sleeps.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookd::source::hmac_sha256_hex;
use serde_json::Value;

pub const SECRET: &str = "It's a Secret to Everybody";

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `hookd serve`.
pub struct Daemon {
    pub dir: PathBuf,
    pub child: Child,
    pub base: String,
    pub logs: Arc<Mutex<Vec<String>>>,
    agent: ureq::Agent,
}

/// A test environment: a temp dir with hookd.yaml, secrets and pipelines.
pub struct Env {
    pub tmp: tempfile::TempDir,
}

impl Env {
    /// Writes `hookd.yaml` (with `extra` config lines appended after the
    /// defaults below) and the given pipelines.
    pub fn new(extra_config: &str, pipelines: &[(&str, &str)]) -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        std::fs::write(dir.join("github.secret"), format!("{SECRET}\n")).expect("secret");
        std::fs::create_dir_all(dir.join("pipelines")).expect("pipelines dir");
        std::fs::create_dir_all(dir.join("out")).expect("out dir");
        let config = format!(
            "listen: 127.0.0.1:0\nkill_grace: 1s\nshutdown_grace: 2s\nsources:\n  github: {{ kind: github, secret_file: ./github.secret }}\n{extra_config}"
        );
        std::fs::write(dir.join("hookd.yaml"), config).expect("config");
        let env = Env { tmp };
        for (name, body) in pipelines {
            env.write_pipeline(name, body);
        }
        env
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Where steps may write what they saw.
    pub fn out(&self) -> PathBuf {
        self.path().join("out")
    }

    pub fn write_pipeline(&self, name: &str, body: &str) {
        let body = body.replace("$OUT", &self.out().display().to_string());
        std::fs::write(
            self.path().join("pipelines").join(format!("{name}.yaml")),
            body,
        )
        .expect("pipeline");
    }

    /// Starts `hookd serve` and waits until it listens.
    pub fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        self.start_with(&[], env)
    }

    /// Starts `hookd serve` with extra global arguments (e.g. `--log-format json`).
    pub fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookd"));
        cmd.args(args)
            .arg("serve")
            .arg("--config")
            .arg(self.path().join("hookd.yaml"))
            .current_dir(self.path())
            .env("HOOKD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hookd");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("HOOKD_TEST_ECHO").is_some() {
                    eprintln!("[hookd] {line}");
                }
                sink.lock().expect("logs").push(line);
            }
        });
        let addr = wait_until(Duration::from_secs(20), "hookd to listen", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "hookd exited with {status} before listening:\n{}",
                    logs.lock().expect("logs").join("\n")
                );
            }
            logs.lock().expect("logs").iter().find_map(|l| {
                l.split("hookd listening on http://").nth(1).map(|rest| {
                    // Text logs end the address with a space, JSON logs with `",`.
                    rest.split(|c: char| c.is_whitespace() || c == '"')
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
            })
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Daemon {
            dir: self.path().to_path_buf(),
            child,
            base: format!("http://{addr}"),
            logs,
            agent,
        }
    }

    /// Runs the hookd CLI with this env's config; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_hookd"))
            .args(args)
            .arg("--config")
            .arg(self.path().join("hookd.yaml"))
            .current_dir(self.path())
            .output()
            .expect("run hookd cli");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Daemon {
    /// Sends a request; returns status and body text.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> (u16, String) {
        let url = format!("{}{}", self.base, path);
        let result = match method {
            "GET" => {
                let mut r = self.agent.get(&url);
                for (k, v) in headers {
                    r = r.header(k, v);
                }
                r.call()
            }
            _ => {
                let mut r = self.agent.post(&url);
                for (k, v) in headers {
                    r = r.header(k, v);
                }
                r.send(body)
            }
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .unwrap_or_default();
        (status, text)
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.request("GET", path, &[], b"");
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// POSTs a GitHub-signed delivery.
    pub fn push(&self, body: &[u8], delivery_id: &str) -> (u16, Value) {
        self.github("push", body, delivery_id)
    }

    pub fn github(&self, event: &str, body: &[u8], delivery_id: &str) -> (u16, Value) {
        let (status, text) = self.request(
            "POST",
            "/hooks/github",
            &github_headers(event, body, delivery_id),
            body,
        );
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// Waits until run `id` is terminal; returns its JSON.
    pub fn wait_run(&self, id: i64, timeout: Duration) -> Value {
        wait_until(timeout, &format!("run {id} to finish"), || {
            let run = self.get_json(&format!("/api/v1/runs/{id}"));
            let status = run["status"].as_str().unwrap_or("").to_string();
            (status != "queued" && status != "running").then_some(run)
        })
    }

    pub fn runs(&self) -> Vec<Value> {
        self.get_json("/api/v1/runs?limit=1000")["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// SIGTERM and wait for exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = wait_until(Duration::from_secs(30), "hookd to exit", || {
            self.child.try_wait().ok().flatten()
        });
        std::mem::forget(self);
        status
    }

    /// SIGKILL (a crash) and reap.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The headers GitHub sends, signed with [`SECRET`].
pub fn github_headers(event: &str, body: &[u8], delivery_id: &str) -> Vec<(String, String)> {
    vec![
        ("Content-Type".into(), "application/json".into()),
        ("X-GitHub-Event".into(), event.into()),
        ("X-GitHub-Delivery".into(), delivery_id.into()),
        ("User-Agent".into(), "GitHub-Hookshot/test".into()),
        (
            "X-Hub-Signature-256".into(),
            format!("sha256={}", hmac_sha256_hex(SECRET.as_bytes(), body)),
        ),
    ]
}

/// The path of a shared fixture.
pub fn fixture_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(rel)
}

/// A real GitHub push payload (shared/fixtures/github/push-branch-commits.json)
/// re-pointed at a local repository: ref, before, after, repository name and
/// clone URL replaced, every other field as GitHub sent it.
pub fn github_push(
    full_name: &str,
    clone_url: &str,
    git_ref: &str,
    before: &str,
    after: &str,
) -> Vec<u8> {
    let text =
        std::fs::read_to_string(fixture_path("github/push-branch-commits.json")).expect("fixture");
    let mut v: Value = serde_json::from_str(&text).expect("fixture json");
    v["ref"] = git_ref.into();
    v["before"] = before.into();
    v["after"] = after.into();
    v["created"] = (before.chars().all(|c| c == '0')).into();
    v["deleted"] = (after.chars().all(|c| c == '0')).into();
    v["repository"]["full_name"] = full_name.into();
    v["repository"]["clone_url"] = clone_url.into();
    serde_json::to_vec(&v).expect("encode")
}

pub const ZERO: &str = "0000000000000000000000000000000000000000";

/// A real git repository in a temp dir, driven with the git CLI.
pub struct GitRepo {
    pub tmp: tempfile::TempDir,
}

impl GitRepo {
    pub fn new() -> GitRepo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = GitRepo { tmp };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=Test",
                "-c",
                "user.email=test@example.com",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes files and commits them; returns the new commit's sha.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let p = self.path().join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(p, content).expect("write");
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// A base commit, then 50 commits each adding `terraform/module-NN.tf`;
    /// (base, last, the 50 paths in order).
    pub fn fifty_terraform_commits(&self) -> (String, String, Vec<String>) {
        let base = self.commit(&[("README", "x\n")], "base");
        let mut last = base.clone();
        let mut paths = Vec::new();
        for i in 0..50 {
            let path = format!("terraform/module-{i:02}.tf");
            last = self.commit(&[(path.as_str(), "x\n")], &format!("c{i}"));
            paths.push(path);
        }
        (base, last, paths)
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }
}

impl Env {
    /// Writes a file (a secret, say) next to hookd.yaml.
    pub fn write_file(&self, name: &str, content: &str) {
        std::fs::write(self.path().join(name), content).expect("write file");
    }
}

impl Daemon {
    /// Sends a request; returns status and the answer as JSON (a string
    /// when it is not JSON).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> (u16, Value) {
        let (status, text) = self.request(method, path, headers, body);
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }
}

/// A shared fixture as JSON, e.g. `json_fixture("gitlab/push-hook.json")`.
pub fn json_fixture(rel: &str) -> Value {
    let text = std::fs::read_to_string(fixture_path(rel)).expect("fixture");
    serde_json::from_str(&text).expect("fixture json")
}

/// Header pairs from string literals.
pub fn header_list(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
