// THREADS threads (argv[3], default 8, at most 512), each calling
// hit(index) ITER times (argv[1], default 20000), all alive at once (a
// barrier before and after the calls); prints every thread's total. With
// ROUNDS (argv[2]), the threads are created and joined that many times,
// one round after another: many short-lived threads.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

enum { kMaxThreads = 512 };
static long iterations = 20000;
static long totals[kMaxThreads];
static pthread_barrier_t together;

__attribute__((noinline)) long hit(long index) { return index + 1; }

static void *worker(void *arg) {
    long index = (long)arg, total = 0;
    pthread_barrier_wait(&together);
    for (long i = 0; i < iterations; ++i) total += hit(index);
    totals[index] = total;
    pthread_barrier_wait(&together);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) iterations = atol(argv[1]);
    long rounds = argc > 2 ? atol(argv[2]) : 1;
    long count = argc > 3 ? atol(argv[3]) : 8;
    if (count < 1 || count > kMaxThreads) count = 8;
    for (long round = 0; round < rounds; ++round) {
        pthread_t threads[kMaxThreads];
        pthread_barrier_init(&together, NULL, (unsigned)count);
        for (long i = 0; i < count; ++i) pthread_create(&threads[i], NULL, worker, (void *)i);
        for (long i = 0; i < count; ++i) pthread_join(threads[i], NULL);
        pthread_barrier_destroy(&together);
        for (long i = 0; i < count; ++i) printf("thread %ld total %ld\n", i, totals[i]);
    }
    return 0;
}
