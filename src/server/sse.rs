//! `GET /api/v1/runs/{id}/log?follow=1`: a run's log as Server-Sent Events.
//!
//! The stream tails `data_dir/runs/{id}/log` and knows nothing of the
//! scheduler: every [`POLL`] it reads what was appended since the last look
//! and sends each new complete line as one `data:` event whose `id:` is the
//! byte offset just past that line (a reconnecting `EventSource` sends it back
//! as `Last-Event-ID` and resumes there; `?offset=N` does the same by hand).
//! Once the store says the run is terminal it sends what is left, then one
//! `event: end` whose data is `{"id", "status", "reason"}` — and ends.
//!
//! Ordering makes that complete: the run's status is read *before* the file,
//! and the scheduler flushes the log before it records the final status, so a
//! read that follows a terminal status sees the whole log.
//!
//! A carriage return would end an SSE line early, so `\r` is dropped from the
//! text; everything else is sent as stored. Blocking I/O stays off the
//! worker: the file is read with `tokio::fs`, the store on its own threads.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use futures_util::stream;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::daemon::Shared;

/// How often the log file and the run's status are looked at.
pub(crate) const POLL: Duration = Duration::from_millis(200);
/// A comment line is sent after this much silence, so proxies keep the connection.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most bytes read from the file per look; the rest follows on the next look.
const READ_CHUNK: u64 = 256 * 1024;

struct Tail {
    shared: web::Data<Shared>,
    run: i64,
    path: PathBuf,
    /// Byte offset of the first byte not sent yet (always at a line start).
    offset: u64,
    last_sent: Instant,
    done: bool,
}

/// The streaming response for run `run`, starting at byte `offset` of its log.
pub(crate) fn follow(shared: web::Data<Shared>, run: i64, offset: u64) -> HttpResponse {
    let path = shared.run_dir(run).join("log");
    let tail = Tail {
        shared,
        run,
        path,
        offset,
        last_sent: Instant::now(),
        done: false,
    };
    let body = stream::unfold(tail, |mut tail| async move {
        if tail.done {
            return None;
        }
        let chunk = tail.next_chunk().await;
        Some((Ok::<_, actix_web::Error>(chunk), tail))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

impl Tail {
    /// Waits until there is something to send and returns it.
    async fn next_chunk(&mut self) -> Bytes {
        loop {
            let (status, reason) = match self.shared.store.run(self.run).await {
                Ok(Some(run)) => (run.status, run.reason),
                Ok(None) => {
                    self.done = true;
                    return event("error", &json!({"error": format!("no run {}", self.run)}));
                }
                Err(e) => {
                    self.done = true;
                    return event(
                        "error",
                        &json!({"error": format!("cannot read run {}: {e}", self.run)}),
                    );
                }
            };
            let terminal = status.is_terminal();
            let (mut out, more) = match self.read_lines(terminal).await {
                Ok(r) => r,
                Err(e) => {
                    self.done = true;
                    return event(
                        "error",
                        &json!({"error": format!("cannot read log of run {}: {e}", self.run)}),
                    );
                }
            };
            if terminal && !more {
                out.extend_from_slice(&event(
                    "end",
                    &json!({"id": self.run, "status": status.as_str(), "reason": reason}),
                ));
                self.done = true;
            }
            if !out.is_empty() {
                self.last_sent = Instant::now();
                return Bytes::from(out);
            }
            if self.last_sent.elapsed() >= KEEP_ALIVE {
                self.last_sent = Instant::now();
                return Bytes::from_static(b": keep-alive\n\n");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Reads what was appended since `offset` and frames complete lines as
    /// events; with `final_read`, a last line without newline is sent too.
    /// Returns the events and whether more bytes are waiting in the file.
    async fn read_lines(&mut self, final_read: bool) -> std::io::Result<(Vec<u8>, bool)> {
        let mut file = match tokio::fs::File::open(&self.path).await {
            Ok(f) => f,
            // Queued runs, and runs that ended before their log was made, have no file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
            Err(e) => return Err(e),
        };
        let len = file.metadata().await?.len();
        if len <= self.offset {
            return Ok((Vec::new(), false));
        }
        file.seek(std::io::SeekFrom::Start(self.offset)).await?;
        let mut buf = Vec::new();
        file.take(READ_CHUNK).read_to_end(&mut buf).await?;
        let more = self.offset + (buf.len() as u64) < len;
        let complete = match buf.iter().rposition(|&b| b == b'\n') {
            // The run is over: nothing will complete the last line.
            _ if final_read && !more => buf.len(),
            Some(i) => i + 1,
            // One line longer than a read: send it in pieces rather than stall.
            None if buf.len() as u64 == READ_CHUNK => buf.len(),
            None => 0,
        };
        let mut out = Vec::new();
        let mut pos = self.offset;
        for line in buf[..complete].split_inclusive(|&b| b == b'\n') {
            pos += line.len() as u64;
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end_matches('\n').replace('\r', "");
            out.extend_from_slice(format!("id: {pos}\ndata: {text}\n\n").as_bytes());
        }
        self.offset = pos;
        Ok((out, more))
    }
}

fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}
