# x86-64 decode/relocate/registers: bytes in, bytes out, no processes.
# arch_exec_test runs relocated code in its own address space through a
# small assembly harness (see arch_exec_test.cpp).
uprobe_test(arch_decode_test unit
  SOURCES unit/arch_decode_test.cpp unit/arch_registers_test.cpp unit/arch_signal_frame_test.cpp
  DEPS uprobe_arch)
uprobe_test(arch_relocate_test unit
  SOURCES unit/arch_relocate_test.cpp
  DEPS uprobe_arch Zydis::Zydis)
uprobe_test(arch_exec_test unit
  SOURCES unit/arch_exec_test.cpp
  DEPS uprobe_arch)
# Jump patches and trampolines, executed in the test's own address space.
uprobe_test(arch_trampoline_test unit
  SOURCES unit/arch_trampoline_test.cpp
  DEPS uprobe_arch)
