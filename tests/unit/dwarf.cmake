# DWARF layer tests. The programs under tests/unit/dwarf_data/ are compiled
# here with explicit flags (not the project's) by g++/gcc whatever compiles
# the project (the expectations are about GCC's output), in every variant
# the tests compare: -O0/-O2 x DWARF 4/5, a stripped copy, and a debug-only copy.
set(dwarf_data_src ${CMAKE_CURRENT_LIST_DIR}/dwarf_data)
set(dwarf_data_out ${CMAKE_CURRENT_BINARY_DIR}/dwarf_data)
file(MAKE_DIRECTORY ${dwarf_data_out})
set(dwarf_data_files)
foreach(opt O0 O2)
  foreach(ver 4 5)
    set(bin ${dwarf_data_out}/prog_${opt}_dw${ver})
    add_custom_command(OUTPUT ${bin} ${bin}.debug ${bin}.stripped
      COMMAND ${UPROBE_TARGET_CC} -g -gdwarf-${ver} -${opt} -fno-omit-frame-pointer
              -o ${bin} ${dwarf_data_src}/prog.c
      COMMAND objcopy --only-keep-debug ${bin} ${bin}.debug
      COMMAND objcopy --strip-debug ${bin} ${bin}.stripped
      DEPENDS ${dwarf_data_src}/prog.c VERBATIM)
    list(APPEND dwarf_data_files ${bin} ${bin}.debug ${bin}.stripped)
  endforeach()
endforeach()
add_custom_command(OUTPUT ${dwarf_data_out}/progxx_O0
  COMMAND ${UPROBE_TARGET_CXX} -g -O0 -o ${dwarf_data_out}/progxx_O0 ${dwarf_data_src}/prog.cpp
  DEPENDS ${dwarf_data_src}/prog.cpp VERBATIM)
list(APPEND dwarf_data_files ${dwarf_data_out}/progxx_O0)
add_custom_target(dwarf_test_programs DEPENDS ${dwarf_data_files})

uprobe_test(dwarf_test unit SOURCES unit/dwarf_test.cpp DEPS uprobe_dwarf)
add_dependencies(dwarf_test dwarf_test_programs)
target_compile_definitions(dwarf_test PRIVATE
  DWARF_DATA_SRC="${dwarf_data_src}" DWARF_DATA_OUT="${dwarf_data_out}")
# g++ 12 with -fsanitize=address warns falsely inside libstdc++'s <regex>
# (std::function in _StateT "may be used uninitialized", GCC bug 105562).
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  target_compile_options(dwarf_test PRIVATE -Wno-maybe-uninitialized)
endif()
