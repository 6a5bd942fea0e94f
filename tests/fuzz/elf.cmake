# fuzz_elf: arbitrary bytes opened as an ELF, then everything read.
# fuzz_sdt_args: parse_sdt_args on arbitrary strings.
uprobe_fuzz(fuzz_elf SOURCES fuzz/fuzz_elf.cpp DEPS uprobe_elf)
uprobe_fuzz(fuzz_sdt_args SOURCES fuzz/fuzz_sdt_args.cpp DEPS uprobe_elf)
