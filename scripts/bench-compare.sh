#!/usr/bin/env bash
# Two builds of courier-bench against each other, in one run: before and
# after a change to courier's call path. Every repeat runs each scenario
# for each system with the old binary, then the new (interleaved, so a
# noisy stretch of the machine hits both), each server and client in its
# own processes as in scripts/bench.sh. Prints medians and new ÷ old.
#
#   scripts/bench-compare.sh OLD_BENCH_EXE NEW_BENCH_EXE [repeats]
#
# BENCH_SCENARIOS and BENCH_SYSTEMS (space-separated) narrow the run, e.g.
#   BENCH_SCENARIOS=pipelined BENCH_SYSTEMS=courier-grpc scripts/bench-compare.sh old new 11
#
# Build the old binary from a worktree of the old commit, e.g.
#   git worktree add --detach ../old <commit>
#   (cd ../old && cargo build --release -p courier-bench) && cp ../old/target/release/courier-bench /tmp/old
set -euo pipefail
old=${1:?the old courier-bench binary}
new=${2:?the new courier-bench binary}
repeats=${3:-5}
scenarios=(${BENCH_SCENARIOS:-ping-pong pipelined})
systems=(${BENCH_SYSTEMS:-courier-bin courier-grpc})
samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
for repeat in $(seq "$repeats"); do
  for scenario in "${scenarios[@]}"; do
    for system in "${systems[@]}"; do
      for build in old new; do
        exe=$old
        [ "$build" = new ] && exe=$new
        # One sample: the run's progress line on stderr carries req/s and p99.
        line=$("$exe" run --duration 4 --warmup 1 --repeats 1 --idle-connections 0 \
          --systems "$system" --scenarios "$scenario" 2>&1 >/dev/null | grep 'req/s' | tail -1)
        rps=$(sed -E 's/.* ([0-9]+) req\/s.*/\1/' <<<"$line")
        p99=$(sed -E 's/.*p99 +([0-9]+) us.*/\1/' <<<"$line")
        echo "$scenario $system $build $rps $p99" >>"$samples"
        echo "[$repeat/$repeats] $scenario $system $build: $rps req/s, p99 $p99 us" >&2
      done
    done
  done
done
python3 - "$samples" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
# Medians of each build, and the median of the ratios within each repeat:
# old and new ran back to back there, so each pair saw the same machine.
print("| scenario | system | old req/s | new req/s | new ÷ old (medians) | new ÷ old (paired) | old p99 (us) | new p99 (us) | p99 new ÷ old (paired) |")
print("|---|---|---|---|---|---|---|---|---|")
seen = []
for scenario, system, *_ in rows:
    if (scenario, system) not in seen:
        seen.append((scenario, system))
for scenario, system in seen:
    def runs(build, col):
        return [float(r[col]) for r in rows if r[:3] == [scenario, system, build]]
    old_rps, new_rps, old_p99, new_p99 = runs("old", 3), runs("new", 3), runs("old", 4), runs("new", 4)
    med = statistics.median
    paired = med(n / o for o, n in zip(old_rps, new_rps))
    paired_p99 = med(n / o for o, n in zip(old_p99, new_p99))
    print(f"| {scenario} | {system} | {med(old_rps):,.0f} | {med(new_rps):,.0f} | {med(new_rps) / med(old_rps):.3f} "
          f"| {paired:.3f} | {med(old_p99):,.0f} | {med(new_p99):,.0f} | {paired_p99:.3f} |")
EOF
