# Fetch programs (owned by the ptrace engine's author; the agent links it later).
set(uprobe_fetch_deps uprobe_base uprobe_arch)
if(TARGET uprobe_elf)
  list(APPEND uprobe_fetch_deps uprobe_elf)
endif()
uprobe_library(uprobe_fetch SOURCES ${CMAKE_CURRENT_LIST_DIR}/fetch.cpp DEPS ${uprobe_fetch_deps})
