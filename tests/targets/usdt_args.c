// SDT markers for the USDT tests (tests/integration/cli_usdt_test.cpp).
// Every value is known by construction from i, the iteration:
//
//   usdt:types(s1, s2, s4, s8, u1, u2, u4, u8, name)   one per iteration
//       s1 = -1-i (signed char)   s2 = -300-i (short)   s4 = -70000-i (int)
//       s8 = -5000000000-i (long) u1 = 200+i            u2 = 65000+i
//       u4 = 4000000000+i         u8 = 18000000000000000000+i
//       name = kNames[i % 3]
//   usdt:twice(1) and usdt:twice(2)                     the same marker at two sites
//   usdt:gated(i)    only while its semaphore is raised (a tracer's job)
//
// Prints "iterations N gated G semaphore S": how many gated markers fired
// and the semaphore's value at the last iteration (0 and 0 untraced).
// Built at -O0 (memory operands), -O2 (registers, immediates) and as a
// non-PIE executable: sys/sdt.h writes different argument specs for each.
#define _SDT_HAS_SEMAPHORES 1
#include <stdio.h>
#include <stdlib.h>
#include <sys/sdt.h>

// With _SDT_HAS_SEMAPHORES every marker has one; only usdt:gated's is tested.
unsigned short usdt_gated_semaphore __attribute__((section(".probes")));
unsigned short usdt_types_semaphore __attribute__((section(".probes")));
unsigned short usdt_twice_semaphore __attribute__((section(".probes")));

static const char *const kNames[] = {"alpha", "beta", "gamma"};

__attribute__((noinline)) static void emit(int i) {
    signed char s1 = (signed char)(-1 - i);
    short s2 = (short)(-300 - i);
    int s4 = -70000 - i;
    long s8 = -5000000000L - i;
    unsigned char u1 = (unsigned char)(200 + i);
    unsigned short u2 = (unsigned short)(65000 + i);
    unsigned int u4 = 4000000000u + (unsigned)i;
    unsigned long u8 = 18000000000000000000ul + (unsigned long)i;
    const char *name = kNames[i % 3];
    STAP_PROBE9(usdt, types, s1, s2, s4, s8, u1, u2, u4, u8, name);
}

__attribute__((noinline)) static void twice(void) {
    STAP_PROBE1(usdt, twice, 1);
    STAP_PROBE1(usdt, twice, 2);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 5;
    if (n < 0 || n > 50) return 2;  // keeps every value in its type's range
    int gated = 0;
    unsigned semaphore = 0;
    for (int i = 0; i < n; ++i) {
        emit(i);
        twice();
        semaphore = usdt_gated_semaphore;
        if (usdt_gated_semaphore) {
            ++gated;
            STAP_PROBE1(usdt, gated, i);
        }
    }
    printf("iterations %d gated %d semaphore %u\n", n, gated, semaphore);
    return 0;
}
