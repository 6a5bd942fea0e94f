// Target for attach tests: says "ready", then calls tick() forever at full
// speed until SIGTERM, and reports how many calls it made and whether their
// arguments were all intact.
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t done;
static void on_term(int sig) { (void)sig; done = 1; }

__attribute__((noinline)) long tick(long i, long twice) { return twice - 2 * i; }

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    printf("ready\n");
    fflush(stdout);
    long calls = 0, bad = 0;
    while (!done) {
        bad += tick(calls, 2 * calls) != 0;
        calls++;
    }
    printf("calls>0=%d bad=%ld\n", calls > 0, bad);
    return 0;
}
