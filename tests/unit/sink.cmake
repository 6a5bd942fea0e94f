uprobe_test(sink_test unit
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/sink_test.cpp
  DEPS uprobe_sink nlohmann_json::nlohmann_json)
