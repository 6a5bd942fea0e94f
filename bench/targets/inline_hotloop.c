// The traced program of bench/inline.sh: calls one probe site N times and
// times its own loop (start-up and attach excluded), like hotloop.c, with a
// third site a jump cannot replace (a 4-byte function: the inline engine
// puts an int3 there, handled by the agent's SIGTRAP handler).
// Usage: inline_hotloop push|lea|short N  ->  "ns_per_call=X sum=S"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

long site_push(long a, long b);
long site_lea(long a, long b);
long site_short(long a, long b);

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: inline_hotloop push|lea|short N\n");
        return 2;
    }
    long (*site)(long, long) = strcmp(argv[1], "lea") == 0     ? site_lea
                               : strcmp(argv[1], "short") == 0 ? site_short
                                                               : site_push;
    long n = atol(argv[2]);
    long sum = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) sum += site(i, 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("ns_per_call=%.1f sum=%ld\n", ns / n, sum);
    return 0;
}
