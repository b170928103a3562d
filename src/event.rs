//! The normalized events that sources produce and the matcher consumes.
//!
//! A delivery (one authenticated HTTP request) yields zero or more events.
//! Events carry only what pipelines match on and what commands receive; the
//! raw payload stays with the delivery. Everything here is provider-neutral:
//! `source` knows GitHub's field names, nothing past it does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The 40-zero object id forges send for "no commit" (branch creation's
/// `before`, deletion's `after`).
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// True when `sha` is absent in the forge's sense: empty or all zeros.
pub fn is_zero_sha(sha: &str) -> bool {
    sha.is_empty() || sha.bytes().all(|b| b == b'0')
}

/// One normalized event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A ref (branch or tag) moved, was created or was deleted.
    Push(PushEvent),
    /// One alert of a monitoring notification, firing or resolved.
    Alert(AlertEvent),
    /// Started by an operator (`hookd trigger`, the API).
    Manual(ManualEvent),
    /// A delivery that carries nothing to run (ping, unsupported event type).
    Ignored(IgnoredEvent),
}

impl Event {
    /// The trigger word of this event (`push`, `manual`, `ignored`).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Push(_) => "push",
            Event::Alert(_) => "alert",
            Event::Manual(_) => "manual",
            Event::Ignored(_) => "ignored",
        }
    }
}

/// Which namespace a pushed ref lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefKind {
    /// `refs/heads/*`
    Branch,
    /// `refs/tags/*`
    Tag,
    /// Anything else (`refs/notes/*`, `refs/pull/*`, …).
    Other,
}

/// A push to one ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// Repository as the forge names it: `owner/name` (GitLab: full group path).
    pub repository: String,
    /// The full ref, e.g. `refs/heads/main`.
    pub git_ref: String,
    /// Branch or tag.
    pub ref_kind: RefKind,
    /// The short name: `main` for `refs/heads/main`, `v1` for `refs/tags/v1`.
    pub ref_name: String,
    /// Commit before the push; `None` when the ref was created.
    pub before: Option<String>,
    /// Commit after the push; `None` when the ref was deleted.
    pub after: Option<String>,
    /// URL to clone the repository from, as the forge announced it.
    pub clone_url: Option<String>,
    /// Who pushed (login or name), when the forge says.
    pub pusher: Option<String>,
    /// True when the forge flagged a force push.
    pub forced: bool,
}

impl PushEvent {
    /// Builds a push event from a full ref name and two possibly-zero shas.
    pub fn new(
        repository: String,
        git_ref: String,
        before: &str,
        after: &str,
        clone_url: Option<String>,
        pusher: Option<String>,
    ) -> PushEvent {
        let (ref_kind, ref_name) = split_ref(&git_ref);
        let some_sha = |s: &str| (!is_zero_sha(s)).then(|| s.to_ascii_lowercase());
        PushEvent {
            repository,
            ref_kind,
            ref_name,
            git_ref,
            before: some_sha(before),
            after: some_sha(after),
            clone_url,
            pusher,
            forced: false,
        }
    }

    /// The ref was deleted: there is no commit to run.
    pub fn is_deletion(&self) -> bool {
        self.after.is_none()
    }

    /// The ref did not exist before this push.
    pub fn is_creation(&self) -> bool {
        self.before.is_none()
    }
}

/// Splits `refs/heads/x` / `refs/tags/x` into kind and short name.
pub fn split_ref(git_ref: &str) -> (RefKind, String) {
    if let Some(b) = git_ref.strip_prefix("refs/heads/") {
        (RefKind::Branch, b.to_string())
    } else if let Some(t) = git_ref.strip_prefix("refs/tags/") {
        (RefKind::Tag, t.to_string())
    } else {
        (RefKind::Other, git_ref.to_string())
    }
}

/// Whether an alert is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The condition holds.
    Firing,
    /// The condition no longer holds.
    Resolved,
}

impl AlertStatus {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert. Senders group alerts into one notification; hookd makes each
/// alert its own event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Firing or resolved.
    pub status: AlertStatus,
    /// The `alertname` label (empty when absent).
    pub name: String,
    /// Stable identity of the alert: the sender's, else derived from the
    /// sorted label set ([`label_fingerprint`]).
    pub fingerprint: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// When the firing episode began (RFC 3339, as the sender wrote it).
    pub starts_at: Option<String>,
    /// When it ended (resolved) or will be considered stale (firing).
    pub ends_at: Option<String>,
    /// Link to the alerting rule's expression.
    pub generator_url: Option<String>,
    /// The notification's group labels.
    pub group_labels: BTreeMap<String, String>,
    /// The notification's group key.
    pub group_key: Option<String>,
    /// The sender's own URL.
    pub external_url: Option<String>,
    /// Sender-specific extras (Grafana: values, dashboardURL, panelURL,
    /// silenceURL, imageURL), kept as sent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A fingerprint derived from a label set: the first 16 hex digits of
/// SHA-256 over the labels sorted by name, as `name=value` lines. Stable
/// across senders and restarts, so dedupe and cooldowns work for senders
/// that send no fingerprint.
pub fn label_fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// An operator-started run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualEvent {
    /// The ref to check out (defaults to the pipeline's `repo.ref`).
    pub git_ref: Option<String>,
    /// An exact commit to check out, overriding `git_ref`.
    pub commit: Option<String>,
    /// Who asked, if known.
    pub requested_by: Option<String>,
}

/// A delivery that was authenticated and stored but runs nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredEvent {
    /// Why it runs nothing, e.g. `event type "issues" is not handled by github sources`.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_split_into_kind_and_name() {
        assert_eq!(
            split_ref("refs/heads/release/1.x"),
            (RefKind::Branch, "release/1.x".into())
        );
        assert_eq!(split_ref("refs/tags/v1"), (RefKind::Tag, "v1".into()));
        assert_eq!(
            split_ref("refs/pull/1/head"),
            (RefKind::Other, "refs/pull/1/head".into())
        );
    }

    #[test]
    fn label_fingerprints_ignore_order_and_differ_by_value() {
        let a: BTreeMap<String, String> = [("alertname", "DiskFull"), ("instance", "db-3")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let b: BTreeMap<String, String> = [("instance", "db-3"), ("alertname", "DiskFull")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let c: BTreeMap<String, String> = [("alertname", "DiskFull"), ("instance", "db-4")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert_eq!(label_fingerprint(&a), label_fingerprint(&b));
        assert_ne!(label_fingerprint(&a), label_fingerprint(&c));
        assert_eq!(label_fingerprint(&a).len(), 16);
    }

    #[test]
    fn zero_shas_mean_creation_and_deletion() {
        let created = PushEvent::new(
            "a/b".into(),
            "refs/heads/x".into(),
            ZERO_SHA,
            "AB12",
            None,
            None,
        );
        assert!(created.is_creation() && !created.is_deletion());
        assert_eq!(created.after.as_deref(), Some("ab12"));
        let deleted = PushEvent::new(
            "a/b".into(),
            "refs/heads/x".into(),
            "ab",
            ZERO_SHA,
            None,
            None,
        );
        assert!(deleted.is_deletion());
    }
}
