// Calls tick(i) (or tiny(i) when argv[2] is "tiny") as fast as it can, in
// the main thread and in argv[1] more threads (default 0), until SIGUSR1;
// then checks every thread's own bookkeeping, prints "ok 1" (or "WRONG")
// and exits 0 (or 1). Prints "ready" once every thread runs.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t done;
static void on_usr1(int sig) { (void)sig; done = 1; }

__attribute__((noinline)) long tick(long i) { return i & 7; }

// Four bytes: too short for a jump, so the inline engine probes it with an
// int3 (and its SIGTRAP handler) instead.
long tiny(long i);
__asm__(".globl tiny\n.type tiny, @function\ntiny:\n\tlea (%rdi), %rax\n\tret\n.size tiny, .-tiny\n");

static long (*volatile call)(long) = tick;

static void *spin(void *arg) {
    (void)arg;
    long sum = 0, expected = 0;
    for (long i = 0; !done; ++i) {
        sum += call(i);
        expected += call == tick ? (i & 7) : i;
    }
    return (void *)(long)(sum == expected);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    if (threads > 64) threads = 64;
    if (argc > 2 && strcmp(argv[2], "tiny") == 0) call = tiny;
    signal(SIGUSR1, on_usr1);
    pthread_t ids[64];
    for (int t = 0; t < threads; ++t) pthread_create(&ids[t], NULL, spin, NULL);
    printf("ready\n");
    fflush(stdout);
    int good = spin(NULL) != NULL;
    for (int t = 0; t < threads; ++t) {
        void *result;
        pthread_join(ids[t], &result);
        good &= result != NULL;
    }
    printf("%s 1\n", good ? "ok" : "WRONG");
    return good ? 0 : 1;
}
