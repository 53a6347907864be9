#!/usr/bin/env bash
# Recompute every published suite from one clean commit and publish it into results/.
#
#   scripts/republish.sh [SUITE ...]     (default: every suite published today)
#
# Each suite runs with --force into runs/<suite> (an empty $B2S_BENCH_CACHE unless one is set, so
# zoo models are trained as a new user's would be), then `b2s-bench publish --replace` moves the
# old folder aside, and `b2s-bench results --write` remakes the table in results/README.md. The
# working tree must be clean: `publish` refuses records of uncommitted code.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "the working tree has uncommitted changes; commit them first (records name the commit)" >&2
  exit 2
fi
BIN="${B2S_BIN:-.venv/bin/b2s-bench}"
export B2S_BENCH_CACHE="${B2S_BENCH_CACHE:-$(mktemp -d)}"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(embedded families big2small-ablation big2small-tradeoff big2small-converged)
# Run every suite first, then publish them all: publishing changes tracked files under results/, and a
# run started after that would record its commit as dirty.
for suite in "${suites[@]}"; do
  echo "== $suite ($(date -u +%H:%M:%S))"
  "$BIN" run "$suite" --out "runs/$suite" --force --no-progress --quiet || true  # failed cells are published too
done
for suite in "${suites[@]}"; do
  "$BIN" publish "runs/$suite" --to "results/$suite" --replace
done
"$BIN" results --write  # results/README.md
