#!/bin/bash
# Listing speed: every function and every SDT marker of the largest shared
# library on this machine, by uprobe and, in the same run, by perf probe
# (-F, functions) and bpftrace (-l, functions and markers). Prints the median of
# RUNS wall-clock times and the ratios (peer time / uprobe time: > 1 means
# uprobe is faster).
# Usage: bench/list.sh BUILD_DIR [LIBRARY]
set -euo pipefail
build=${1:?usage: bench/list.sh BUILD_DIR [LIBRARY]}
uprobe=$build/uprobe
runs=${RUNS:-5}

lib=${2:-}
if [ -z "$lib" ]; then
  lib=$(find /usr/lib /usr/lib64 -name '*.so*' -type f -size +1M 2>/dev/null \
        | xargs ls -S 2>/dev/null | head -1)
fi
echo "library: $lib ($(du -h "$lib" | cut -f1))"

# median_ms CMD...: runs CMD $runs times (output discarded), median in ms.
median_ms() {
  local times=()
  for _ in $(seq "$runs"); do
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || return 1
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p"
}

# row LABEL OURS_MS CMD...: times a peer and prints its ratio to ours.
row() {
  local label=$1 ours=$2; shift 2
  if ! command -v "$1" >/dev/null; then
    printf '%-40s not installed, skipped\n' "$label"
  elif t=$(median_ms "$@"); then
    printf '%-40s %8s ms   ratio %sx\n' "$label" "$t" \
      "$(awk -v a="$t" -v b="$ours" 'BEGIN { printf "%.1f", a / (b > 0 ? b : 1) }')"
  else
    printf '%-40s failed here (root? kernel?), skipped\n' "$label"
  fi
}

funcs=$(median_ms "$uprobe" list -x "$lib")
printf '%-40s %8s ms   (%d functions)\n' "uprobe list -x LIB" "$funcs" "$("$uprobe" list -x "$lib" | wc -l)"
row "perf probe -F -x LIB" "$funcs" perf probe -F -x "$lib"
row "bpftrace -l 'uprobe:LIB:*'" "$funcs" bpftrace -l "uprobe:$lib:*"

sdt=$(median_ms "$uprobe" list -x "$lib" --sdt)
printf '%-40s %8s ms   (%d markers)\n' "uprobe list -x LIB --sdt" "$sdt" "$("$uprobe" list -x "$lib" --sdt | wc -l)"
row "bpftrace -l 'usdt:LIB:*'" "$sdt" bpftrace -l "usdt:$lib:*"

# The largest library is often marker-free; libjvm.so has hundreds.
jvm=$(find /usr/lib/jvm -name libjvm.so -type f 2>/dev/null | head -1)
if [ -n "$jvm" ]; then
  echo "library with markers: $jvm"
  funcs=$(median_ms "$uprobe" list -x "$jvm")
  printf '%-40s %8s ms   (%d functions)\n' "uprobe list -x libjvm" "$funcs" "$("$uprobe" list -x "$jvm" | wc -l)"
  row "perf probe -F -x libjvm" "$funcs" perf probe -F -x "$jvm"
  row "bpftrace -l 'uprobe:libjvm:*'" "$funcs" bpftrace -l "uprobe:$jvm:*"
  sdt=$(median_ms "$uprobe" list -x "$jvm" --sdt)
  printf '%-40s %8s ms   (%d markers)\n' "uprobe list -x libjvm --sdt" "$sdt" "$("$uprobe" list -x "$jvm" --sdt | wc -l)"
  row "bpftrace -l 'usdt:libjvm:*'" "$sdt" bpftrace -l "usdt:$jvm:*"
fi
