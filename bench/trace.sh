#!/bin/bash
# Per-hit cost of an entry probe with two arguments, as the traced program
# itself measures it (bench/targets/hotloop times its own loop), for uprobe's
# ptrace engine and, in the same run, the kernel's uprobes through
# perf probe + perf record. Two kinds of site: one the kernel emulates
# (`push %rbp`) and one it single-steps (`lea`). Also the floor of any ptrace
# design: a bare breakpoint stop/resume with tracer and tracee on one CPU.
# Usage: bench/trace.sh BUILD_DIR   (root is needed for the kernel rows)
set -euo pipefail
build=${1:?usage: bench/trace.sh BUILD_DIR}
build=$(cd "$build" && pwd)
uprobe=$build/uprobe
hotloop=$build/bench/hotloop
n=${HITS:-200000}
work=$(mktemp -d)
trap 'rm -rf "$work"; perf probe -q -d "probe_hotloop:*" >/dev/null 2>&1 || true' EXIT

ns() { sed -n 's/.*ns_per_call=\([0-9.]*\).*/\1/p'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a - b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

kernel_ok=0
if [ "$(id -u)" = 0 ] && command -v perf >/dev/null; then
  mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
  perf probe -q -d 'probe_hotloop:*' >/dev/null 2>&1 || true  # left over from an interrupted run
  if perf probe -q -x "$hotloop" -a 'site_push a=%di b=%si' 2>/dev/null &&
     perf probe -q -x "$hotloop" -a 'site_lea a=%di b=%si' 2>/dev/null; then
    kernel_ok=1
  fi
fi
[ $kernel_ok = 1 ] || echo "kernel uprobes: not available (needs root, perf and tracefs); kernel rows skipped"

floor=$("$build/bench/ptrace_floor" 50000 | sed -n 's/ns_per_stop=//p')
printf 'ptrace floor (stop+regs+rip+cont, pinned): %8.0f ns\n' "$floor"
printf '%-6s %10s %14s %14s %12s %12s\n' site "base ns" "kernel ns/hit" "uprobe ns/hit" "vs kernel" "vs floor"
for site in push lea; do
  base=$("$hotloop" "$site" $((n * 50)) | ns)
  kernel=n/a
  if [ $kernel_ok = 1 ]; then
    k=$(perf record -q -o "$work/perf.data" -e "probe_hotloop:site_$site" -- "$hotloop" "$site" "$n" 2>/dev/null | ns)
    kernel=$(sub "$k" "$base")
  fi
  u=$("$uprobe" trace -o "$work/events" "site_$site a=%di b=%si" -- "$hotloop" "$site" "$n" 2>/dev/null | ns)
  ours=$(sub "$u" "$base")
  events=$(wc -l < "$work/events")
  [ "$events" = "$n" ] || echo "warning: uprobe delivered $events events for $n hits"
  printf '%-6s %10s %14s %14s %12s %12s\n' "$site" "$base" "$kernel" "$ours" \
    "$(ratio "$ours" "$kernel")x" "$(ratio "$ours" "$floor")x"
done
