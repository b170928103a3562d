//! Alert-driven self-healing against a real Alertmanager (Debian's
//! `prometheus-alertmanager`, installed by .ci/run): alerts are posted to its
//! v2 API, and it notifies hookd as it would in production.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const AM_TOKEN: &str = "am-bearer-token";

struct Alertmanager {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn alertmanager_binary() -> PathBuf {
    ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("prometheus-alertmanager is installed (.ci/run installs it)")
}

impl Alertmanager {
    /// Starts Alertmanager on 127.0.0.1 with short timings and a webhook
    /// receiver pointing at hookd's `/hooks/alerts` with a bearer token.
    fn start(hookd: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            r#"route:
  receiver: hookd
  group_by: [alertname, instance]
  group_wait: 200ms
  group_interval: 1s
  repeat_interval: 2s
receivers:
  - name: hookd
    webhook_configs:
      - url: {hookd}/hooks/alerts
        send_resolved: true
        http_config:
          authorization: {{ type: Bearer, credentials: {AM_TOKEN} }}
"#
        );
        std::fs::write(dir.path().join("am.yml"), config).expect("write config");
        let port = free_port();
        let child = Command::new(alertmanager_binary())
            .arg(format!(
                "--config.file={}",
                dir.path().join("am.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        wait_until(Duration::from_secs(30), "alertmanager to be ready", || {
            ureq::get(&format!("{}/-/ready", am.base))
                .call()
                .ok()
                .filter(|r| r.status() == 200)
        });
        am
    }

    /// Posts one alert to the v2 API; `ends_at` in the past resolves it.
    fn post(&self, labels: Value, starts_at: &str, ends_at: Option<&str>) {
        let mut alert = json!({"labels": labels, "annotations": {"summary": "disk almost full"}, "startsAt": starts_at});
        if let Some(e) = ends_at {
            alert["endsAt"] = e.into();
        }
        let body = serde_json::to_vec(&json!([alert])).expect("json");
        let status = ureq::post(&format!("{}/api/v2/alerts", self.base))
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(status, 200, "alertmanager refused the alert");
    }
}

fn now_rfc3339() -> String {
    hookd::clock::rfc3339(hookd::clock::now_ms())
}

fn env_with_alerts(pipelines: &[(&str, &str)]) -> Env {
    let env = Env::new(
        "sources:\n  alerts: { kind: alertmanager, bearer_token_file: ./am.token }\n",
        pipelines,
    );
    // Env::new wrote a `sources:` key already; replace the config with one that has both.
    let config = std::fs::read_to_string(env.path().join("hookd.yaml")).expect("config");
    let config = config.replace(
        "sources:\n  github: { kind: github, secret_file: ./github.secret }\nsources:\n",
        "sources:\n  github: { kind: github, secret_file: ./github.secret }\n",
    );
    std::fs::write(env.path().join("hookd.yaml"), config).expect("config");
    std::fs::write(env.path().join("am.token"), format!("{AM_TOKEN}\n")).expect("token");
    env
}

fn runs_of(daemon: &Daemon, pipeline: &str) -> Vec<Value> {
    daemon
        .runs()
        .into_iter()
        .filter(|r| r["pipeline"] == pipeline)
        .collect()
}

fn alert_deliveries(daemon: &Daemon) -> usize {
    daemon.get_json("/api/v1/deliveries?source=alerts&limit=1000")["deliveries"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

#[test]
fn a_firing_alert_is_remediated_once_with_its_labels_and_repeats_run_nothing() {
    let env = env_with_alerts(&[(
        "disk",
        r#"on:
  - alert:
      sources: [alerts]
      matchers: ['alertname="DiskFull"', 'severity=~"critical|page"']
env: {OUT: $OUT}
remediation: {cooldown: 10m}
steps:
  - run: env > "$OUT/env-$HOOKD_RUN_ID"
"#,
    )]);
    let daemon = env.start();
    let am = Alertmanager::start(&daemon.base);
    am.post(
        json!({"alertname": "DiskFull", "instance": "db-3", "severity": "critical", "mount_point": "/var"}),
        &now_rfc3339(),
        None,
    );
    let run = wait_until(Duration::from_secs(30), "the remediation", || {
        runs_of(&daemon, "disk").into_iter().next()
    });
    let run = daemon.wait_run(run["id"].as_i64().expect("id"), Duration::from_secs(30));
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "alert");
    let envtext =
        std::fs::read_to_string(env.out().join(format!("env-{}", run["id"]))).expect("env");
    for want in [
        "HOOKD_TRIGGER=alert",
        "HOOKD_SOURCE=alerts",
        "HOOKD_ALERT_STATUS=firing",
        "HOOKD_ALERT_NAME=DiskFull",
        "HOOKD_ALERT_LABEL_INSTANCE=db-3",
        "HOOKD_ALERT_LABEL_MOUNT_POINT=/var",
        "HOOKD_ALERT_LABEL_SEVERITY=critical",
        "HOOKD_ALERT_ANNOTATION_SUMMARY=disk almost full",
    ] {
        assert!(
            envtext.lines().any(|l| l == want),
            "{want} missing:\n{envtext}"
        );
    }
    assert!(
        envtext
            .lines()
            .any(|l| l.starts_with("HOOKD_ALERT_FINGERPRINT=") && l.len() > 25),
        "{envtext}"
    );
    assert_eq!(run["alert_fingerprint"].as_str().map(str::len), Some(16));
    // Alertmanager repeats the notification every repeat_interval: nothing new runs.
    wait_until(Duration::from_secs(30), "repeat notifications", || {
        (alert_deliveries(&daemon) >= 3).then_some(())
    });
    assert_eq!(
        runs_of(&daemon, "disk").len(),
        1,
        "{:?}",
        runs_of(&daemon, "disk")
    );
    let delivery =
        daemon.get_json("/api/v1/deliveries?source=alerts&limit=1")["deliveries"][0].clone();
    let reasons = delivery["skipped"].to_string();
    assert!(reasons.contains("already handled by run"), "{delivery}");
}

#[test]
fn resolving_the_alert_cancels_a_long_running_remediation() {
    let env = env_with_alerts(&[(
        "restart",
        r#"on:
  - alert: {matchers: ['alertname="ServiceDown"']}
env: {OUT: $OUT}
remediation: {cancel_on_resolved: true}
steps:
  - run: echo $$ > "$OUT/pgid"; sleep 1000
"#,
    )]);
    let daemon = env.start();
    let am = Alertmanager::start(&daemon.base);
    let starts = now_rfc3339();
    let labels = json!({"alertname": "ServiceDown", "instance": "web-1"});
    am.post(labels.clone(), &starts, None);
    let pgid: i32 = wait_until(Duration::from_secs(30), "the remediation to start", || {
        std::fs::read_to_string(env.out().join("pgid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    am.post(labels, &starts, Some(&now_rfc3339()));
    let run = wait_until(
        Duration::from_secs(30),
        "the remediation to be cancelled",
        || {
            runs_of(&daemon, "restart")
                .into_iter()
                .find(|r| r["status"] == "cancelled")
        },
    );
    assert!(
        run["reason"].as_str().unwrap_or("").starts_with("resolved"),
        "{run}"
    );
    assert!(
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_err(),
        "the remediation's process group survived"
    );
    assert_eq!(
        runs_of(&daemon, "restart").len(),
        1,
        "a resolved notification starts nothing here"
    );
}

#[test]
fn a_flapping_alert_runs_at_most_max_runs_and_escalates_once() {
    let env = env_with_alerts(&[(
        "flappy",
        r#"on:
  - alert: {matchers: ['alertname="Flapping"']}
env: {OUT: $OUT}
remediation: {max_runs: 3, window: 1h}
steps:
  - run: echo "$HOOKD_RUN_ID" >> "$OUT/remediations"
on_failure:
  - run: echo "$HOOKD_RUN_ID $HOOKD_ESCALATION_REASON" >> "$OUT/escalations"
"#,
    )]);
    let daemon = env.start();
    let am = Alertmanager::start(&daemon.base);
    let labels = json!({"alertname": "Flapping", "instance": "db-1"});
    let deadline = Instant::now() + Duration::from_secs(120);
    for cycle in 0..10 {
        let starts = now_rfc3339();
        let before = alert_deliveries(&daemon);
        am.post(labels.clone(), &starts, None);
        wait_until(Duration::from_secs(20), "the firing notification", || {
            (alert_deliveries(&daemon) > before).then_some(())
        });
        let before = alert_deliveries(&daemon);
        am.post(labels.clone(), &starts, Some(&now_rfc3339()));
        wait_until(Duration::from_secs(20), "the resolved notification", || {
            (alert_deliveries(&daemon) > before).then_some(())
        });
        assert!(Instant::now() < deadline, "cycle {cycle} too slow");
    }
    let escalations = wait_until(Duration::from_secs(30), "the escalation", || {
        std::fs::read_to_string(env.out().join("escalations")).ok()
    });
    std::thread::sleep(Duration::from_secs(2));
    let runs = runs_of(&daemon, "flappy");
    let executed = runs.iter().filter(|r| r["status"] == "succeeded").count();
    let suppressed = runs.iter().filter(|r| r["status"] == "suppressed").count();
    assert!(
        (1..=3).contains(&executed),
        "{executed} remediations: {runs:?}"
    );
    assert!(suppressed >= 1, "{runs:?}");
    let remediations = std::fs::read_to_string(env.out().join("remediations")).unwrap_or_default();
    assert_eq!(remediations.lines().count(), executed);
    let escalations = std::fs::read_to_string(env.out().join("escalations")).unwrap_or(escalations);
    assert_eq!(
        escalations.lines().count(),
        1,
        "exactly one escalation per window:\n{escalations}"
    );
    assert!(escalations.contains("max_runs"), "{escalations}");
    let escalated: Vec<&Value> = runs
        .iter()
        .filter(|r| r["escalation"]["status"] == "succeeded")
        .collect();
    assert_eq!(escalated.len(), 1, "{runs:?}");
    assert_eq!(escalated[0]["status"], "suppressed");
}

#[test]
fn an_ineffective_remediation_is_marked_and_escalates() {
    let env = env_with_alerts(&[(
        "cleanup",
        r#"on:
  - alert: {matchers: ['alertname="DiskFull"']}
env: {OUT: $OUT}
remediation: {verify_resolved_within: 2s}
steps:
  - run: echo cleaned
on_failure:
  - name: page
    run: echo "$HOOKD_ESCALATION_REASON" > "$OUT/paged"
"#,
    )]);
    let daemon = env.start();
    let am = Alertmanager::start(&daemon.base);
    am.post(
        json!({"alertname": "DiskFull", "instance": "db-9"}),
        &now_rfc3339(),
        None,
    );
    let run = wait_until(Duration::from_secs(30), "the remediation", || {
        runs_of(&daemon, "cleanup").into_iter().next()
    });
    let id = run["id"].as_i64().expect("id");
    let run = wait_until(
        Duration::from_secs(30),
        "the verdict and escalation",
        || {
            let r = daemon.get_json(&format!("/api/v1/runs/{id}"));
            (r["escalation"]["status"] == "succeeded").then_some(r)
        },
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["effective"], false, "{run}");
    let paged = std::fs::read_to_string(env.out().join("paged")).expect("paged");
    assert!(paged.starts_with("ineffective"), "{paged}");
    let names: Vec<&str> = run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, vec!["step-1", "page"], "{run}");
}

#[test]
fn wrong_credentials_are_refused_and_run_nothing() {
    let env = env_with_alerts(&[("any", "on: [{alert: {}}]\nsteps: [{run: 'true'}]\n")]);
    let daemon = env.start();
    let body =
        std::fs::read(fixture_path("alertmanager/captured-0.25-firing.json")).expect("fixture");
    let json_ct = ("Content-Type".to_string(), "application/json".to_string());
    for auth in [None, Some("Bearer wrong"), Some("Basic YWxlcnQ6cw==")] {
        let mut headers = vec![json_ct.clone()];
        if let Some(a) = auth {
            headers.push(("Authorization".to_string(), a.to_string()));
        }
        let (status, text) = daemon.request("POST", "/hooks/alerts", &headers, &body);
        assert_eq!(status, 401, "{auth:?}: {text}");
    }
    assert!(daemon.runs().is_empty());
    let headers = vec![
        json_ct,
        ("Authorization".to_string(), format!("Bearer {AM_TOKEN}")),
    ];
    let (status, text) = daemon.request("POST", "/hooks/alerts", &headers, &body);
    assert_eq!(status, 202, "{text}");
}

/// A sender without an adapter posts alerts in its own shape; the generic
/// source maps them with JSON pointers and the same guard rails apply.
#[test]
fn generic_alerts_run_remediations_with_their_labels() {
    let env = Env::new(
        "sources:\n  mon: { kind: generic, token: { header: X-Mon-Token }, token_file: ./mon.token, alert: { alerts: /checks, status: /state, name: /name, labels: /tags } }\n",
        &[(
            "fix",
            "on: [{alert: {sources: [mon], matchers: ['host=~\"db-.*\"']}}]\nenv: {OUT: $OUT}\nsteps:\n  - run: echo \"$HOOKD_ALERT_NAME $HOOKD_ALERT_LABEL_HOST $HOOKD_ALERT_FINGERPRINT\" >> \"$OUT/fixed\"\n",
        )],
    );
    let config = std::fs::read_to_string(env.path().join("hookd.yaml")).expect("config");
    let config = config.replace(
        "sources:\n  github: { kind: github, secret_file: ./github.secret }\nsources:\n",
        "sources:\n  github: { kind: github, secret_file: ./github.secret }\n",
    );
    std::fs::write(env.path().join("hookd.yaml"), config).expect("config");
    std::fs::write(env.path().join("mon.token"), "mon-token\n").expect("token");
    let daemon = env.start();
    let body = br#"{"checks": [{"state": "problem", "name": "DiskFull", "tags": {"host": "db-3"}},
                               {"state": "problem", "name": "DiskFull", "tags": {"host": "web-1"}}]}"#;
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Mon-Token".to_string(), "mon-token".to_string()),
    ];
    let (status, text) = daemon.request("POST", "/hooks/mon", &headers, body);
    assert_eq!(status, 202, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        answer["runs"].as_array().map(Vec::len),
        Some(1),
        "only db-3 matches: {answer}"
    );
    let run = daemon.wait_run(
        answer["runs"][0]["id"].as_i64().expect("id"),
        Duration::from_secs(30),
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    let fixed = std::fs::read_to_string(env.out().join("fixed")).expect("fixed");
    assert!(fixed.starts_with("DiskFull db-3 "), "{fixed}");
    // The same alert again (no startsAt: the same episode) runs nothing.
    let (status, text) = daemon.request("POST", "/hooks/mon", &headers, body);
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("already handled by run"), "{text}");
    let wrong = vec![
        headers[0].clone(),
        ("X-Mon-Token".to_string(), "nope".to_string()),
    ];
    assert_eq!(daemon.request("POST", "/hooks/mon", &wrong, body).0, 401);
    assert_eq!(daemon.runs().len(), 1);
}
