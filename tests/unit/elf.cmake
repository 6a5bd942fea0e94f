# ELF layer tests. The programs under elf_data/ are only read, never run:
# a PIE and a non-PIE build of the same SDT-marked sources (optimized, so
# markers get register, memory and immediate operands), and stripped
# variants with a .gnu_debuglink, a wrong-CRC debug file and MiniDebugInfo.
# Flag contract: system compiler, -O2 -g, never sanitized (they are data).
set(elf_data_sources ${CMAKE_CURRENT_LIST_DIR}/elf_data/sdt_main.c ${CMAKE_CURRENT_LIST_DIR}/elf_data/sdt_semaphore.c)
foreach(variant pie nopie)
  add_executable(elf_sdt_${variant} ${elf_data_sources})
  target_compile_options(elf_sdt_${variant} PRIVATE -O2 -g)
  if(UPROBE_SANITIZE)
    target_compile_options(elf_sdt_${variant} PRIVATE -fno-sanitize=all)
    target_link_options(elf_sdt_${variant} PRIVATE -fno-sanitize=all)
  endif()
endforeach()
target_compile_options(elf_sdt_pie PRIVATE -fPIE)
target_link_options(elf_sdt_pie PRIVATE -pie)
target_compile_options(elf_sdt_nopie PRIVATE -fno-pie)
target_link_options(elf_sdt_nopie PRIVATE -no-pie)

set(elf_variants_dir ${CMAKE_CURRENT_BINARY_DIR}/elf_data/variants)
add_custom_command(
  OUTPUT ${elf_variants_dir}/linked/elf_sdt_pie ${elf_variants_dir}/badcrc/elf_sdt_pie ${elf_variants_dir}/mini/elf_sdt_pie
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/elf_data/make_debug_variants.sh
          $<TARGET_FILE:elf_sdt_pie> $<TARGET_FILE:elf_sdt_nopie> ${elf_variants_dir}
  DEPENDS elf_sdt_pie elf_sdt_nopie ${CMAKE_CURRENT_LIST_DIR}/elf_data/make_debug_variants.sh
  COMMENT "Stripping elf_sdt_pie into debuglink, wrong-CRC and MiniDebugInfo variants")
add_custom_target(elf_test_data DEPENDS ${elf_variants_dir}/linked/elf_sdt_pie)

uprobe_test(elf_test unit
  SOURCES unit/elf_sdt_test.cpp unit/elf_binary_test.cpp
  DEPS uprobe_elf)
add_dependencies(elf_test elf_test_data)
target_compile_definitions(elf_test PRIVATE
  ELF_TEST_PIE="$<TARGET_FILE:elf_sdt_pie>"
  ELF_TEST_NOPIE="$<TARGET_FILE:elf_sdt_nopie>"
  ELF_TEST_VARIANTS="${elf_variants_dir}")
