// A static program: no dynamic loader, so no agent can be preloaded into
// it (the inline engine must say so; --engine auto falls back to ptrace).
#include <stdio.h>

__attribute__((noinline)) int twice(int x) { return 2 * x; }

int main(void) {
    printf("%d\n", twice(21));
    return 0;
}
