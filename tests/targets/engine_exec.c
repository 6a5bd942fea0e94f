// Calls work(7) 10 times, then executes itself with "stage2", which calls
// work(8) 10 times.
#include <stdio.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) long work(long what) { return what; }

int main(int argc, char **argv) {
    long stage = argc > 1 && strcmp(argv[1], "stage2") == 0 ? 8 : 7;
    long sum = 0;
    for (int i = 0; i < 10; ++i) sum += work(stage);
    printf("stage %ld sum %ld\n", stage, sum);
    fflush(stdout);
    if (stage == 7) {
        execl("/proc/self/exe", argv[0], "stage2", (char *)NULL);
        perror("execl");
        return 1;
    }
    return 0;
}
