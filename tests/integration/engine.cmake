# The ptrace engine driven through its C++ API (label: integration).
uprobe_test(engine_trace_test integration SOURCES integration/engine_trace_test.cpp
  DEPS uprobe_engine uprobe_spec)
add_dependencies(engine_trace_test engine_args engine_threads engine_fork engine_exec engine_dlopen
  engine_spin engine_insns engine_plugin engine_sdt engine_signals engine_idle engine_spawn)
