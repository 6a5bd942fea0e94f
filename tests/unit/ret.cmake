# Return-probe bookkeeping of the ptrace engine (return_probes.hpp): bytes
# in, exits out; shadow stacks over this process's own memory.
uprobe_test(return_probes_test unit SOURCES unit/return_probes_test.cpp DEPS uprobe_engine)
