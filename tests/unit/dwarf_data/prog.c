/* Test program for the DWARF layer. Lines tagged MARK:<name> are found by
 * the tests scanning this text, so edits here cannot silently shift the
 * expected line numbers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum color { RED, GREEN = 5, BLUE };

struct req {
    int id;
    unsigned len;
    char name[16];
    struct req *next;
    enum color color;
};

typedef unsigned long counter_t;

static inline int square(int x)
{
    int sq = x * x; /* MARK:square_body */
    return sq;
}

__attribute__((noinline)) int add(int a, int b) /* MARK:add_decl */
{
    int sum = a + b; /* MARK:add_body */
    return sum;
}

__attribute__((noinline)) long process(struct req *r, int unused_param)
{
    counter_t total = 0;
    int i;
    const int unused_const = 42;
    for (i = 0; i < (int)r->len; i++) { /* MARK:loop */
        total += (counter_t)r->name[i % 16];
    }
    total += (counter_t)square(r->id); /* MARK:first_square */
    total += (counter_t)square(r->id + (int)total); /* MARK:second_square */
    return (long)total;
}

int main(int argc, char **argv)
{
    struct req r;
    memset(&r, 0, sizeof r);
    r.id = argc;
    r.len = (unsigned)(strlen(argv[0]) % 16);
    strncpy(r.name, argv[0], sizeof r.name - 1);
    r.next = &r;
    r.color = GREEN;
    printf("%d %ld\n", add(argc, 2), process(&r, 7)); /* MARK:main_call */
    return 0;
}
