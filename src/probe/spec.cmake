# uprobe_spec: the probe-spec grammar (docs/probes.md). Pure text in,
# ProbeSpec out; depends on nothing but base.
uprobe_library(uprobe_spec
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/spec.cpp
  DEPS uprobe_base)
