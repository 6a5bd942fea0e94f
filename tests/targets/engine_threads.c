// 8 threads, each calling hit(index) ITER times (argv[1], default 20000);
// prints every thread's total. With ROUNDS (argv[2]), the 8 threads are
// created and joined that many times, one round after another: many
// short-lived threads, at most 8 alive at once.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static long iterations = 20000;
static long totals[8];

__attribute__((noinline)) long hit(long index) { return index + 1; }

static void *worker(void *arg) {
    long index = (long)arg, total = 0;
    for (long i = 0; i < iterations; ++i) total += hit(index);
    totals[index] = total;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) iterations = atol(argv[1]);
    long rounds = argc > 2 ? atol(argv[2]) : 1;
    for (long round = 0; round < rounds; ++round) {
        pthread_t threads[8];
        for (long i = 0; i < 8; ++i) pthread_create(&threads[i], NULL, worker, (void *)i);
        for (int i = 0; i < 8; ++i) pthread_join(threads[i], NULL);
        for (int i = 0; i < 8; ++i) printf("thread %d total %ld\n", i, totals[i]);
    }
    return 0;
}
