#!/bin/bash
# Attach speed: a probe on every function of a large library in a running
# process (bench/targets/library_holder), placed and then removed, by the
# inline and ptrace engines; and, in the same run, the kernel's uprobes
# through bpftrace for the first K functions of the same library (the
# kernel registers one perf event per probe, so K is kept small). Prints
# wall-clock times and per-probe costs, and the ratio of the kernel's cost
# per probe to ours (> 1: uprobe is faster).
# Usage: bench/attach.sh BUILD_DIR [LIBRARY]
set -euo pipefail
build=${1:?usage: bench/attach.sh BUILD_DIR [LIBRARY]}
uprobe=$build/uprobe
holder=$build/bench/library_holder
lib=${2:-/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1}
kernel_probes=${K:-100}
[ -r "$lib" ] || { echo "attach: $lib not found (pass a large shared library)"; exit 0; }

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ours ENGINE: starts a holder, traces 'LIB:*' into it, and prints
# "attach_ms detach_ms sites".
ours() {
  local engine=$1 fifo log pid tracer t0 t1 t2
  fifo=$(mktemp -u) && mkfifo "$fifo"
  "$holder" "$lib" > "$fifo" &
  pid=$!
  read -r _ < "$fifo"
  log=$(mktemp)
  t0=$(now_ms)
  "$uprobe" trace -v --engine "$engine" -p "$pid" "$lib:*" > /dev/null 2> "$log" &
  tracer=$!
  # The tracer (-v) counts the probe's sites once they are all in: poll
  # the log for that line (a benchmark, not a test).
  until grep -q "sites in" "$log"; do
    kill -0 "$tracer" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.01
  done
  t1=$(now_ms)
  kill -INT "$tracer"
  wait "$tracer" || true
  t2=$(now_ms)
  local sites
  sites=$(grep -o -E '[0-9]+ sites in' "$log" | head -1 | cut -d' ' -f1)
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$fifo" "$log"
  echo "$((t1 - t0)) $((t2 - t1)) ${sites:-0}"
}

echo "library: $lib ($("$uprobe" list -x "$lib" | wc -l) functions)"
for engine in inline ptrace; do
  read -r attach detach sites < <(ours "$engine")
  printf '%-34s %6d sites: attach %6d ms, remove %6d ms (%.1f us per probe in all)\n' \
    "uprobe --engine $engine" "$sites" "$attach" "$detach" \
    "$(awk -v a="$attach" -v d="$detach" -v n="$sites" 'BEGIN { print 1000 * (a + d) / (n > 0 ? n : 1) }')"
  [ "$engine" = inline ] && ours_per_probe=$(awk -v a="$attach" -v d="$detach" -v n="$sites" 'BEGIN { print 1000 * (a + d) / (n > 0 ? n : 1) }')
done

if command -v bpftrace > /dev/null && [ "$(id -u)" = 0 ]; then
  # The first K functions by name that bpftrace itself lists.
  probes=$( (bpftrace -l "uprobe:$lib:*" 2>/dev/null || true) | head -"$kernel_probes" | paste -sd, -)
  t0=$(now_ms)
  if bpftrace -e "$probes { }" -c /bin/true > /dev/null 2>&1; then
    t1=$(now_ms)
    per=$(awk -v t="$((t1 - t0))" -v n="$kernel_probes" 'BEGIN { print 1000 * t / n }')
    printf '%-34s %6d probes: attach+remove %6d ms (%.1f us per probe)\n' "bpftrace (kernel uprobes)" \
      "$kernel_probes" "$((t1 - t0))" "$per"
    printf 'kernel / uprobe inline, per probe: %.0fx\n' "$(awk -v k="$per" -v o="$ours_per_probe" 'BEGIN { print k / o }')"
  else
    echo "bpftrace failed here, skipped"
  fi
else
  echo "bpftrace (kernel uprobes): needs root and bpftrace, skipped"
fi
