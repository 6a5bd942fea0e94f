// A library engine_dlopen loads at run time.
__attribute__((noinline)) int plugin_fn(int x) { return x * 3; }
