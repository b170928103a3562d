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

/// How a followed run ended, from the log stream's `end` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    /// The final status (`succeeded`, `failed`, …).
    pub status: String,
    /// Why, when the daemon says.
    pub reason: Option<String>,
}

impl Client {
    /// Follows run `run`'s log over Server-Sent Events, calling `on_line` for
    /// every line as it arrives, until the run ends. A dropped connection is
    /// resumed where it stopped (a few times) before giving up.
    pub fn follow_log(&self, run: i64, mut on_line: impl FnMut(&str)) -> anyhow::Result<RunEnd> {
        // No overall timeout: a run may take hours. The daemon sends a
        // keep-alive comment every 15 s, so a silent minute means trouble.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        let mut offset: u64 = 0;
        let mut retries = 0;
        loop {
            let url = format!(
                "{}/api/v1/runs/{run}/log?follow=1&offset={offset}",
                self.base
            );
            let mut req = agent.get(&url).header("Accept", "text/event-stream");
            if let Some(t) = &self.token {
                req = req.header("Authorization", &format!("Bearer {t}"));
            }
            let mut resp = req
                .call()
                .with_context(|| format!("cannot reach hookd at {url}"))?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp.body_mut().read_to_string().unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                    .unwrap_or(body);
                bail!("{url}: {status}: {message}");
            }
            let reader = std::io::BufReader::new(resp.body_mut().as_reader());
            match read_events(reader, &mut offset, &mut on_line) {
                Ok(Some(end)) => return Ok(end),
                Ok(None) | Err(_) if retries < 3 => {
                    retries += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Ok(None) => bail!("the log stream of run {run} ended before the run did"),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot read the log stream of run {run}"))
                }
            }
        }
    }
}

/// Reads SSE events until `end` (returned) or EOF (`None`); `offset` tracks
/// the last event id so a reconnect resumes after it.
fn read_events(
    reader: impl std::io::BufRead,
    offset: &mut u64,
    on_line: &mut impl FnMut(&str),
) -> anyhow::Result<Option<RunEnd>> {
    let mut event = String::new();
    let mut data: Vec<String> = Vec::new();
    let mut id: Option<u64> = None;
    for line in reader.lines() {
        let line = line?;
        if line.is_empty() {
            if data.is_empty() {
                // A comment-only block (keep-alive) dispatches nothing.
                event.clear();
                id = None;
                continue;
            }
            let name = if event.is_empty() { "message" } else { &event };
            let text = data.join("\n");
            match name {
                "message" => {
                    on_line(&text);
                    if let Some(i) = id {
                        *offset = i;
                    }
                }
                "end" => {
                    let v: serde_json::Value = serde_json::from_str(&text)
                        .with_context(|| format!("invalid end event {text:?}"))?;
                    return Ok(Some(RunEnd {
                        status: v["status"].as_str().unwrap_or("unknown").to_string(),
                        reason: v["reason"].as_str().map(str::to_string),
                    }));
                }
                "error" => {
                    let v: serde_json::Value =
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                    bail!(
                        "{}",
                        v["error"]
                            .as_str()
                            .unwrap_or("the daemon reported an error")
                    );
                }
                _ => {}
            }
            event.clear();
            data.clear();
            id = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_string(),
            "data" => data.push(value.to_string()),
            "id" => id = value.parse().ok(),
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_into_lines_and_an_end() {
        let stream = "id: 10\ndata: 2026-01-01T00:00:00.000Z s out | one\n\n: keep-alive\n\nid: 20\ndata: two\n\nevent: end\ndata: {\"id\":1,\"status\":\"failed\",\"reason\":\"step s exited with code 3\"}\n\n";
        let mut lines = Vec::new();
        let mut offset = 0;
        let end = read_events(stream.as_bytes(), &mut offset, &mut |l: &str| {
            lines.push(l.to_string())
        })
        .expect("read");
        assert_eq!(lines, ["2026-01-01T00:00:00.000Z s out | one", "two"]);
        assert_eq!(offset, 20);
        assert_eq!(
            end,
            Some(RunEnd {
                status: "failed".into(),
                reason: Some("step s exited with code 3".into())
            })
        );
        let mut offset = 0;
        assert_eq!(
            read_events(
                "id: 5\ndata: x\n\n".as_bytes(),
                &mut offset,
                &mut |_: &str| {}
            )
            .expect("read"),
            None
        );
        assert_eq!(offset, 5);
    }
}
