// Calls work(7) 10 times, then executes itself with "stage2", which calls
// work(8) 10 times. With "wait", each stage first prints "ready" and reads
// a line from stdin, so a test can attach before the calls.
#include <stdio.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) long work(long what) { return what; }

int main(int argc, char **argv) {
    int stage2 = 0, wait = 0;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "stage2") == 0) stage2 = 1;
        if (strcmp(argv[i], "wait") == 0) wait = 1;
    }
    long stage = stage2 ? 8 : 7;
    if (wait) {
        char line[64];
        printf("ready\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) return 1;
    }
    long sum = 0;
    for (int i = 0; i < 10; ++i) sum += work(stage);
    printf("stage %ld sum %ld\n", stage, sum);
    fflush(stdout);
    if (stage == 7) {
        execl("/proc/self/exe", argv[0], "stage2", wait ? "wait" : (char *)NULL, (char *)NULL);
        perror("execl");
        return 1;
    }
    return 0;
}
