// Target for `p VAR` at the hold prompt: mix() has parameters, a local, a
// variable of an inner block, and reads a global and a unit static; its
// values at each hit follow from the construction (first hit of the loop
// body line: n=10 local=20 inner=0 g_total=5 s_calls=1 p->a=3 p->b=4).
// Built at -O0 (hold_vars) and -O2 (hold_vars_opt, where the variables
// have location lists).
#include <stdio.h>

struct pair {
    int a;
    long b;
};

long g_total = 5;
static int s_calls;

__attribute__((noinline)) long mix(long n, struct pair* p) {
    long local = n * 2;
    s_calls++;
    for (int inner = 0; inner < 2; inner++) {
        g_total += inner + local + p->a; /* the held line */
    }
    return g_total + p->b + s_calls;
}

int main(void) {
    struct pair p = {3, 4};
    long sum = 0;
    for (long i = 0; i < 3; i++) sum += mix(i + 10, &p);
    printf("sum=%ld\n", sum);
    return 0;
}
