// A function with inlined instances and an out-of-line copy (-O2).
#include <stdio.h>
#include <stdlib.h>

static inline __attribute__((always_inline)) int scale(int v, int factor) {
    return v * factor + 1;
}

// Forces an out-of-line copy of scale besides its inlined instances.
int (*volatile scale_pointer)(int, int) = scale;

__attribute__((noinline)) int use_a(int v) { return scale(v, 3); }
__attribute__((noinline)) int use_b(int v) { return scale(v + 1, 5) * 2; }

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 4;
    long total = 0;
    for (int i = 0; i < n; ++i) total += use_a(i);        // n inlined hits in use_a
    for (int i = 0; i < 2 * n; ++i) total += use_b(i);    // 2n inlined hits in use_b
    total += scale_pointer(n, 7);                          // 1 out-of-line hit
    printf("total %ld\n", total);
    return 0;
}
