#!/bin/sh
# make_debug_variants.sh PROGRAM OTHER OUTDIR: from PROGRAM (with symbols and
# DWARF) builds, under OUTDIR:
#   linked/PROG + linked/PROG.debug    stripped, .gnu_debuglink to the .debug
#   badcrc/PROG + badcrc/PROG.debug    same link, but the .debug is OTHER's
#   mini/PROG                          stripped, with MiniDebugInfo
#                                      (.gnu_debugdata: xz ELF with .symtab)
set -eu
prog=$1 other=$2 out=$3
name=$(basename "$prog")
rm -rf "$out" && mkdir -p "$out/linked" "$out/badcrc" "$out/mini"

objcopy --only-keep-debug "$prog" "$out/linked/$name.debug"
strip --strip-all -o "$out/linked/$name" "$prog"
(cd "$out/linked" && objcopy --add-gnu-debuglink="$name.debug" "$name")

cp "$out/linked/$name" "$out/badcrc/$name"
objcopy --only-keep-debug "$other" "$out/badcrc/$name.debug"

objcopy --only-keep-debug "$prog" "$out/mini/full.debug"
objcopy --strip-debug --remove-section=.comment "$out/mini/full.debug" "$out/mini/symbols"
xz -f "$out/mini/symbols"
strip --strip-all -o "$out/mini/$name" "$prog"
objcopy --add-section .gnu_debugdata="$out/mini/symbols.xz" "$out/mini/$name"
rm -f "$out/mini/full.debug" "$out/mini/symbols.xz"
