// Target for the CLI tests: functions of every symbol kind the resolver
// reads (global, static, alias, weak), SDT markers with and without a
// semaphore, and a loop whose calls and arguments are known by construction.
// Prints its own results so a traced run can be compared with an untraced one.
#define _SDT_HAS_SEMAPHORES 1
#include <stdio.h>
#include <stdlib.h>
#include <sys/sdt.h>

// The is-enabled test of an SDT marker: a tracer increments the semaphore.
unsigned short cli_funcs_tick_semaphore __attribute__((section(".probes")));
#define TICK_ENABLED() __builtin_expect(cli_funcs_tick_semaphore, 0)

void emit_step(int i, const char* name);  // cli_funcs_step.c: a marker without semaphore

__attribute__((noinline)) long add(long a, long b) { return a + b; }

__attribute__((noinline)) static long scale(long v, int factor) { return v * factor; }

long add_alias(long a, long b) __attribute__((alias("add")));

__attribute__((noinline, weak)) int weak_hook(int x) { return x + 1; }

__attribute__((noinline)) const char* name_of(int i) {
    static const char* names[] = {"zero", "one", "two", "three"};
    return names[i % 4];
}

int main(int argc, char** argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10;
    long sum = 0;
    int enabled = 0;
    for (int i = 0; i < n; i++) {
        sum = add(sum, scale(i, 2));
        sum += weak_hook(i);
        const char* name = name_of(i);
        emit_step(i, name);
        if (TICK_ENABLED()) {
            enabled++;
            DTRACE_PROBE1(cli_funcs, tick, i);
        }
    }
    printf("n=%d sum=%ld tick_enabled=%d\n", n, sum, enabled);
    return 0;
}
