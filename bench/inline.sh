#!/bin/bash
# Per-hit cost of the inline engine (in-process agent, jump-patched sites)
# as the traced program itself measures it (bench/targets/inline_hotloop
# times its own loop), side by side in one run with the kernel's uprobes
# (perf probe + perf record / perf stat) and uprobe's ptrace engine, on
#   push  - a site the kernel emulates (push %rbp)
#   lea   - a site the kernel single-steps
#   short - a 4-byte function: no room for a jump, so the inline engine
#           puts an int3 there, caught by the agent's SIGTRAP handler
# Rows: an entry probe with two args streamed to a file, every record
# delivered (rounds of 8,000 calls, which the rings hold, with pauses in
# which the tracer drains them; the fastest round counts, and the share of
# events that reached the file is printed: it must be 100%), the same with
# a return probe added (the pair, against the entry probe alone; its ret
# hooked), and a count-only probe. Ratios are ours / the kernel's. Then the consumer's
# throughput: one busy thread, --no-drop (the program waits for the
# tracer), every event written to a file as JSON and as text.
# Usage: bench/inline.sh BUILD_DIR   (root is needed for the kernel rows)
set -euo pipefail
build=${1:?usage: bench/inline.sh BUILD_DIR}
build=$(cd "$build" && pwd)
uprobe=$build/uprobe
loop=$build/bench/inline_hotloop
n=${HITS:-5000000}
kernel_n=${KERNEL_HITS:-200000}
ptrace_n=${PTRACE_HITS:-50000}
work=$(mktemp -d)
trap 'rm -rf "$work"; perf probe -q -d "probe_inline_hotloop:*" >/dev/null 2>&1 || true' EXIT

ns() { sed -n 's/.*ns_per_call=\([0-9.]*\).*/\1/p'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.4f", a / b; else printf "n/a" }'; }

kernel_ok=0
if [ "$(id -u)" = 0 ] && command -v perf >/dev/null; then
  mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
  perf probe -q -d 'probe_inline_hotloop:*' >/dev/null 2>&1 || true
  if perf probe -q -x "$loop" -a 'site_push a=%di b=%si' 2>/dev/null &&
     perf probe -q -x "$loop" -a 'site_lea a=%di b=%si' 2>/dev/null &&
     perf probe -q -x "$loop" -a 'site_short a=%di b=%si' 2>/dev/null; then
    kernel_ok=1
  fi
fi
[ $kernel_ok = 1 ] || echo "kernel uprobes: not available (needs root, perf and tracefs); kernel rows skipped"

rounds=${ROUNDS:-20}
hooked_pairs="" timed_pairs=""
round_n=${ROUND_CALLS:-8000}
printf '%-6s %8s | %10s %10s | %11s %9s %9s | %11s %8s | %10s %9s | %8s\n' site "base ns" \
  "kernel rec" "kernel cnt" "inline strm" "vs kernel" "delivered" "inline pair" "vs strm" "inline cnt" "vs kernel" "ptrace"
for site in push lea short; do
  base=$("$loop" "$site" "$n" | ns)
  round_base=$("$loop" "$site" "$round_n" "$rounds" | ns)
  krec=n/a kcnt=n/a
  if [ $kernel_ok = 1 ]; then
    k=$(perf record -q -o "$work/perf.data" -e "probe_inline_hotloop:site_$site" -- "$loop" "$site" "$kernel_n" 2>/dev/null | ns)
    krec=$(sub "$k" "$base")
    k=$(perf stat -x, -o "$work/stat" -e "probe_inline_hotloop:site_$site" -- "$loop" "$site" "$kernel_n" 2>/dev/null | ns)
    kcnt=$(sub "$k" "$base")
  fi
  s=$("$uprobe" trace --engine inline -o "$work/events" "site_$site a=%di b=%si" -- "$loop" "$site" "$round_n" "$rounds" \
      2>"$work/err" | ns)
  stream=$(sub "$s" "$round_base")
  delivered=$(wc -l < "$work/events")
  pair=n/a pair_ratio=n/a
  if [ "$site" != short ]; then
    s=$("$uprobe" trace --engine inline -o "$work/events" "site_$site a=%di b=%si" "site_$site%return r=\$retval" \
        -- "$loop" "$site" "$round_n" "$rounds" 2>"$work/err" | ns)
    pair=$(sub "$s" "$round_base")
    pair_ratio=$(ratio "$pair" "$stream")x
    [ "$(wc -l < "$work/events")" = $((2 * round_n * rounds)) ] || echo "warning: the pair lost events ($site)"
    s=$("$uprobe" trace --engine inline --return-mode trampoline -o "$work/events" "site_$site a=%di b=%si" \
        "site_$site%return r=\$retval" -- "$loop" "$site" "$round_n" "$rounds" 2>"$work/err" | ns)
    hooked=$(sub "$s" "$round_base")
    hooked_pairs="$hooked_pairs $site $hooked ns ($(ratio "$hooked" "$stream")x);"
    # A frame kept from the entry ($duration), the ret hooked: 4,000-call
    # rounds (its records need more room than the rings' 1 MiB for 8,000).
    s=$("$uprobe" trace --engine inline -o "$work/events" "site_$site a=%di b=%si" \
        "site_$site%return r=\$retval d=\$duration" -- "$loop" "$site" 4000 $((2 * rounds)) 2>"$work/err" | ns)
    timed=$(sub "$s" "$round_base")
    timed_pairs="$timed_pairs $site $timed ns ($(ratio "$timed" "$stream")x);"
  fi
  c=$("$uprobe" trace --engine inline --count "site_$site" -- "$loop" "$site" "$n" 2>/dev/null | ns)
  count=$(sub "$c" "$base")
  p=$("$uprobe" trace --engine ptrace -o "$work/events" "site_$site a=%di b=%si" -- "$loop" "$site" "$ptrace_n" \
      2>/dev/null | ns)
  ptrace=$(sub "$p" "$base")
  pct=$(awk -v d="$delivered" -v n="$((round_n * rounds))" 'BEGIN { printf "%.1f%%", 100 * d / n }')
  printf '%-6s %8s | %10s %10s | %11s %9s %9s | %11s %8s | %10s %9s | %8s\n' "$site" "$base" "$krec" "$kcnt" \
    "$stream" "$(ratio "$stream" "$krec")x" "$pct" "$pair" "$pair_ratio" "$count" "$(ratio "$count" "$kcnt")x" "$ptrace"
done

# The pair above hooks the function's ret (instruction mode, the default
# where it can); on a function left by a tail jump the return address is
# taken at the entry instead, as --return-mode trampoline does here.
echo "pair with the return address hooked (--return-mode trampoline), vs the entry probe:$hooked_pairs"
echo "pair keeping a frame (d=\$duration added; its ret hooked), vs the entry probe:$timed_pairs"

# --latency: the agent counts each return's duration in shared memory
# (no record); beside it the same return probe writing a record with
# $duration, which is what --latency did before.
base=$("$loop" push "$round_n" "$rounds" | ns)
s=$("$uprobe" trace --engine inline --latency -o "$work/latency" site_push -- "$loop" push "$round_n" "$rounds" \
    2>"$work/err" | ns)
timed=$(sub "$s" "$base")
s=$("$uprobe" trace --engine inline -o "$work/events" 'site_push%return d=$duration' -- "$loop" push "$round_n" \
    "$rounds" 2>"$work/err" | ns)
recorded=$(sub "$s" "$base")
echo "--latency on the push site: $timed ns a call counted in the program; $recorded ns with a \$duration record"

# The trampolines alone (no agent, no record), in-process on a copy of
# site_push: what an entry probe and a pair with the return address
# hooked pay before any record. That pair's second trampoline, its call of
# the displaced instruction and its landing are why it costs more than
# twice the entry probe.
floor=$("$build/bench/trampoline_floor")
plain=$(sed -n 's/.*plain=\([0-9.]*\).*/\1/p' <<<"$floor")
fentry=$(sub "$(sed -n 's/.*entry=\([0-9.]*\).*/\1/p' <<<"$floor")" "$plain")
fpair=$(sub "$(sed -n 's/.*pair=\([0-9.]*\).*/\1/p' <<<"$floor")" "$plain")
echo "trampolines alone, ns per call over the plain one: entry $fentry, entry+return (address hooked) $fpair ($(ratio "$fpair" "$fentry")x)"

# An argument read from memory (a stack word) instead of a register, on
# the push site: the agent reads through process_vm_readv(2) so that a bad
# pointer cannot fault the program, and that system call is most of it.
base=$("$loop" push "$round_n" "$rounds" | ns)
s=$("$uprobe" trace --engine inline -o "$work/events" "site_push a=%di b=+0(%sp)" -- "$loop" push "$round_n" "$rounds" \
    2>"$work/err" | ns)
mem=$(sub "$s" "$base")
kmem=n/a
if [ $kernel_ok = 1 ]; then
  perf probe -q -d 'probe_inline_hotloop:site_push' >/dev/null 2>&1 || true
  if perf probe -q -x "$loop" -a 'site_push a=%di b=+0(%sp):u64' 2>/dev/null; then
    k=$(perf record -q -o "$work/perf.data" -e probe_inline_hotloop:site_push -- "$loop" push "$kernel_n" 2>/dev/null | ns)
    kmem=$(sub "$k" "$("$loop" push "$n" | ns)")
  fi
fi
echo "one argument read from memory (push site, b=+0(%sp)): inline $mem ns, kernel $kmem ns ($(ratio "$mem" "$kmem")x)"

# Consumer throughput: one busy thread, --no-drop, every event written;
# events per second of the tracer's whole run (start-up included), three
# runs back to back. The file is removed first (truncating the last run's
# costs more than writing). On this VM the first run is the slowest: the
# page cache takes memory the guest gave back to the host (free page
# reporting), and each page then costs the host a fault; later runs reuse
# pages the guest still holds.
for format in json text; do
  rates=""
  for run in 1 2 3; do
    rm -f "$work/events.$format"
    start=$(date +%s.%N)
    "$uprobe" trace --engine inline --no-drop --format "$format" -o "$work/events.$format" "site_push a=%di b=%si" \
      -- "$loop" push "$n" >/dev/null 2>"$work/err"
    end=$(date +%s.%N)
    written=$(wc -l < "$work/events.$format")
    [ "$written" = "$n" ] || echo "warning: $written of $n events written as $format"
    rates="$rates $(awk -v w="$written" -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", w / (e - s) / 1e6 }')"
  done
  rm -f "$work/events.$format"
  echo "consumer: $n events written as $format, M events/s in three runs:$rates"
done
