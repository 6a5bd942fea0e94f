// Signals that are the program's own must reach it under tracing: raised
// SIGTRAP and SIGUSR1, and an int3 in its own code. Prints the counts its
// handlers saw.
#include <signal.h>
#include <stdio.h>

static volatile sig_atomic_t traps, usr1;
static void on_trap(int sig) { (void)sig; traps++; }
static void on_usr1(int sig) { (void)sig; usr1++; }

__attribute__((noinline)) long step(long i) { return i; }

int main(void) {
    signal(SIGTRAP, on_trap);
    signal(SIGUSR1, on_usr1);
    long sum = 0;
    for (long i = 0; i < 3; ++i) {
        sum += step(i);
        raise(SIGTRAP);
        raise(SIGUSR1);
        __asm__ volatile("int3");
    }
    printf("traps %d usr1 %d sum %ld\n", (int)traps, (int)usr1, sum);
    return 0;
}
