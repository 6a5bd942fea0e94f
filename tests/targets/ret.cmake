# Targets of the return-probe tests (tests/integration/engine_return_test.cpp).
uprobe_target(ret_funcs SOURCES ret_funcs.c OPTIONS -O0 -fno-omit-frame-pointer LIBS Threads::Threads)
# -O2: the tail calls must be compiled as jumps.
uprobe_target(ret_tail SOURCES ret_tail.c OPTIONS -O2)
uprobe_target(ret_throw SOURCES ret_throw.cc OPTIONS -O0)
# Go, when the toolchain is installed (scripts/setup installs golang-go);
# the test skips with a message otherwise.
find_program(UPROBE_GO go)
if(UPROBE_GO)
  set(go_env GOCACHE=${CMAKE_CURRENT_BINARY_DIR}/go-cache GOPATH=${CMAKE_CURRENT_BINARY_DIR}/go-path
             GO111MODULE=off CGO_ENABLED=0 GOFLAGS=)
  add_custom_command(OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/ret_go
    COMMAND ${CMAKE_COMMAND} -E env ${go_env} ${UPROBE_GO} build -o ${CMAKE_CURRENT_BINARY_DIR}/ret_go
            ${CMAKE_CURRENT_SOURCE_DIR}/ret_go.go
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/ret_go.go
    COMMENT "go build ret_go")
  add_custom_command(OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/ret_go_deep
    COMMAND ${CMAKE_COMMAND} -E env ${go_env} ${UPROBE_GO} build -o ${CMAKE_CURRENT_BINARY_DIR}/ret_go_deep
            ${CMAKE_CURRENT_SOURCE_DIR}/ret_go_deep.go
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/ret_go_deep.go
    COMMENT "go build ret_go_deep")
  add_custom_target(ret_go ALL DEPENDS ${CMAKE_CURRENT_BINARY_DIR}/ret_go ${CMAKE_CURRENT_BINARY_DIR}/ret_go_deep)
else()
  add_custom_target(ret_go)
endif()
# Jump tables for instruction-mode return probes: -O2, as a PIE (relative
# table) and as a fixed-address executable (absolute table).
uprobe_target(ret_switch SOURCES ret_switch.c OPTIONS -O2)
uprobe_target(ret_switch_nopie SOURCES ret_switch.c OPTIONS -O2 -fno-pie)
target_link_options(ret_switch_nopie PRIVATE -no-pie)
# Marked for hardware shadow stacks (ld -z shstk): auto return mode avoids
# trampolines in it where the kernel supports user shadow stacks.
uprobe_target(ret_shstk SOURCES ret_tail.c OPTIONS -O2 -fcf-protection=full)
target_link_options(ret_shstk PRIVATE -Wl,-z,shstk)
