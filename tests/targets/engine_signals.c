// Signals that are the program's own must reach it under tracing: raised
// SIGTRAP and SIGUSR1, and an int3 in its own code. Prints the counts its
// handlers saw.
//
// With argument "ack": prints "ready", then calls step(i) in a loop until
// SIGUSR1, answering every SIGUSR2 with one byte '+' on stdout (so a
// sender keeps one signal in flight and notices one that never arrives);
// prints "acked N" at the end.
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t traps, usr1, usr2;
static void on_trap(int sig) { (void)sig; traps++; }
static void on_usr1(int sig) { (void)sig; usr1++; }
static void on_usr2(int sig) {
    (void)sig;
    usr2++;
    (void)!write(1, "+", 1);
}

__attribute__((noinline)) long step(long i) { return i; }

int main(int argc, char **argv) {
    signal(SIGTRAP, on_trap);
    signal(SIGUSR1, on_usr1);
    long sum = 0;
    if (argc > 1 && strcmp(argv[1], "ack") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr2;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGUSR2, &sa, NULL);
        printf("ready\n");
        fflush(stdout);
        for (long i = 0; !usr1; ++i) sum += step(i);
        printf("\nacked %d\n", (int)usr2);
        return 0;
    }
    for (long i = 0; i < 3; ++i) {
        sum += step(i);
        raise(SIGTRAP);
        raise(SIGUSR1);
        __asm__ volatile("int3");
    }
    printf("traps %d usr1 %d sum %ld\n", (int)traps, (int)usr1, sum);
    return 0;
}
