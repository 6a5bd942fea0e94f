# --if predicates and process discovery (no processes traced).
uprobe_test(api_condition_test unit SOURCES unit/api_condition_test.cpp DEPS uprobe_condition uprobe_proc)
