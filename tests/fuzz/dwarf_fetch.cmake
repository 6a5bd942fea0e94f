uprobe_fuzz(fuzz_dwarf_location
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz_dwarf_location.cpp
  DEPS uprobe_probe uprobe_fetch)
