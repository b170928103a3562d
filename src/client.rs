//! The CLI's side of the API: `hookd runs`, `hookd logs`, … talk to a running
//! daemon over HTTP. The address and token come from `--url` /
//! `--token-file`, else from the daemon config (`listen`, `admin_token_file`).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::DaemonConfig;

/// An API client.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// Builds a client from flags, falling back to the daemon config.
    pub fn new(
        config: &DaemonConfig,
        url: Option<&str>,
        token_file: Option<&Path>,
    ) -> anyhow::Result<Client> {
        let base = match url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let mut addr = config.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
        };
        let token = match token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read token file {}", f.display()))?
                    .trim_end()
                    .to_string(),
            ),
            None => config.admin_token.as_ref().map(|t| t.expose().to_string()),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Ok(Client { base, token, agent })
    }

    /// GET a path below the base URL; returns the body, or an error naming
    /// the status and the server's `{"error"}` message.
    pub fn get(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let resp = req
            .call()
            .with_context(|| format!("cannot reach hookd at {url}"))?;
        Self::answer(&url, resp)
    }

    /// POST a JSON body; returns the decoded JSON answer.
    pub fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let resp = req
            .send(body.to_string().as_bytes())
            .with_context(|| format!("cannot reach hookd at {url}"))?;
        let body = Self::answer(&url, resp)?;
        serde_json::from_slice(&body).with_context(|| format!("invalid JSON from {path}"))
    }

    fn answer(url: &str, mut resp: ureq::http::Response<ureq::Body>) -> anyhow::Result<Vec<u8>> {
        let status = resp.status();
        let mut body = Vec::new();
        resp.body_mut()
            .as_reader()
            .read_to_end(&mut body)
            .with_context(|| format!("cannot read the answer of {url}"))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("{url}: {status}: {message}");
        }
        Ok(body)
    }

    /// GET and decode JSON.
    pub fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let body = self.get(path)?;
        serde_json::from_slice(&body).with_context(|| format!("invalid JSON from {path}"))
    }
}

/// Appends `key=value` query parameters, percent-encoded.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            s.append_pair(k, v);
        }
    }
    let q = s.finish();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}
