uprobe_fuzz(fuzz_spec
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz_spec.cpp
  DEPS uprobe_spec)
