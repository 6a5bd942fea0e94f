uprobe_test(spec_test unit
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/spec_test.cpp
  DEPS uprobe_spec)
