#!/usr/bin/env bash
# hookd side by side (issue 7), one command on a fresh machine:
#
#     benches/run.sh
#
# Installs what is missing (wrk, adnanh/webhook 2.8, git, taskset, the build
# headers; Debian packages), builds hookd and the benchmarks in release
# (`cargo bench --no-run`, a few minutes on 2 cores, not part of the timed
# suite), runs the four benchmarks and prints one table:
#
#   matching  benches/matching.rs  match_events at 10 / 1,000 / 10,000 pipelines (criterion)
#   parse     benches/parse.rs     GithubSource::parse of the ~8 KB push (criterion)
#   memory    benches/memory.rs    RSS idle, with 100,000 stored runs, while a step prints 1 GiB
#   trigger   benches/trigger.rs   webhook -> first step vs git fetch + checkout, 20,000 files
#   store     benches/store_ingest.rs  the store alone, pinned to one CPU (what ingest can reach)
#   ingest    benches/ingest.rs    wrk against hookd, adnanh/webhook and the HMAC-only ceiling
#
# Everything runs on 127.0.0.1 and every load is bounded in time; the suite
# takes about 10 minutes. BENCHMARKS.md says what each figure means.
#
# Knobs (defaults are the documented run): HOOKD_BENCH_ROUNDS (5),
# HOOKD_BENCH_SECONDS (10, per wrk measurement), HOOKD_BENCH_PUSHES (20),
# HOOKD_BENCH_FILES (20000), HOOKD_BENCH_STORED_RUNS (100000),
# HOOKD_BENCH_ONLY="matching memory" (a subset).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

# --- tools ------------------------------------------------------------------
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v webhook >/dev/null || missing+=(webhook)
command -v taskset >/dev/null || missing+=(util-linux)
command -v git >/dev/null && [ -x "$(git --exec-path)/git-daemon" ] || missing+=(git)
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
pkg-config --exists zlib 2>/dev/null || missing+=(zlib1g-dev)
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
webhook -version | grep -q '2\.8' || echo "warning: $(webhook -version) is not adnanh/webhook 2.8" >&2

# --- build ------------------------------------------------------------------
t0=$(date +%s)
cargo bench --locked --no-run 2>&1 | grep -Ev '^\s+(Compiling|Downloaded|Downloading)' >&2 || {
    echo "build failed" >&2
    exit 1
}
t1=$(date +%s)

# --- run --------------------------------------------------------------------
results="$CARGO_TARGET_DIR/bench-results.tsv"
: >"$results"
export HOOKD_BENCH_RESULTS="$results"
for bench in ${HOOKD_BENCH_ONLY:-matching parse memory trigger store ingest}; do
    echo "### $bench" >&2
    if [ "$bench" = store ]; then
        # The store alone (no HTTP, no parsing), pinned to the one CPU the
        # ingest servers get: what SQLite with fsync allows hookd at most.
        taskset -c 0 cargo bench --locked --quiet --bench store_ingest 2>&1 | tee /dev/stderr |
            awk -v OFS='\t' '
                /^group commit/ { print "store", "store alone, pinned to CPU 0: group commit (benches/store_ingest.rs)", $(NF-2), $(NF-1), $NF, "deliv/s", "8 KB bodies, 64 writers, 5 rounds" }
                /^one transaction per delivery/ { print "store", "store alone, pinned to CPU 0: one transaction per delivery", $(NF-2), $(NF-1), $NF, "deliv/s", "one fsync per delivery" }' >>"$results"
        continue
    fi
    cargo bench --locked --quiet --bench "$bench" 2>&1 | grep -v '^\s*Running ' >&2
done
t2=$(date +%s)

# --- the table --------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
disk=$(df -h --output=source,fstype "$CARGO_TARGET_DIR" 2>/dev/null | tail -1 | awk '{print $1" ("$2")"}')
echo
echo "hookd benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "machine: $(nproc) CPUs ($cpu), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), disk $disk"
echo "suite: $((t2 - t1)) s (build before it: $((t1 - t0)) s); each figure min / median / max over the runs named in its section"
echo
awk -F'\t' '
    BEGIN { fmt = "%-9s %-60s %10s %10s %10s  %-6s %s\n"
            printf fmt, "section", "what", "min", "median", "max", "unit", "note"
            printf fmt, "-------", "----", "---", "------", "---", "----", "----" }
    { printf fmt, $1, $2, $3, $4, $5, $6, $7 }' "$results"
