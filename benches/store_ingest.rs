//! Accepted deliveries per second with fsync on: group commit (the default
//! writer) against one transaction per delivery, measured in the same run.
//!
//! `cargo bench --bench store_ingest` (set `HOOKD_BENCH_DELIVERIES` to change
//! the count per round). Each round writes N deliveries of a ~7 KB GitHub push
//! body with one queued run each, from 64 concurrent tasks, into a fresh
//! database on this disk; the two modes alternate so that machine noise hits
//! both alike. Prints min / median / max over the rounds and the ratio of
//! medians.

use std::sync::Arc;
use std::time::Instant;

use hookd::store::{NewDelivery, SqliteStore, Store};

mod support;

const ROUNDS: usize = 5;
const CONCURRENCY: usize = 64;

fn delivery(i: usize, body: &[u8]) -> NewDelivery {
    support::push_delivery(
        format!("bench-{i}"),
        1_700_000_000_000,
        body,
        ("acme/infra", "refs/heads/main", "octocat"),
        false,
    )
}

async fn round(max_batch: usize, n: usize, body: Arc<Vec<u8>>) -> f64 {
    // On the same disk as the build, under target/.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let store = Arc::new(SqliteStore::open_with_batch(dir.path(), max_batch).expect("open store"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let (store, body) = (Arc::clone(&store), Arc::clone(&body));
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < n {
                store
                    .record_delivery(delivery(i, &body))
                    .await
                    .expect("record");
                i += CONCURRENCY;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    store.close();
    rate
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let n: usize = std::env::var("HOOKD_BENCH_DELIVERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/github/push-branch-commits.json");
    let body = std::fs::read(&fixture).unwrap_or_else(|_| vec![b'x'; 7 * 1024]);
    let body = Arc::new(body);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (mut grouped, mut single) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        grouped.push(rt.block_on(round(512, n, Arc::clone(&body))));
        single.push(rt.block_on(round(1, n, Arc::clone(&body))));
    }
    let (gmin, gmed, gmax) = stats(&mut grouped);
    let (smin, smed, smax) = stats(&mut single);
    println!("store ingest, fsync on (WAL, synchronous=FULL), {n} deliveries of {} bytes per round, {CONCURRENCY} concurrent writers, {ROUNDS} rounds", body.len());
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "deliveries/s", "min", "median", "max"
    );
    println!(
        "{:<34} {gmin:>10.0} {gmed:>10.0} {gmax:>10.0}",
        "group commit (batch <= 512)"
    );
    println!(
        "{:<34} {smin:>10.0} {smed:>10.0} {smax:>10.0}",
        "one transaction per delivery"
    );
    println!("ratio of medians: {:.1}x", gmed / smed);
}
