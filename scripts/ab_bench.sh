#!/usr/bin/env bash
# Before/after benchmark of our own system in one run: alternate a checkout of REV ("before")
# and this working tree ("after"), `python -m benchmarks --only ours` each time, REPS times
# each, and print the medians.  Same machine, same window, so load hits both sides alike.
#
#   bash scripts/ab_bench.sh REV [REPS]     e.g. bash scripts/ab_bench.sh main~5 5
#
# Needs this tree's .venv (with the dev extra); builds one for REV in a temporary worktree.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: ab_bench.sh REV [REPS]}
reps=${2:-5}
work=$(mktemp -d /tmp/asynqpg-ab-XXXXXX)
trap 'git worktree remove --force "$work/before" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add -q --detach "$work/before" "$rev"
python3 -m venv "$work/before/.venv"
"$work/before/.venv/bin/pip" install -q -e "$work/before[dev]" -r benchmarks/requirements.txt
.venv/bin/pip install -q -r benchmarks/requirements.txt
for i in $(seq 1 "$reps"); do
    for side in before after; do
        dir=$PWD; [ "$side" = before ] && dir="$work/before"
        (cd "$dir" && .venv/bin/python -m benchmarks --only ours --n 20000 --latency-count 200 \
            --json "$work/${side}_$i.json" >/dev/null)
    done
done
python3 - "$work" <<'PY'
import glob, json, statistics, sys
keys = [("enqueue_per_s", "batch enqueue tasks/s"), ("burn_down_per_s", "burn-down tasks/s"),
        ("latency_p50_ms", "idle latency p50 ms"), ("latency_p99_ms", "idle latency p99 ms")]
runs = {side: [json.load(open(f))["systems"]["ours"] for f in sorted(glob.glob(f"{sys.argv[1]}/{side}_*.json"))]
        for side in ("before", "after")}
print(f"{'median of ' + str(len(runs['after'])) + ' runs':24} {'before':>10} {'after':>10} {'after/before':>13}")
for key, label in keys:
    b = statistics.median(r[key] for r in runs["before"])
    a = statistics.median(r[key] for r in runs["after"])
    print(f"{label:24} {b:>10,.2f} {a:>10,.2f} {a / b:>12.2f}x")
PY
