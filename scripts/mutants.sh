#!/usr/bin/env bash
# Mutation testing of courier's sans-IO and pure modules (issue 10, "A
# measure of it"): cargo-mutants changes the code one mutant at a time
# (an operator swapped, a function body replaced by a default value, a
# match arm deleted, ...) and runs courier's unit tests against each; a
# mutant the tests do not notice is "missed". The target is at least 90 %
# of viable mutants caught; the survivors judged harmless, and why, are
# listed in docs/MUTANTS.md with the latest figures.
#
# Modules: protocol/native/, protocol/jsonrpc.rs, registry/mem/store.rs,
# discovery/cache.rs, balance/, resilience/, codec/lenient.rs,
# transport/keepalive.rs (all under crates/courier/src).
#
# Tests: `cargo test -p courier --lib` only (the unit tests, about 2 s),
# so each mutant costs one incremental rebuild of the courier crate plus
# that run. `--lib` goes to every cargo command (--cargo-arg), not after
# `--`: after `--` it reaches only the test run, and the build step would
# also compile the library a second time for doctests.
#
# How long: 505 mutants. One clean run on the 2-core development machine
# (2026-12-02, beside five runs of scripts/test.sh) took 44 min 43 s: a
# cold build of about 4 minutes in the scratch copy, then about 5 s per
# mutant (an incremental build of courier and the unit tests) plus 30 s for
# each of 6 timeouts. About 25 minutes with two shards side by side on an
# idle machine (see below). Too slow for scripts/test.sh; run
# it by hand after changing these modules.
#
# It works on a copy of the tree (never --in-place), so it can run beside
# other builds in the same checkout. Results: target/mutants/mutants.out/
# (caught.txt, missed.txt, timeout.txt, unviable.txt, outcomes.json,
# and a log per mutant under log/).
#
# Usage: scripts/mutants.sh [extra cargo-mutants options]
#   scripts/mutants.sh --list              count and name the mutants only
#   scripts/mutants.sh -F 'jsonrpc'        only mutants whose name matches
#   scripts/mutants.sh --iterate           skip mutants caught last time (the
#                                          figures are then those re-tested)
#   scripts/mutants.sh --shard 1/2         half of them (see MUTANTS_OUT)
# MUTANTS_OUT=target/mutants-2 puts the results elsewhere, so two runs on
# different mutants (-F) can go side by side on a machine with spare cores.
# Needs cargo-mutants: `cargo install --locked cargo-mutants` (tested with
# 27.1.0).
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole script is one block, read before it runs: bash reads scripts as
# it goes, and this one runs long enough to be edited meanwhile.
{

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "cargo-mutants is not installed: cargo install --locked cargo-mutants" >&2
  exit 2
fi

src=crates/courier/src
files=(
  -f "$src/protocol/native/*.rs"
  -f "$src/protocol/jsonrpc.rs"
  -f "$src/registry/mem/store.rs"
  -f "$src/discovery/cache.rs"
  -f "$src/balance/*.rs"
  -f "$src/resilience/*.rs"
  -f "$src/codec/lenient.rs"
  -f "$src/transport/keepalive.rs"
)

listing=false
for arg in "$@"; do
  case $arg in --list | --list-files) listing=true ;; esac
done

out=${MUTANTS_OUT:-target/mutants}
started=$SECONDS
# Without debug info: the scratch copy builds everything once anyway, and
# each mutant links faster. Only this command's builds see these settings.
status=0
CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0 \
  nice -n 19 cargo mutants \
  --package courier \
  "${files[@]}" \
  --jobs 1 \
  --timeout 30 \
  --build-timeout 1200 \
  --output "$out" \
  --no-shuffle \
  "$@" \
  --cargo-arg=--lib || status=$?
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts: still
# report the figures; 1 and 4 are usage errors and a failing baseline.
$listing && exit "$status"

dir=$out/mutants.out
count() { if [ -f "$dir/$1.txt" ]; then grep -c . "$dir/$1.txt" || true; else echo 0; fi; }
caught=$(count caught)
missed=$(count missed)
unviable=$(count unviable)
timeout=$(count timeout)
viable=$((caught + missed + timeout))
echo
echo "mutants: $((viable + unviable)) (caught $caught, missed $missed, timeout $timeout, unviable $unviable)"
if [ "$viable" -gt 0 ]; then
  # A timeout is a mutant the tests noticed too (they hung, and the timeout
  # failed them), so both figures are shown.
  awk -v c="$caught" -v t="$timeout" -v v="$viable" 'BEGIN {
    printf "caught: %.1f %% of %d viable; with timeouts: %.1f %%\n", 100 * c / v, v, 100 * (c + t) / v }'
fi
echo "wall time: $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s"
if [ "$missed" -gt 0 ]; then echo "missed mutants: $dir/missed.txt"; fi
exit "$status"
}
