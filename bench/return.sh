#!/bin/bash
# Per-call cost of an entry+return probe pair, as the traced program itself
# measures it (bench/targets/hotloop times its own loop), for uprobe's ptrace
# engine in both return-probe modes (trampoline, insn), its inline engine
# (trampolines in the program; every record delivered: rounds of 8,000
# calls of bench/targets/inline_hotloop, the fastest of 20, as in
# bench/inline.sh) and, in the same run,
# the kernel's uprobe+uretprobe through perf probe + perf record. Two kinds
# of site, as in bench/trace.sh: one whose first instruction the kernel
# emulates (`push %rbp`) and one it single-steps (`lea`).
# Usage: bench/return.sh BUILD_DIR   (root is needed for the kernel rows)
set -euo pipefail
build=${1:?usage: bench/return.sh BUILD_DIR}
build=$(cd "$build" && pwd)
uprobe=$build/uprobe
hotloop=$build/bench/hotloop
inline_loop=$build/bench/inline_hotloop
n=${CALLS:-100000}
work=$(mktemp -d)
trap 'rm -rf "$work"; perf probe -q -d "probe_hotloop:ret_*" >/dev/null 2>&1 || true' EXIT

ns() { sed -n 's/.*ns_per_call=\([0-9.]*\).*/\1/p'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a - b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

kernel_ok=0
if [ "$(id -u)" = 0 ] && command -v perf >/dev/null; then
  mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
  perf probe -q -d 'probe_hotloop:ret_*' >/dev/null 2>&1 || true  # left over from an interrupted run
  kernel_ok=1
  for site in push lea; do
    perf probe -q -x "$hotloop" -a "ret_${site}_entry=site_$site a=%di" 2>/dev/null &&
      perf probe -q -x "$hotloop" -a "ret_${site}_exit=site_$site%return v=\$retval" 2>/dev/null || kernel_ok=0
  done
fi
[ $kernel_ok = 1 ] || echo "kernel uretprobes: not available (needs root, perf and tracefs); kernel rows skipped"

printf '%-6s %8s %16s %18s %10s %18s %10s %18s %10s\n' site "base ns" "kernel ns/pair" "trampoline ns/pair" \
  "vs kernel" "insn ns/pair" "vs kernel" "inline ns/pair" "vs kernel"
for site in push lea; do
  base=$("$hotloop" "$site" $((n * 50)) | ns)
  round_base=$("$inline_loop" "$site" 8000 20 | ns)
  kernel=n/a
  if [ $kernel_ok = 1 ]; then
    # perf names a return probe EVENT__return.
    k=$(perf record -q -o "$work/perf.data" -e "probe_hotloop:ret_${site}_entry" -e "probe_hotloop:ret_${site}_exit__return" \
        -- "$hotloop" "$site" "$n" 2>/dev/null | ns)
    kernel=$(sub "$k" "$base")
  fi
  row=()
  for mode in trampoline insn inline; do
    engine=(--engine ptrace --return-mode=$mode)
    program=("$hotloop" "$site" "$n")
    calls=$n
    from=$base
    if [ $mode = inline ]; then
      engine=(--engine inline)
      program=("$inline_loop" "$site" 8000 20)
      calls=$((8000 * 20))
      from=$round_base
    fi
    u=$("$uprobe" trace "${engine[@]}" -o "$work/events" "e=site_$site a=%di" "r=site_$site%return v=\$retval" \
        -- "${program[@]}" 2>/dev/null | ns)
    ours=$(sub "$u" "$from")
    events=$(wc -l < "$work/events")
    [ "$events" = $((2 * calls)) ] || echo "warning: $mode delivered $events events for $calls entry+return pairs"
    row+=("$ours" "$(ratio "$ours" "$kernel")x")
  done
  printf '%-6s %8s %16s %18s %10s %18s %10s %18s %10s\n' "$site" "$base" "$kernel" "${row[@]}"
done
