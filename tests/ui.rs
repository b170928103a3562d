//! The web UI in a real headless Chromium, driven over the DevTools protocol:
//! log in with the admin token, open the runs page, open a running run, and
//! see a log line that the step prints only after the page loaded (it waits
//! for a file the test writes then), i.e. the line arrived over the live
//! stream. Screenshots go to target/ui-artifacts/ (and to docs/ with
//! HOOKD_UPDATE_DOCS=1, for the README).

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const TOKEN: &str = "ui-test-admin-token";
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Headless Chromium, killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws_url: String,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,860",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium must be installed (Debian package chromium; .ci/run installs it)");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let ws_url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.split("DevTools listening on ").nth(1) {
                        break url.trim().to_string();
                    }
                    seen.push(line);
                }
                Err(_) => panic!(
                    "chromium did not announce its DevTools port:\n{}",
                    seen.join("\n")
                ),
            }
        };
        Browser {
            child,
            _profile: profile,
            ws_url,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools protocol session attached to one page.
struct Page {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
}

impl Page {
    fn open(browser: &Browser) -> Page {
        let (ws, _) = tungstenite::connect(browser.ws_url.as_str()).expect("connect to DevTools");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("read timeout");
        }
        let mut page = Page {
            ws,
            session: String::new(),
            next_id: 0,
        };
        let target = page.call("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().expect("targetId").to_string();
        let attached = page.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        page.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        page.call("Page.enable", json!({}));
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 860, "deviceScaleFactor": 1, "mobile": false}),
        );
        page
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    /// Sends one DevTools command; `Err` carries the protocol error the
    /// browser answered with (for instance while the page navigates).
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "{method}: no answer");
            let answer = self.ws.read().unwrap_or_else(|e| panic!("{method}: {e}"));
            let Message::Text(text) = answer else {
                continue;
            };
            let v: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                if let Some(error) = v.get("error") {
                    return Err(error.clone());
                }
                return Ok(v["result"].clone());
            }
        }
    }

    fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|error| panic!("Runtime.evaluate: {error}"))
    }

    /// The value of `expression`, or the protocol error the browser answered.
    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        self.try_call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        )
        .map(|r| r["result"]["value"].clone())
    }

    /// Runs `expression`, which starts a navigation (a submit, a click on a
    /// link). The answer may then be the navigation's protocol error rather
    /// than a value; any other error fails the test.
    fn act(&mut self, expression: &str) {
        match self.try_eval(expression) {
            Ok(value) => assert_eq!(value, json!(true), "{expression}"),
            Err(error) => {
                let message = error["message"].as_str().unwrap_or("");
                assert!(
                    message.contains("navigated") || message.contains("context"),
                    "{expression}: {error}"
                );
            }
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// Polls `expression` until it is `true`. A poll that lands while the
    /// page navigates (a form submit, a reload) gets a protocol error such as
    /// "Inspected target navigated or closed" instead of a value; that counts
    /// as "not yet", and the last such error is shown on time-out.
    fn wait_for(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last_error = Value::Null;
        loop {
            match self.try_eval(expression) {
                Ok(Value::Bool(true)) => return,
                Ok(_) => {}
                Err(error) => last_error = error,
            }
            if Instant::now() > deadline {
                let body = self.eval("document.body ? document.body.innerText : ''");
                panic!(
                    "timed out waiting for {what}; last protocol error: {last_error}; page text:\n{body}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(shot["data"].as_str().expect("png data"));
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
        let height = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
        assert!(width >= 1000 && height >= 600, "{width}x{height}");
        // A blank page compresses to a few KiB; a rendered table and log do not.
        assert!(
            png.len() > 20_000,
            "suspiciously small screenshot: {} bytes",
            png.len()
        );
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifact dir");
        }
        std::fs::write(path, &png).expect("write screenshot");
        println!(
            "screenshot: {} ({width}x{height}, {} bytes)",
            path.display(),
            png.len()
        );
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("invalid base64 byte {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..chunk.len()]);
    }
    out
}

fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-artifacts")
}

fn publish(artifact: &Path, doc_name: &str) {
    if std::env::var_os("HOOKD_UPDATE_DOCS").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).expect("docs dir");
        std::fs::copy(artifact, docs.join(doc_name)).expect("copy screenshot to docs");
    }
}

#[test]
fn the_run_page_shows_log_lines_live_in_a_real_browser() {
    let repo = GitRepo::new();
    repo.commit(&[("terraform/main.tf", "x")], "Add the network module");
    let env = Env::new(
        "admin_token_file: ./admin.token\n",
        &[
            (
                "infra-apply",
                "on: [{push: {branches: [main]}}]\nenv: {OUT: $OUT}\nsteps:\n  - name: plan\n    run: |\n      echo \"Refreshing state... (3 resources)\"\n      echo 'Plan: 1 to add, 0 to change, 0 to destroy.'\n  - name: apply\n    run: |\n      echo 'waiting for the approval file'\n      while [ ! -e \"$OUT/go\" ]; do sleep 0.05; done\n      echo \"live line: $(cat \"$OUT/go\")\"\n      echo 'module.network: Creating...' >&2\n      while [ ! -e \"$OUT/finish\" ]; do sleep 0.05; done\n      echo 'Apply complete! Resources: 1 added.'\n",
            ),
            ("lint", "on: [{push: {}}]\nsteps:\n  - name: fmt\n    run: echo checking; sleep 0.2\n"),
            ("smoke-test", "on: [{push: {}}]\nsteps:\n  - name: curl\n    run: echo 'HTTP 503 from /health' >&2; exit 22\n"),
            ("release", "on: [{push: {tags: ['v*']}}]\nsteps: [{run: 'true'}]\n"),
        ],
    );
    std::fs::write(env.path().join("admin.token"), format!("{TOKEN}\n")).expect("token");
    let daemon = env.start();
    let bearer = [("Authorization".to_string(), format!("Bearer {TOKEN}"))];
    let body = github_push(
        "acme/infra",
        &repo.url(),
        "refs/heads/main",
        ZERO,
        &repo.head(),
    );
    let (status, answer) = daemon.push(&body, "ui-1");
    assert_eq!(status, 202, "{answer}");
    let id_of = |p: &str| {
        answer["runs"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["pipeline"] == p))
            .and_then(|r| r["id"].as_i64())
            .unwrap_or_else(|| panic!("no run of {p}: {answer}"))
    };
    let live = id_of("infra-apply");
    let run_status = |id: i64| -> String {
        let (_, text) = daemon.request("GET", &format!("/api/v1/runs/{id}"), &bearer, b"");
        let v: Value = serde_json::from_str(&text).expect("json");
        v["status"].as_str().unwrap_or("").to_string()
    };
    for p in ["lint", "smoke-test"] {
        let id = id_of(p);
        wait_until(RUN_TIMEOUT, "run to end", || {
            let s = run_status(id);
            (s != "queued" && s != "running").then_some(())
        });
    }
    wait_until(RUN_TIMEOUT, "the live run to wait at its gate", || {
        let (_, log) = daemon.request("GET", &format!("/api/v1/runs/{live}/log"), &bearer, b"");
        log.contains("waiting for the approval file").then_some(())
    });

    let browser = Browser::start();
    let mut page = Page::open(&browser);

    // Not logged in: the UI sends the browser to the login form.
    page.navigate(&format!("{}/", daemon.base));
    page.wait_for(
        "location.pathname === '/login' && !!document.querySelector('form.login')",
        "the login form",
    );
    page.act(&format!(
        "document.querySelector('input[name=token]').value = {}; document.querySelector('form.login').submit(); true",
        json!(TOKEN)
    ));
    page.wait_for(
        "location.pathname === '/' && !!document.querySelector('table.list')",
        "the runs page after login",
    );
    let text = page.eval("document.body.innerText").to_string();
    for expected in [
        "infra-apply",
        "running",
        "smoke-test",
        "failed",
        "succeeded",
        "refs/heads/main",
    ] {
        assert!(
            text.contains(expected),
            "runs page lacks {expected:?}: {text}"
        );
    }
    let runs_png = artifacts().join("runs-page.png");
    page.screenshot(&runs_png);
    publish(&runs_png, "ui-runs.png");

    // Open the running run from the list.
    page.act(&format!(
        "document.querySelector('a[href=\"/runs/{live}\"]').click(); true"
    ));
    page.wait_for(
        &format!("location.pathname === '/runs/{live}' && !!document.getElementById('live')"),
        "the running run's page",
    );
    // Mark this page load: a reload would lose the mark.
    page.eval("window.__loadedOnce = true; true");
    let unique = format!("approved-{}-{}", std::process::id(), live);
    assert!(!page
        .eval("document.getElementById('log').textContent")
        .to_string()
        .contains(&unique));
    std::fs::write(env.out().join("go"), &unique).expect("open the gate");
    page.wait_for(
        &format!(
            "document.getElementById('log').textContent.includes({})",
            json!(format!("live line: {unique}"))
        ),
        "the live log line",
    );
    assert_eq!(
        page.eval("window.__loadedOnce === true"),
        json!(true),
        "the page was reloaded"
    );
    assert_eq!(
        run_status(live),
        "running",
        "the line must have come while the run ran"
    );
    page.wait_for(
        "document.getElementById('log').textContent.includes('module.network: Creating...')",
        "the stderr line",
    );
    let run_png = artifacts().join("run-page.png");
    page.screenshot(&run_png);
    publish(&run_png, "ui-run.png");

    // The end of the run reaches the page too.
    std::fs::write(env.out().join("finish"), "").expect("finish");
    page.wait_for(
        "document.getElementById('run-status').textContent === 'succeeded'",
        "the final status",
    );
    page.wait_for(
        "!document.getElementById('live') && document.body.innerText.includes('Apply complete!')",
        "the finished run page",
    );

    // Deliveries show why each pipeline matched or not, and link to runs.
    page.navigate(&format!(
        "{}/deliveries/{}",
        daemon.base, answer["delivery"]
    ));
    page.wait_for(
        "document.body.innerText.includes('release') && document.body.innerText.includes('skipped')",
        "the delivery page",
    );
    let text = page.eval("document.body.innerText").to_string();
    assert!(
        text.contains("tags"),
        "the skip reason names the filter: {text}"
    );
    assert_eq!(
        page.eval(&format!(
            "!!document.querySelector('a[href=\"/runs/{live}\"]')"
        )),
        json!(true)
    );
    page.navigate(&format!("{}/pipelines", daemon.base));
    page.wait_for(
        "document.body.innerText.includes('push: branches [main]')",
        "the pipelines page",
    );
}

#[test]
fn pages_escape_payload_text_and_the_login_cookie_is_httponly() {
    let repo = GitRepo::new();
    repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "admin_token_file: ./admin.token\n",
        &[("p", "on: [{push: {}}]\nsteps: [{run: 'true'}]\n")],
    );
    std::fs::write(env.path().join("admin.token"), format!("{TOKEN}\n")).expect("token");
    let daemon = env.start();
    let evil = "refs/heads/<script>alert(1)</script>";
    let body = github_push("acme/infra", &repo.url(), evil, ZERO, &repo.head());
    let (status, answer) = daemon.push(&body, "evil-1");
    assert_eq!(status, 202, "{answer}");

    // Without credentials: a redirect to the login form, never the data.
    let (status, _) = daemon.request("GET", "/", &[], b"");
    assert_eq!(status, 200, "ureq follows the redirect to /login");
    let bearer = [("Authorization".to_string(), format!("Bearer {TOKEN}"))];
    let (status, page) = daemon.request("GET", "/", &bearer, b"");
    assert_eq!(status, 200);
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );

    // The login form sets an HttpOnly, SameSite=Strict cookie that is not the token.
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--data-urlencode"])
        .arg(format!("token={TOKEN}"))
        .args(["--data-urlencode", "next=/deliveries"])
        .arg(format!("{}/login", daemon.base))
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(headers.starts_with("HTTP/1.1 303"), "{headers}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("location: /deliveries"),
        "{headers}"
    );
    let cookie_line = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {headers}"));
    assert!(
        cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"),
        "{cookie_line}"
    );
    assert!(!cookie_line.contains(TOKEN), "{cookie_line}");
    let cookie = cookie_line
        .split_once(':')
        .map(|(_, v)| v.trim())
        .and_then(|v| v.split(';').next())
        .expect("cookie value")
        .to_string();
    let with_cookie = [("Cookie".to_string(), cookie)];
    let (status, page) = daemon.request("GET", "/deliveries", &with_cookie, b"");
    assert_eq!(status, 200);
    assert!(page.contains("Deliveries"), "{page}");
    let (status, _) = daemon.request("GET", "/api/v1/runs", &with_cookie, b"");
    assert_eq!(
        status, 200,
        "the session cookie also opens the API (for EventSource)"
    );

    // A wrong token is refused with 401 on the form.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--data-urlencode",
            "token=nope",
        ])
        .arg(format!("{}/login", daemon.base))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
}
