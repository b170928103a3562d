//! The OpenAPI contract: every route of `/api/v1/openapi.json` is called
//! against a real daemon with real runs and deliveries, and every answer —
//! successes and errors — is validated against the schema the document
//! gives for that route and status. A route or status the document does not
//! describe fails the test, so the document cannot drift from the server.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "contract-test-token";

fn bearer() -> Vec<(String, String)> {
    vec![("Authorization".into(), format!("Bearer {TOKEN}"))]
}

/// Validates `instance` against `schema`, resolving `#/components/...` in `doc`.
fn check(doc: &Value, schema: &Value, instance: &Value, what: &str) {
    let mut root = schema.clone();
    if let Some(obj) = root.as_object_mut() {
        obj.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        obj.insert("components".into(), doc["components"].clone());
    }
    let validator = jsonschema::validator_for(&root)
        .unwrap_or_else(|e| panic!("{what}: the document's schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the answer does not match the documented schema:\n{}\nanswer: {instance}",
        errors.join("\n")
    );
}

struct Call {
    /// `GET` or `POST`.
    method: &'static str,
    /// Path template as documented, e.g. `/runs/{id}`.
    route: &'static str,
    /// The concrete path and query below /api/v1.
    path: String,
    auth: bool,
    expect: u16,
}

fn post(route: &'static str, path: impl Into<String>, auth: bool, expect: u16) -> Call {
    Call {
        method: "POST",
        ..call(route, path, auth, expect)
    }
}

fn call(route: &'static str, path: impl Into<String>, auth: bool, expect: u16) -> Call {
    Call {
        method: "GET",
        route,
        path: path.into(),
        auth,
        expect,
    }
}

#[test]
fn every_documented_route_answers_as_documented() {
    let repo = GitRepo::new();
    let a = repo.commit(&[("f", "x")], "c");
    let env = Env::new(
        "admin_token_file: ./admin.token\n",
        &[
            (
                "ok",
                "on: [{push: {branches: [main]}}]\nsteps:\n  - name: hello\n    run: echo hello\n",
            ),
            (
                "bad",
                "on: [{push: {branches: [main]}}]\nsteps:\n  - run: echo failing >&2; exit 3\n",
            ),
            (
                "tags-only",
                "on: [{push: {tags: ['v*']}}]\nsteps: [{run: 'true'}]\n",
            ),
            ("manual", "on: [{manual: {}}]\nsteps: [{run: 'true'}]\n"),
        ],
    );
    std::fs::write(env.path().join("admin.token"), format!("{TOKEN}\n")).expect("token");
    let daemon = env.start();
    let body = github_push("acme/infra", &repo.url(), "refs/heads/main", ZERO, &a);
    let (status, answer) = daemon.push(&body, "contract-1");
    assert_eq!(status, 202, "{answer}");
    let delivery = answer["delivery"].as_i64().expect("delivery");
    let runs: Vec<i64> = answer["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(runs.len(), 2, "{answer}");
    let wait = |id: i64| {
        wait_until(Duration::from_secs(60), "run to end", || {
            let (_, text) = daemon.request("GET", &format!("/api/v1/runs/{id}"), &bearer(), b"");
            let v: Value = serde_json::from_str(&text).ok()?;
            let s = v["status"].as_str()?.to_string();
            (s != "queued" && s != "running").then_some(v)
        })
    };
    for id in &runs {
        wait(*id);
    }
    let run = answer["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["pipeline"] == "ok")
        .and_then(|r| r["id"].as_i64())
        .expect("run of ok");

    let (status, text) = daemon.request("GET", "/api/v1/openapi.json", &[], b"");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    // The validator is not vacuous: a wrong shape is caught.
    let result = std::panic::catch_unwind(|| {
        check(
            &doc,
            &json!({"$ref": "#/components/schemas/RunList"}),
            &json!({"runs": [{"id": "one"}], "total": 1, "next_before": null}),
            "negative control",
        )
    });
    assert!(result.is_err(), "a malformed run list passed validation");

    let calls = vec![
        call("/runs", "/runs", true, 200),
        call("/runs", "/runs?limit=1", true, 200),
        call(
            "/runs",
            format!("/runs?pipeline=ok&status=succeeded&before={}", run + 100),
            true,
            200,
        ),
        call("/runs", "/runs?status=exploded", true, 400),
        call("/runs", "/runs?limit=0", true, 400),
        call("/runs", "/runs?limit=ten", true, 400),
        call("/runs", "/runs", false, 401),
        call("/runs/{id}", format!("/runs/{run}"), true, 200),
        call("/runs/{id}", format!("/runs/{}", runs[1]), true, 200),
        call("/runs/{id}", "/runs/999999", true, 404),
        call("/runs/{id}", "/runs/abc", true, 404),
        call("/runs/{id}", format!("/runs/{run}"), false, 401),
        call("/runs/{id}/log", format!("/runs/{run}/log"), true, 200),
        call(
            "/runs/{id}/log",
            format!("/runs/{run}/log?follow=1"),
            true,
            200,
        ),
        call(
            "/runs/{id}/log",
            format!("/runs/{run}/log?follow=maybe"),
            true,
            400,
        ),
        call(
            "/runs/{id}/log",
            format!("/runs/{run}/log?follow=1&offset=-1"),
            true,
            400,
        ),
        call("/runs/{id}/log", "/runs/999999/log", true, 404),
        call("/runs/{id}/log", format!("/runs/{run}/log"), false, 401),
        call("/deliveries", "/deliveries", true, 200),
        call(
            "/deliveries",
            "/deliveries?source=github&limit=1",
            true,
            200,
        ),
        call("/deliveries", "/deliveries?limit=5000", true, 400),
        call("/deliveries", "/deliveries", false, 401),
        call(
            "/deliveries/{id}",
            format!("/deliveries/{delivery}"),
            true,
            200,
        ),
        call("/deliveries/{id}", "/deliveries/424242", true, 404),
        call("/deliveries/{id}", "/deliveries/x1", true, 404),
        call(
            "/deliveries/{id}",
            format!("/deliveries/{delivery}"),
            false,
            401,
        ),
        call("/pipelines", "/pipelines", true, 200),
        call("/pipelines", "/pipelines", false, 401),
        call("/openapi.json", "/openapi.json", false, 200),
        post(
            "/pipelines/{name}/trigger",
            "/pipelines/manual/trigger",
            true,
            202,
        ),
        post(
            "/pipelines/{name}/trigger",
            "/pipelines/ok/trigger",
            true,
            409,
        ),
        post(
            "/pipelines/{name}/trigger",
            "/pipelines/nope/trigger",
            true,
            404,
        ),
        post(
            "/pipelines/{name}/trigger",
            "/pipelines/manual/trigger",
            false,
            401,
        ),
        post(
            "/runs/{id}/cancel",
            format!("/runs/{run}/cancel"),
            true,
            409,
        ),
        post("/runs/{id}/cancel", "/runs/999999/cancel", true, 404),
        post(
            "/runs/{id}/cancel",
            format!("/runs/{run}/cancel"),
            false,
            401,
        ),
        post(
            "/deliveries/{id}/replay",
            format!("/deliveries/{delivery}/replay"),
            true,
            202,
        ),
        post(
            "/deliveries/{id}/replay",
            "/deliveries/424242/replay",
            true,
            404,
        ),
        post(
            "/deliveries/{id}/replay",
            format!("/deliveries/{delivery}/replay"),
            false,
            401,
        ),
    ];

    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let called: BTreeSet<&str> = calls.iter().map(|c| c.route).collect();
    assert_eq!(
        documented, called,
        "every documented route is called, and only those"
    );

    for c in &calls {
        let what = format!("{} /api/v1{} (auth: {})", c.method, c.path, c.auth);
        let headers = if c.auth { bearer() } else { Vec::new() };
        let (status, text) = daemon.request(c.method, &format!("/api/v1{}", c.path), &headers, b"");
        assert_eq!(status, c.expect, "{what}: {text}");
        let op = &doc["paths"][c.route][c.method.to_ascii_lowercase()];
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{what}: status {status} is not documented for {}",
            c.route
        );
        let content = &response["content"];
        if let Some(schema) = content["application/json"].get("schema") {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what}: documented as JSON but is not: {e}: {text}"));
            check(&doc, schema, &v, &what);
        } else if c.path.contains("follow=1") {
            assert!(content["text/event-stream"].is_object(), "{what}");
            // The stream of an ended run holds its lines, then the end event.
            let end = text
                .split("\n\n")
                .find_map(|block| block.strip_prefix("event: end\ndata: "))
                .unwrap_or_else(|| panic!("{what}: no end event in {text:?}"));
            let end: Value = serde_json::from_str(end).expect("end event JSON");
            check(
                &doc,
                &json!({"$ref": "#/components/schemas/LogEnd"}),
                &end,
                &what,
            );
            assert_eq!(end["status"], "succeeded", "{what}");
            assert!(text.contains("data: "), "{what}: {text}");
        } else {
            assert!(content["text/plain"].is_object(), "{what}");
            assert!(text.contains("hello out | hello"), "{what}: {text}");
        }
    }

    // The data behind those answers is what the documentation promises.
    let (_, text) = daemon.request(
        "GET",
        &format!("/api/v1/deliveries/{delivery}"),
        &bearer(),
        b"",
    );
    let d: Value = serde_json::from_str(&text).expect("json");
    let skipped: Vec<&str> = d["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .filter_map(|s| s["pipeline"].as_str())
        .collect();
    assert!(
        skipped.contains(&"tags-only") && skipped.contains(&"manual"),
        "{d}"
    );
    // Paging: `total` counts every run, `next_before` continues after the page.
    let (_, text) = daemon.request("GET", "/api/v1/runs?limit=1000", &bearer(), b"");
    let all: Value = serde_json::from_str(&text).expect("json");
    let all_ids: Vec<i64> = all["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert!(
        all_ids.len() > runs.len(),
        "trigger and replay queued runs: {all}"
    );
    for id in &all_ids {
        wait(*id);
    }
    let (_, text) = daemon.request("GET", "/api/v1/runs?limit=1", &bearer(), b"");
    let page: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(page["total"], all_ids.len(), "{page}");
    assert_eq!(
        page["next_before"],
        all_ids.iter().max().copied().expect("ids"),
        "{page}"
    );
    let (_, text) = daemon.request("GET", "/api/v1/pipelines", &bearer(), b"");
    let pipelines: Value = serde_json::from_str(&text).expect("json");
    let bad = pipelines["pipelines"]
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["name"] == "bad")
        .expect("bad pipeline")
        .clone();
    assert_eq!(bad["last_run"]["status"], "failed", "{bad}");
    assert_eq!(bad["triggers"][0], "push: branches [main]", "{bad}");
    assert!(bad["last_change"].is_string(), "{bad}");
}

#[test]
fn the_api_refuses_missing_and_wrong_tokens_with_401_and_unknown_routes_with_json() {
    let env = Env::new("admin_token_file: ./admin.token\n", &[]);
    std::fs::write(env.path().join("admin.token"), format!("{TOKEN}\n")).expect("token");
    let daemon = env.start();
    for path in [
        "/api/v1/runs",
        "/api/v1/runs/1",
        "/api/v1/runs/1/log?follow=1",
        "/api/v1/deliveries",
        "/api/v1/deliveries/1",
        "/api/v1/pipelines",
        "/metrics",
    ] {
        let (status, body) = daemon.request("GET", path, &[], b"");
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("\"error\""), "{path}: {body}");
        let wrong = [("Authorization".to_string(), "Bearer not-it".to_string())];
        let (status, body) = daemon.request("GET", path, &wrong, b"");
        assert_eq!(status, 401, "{path}: {body}");
        let cookie = [("Cookie".to_string(), "hookd_session=forged".to_string())];
        let (status, _) = daemon.request("GET", path, &cookie, b"");
        assert_eq!(status, 401, "{path} with a forged cookie");
    }
    let (status, body) = daemon.request("GET", "/api/v1/nothing-here", &bearer(), b"");
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).expect("json error");
    assert!(v["error"].is_string(), "{v}");
}
