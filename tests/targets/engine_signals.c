// Signals that are the program's own must reach it under tracing: raised
// SIGTRAP and SIGUSR1, and an int3 in its own code. Prints the counts its
// handlers saw.
//
// With argument "ack": prints "ready", then calls step(i) in a loop until
// SIGUSR1, answering every SIGUSR2 with one byte '+' on stdout (so a
// sender keeps one signal in flight and notices one that never arrives);
// prints "acked N" at the end.
//
// With argument "handler": raise_inside() raises SIGUSR2 from its own
// first bytes (a tgkill system call is its first instruction), so the
// handler interrupts it 2 bytes in; the handler prints "in handler" and
// waits for a line on stdin. Back in raise_inside, the program calls it
// 10 more times as a harmless getpid, prints "ok 10" and exits after
// another line on stdin.
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

// syscall; nop; nop; nop; ret: the caller loads the system call's registers.
long raise_inside(void);
__asm__(".globl raise_inside\n.type raise_inside, @function\nraise_inside:\n\tsyscall\n\tnop\n\tnop\n\tnop\n\tret\n"
        ".size raise_inside, .-raise_inside\n");

static long call_raise_inside(long number, long a1, long a2, long a3) {
    long result;
    register long rdi __asm__("rdi") = a1;
    register long rsi __asm__("rsi") = a2;
    register long rdx __asm__("rdx") = a3;
    __asm__ volatile("call raise_inside" : "=a"(result) : "a"(number), "r"(rdi), "r"(rsi), "r"(rdx) : "rcx", "r11", "memory");
    return result;
}

static void on_usr2_wait(int sig) {
    (void)sig;
    static const char line[] = "in handler\n";
    (void)!write(1, line, sizeof line - 1);
    char c = 0;
    while (read(0, &c, 1) == 1 && c != '\n') {}
}

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
    if (argc > 1 && strcmp(argv[1], "handler") == 0) {
        signal(SIGUSR2, on_usr2_wait);
        printf("ready\n");
        fflush(stdout);
        call_raise_inside(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGUSR2);
        int calls = 0;
        for (int i = 0; i < 10; ++i) calls += call_raise_inside(SYS_getpid, 0, 0, 0) == getpid();
        printf("ok %d\n", calls);
        fflush(stdout);
        char c = 0;
        while (read(0, &c, 1) == 1 && c != '\n') {}  // exits once told: the tracer is gone by then
        return 0;
    }
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
