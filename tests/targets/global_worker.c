// Target for global-probe tests: names itself (comm) after argv[1], says
// "ready", then calls global_tick() about every millisecond until SIGTERM,
// and reports whether every call's arguments were intact. The pause keeps
// several of them cheap on a shared machine; no test waits on it.
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

static volatile sig_atomic_t done;
static void on_term(int sig) { (void)sig; done = 1; }

__attribute__((noinline)) long global_tick(long i, long twice) { return twice - 2 * i; }

int main(int argc, char** argv) {
    if (argc > 1) prctl(PR_SET_NAME, argv[1], 0, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    printf("ready\n");
    fflush(stdout);
    long calls = 0, bad = 0;
    const struct timespec pause = {0, 1000000};
    while (!done) {
        bad += global_tick(calls, 2 * calls) != 0;
        calls++;
        nanosleep(&pause, NULL);
    }
    printf("calls>0=%d bad=%ld\n", calls > 0, bad);
    return 0;
}
