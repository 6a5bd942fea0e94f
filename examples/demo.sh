#!/bin/sh
# The README's demo: what uprobe sees in the bundled example, then a trace.
# Usage: examples/demo.sh BUILD_DIR
set -eu
build=${1:-build/dev}
uprobe=$build/uprobe
shop=$build/examples/shop

show() {
  printf '\n$ %s\n' "$*" | sed "s|$build/||g"
  "$@"
}

show "$uprobe" list -x "$shop" 'p*'
show "$uprobe" list -x "$shop" --sdt
show "$uprobe" trace 'price order=%di:x64 unit_cents=%si' -- "$shop"
show "$uprobe" trace 'price item=o->item qty=o->quantity unit_cents' 'price%return total=$retval:s64' -- "$shop"
show "$uprobe" trace --format json 'sdt:shop:priced id=$arg1 item=$arg2:string total=$arg3' -- "$shop"
show "$uprobe" trace --latency 'price%return' -- "$shop"
