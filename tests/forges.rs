//! The forge sources end to end: GitLab, Gitea, Bitbucket Cloud, Bitbucket
//! Data Center and generic senders, each against a real daemon with real git
//! repositories. Every request carries the provider's real payload shape (a
//! shared fixture re-pointed at a local repository) and its real headers and
//! credentials, built here independently of hookd's own `sign()`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::*;
use hookd::config::HmacAlgorithm;
use hookd::source::{hmac_digest, hmac_sha256_hex};
use serde_json::{json, Value};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const BRANCHES: &str = "branches: [main, \"release/*\"]";
const TAGS: &str = "tags: [\"v*\"]";

/// A pipeline for a push trigger whose step records the commit it ran at.
fn pipeline(sources: &str, filter: &str, repo_url: Option<&str>) -> String {
    let repo = repo_url
        .map(|u| format!("repo:\n  url: {u}\n"))
        .unwrap_or_default();
    format!(
        r#"on:
  - push:
      sources: [{sources}]
      {filter}
{repo}env: {{OUT: $OUT}}
steps:
  - name: record
    run: |
      set -eu
      d="$OUT/$HOOKD_RUN_ID"
      mkdir -p "$d"
      git rev-parse HEAD > "$d/head"
      cp "$HOOKD_PAYLOAD_FILE" "$d/payload"
      printf '%s' "$HOOKD_REPOSITORY" > "$d/repository"
"#
    )
}

/// An environment with extra `sources:` entries and the given pipelines.
fn env_with(sources: &str, pipelines: &[(&str, String)]) -> Env {
    let refs: Vec<(&str, &str)> = pipelines.iter().map(|(n, b)| (*n, b.as_str())).collect();
    Env::new(sources, &refs)
}

/// A repository with two commits on main, `a` then `b`, and tag v1.0 at `b`.
fn repo() -> (GitRepo, String, String) {
    let repo = GitRepo::new();
    let a = repo.commit(&[("app.txt", "one\n")], "first");
    let b = repo.commit(&[("app.txt", "two\n")], "second");
    repo.git(&["tag", "v1.0", &b]);
    (repo, a, b)
}

/// One finished run: pipeline, the commit its step checked out, the
/// repository it was told, and the payload file it got.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ran {
    pipeline: String,
    head: String,
    repository: String,
    payload: Vec<u8>,
}

/// Waits for every run of a webhook answer; each must succeed.
fn ran(env: &Env, daemon: &Daemon, answer: &Value) -> Vec<Ran> {
    let runs = answer["runs"].as_array().cloned().unwrap_or_default();
    let mut out: Vec<Ran> = runs
        .iter()
        .map(|r| {
            let id = r["id"].as_i64().expect("run id");
            let run = daemon.wait_run(id, RUN_TIMEOUT);
            assert_eq!(run["status"], "succeeded", "{run}\n{}", daemon.log_text());
            let dir = env.out().join(id.to_string());
            let read = |name: &str| std::fs::read(dir.join(name)).expect(name);
            let head = String::from_utf8_lossy(&read("head")).trim().to_string();
            assert_eq!(run["commit"], head.as_str(), "{run}");
            Ran {
                pipeline: r["pipeline"].as_str().unwrap_or("").to_string(),
                head,
                repository: String::from_utf8_lossy(&read("repository")).into_owned(),
                payload: read("payload"),
            }
        })
        .collect();
    out.sort();
    out
}

/// Pipeline and commit of each run, sorted.
fn heads(runs: &[Ran]) -> Vec<(&str, &str)> {
    runs.iter()
        .map(|r| (r.pipeline.as_str(), r.head.as_str()))
        .collect()
}

fn post_ok(daemon: &Daemon, path: &str, headers: &[(String, String)], body: &[u8]) -> Value {
    let (status, answer) = daemon.send("POST", path, headers, body);
    assert_eq!(status, 202, "{answer}\n{}", daemon.log_text());
    answer
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn encode(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("encode")
}

/// Parses `hookd sign` output into headers.
fn signed_headers(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------- GitLab

const GITLAB_TOKEN: &str = "gl-t0ken";
const GITLAB_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A real GitLab payload re-pointed at `url`, in a nested group.
fn gitlab_payload(fixture: &str, url: &str, git_ref: &str, before: &str, after: &str) -> Vec<u8> {
    let mut v = json_fixture(fixture);
    v["ref"] = git_ref.into();
    v["before"] = before.into();
    v["after"] = after.into();
    v["checkout_sha"] = if after == ZERO {
        Value::Null
    } else {
        after.into()
    };
    v["project"]["path_with_namespace"] = "acme/platform/infra".into();
    v["project"]["git_http_url"] = url.into();
    v["repository"]["git_http_url"] = url.into();
    encode(&v)
}

/// What GitLab attaches with a secret token and a signing token.
fn gitlab_headers(event: &str, body: &[u8], id: &str, timestamp: u64) -> Vec<(String, String)> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(GITLAB_WHSEC.trim_start_matches("whsec_"))
        .expect("key");
    let ts = timestamp.to_string();
    let mac = hmac_digest(
        HmacAlgorithm::Sha256,
        &key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    header_list(&[
        ("Content-Type", "application/json"),
        ("User-Agent", "GitLab/17.6.0"),
        ("X-Gitlab-Event", event),
        ("X-Gitlab-Token", GITLAB_TOKEN),
        ("Idempotency-Key", id),
        ("X-Gitlab-Webhook-UUID", "random-per-request"),
        ("X-Gitlab-Instance", "https://gitlab.example.com"),
        ("webhook-id", id),
        ("webhook-timestamp", &ts),
        ("webhook-signature", &format!("v1,{}", b64(&mac))),
    ])
}

#[test]
fn gitlab_pushes_with_token_and_signing_token() {
    let (repo, a, b) = repo();
    let env = env_with(
        "  gitlab: { kind: gitlab, token_file: ./gitlab.token, signing_token_file: ./gitlab.whsec }\n",
        &[
            ("deploy", pipeline("gitlab", BRANCHES, None)),
            ("release", pipeline("gitlab", TAGS, None)),
        ],
    );
    env.write_file("gitlab.token", &format!("{GITLAB_TOKEN}\n"));
    env.write_file("gitlab.whsec", &format!("{GITLAB_WHSEC}\n"));
    let daemon = env.start();
    let url = repo.url();

    let push = gitlab_payload("gitlab/push-hook.json", &url, "refs/heads/main", &a, &b);
    let answer = post_ok(
        &daemon,
        "/hooks/gitlab",
        &gitlab_headers("Push Hook", &push, "gl-push", now_secs()),
        &push,
    );
    let runs = ran(&env, &daemon, &answer);
    assert_eq!(heads(&runs), [("deploy", b.as_str())]);
    assert_eq!(runs[0].repository, "acme/platform/infra");
    assert_eq!(runs[0].payload, push, "the raw body is the payload file");
    let delivery = daemon.get_json(&format!("/api/v1/deliveries/{}", answer["delivery"]));
    assert_eq!(delivery["provider_delivery_id"], "gl-push");

    let tag = gitlab_payload(
        "gitlab/tag-push-hook-create.json",
        &url,
        "refs/tags/v1.0",
        ZERO,
        &b,
    );
    let answer = post_ok(
        &daemon,
        "/hooks/gitlab",
        &gitlab_headers("Tag Push Hook", &tag, "gl-tag", now_secs()),
        &tag,
    );
    assert_eq!(
        heads(&ran(&env, &daemon, &answer)),
        [("release", b.as_str())]
    );

    let delete = gitlab_payload(
        "gitlab/push-hook-branch-delete.json",
        &url,
        "refs/heads/main",
        &b,
        ZERO,
    );
    let answer = post_ok(
        &daemon,
        "/hooks/gitlab",
        &gitlab_headers("Push Hook", &delete, "gl-delete", now_secs()),
        &delete,
    );
    assert_eq!(answer["runs"], json!([]), "{answer}");
    assert!(
        answer.to_string().contains("deletions never run"),
        "{answer}"
    );

    // `hookd sign` attaches what verifies.
    let file = env.path().join("push.json");
    std::fs::write(&file, &push).expect("write");
    let (code, stdout, stderr) = env.cli(&[
        "sign",
        "--source",
        "gitlab",
        "--delivery",
        "gl-signed",
        file.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let answer = post_ok(&daemon, "/hooks/gitlab", &signed_headers(&stdout), &push);
    assert_eq!(
        heads(&ran(&env, &daemon, &answer)),
        [("deploy", b.as_str())]
    );

    // Refused: a wrong token, a tampered body, a replayed (stale) signature.
    let mut wrong = gitlab_headers("Push Hook", &push, "gl-x1", now_secs());
    wrong[3].1 = "guess".into();
    let (status, text) = daemon.request("POST", "/hooks/gitlab", &wrong, &push);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("X-Gitlab-Token does not match"), "{text}");
    let mut tampered = push.clone();
    tampered[3] ^= 1;
    let (status, text) = daemon.request(
        "POST",
        "/hooks/gitlab",
        &gitlab_headers("Push Hook", &push, "gl-x2", now_secs()),
        &tampered,
    );
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("webhook-signature does not match"), "{text}");
    let (status, text) = daemon.request(
        "POST",
        "/hooks/gitlab",
        &gitlab_headers("Push Hook", &push, "gl-x3", now_secs() - 3600),
        &push,
    );
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("away from this host's clock"), "{text}");
    assert_eq!(daemon.runs().len(), 3, "refused requests started runs");
}

// ---------------------------------------------------------------- Gitea

const GITEA_SECRET: &str = "gitea-s3cret";

fn gitea_payload(url: &str, git_ref: &str, before: &str, after: &str) -> Vec<u8> {
    let mut v = json_fixture("gitea/push-branch-create.json");
    v["ref"] = git_ref.into();
    v["before"] = before.into();
    v["after"] = after.into();
    v["repository"]["full_name"] = "acme/infra".into();
    v["repository"]["clone_url"] = url.into();
    encode(&v)
}

/// What Gitea attaches; the signature covers the JSON payload.
fn gitea_headers(json: &[u8], id: &str, secret: &str) -> Vec<(String, String)> {
    let sig = hmac_sha256_hex(secret.as_bytes(), json);
    header_list(&[
        ("X-Gitea-Delivery", id),
        ("X-Gitea-Event", "push"),
        ("X-Gitea-Event-Type", "push"),
        ("X-Gitea-Signature", &sig),
        ("X-Gogs-Delivery", id),
        ("X-Gogs-Event", "push"),
        ("X-Gogs-Signature", &sig),
        ("X-Hub-Signature-256", &format!("sha256={sig}")),
    ])
}

fn form(json: &[u8]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &String::from_utf8_lossy(json))
        .finish()
}

#[test]
fn gitea_pushes_as_json_get_and_form() {
    let (repo, a, b) = repo();
    let env = env_with(
        "  gitea: { kind: gitea, secret_file: ./gitea.secret }\n",
        &[
            ("deploy", pipeline("gitea", BRANCHES, None)),
            ("release", pipeline("gitea", TAGS, None)),
        ],
    );
    env.write_file("gitea.secret", &format!("{GITEA_SECRET}\n"));
    let daemon = env.start();
    let url = repo.url();

    let push = gitea_payload(&url, "refs/heads/main", &a, &b);
    let mut headers = gitea_headers(&push, "tea-push", GITEA_SECRET);
    headers.push(("Content-Type".into(), "application/json".into()));
    let answer = post_ok(&daemon, "/hooks/gitea", &headers, &push);
    assert_eq!(
        heads(&ran(&env, &daemon, &answer)),
        [("deploy", b.as_str())]
    );

    // A tag push delivered by GET (?payload=): the JSON is what is stored.
    let tag = gitea_payload(&url, "refs/tags/v1.0", ZERO, &b);
    let (status, answer) = daemon.send(
        "GET",
        &format!("/hooks/gitea?{}", form(&tag)),
        &gitea_headers(&tag, "tea-tag", GITEA_SECRET),
        b"",
    );
    assert_eq!(status, 202, "{answer}");
    let runs = ran(&env, &daemon, &answer);
    assert_eq!(heads(&runs), [("release", b.as_str())]);
    assert_eq!(runs[0].payload, tag);

    // A deletion delivered as a form POST runs nothing.
    let delete = gitea_payload(&url, "refs/heads/main", &b, ZERO);
    let mut headers = gitea_headers(&delete, "tea-delete", GITEA_SECRET);
    headers.push((
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    let answer = post_ok(&daemon, "/hooks/gitea", &headers, form(&delete).as_bytes());
    assert_eq!(answer["runs"], json!([]), "{answer}");

    // Refused: another secret, and the empty headers of an unsigned hook.
    let (status, text) = daemon.request(
        "POST",
        "/hooks/gitea",
        &gitea_headers(&push, "tea-x1", "another secret"),
        &push,
    );
    assert_eq!(status, 401, "{text}");
    let unsigned: Vec<(String, String)> = gitea_headers(&push, "tea-x2", GITEA_SECRET)
        .into_iter()
        .map(|(k, v)| {
            if k.contains("Signature") {
                let empty = if k.starts_with("X-Hub") {
                    "sha256="
                } else {
                    ""
                };
                (k, empty.to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    let (status, text) = daemon.request("POST", "/hooks/gitea", &unsigned, &push);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("sender has no secret configured"), "{text}");
    assert_eq!(daemon.runs().len(), 2, "refused requests started runs");
}

// ---------------------------------------------------------------- Bitbucket Cloud

const BBC_SECRET: &str = "bbc-s3cret";

fn bbc_side(kind: &str, name: &str, hash: &str) -> Value {
    json!({"type": kind, "name": name, "target": {"type": "commit", "hash": hash}})
}

/// A real `repo:push` payload with `changes` replaced.
fn bbc_payload(fixture: &str, changes: Vec<Value>) -> Vec<u8> {
    let mut v = json_fixture(fixture);
    v["repository"]["full_name"] = "acme/infra".into();
    let template = v["push"]["changes"][0].clone();
    let changes: Vec<Value> = changes
        .into_iter()
        .map(|c| {
            let mut full = template.clone();
            full["new"] = c["new"].clone();
            full["old"] = c["old"].clone();
            full["created"] = c["old"].is_null().into();
            full["closed"] = c["new"].is_null().into();
            full
        })
        .collect();
    v["push"]["changes"] = changes.into();
    encode(&v)
}

fn bbc_headers(body: &[u8], id: &str) -> Vec<(String, String)> {
    header_list(&[
        ("Content-Type", "application/json"),
        ("User-Agent", "Bitbucket-Webhooks/2.0"),
        ("X-Event-Key", "repo:push"),
        ("X-Request-UUID", id),
        ("X-Hook-UUID", "{b0b0b0b0-hook}"),
        ("X-Attempt-Number", "1"),
        (
            "X-Hub-Signature",
            &format!("sha256={}", hmac_sha256_hex(BBC_SECRET.as_bytes(), body)),
        ),
    ])
}

#[test]
fn bitbucket_cloud_runs_each_change_of_a_delivery() {
    let (repo, a, b) = repo();
    // Bitbucket Cloud sends no clone URL: pipelines name the repository.
    let url = repo.url();
    let env = env_with(
        "  bbc: { kind: bitbucket-cloud, secret_file: ./bbc.secret }\n",
        &[
            ("deploy", pipeline("bbc", BRANCHES, Some(&url))),
            ("release", pipeline("bbc", TAGS, Some(&url))),
        ],
    );
    env.write_file("bbc.secret", BBC_SECRET);
    let daemon = env.start();

    // One delivery, two changes: main moved to b, release/1 created at a.
    let push = bbc_payload(
        "bitbucket-cloud/repo-push-go-scm.json",
        vec![
            json!({"new": bbc_side("branch", "main", &b), "old": bbc_side("branch", "main", &a)}),
            json!({"new": bbc_side("branch", "release/1", &a), "old": null}),
        ],
    );
    let answer = post_ok(
        &daemon,
        "/hooks/bbc",
        &bbc_headers(&push, "bbc-push"),
        &push,
    );
    assert_eq!(answer["runs"].as_array().map(Vec::len), Some(2), "{answer}");
    let mut expected = [("deploy", a.as_str()), ("deploy", b.as_str())];
    expected.sort();
    assert_eq!(heads(&ran(&env, &daemon, &answer)), expected);

    let tag = bbc_payload(
        "bitbucket-cloud/repo-push-tag-create.json",
        vec![json!({"new": bbc_side("tag", "v1.0", &b), "old": null})],
    );
    let answer = post_ok(&daemon, "/hooks/bbc", &bbc_headers(&tag, "bbc-tag"), &tag);
    assert_eq!(
        heads(&ran(&env, &daemon, &answer)),
        [("release", b.as_str())]
    );

    let delete = bbc_payload(
        "bitbucket-cloud/repo-push-branch-delete.json",
        vec![json!({"new": null, "old": bbc_side("branch", "main", &b)})],
    );
    let answer = post_ok(
        &daemon,
        "/hooks/bbc",
        &bbc_headers(&delete, "bbc-delete"),
        &delete,
    );
    assert_eq!(answer["runs"], json!([]), "{answer}");

    let mut wrong = bbc_headers(&push, "bbc-x");
    wrong[6].1 = format!("sha256={}", hmac_sha256_hex(b"guess", &push));
    let (status, text) = daemon.request("POST", "/hooks/bbc", &wrong, &push);
    assert_eq!(status, 401, "{text}");
    let (status, text) = daemon.request("POST", "/hooks/bbc", &wrong[..6], &push);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("missing X-Hub-Signature"), "{text}");
    assert_eq!(daemon.runs().len(), 3, "refused requests started runs");
}

// ---------------------------------------------------------------- Bitbucket Data Center

const BBS_SECRET: &str = "bbs-s3cret";
const BBS_PASSWORD: &str = "bbs-pa:ss";

fn bbs_payload(fixture: &str, url: &str, git_ref: &str, from: &str, to: &str) -> Vec<u8> {
    let mut v = json_fixture(fixture);
    v["repository"]["slug"] = "infra".into();
    v["repository"]["project"]["key"] = "OPS".into();
    v["repository"]["links"] = json!({"clone": [
        {"href": "ssh://git@bitbucket.example.com:7999/ops/infra.git", "name": "ssh"},
        {"href": url, "name": "http"},
    ]});
    let change = &mut v["changes"][0];
    let is_tag = git_ref.starts_with("refs/tags/");
    change["ref"]["id"] = git_ref.into();
    change["ref"]["displayId"] = git_ref.rsplit('/').next().unwrap_or(git_ref).into();
    change["ref"]["type"] = if is_tag { "TAG" } else { "BRANCH" }.into();
    change["refId"] = git_ref.into();
    change["fromHash"] = from.into();
    change["toHash"] = to.into();
    change["type"] = if from == ZERO {
        "ADD"
    } else if to == ZERO {
        "DELETE"
    } else {
        "UPDATE"
    }
    .into();
    encode(&v)
}

fn bbs_headers(event: &str, body: &[u8], id: &str, password: &str) -> Vec<(String, String)> {
    header_list(&[
        ("Content-Type", "application/json; charset=utf-8"),
        ("X-Event-Key", event),
        ("X-Request-Id", id),
        (
            "X-Hub-Signature",
            &format!("sha256={}", hmac_sha256_hex(BBS_SECRET.as_bytes(), body)),
        ),
        (
            "Authorization",
            &format!("Basic {}", b64(format!("hookd:{password}").as_bytes())),
        ),
    ])
}

#[test]
fn bitbucket_server_pushes_with_secret_and_basic_auth() {
    let (repo, a, b) = repo();
    let env = env_with(
        "  bbs:\n    kind: bitbucket-server\n    secret_file: ./bbs.secret\n    basic: { username: hookd, password_file: ./bbs.password }\n",
        &[
            ("deploy", pipeline("bbs", BRANCHES, None)),
            ("release", pipeline("bbs", TAGS, None)),
        ],
    );
    env.write_file("bbs.secret", BBS_SECRET);
    env.write_file("bbs.password", &format!("{BBS_PASSWORD}\n"));
    let daemon = env.start();
    let url = repo.url();
    let update = "bitbucket-server/repo-refs_changed-update.json";

    let push = bbs_payload(update, &url, "refs/heads/main", &a, &b);
    let answer = post_ok(
        &daemon,
        "/hooks/bbs",
        &bbs_headers("repo:refs_changed", &push, "bbs-push", BBS_PASSWORD),
        &push,
    );
    let runs = ran(&env, &daemon, &answer);
    assert_eq!(heads(&runs), [("deploy", b.as_str())]);
    assert_eq!(runs[0].repository, "OPS/infra");

    let tag = bbs_payload(
        "bitbucket-server/repo-refs_changed-tag-create.json",
        &url,
        "refs/tags/v1.0",
        ZERO,
        &b,
    );
    let answer = post_ok(
        &daemon,
        "/hooks/bbs",
        &bbs_headers("repo:refs_changed", &tag, "bbs-tag", BBS_PASSWORD),
        &tag,
    );
    assert_eq!(
        heads(&ran(&env, &daemon, &answer)),
        [("release", b.as_str())]
    );

    let delete = bbs_payload(
        "bitbucket-server/repo-refs_changed-branch-delete.json",
        &url,
        "refs/heads/main",
        &b,
        ZERO,
    );
    let answer = post_ok(
        &daemon,
        "/hooks/bbs",
        &bbs_headers("repo:refs_changed", &delete, "bbs-delete", BBS_PASSWORD),
        &delete,
    );
    assert_eq!(answer["runs"], json!([]), "{answer}");

    // "Test connection" is a ping: 200, nothing runs.
    let ping = br#"{"test": true}"#;
    let (status, answer) = daemon.send(
        "POST",
        "/hooks/bbs",
        &bbs_headers("diagnostics:ping", ping, "bbs-ping", BBS_PASSWORD),
        ping,
    );
    assert_eq!(status, 200, "{answer}");

    let (status, text) = daemon.request(
        "POST",
        "/hooks/bbs",
        &bbs_headers("repo:refs_changed", &push, "bbs-x1", "wrong"),
        &push,
    );
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("basic auth"), "{text}");
    let mut tampered = push.clone();
    tampered[5] ^= 1;
    let (status, text) = daemon.request(
        "POST",
        "/hooks/bbs",
        &bbs_headers("repo:refs_changed", &push, "bbs-x2", BBS_PASSWORD),
        &tampered,
    );
    assert_eq!(status, 401, "{text}");
    assert_eq!(daemon.runs().len(), 2, "refused requests started runs");
}

// ---------------------------------------------------------------- generic

const BOT_TOKEN: &str = "bot-t0ken";
const SIGNER_SECRET: &str = "signer-s3cret";

const GENERIC_SOURCES: &str = r#"  deploybot:
    kind: generic
    token: { query: token }
    token_file: ./deploybot.token
    push: { repository: /repository, ref: /ref, after: /sha }
  signer:
    kind: generic
    hmac: { header: X-Signature, algorithm: sha256, encoding: base64, prefix: "" }
    secret_file: ./signer.secret
    push: { repository: /repo/full_name, ref: /ref, before: /before, after: /after, clone_url: /repo/url }
"#;

fn signer_body(url: &str, git_ref: &str, before: &str, after: &str) -> Vec<u8> {
    encode(&json!({
        "repo": {"full_name": "acme/infra", "url": url},
        "ref": git_ref,
        "before": before,
        "after": after,
    }))
}

fn signer_headers(body: &[u8], secret: &str) -> Vec<(String, String)> {
    let mac = hmac_digest(HmacAlgorithm::Sha256, secret.as_bytes(), &[body]);
    header_list(&[
        ("Content-Type", "application/json"),
        ("X-Signature", &b64(&mac)),
    ])
}

#[test]
fn generic_get_with_query_token_and_post_with_base64_hmac() {
    let (repo, a, b) = repo();
    let url = repo.url();
    let env = env_with(
        GENERIC_SOURCES,
        &[
            ("bot", pipeline("deploybot", BRANCHES, Some(&url))),
            ("deploy", pipeline("signer", BRANCHES, None)),
            ("release", pipeline("signer", TAGS, None)),
        ],
    );
    env.write_file("deploybot.token", &format!("{BOT_TOKEN}\n"));
    env.write_file("signer.secret", SIGNER_SECRET);
    let daemon = env.start();

    // GET, payload and token in the query string; `main` means refs/heads/main.
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("repository", "acme/infra")
        .append_pair("ref", "main")
        .append_pair("sha", &b)
        .append_pair("token", BOT_TOKEN)
        .finish();
    let (status, answer) = daemon.send("GET", &format!("/hooks/deploybot?{query}"), &[], b"");
    assert_eq!(status, 202, "{answer}");
    let runs = ran(&env, &daemon, &answer);
    assert_eq!(heads(&runs), [("bot", b.as_str())]);
    let stored: Value = serde_json::from_slice(&runs[0].payload).expect("payload is JSON");
    assert_eq!(
        stored,
        json!({"repository": "acme/infra", "ref": "main", "sha": b}),
        "the token never reaches the stored payload"
    );

    // POST with a base64 HMAC; the clone URL comes from the payload.
    let push = signer_body(&url, "refs/heads/main", &a, &b);
    let answer = post_ok(
        &daemon,
        "/hooks/signer",
        &signer_headers(&push, SIGNER_SECRET),
        &push,
    );
    assert_eq!(
        heads(&ran(&env, &daemon, &answer)),
        [("deploy", b.as_str())]
    );

    let tag = signer_body(&url, "refs/tags/v1.0", ZERO, &b);
    let answer = post_ok(
        &daemon,
        "/hooks/signer",
        &signer_headers(&tag, SIGNER_SECRET),
        &tag,
    );
    assert_eq!(
        heads(&ran(&env, &daemon, &answer)),
        [("release", b.as_str())]
    );

    let delete = signer_body(&url, "refs/heads/main", &b, ZERO);
    let answer = post_ok(
        &daemon,
        "/hooks/signer",
        &signer_headers(&delete, SIGNER_SECRET),
        &delete,
    );
    assert_eq!(answer["runs"], json!([]), "{answer}");

    // `hookd sign` attaches what verifies.
    let file = env.path().join("push.json");
    std::fs::write(&file, &push).expect("write");
    let (code, stdout, stderr) =
        env.cli(&["sign", "--source", "signer", file.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{stderr}");
    let answer = post_ok(&daemon, "/hooks/signer", &signed_headers(&stdout), &push);
    assert_eq!(
        heads(&ran(&env, &daemon, &answer)),
        [("deploy", b.as_str())]
    );

    // Wrong auth is 401 and runs nothing; a signed source takes no GET.
    let wrong_token = query.replace(BOT_TOKEN, "guess");
    let (status, text) =
        daemon.request("GET", &format!("/hooks/deploybot?{wrong_token}"), &[], b"");
    assert_eq!(status, 401, "{text}");
    assert!(
        text.contains("token query parameter does not match"),
        "{text}"
    );
    let no_token = query.replace(&format!("&token={BOT_TOKEN}"), "");
    let (status, text) = daemon.request("GET", &format!("/hooks/deploybot?{no_token}"), &[], b"");
    assert_eq!(status, 401, "{text}");
    let (status, text) = daemon.request(
        "POST",
        "/hooks/signer",
        &signer_headers(&push, "guess"),
        &push,
    );
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("X-Signature does not match"), "{text}");
    let (status, text) = daemon.request(
        "POST",
        "/hooks/signer",
        &signer_headers(&push, SIGNER_SECRET)[..1],
        &push,
    );
    assert_eq!(status, 401, "{text}");
    let (status, text) = daemon.request("GET", &format!("/hooks/signer?{query}"), &[], b"");
    assert_eq!(status, 405, "{text}");
    assert_eq!(daemon.runs().len(), 4, "refused requests started runs");
}

/// GitLab caps a push hook's `commits` at 20; path filters are computed with
/// git, so a push of 50 commits still sees every changed path.
#[test]
fn gitlab_push_of_fifty_commits_sees_every_changed_path() {
    let repo = GitRepo::new();
    let (base, last, expected) = repo.fifty_terraform_commits();
    let env = env_with(
        "  gitlab: { kind: gitlab, token_file: ./gitlab.token }\n",
        &[(
            "terraform",
            "on:\n  - push: {sources: [gitlab], paths: ['terraform/**']}\nenv: {OUT: $OUT}\nsteps:\n  - run: cp \"$HOOKD_CHANGED_FILES_FILE\" \"$OUT/changed\"\n".to_string(),
        )],
    );
    env.write_file("gitlab.token", &format!("{GITLAB_TOKEN}\n"));
    let daemon = env.start();
    let mut payload: Value = serde_json::from_slice(&gitlab_payload(
        "gitlab/push-hook.json",
        &repo.url(),
        "refs/heads/main",
        &base,
        &last,
    ))
    .expect("json");
    // What GitLab sends for such a push: 20 commits listed, 50 counted.
    let one = payload["commits"][0].clone();
    payload["commits"] = Value::Array(vec![one; 20]);
    payload["total_commits_count"] = 50.into();
    let body = encode(&payload);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut headers = gitlab_headers("Push Hook", &body, "fifty-commits", now);
    headers.retain(|(k, _)| !k.starts_with("webhook-"));
    let (status, text) = daemon.request("POST", "/hooks/gitlab", &headers, &body);
    assert_eq!(status, 202, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("json");
    let run = daemon.wait_run(answer["runs"][0]["id"].as_i64().expect("run"), RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run}");
    let changed: Vec<String> = std::fs::read_to_string(env.out().join("changed"))
        .expect("changed")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(changed, expected);
}
