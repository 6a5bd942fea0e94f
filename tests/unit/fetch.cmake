# Fetch programs and /proc parsing of the ptrace engine's author: bytes in,
# values out, no process needed.
uprobe_test(fetch_test unit SOURCES unit/fetch_test.cpp unit/proc_maps_test.cpp unit/read_window_test.cpp
  DEPS uprobe_fetch uprobe_proc uprobe_spec uprobe_elf)
