# Targets of the DWARF-argument tests (tests/integration/cli_dwarf_test.cpp
# and tests/unit/dwarf_fetch_test.cpp). Always built by gcc, whatever
# compiles the project: the tests' expectations (what -O2 keeps in which
# register, what it inlines, what it leaves without a location) are GCC's.
# The split-debug copies are made by the tests themselves (objcopy).
function(uprobe_gcc_target name source)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${name})
  add_custom_command(OUTPUT ${out}
    COMMAND ${UPROBE_TARGET_CC} -g ${ARGN} -o ${out} ${CMAKE_CURRENT_SOURCE_DIR}/${source}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${source} VERBATIM)
  add_custom_target(${name} DEPENDS ${out})
endfunction()
# -O0: variables in stack slots relative to the frame base (the CFA).
uprobe_gcc_target(dw_args dw_args.c -O0)
# The same program optimized: a small struct argument in a register (read
# field by field), a float in xmm0, locals computed by DWARF arithmetic or
# optimized out.
uprobe_gcc_target(dw_args_o2 dw_args.c -O2)
# -O2: an always-inline helper with inlined instances and an out-of-line
# copy; parameters in registers, entry values, empty location ranges.
uprobe_gcc_target(dw_inline dw_inline.c -O2)
# Mallocs a size the libc test knows (libc6-dbg: _int_malloc by name).
uprobe_gcc_target(dw_malloc dw_malloc.c -O0)
