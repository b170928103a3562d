//! Changed-path filters, computed with git from the fetched mirror.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

const TERRAFORM: &str = r#"
on:
  - push:
      paths: ["terraform/**"]
      paths_ignore: ["**/*.md"]
env: {OUT: $OUT}
steps:
  - run: cp "$HOOKD_CHANGED_FILES_FILE" "$OUT/changed-$HOOKD_RUN_ID"
"#;

fn push_and_wait(
    daemon: &Daemon,
    repo: &GitRepo,
    git_ref: &str,
    before: &str,
    after: &str,
    id: &str,
) -> (Value, Value) {
    let (status, answer) = daemon.push(
        &github_push("acme/infra", &repo.url(), git_ref, before, after),
        id,
    );
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["runs"][0]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no run: {answer}"));
    (answer.clone(), daemon.wait_run(run_id, RUN_TIMEOUT))
}

fn changed(env: &Env, run: &Value) -> String {
    std::fs::read_to_string(env.out().join(format!("changed-{}", run["id"]))).unwrap_or_default()
}

#[test]
fn path_filters_see_what_git_says_changed() {
    let repo = GitRepo::new();
    let base = repo.commit(
        &[("terraform/main.tf", "a\n"), ("docs/guide.md", "a\n")],
        "base",
    );
    let env = Env::new("", &[("terraform", TERRAFORM)]);
    let daemon = env.start();

    // The first push of the default branch: every file counts.
    let (answer, run) = push_and_wait(&daemon, &repo, "refs/heads/main", ZERO, &base, "p-0");
    assert_eq!(answer["runs"][0]["paths"], "pending", "{answer}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(changed(&env, &run), "docs/guide.md\nterraform/main.tf\n");

    // Only docs changed: skipped, with the reason.
    let docs = repo.commit(
        &[
            ("docs/guide.md", "b\n"),
            ("terraform/README.md", "ignored\n"),
        ],
        "docs",
    );
    let (_, run) = push_and_wait(&daemon, &repo, "refs/heads/main", &base, &docs, "p-1");
    assert_eq!(run["status"], "skipped", "{run}");
    assert_eq!(
        run["reason"],
        "no changed path matches paths [terraform/**] minus paths_ignore [**/*.md] (2 changed: docs/guide.md, terraform/README.md)"
    );
    assert!(run["steps"].as_array().is_some_and(Vec::is_empty));

    // terraform/main.tf changed: it runs, and sees exactly that file.
    let tf = repo.commit(&[("terraform/main.tf", "b\n")], "tf");
    let (_, run) = push_and_wait(&daemon, &repo, "refs/heads/main", &docs, &tf, "p-2");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(changed(&env, &run), "terraform/main.tf\n");

    // A force push compares the old tip with the new tip: replacing `tf` by a
    // docs-only commit reverts terraform/main.tf, which must apply.
    repo.git(&["reset", "-q", "--hard", &docs]);
    let forced = repo.commit(&[("docs/other.md", "x\n")], "forced");
    let (_, run) = push_and_wait(&daemon, &repo, "refs/heads/main", &tf, &forced, "p-3");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(changed(&env, &run), "docs/other.md\nterraform/main.tf\n");

    // A new branch compares against its merge base with the default branch.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    let f1 = repo.commit(&[("terraform/feature.tf", "x\n")], "f1");
    let f2 = repo.commit(&[("src/app.rs", "x\n")], "f2");
    repo.git(&["checkout", "-q", "main"]);
    let (_, run) = push_and_wait(&daemon, &repo, "refs/heads/feature", ZERO, &f2, "p-4");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        changed(&env, &run),
        "src/app.rs\nterraform/feature.tf\n",
        "f1 and f2, not the whole tree"
    );
    let _ = f1;
    repo.git(&["checkout", "-q", "-b", "docs-only"]);
    let d = repo.commit(&[("docs/new.md", "x\n")], "d");
    repo.git(&["checkout", "-q", "main"]); // the remote's HEAD: its default branch
    let (_, run) = push_and_wait(&daemon, &repo, "refs/heads/docs-only", ZERO, &d, "p-5");
    assert_eq!(run["status"], "skipped", "{run}");
}

/// Fifty commits in one push (forges cap the commit lists of their payloads:
/// GitLab at 20): every changed path is still seen.
#[test]
fn a_push_of_fifty_commits_sees_every_changed_path() {
    let repo = GitRepo::new();
    let (base, last, expected) = repo.fifty_terraform_commits();
    let env = Env::new("", &[("terraform", TERRAFORM)]);
    let daemon = env.start();
    let (_, run) = push_and_wait(&daemon, &repo, "refs/heads/main", &base, &last, "fifty");
    assert_eq!(run["status"], "succeeded", "{run}");
    let got: Vec<String> = changed(&env, &run).lines().map(str::to_string).collect();
    assert_eq!(got, expected);
}
