# Targets of the inline engine's tests (tests/integration/engine_inline_test.cpp).
uprobe_target(inline_static SOURCES inline_static.c OPTIONS -O1)
target_link_options(inline_static PRIVATE -static)
