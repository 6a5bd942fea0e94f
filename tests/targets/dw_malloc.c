// mallocs 123456 bytes (the tests look for _int_malloc's `bytes` = 123456).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    char *p = malloc(123456);
    if (!p) return 1;
    memset(p, 1, 123456);
    printf("sum %d\n", p[0] + p[123455]);
    free(p);
    return 0;
}
