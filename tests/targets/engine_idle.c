// Prints "ready", waits for a line on stdin, passes its length to
// echo_len() and prints "got LINE".
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) size_t echo_len(size_t n) { return n; }

int main(void) {
    printf("ready\n");
    fflush(stdout);
    char line[256];
    if (!fgets(line, sizeof line, stdin)) return 1;
    line[strcspn(line, "\n")] = 0;
    printf("got %s %zu\n", line, echo_len(strlen(line)));
    return 0;
}
