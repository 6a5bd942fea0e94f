# Decoding and relocating arbitrary bytes must never crash or hang.
uprobe_fuzz(fuzz_relocate SOURCES fuzz/fuzz_relocate.cpp DEPS uprobe_arch)
