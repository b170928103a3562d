#!/bin/sh
# Sends one GitHub-style push webhook for a throwaway local git repository to a
# running hookd, then shows the run. Usage, with `hookd serve` running:
#
#   examples/push-demo.sh                # hookd at http://127.0.0.1:8080
#   HOOKD=target/debug/hookd examples/push-demo.sh
#
# The payload carries the fields hookd reads from a GitHub push (ref, before,
# after, repository.full_name, repository.clone_url, pusher.name).
set -eu
hookd=${HOOKD:-target/release/hookd}
url=${HOOKD_URL:-http://127.0.0.1:8080}
work=$(mktemp -d)
repo="$work/hello"

git init -q -b main "$repo"
echo "hello from hookd" > "$repo/README"
git -C "$repo" add README
git -C "$repo" -c user.name=demo -c user.email=demo@example.com commit -q -m "demo commit"
sha=$(git -C "$repo" rev-parse HEAD)

cat > "$work/push.json" <<JSON
{"ref": "refs/heads/main",
 "before": "0000000000000000000000000000000000000000",
 "after": "$sha",
 "repository": {"full_name": "demo/hello", "clone_url": "file://$repo"},
 "pusher": {"name": "demo"}}
JSON

# The headers GitHub would send (the signature only when the source has a secret).
"$hookd" sign --source github "$work/push.json" > "$work/headers.txt"
echo "--- headers"; cat "$work/headers.txt"
echo "--- answer"
curl -sS -H @"$work/headers.txt" --data-binary @"$work/push.json" "$url/hooks/github"
echo
sleep 2
echo "--- runs"
"$hookd" runs --url "$url" --limit 3
