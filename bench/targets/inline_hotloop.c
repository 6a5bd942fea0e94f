// The traced program of bench/inline.sh: calls one probe site N times and
// times its own loop (start-up and attach excluded), like hotloop.c, with a
// third site a jump cannot replace (a 4-byte function: the inline engine
// puts an int3 there, handled by the agent's SIGTRAP handler).
// Usage: inline_hotloop push|lea|short N [ROUNDS]  ->  "ns_per_call=X sum=S"
// With ROUNDS, the loop of N calls runs ROUNDS times with a 20 ms pause
// between rounds, and the fastest round is reported: with N small enough
// for the tracer's rings, and the tracer draining them every millisecond
// during the pauses, that is the cost of a hit whose record is delivered
// (not dropped at a full ring).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

long site_push(long a, long b);
long site_lea(long a, long b);
long site_short(long a, long b);

int main(int argc, char** argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: inline_hotloop push|lea|short N [ROUNDS]\n");
        return 2;
    }
    long (*site)(long, long) = strcmp(argv[1], "lea") == 0     ? site_lea
                               : strcmp(argv[1], "short") == 0 ? site_short
                                                               : site_push;
    long n = atol(argv[2]);
    long rounds = argc == 4 ? atol(argv[3]) : 1;
    long sum = 0;
    double best = 0;
    for (long r = 0; r < rounds; r++) {
        if (r > 0) {
            struct timespec pause = {0, 20000000};
            nanosleep(&pause, NULL);
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long i = 0; i < n; i++) sum += site(i, 1);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
        if (r == 0 || ns < best) best = ns;
    }
    printf("ns_per_call=%.1f sum=%ld\n", best / n, sum);
    return 0;
}
