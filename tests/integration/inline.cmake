# The inline engine (in-process agent) through its C++ API (label: integration).
uprobe_test(engine_inline_test integration SOURCES integration/engine_inline_test.cpp
  DEPS uprobe_engine uprobe_spec)
add_dependencies(engine_inline_test uprobe_agent engine_args engine_threads engine_fork engine_insns engine_sdt
  engine_spin engine_dlopen engine_plugin inline_static)
