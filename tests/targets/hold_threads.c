// Target for --gdb-server thread tests: main says "ready", waits for
// SIGUSR1 and then calls held_here(7) (the test holds it there); a second
// thread waits for SIGUSR2, calls worker_step() and says "worker ran" (so
// a test sees whether it runs while main is held, and through a
// breakpoint there). SIGTERM (after both) ends it with
// "held=N worker=M".
#include <pthread.h>
#include <signal.h>
#include <stdio.h>

static long worker_runs;

__attribute__((noinline)) long held_here(long n) { return n * 3; }
__attribute__((noinline)) long worker_step(long n) { return n + 1; }

static void* worker(void* arg) {
    (void)arg;
    sigset_t wanted;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGUSR2);
    int signal = 0;
    sigwait(&wanted, &signal);
    worker_runs = worker_step(worker_runs);
    printf("worker ran\n");
    fflush(stdout);
    return NULL;
}

int main(void) {
    sigset_t wanted;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGUSR1);
    sigaddset(&wanted, SIGUSR2);
    sigaddset(&wanted, SIGTERM);
    sigprocmask(SIG_BLOCK, &wanted, NULL);  // the worker inherits the mask
    pthread_t thread;
    pthread_create(&thread, NULL, worker, NULL);
    printf("ready\n");
    fflush(stdout);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    int signal = 0;
    sigwait(&usr1, &signal);
    long held = held_here(7);
    printf("held_here=%ld\n", held);
    fflush(stdout);
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigwait(&term, &signal);
    pthread_join(thread, NULL);
    printf("held=%ld worker=%ld\n", held, worker_runs);
    return 0;
}
