// Tail calls (engine_return_test.cpp): built with -O2, so tail_outer ends
// in `jmp tail_inner` and tail_outer2 in `jmp square2` (objdump shows it;
// the test checks).
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long tail_inner(long x) { return x * 3 + (x > 100); }
__attribute__((noinline)) long tail_outer(long x) { return tail_inner(x + 1); }

// A tail call through a function pointer: an indirect jmp that no analysis
// can place, which instruction-mode return probes refuse.
__attribute__((noinline)) long pointed(long x) { return x * 5; }
long (*volatile indirect_callee)(long) = pointed;
__attribute__((noinline)) long via_pointer(long x) { return indirect_callee(x + 2); }

// A dense switch: -O2 makes it a jump table (an indirect jmp).
volatile long sink;
__attribute__((noinline)) long switcher(long x) {
    switch (x) {
    case 0: sink = 5; return x * 3;
    case 1: sink = 7; return x + 17;
    case 2: sink = 9; return x ^ 5;
    case 3: sink = 2; return x << 4;
    case 4: sink = 1; return x - 40;
    case 5: sink = 8; return x * x;
    case 6: sink = 3; return x / 3;
    default: return -1;
    }
}

int main(int argc, char** argv) {
    long n = argc > 1 ? atol(argv[1]) : 10;
    long sum = 0;
    for (long i = 0; i < n; ++i) {
        // An opaque argument, so the calls are not folded away.
        long x = i + (argc > 5 ? atol(argv[5]) : 0);
        sum += tail_outer(x);
    }
    printf("tail %ld\n", sum);
    printf("switch %ld\n", switcher(n % 8) + switcher(argc));
    printf("via %ld\n", via_pointer(argc));
    return 0;
}
