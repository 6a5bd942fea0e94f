// Target of the DWARF-argument tests (tests/integration/cli_dwarf_test.cpp).
// Every value an event shows is known by construction from this source;
// lines the tests probe carry a "@line:NAME" marker the tests look up.
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum color { RED, GREEN = 5, BLUE };

struct point {
    int x;
    int y;
};

struct request {
    int id;
    unsigned short flags;
    char name[8];
    const char *path;
    struct point where;
    enum color color;
    double weight;
    bool urgent;
    unsigned kind : 3;
    unsigned level : 5;
    struct request *next;
};

static int table[5] = {10, 20, 30, 40, 50};

__attribute__((noinline)) int handle(struct request *req, int count, const char *label, char tag, float ratio) {
    int total = 0;
    for (int i = 0; i < count; ++i) total += req->id + i;
    long scaled = (long)total * 3;
    printf("handle %s %c %d %ld %.2f\n", label, tag, total, scaled, ratio); // @line:after_scaled
    return total;
}

__attribute__((noinline)) static int sum_table(const int *values, int n) {
    int sum = 0;
    for (int i = 0; i < n; ++i) sum += values[i];
    return sum;
}

__attribute__((noinline)) int by_value(struct point p, enum color c, bool flag) {
    return p.x * 10 + p.y + (int)c + (flag ? 1000 : 0);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 3;
    struct request second = {.id = 2, .flags = 0x20, .name = "second", .path = "/b",
                             .where = {3, 4}, .color = BLUE, .weight = 0.25, .urgent = false,
                             .kind = 2, .level = 17, .next = NULL};
    struct request first = {.id = 7, .flags = 0x10, .name = "first", .path = "/srv/a",
                            .where = {-1, 2}, .color = GREEN, .weight = 1.5, .urgent = true,
                            .kind = 5, .level = 9, .next = &second};
    long grand = 0;
    for (int r = 0; r < rounds; ++r) {
        grand += handle(&first, r + 1, "one", 'x', 0.5f);
        grand += by_value(first.where, first.color, r % 2 == 0);
    }
    grand += sum_table(table, 5);
    printf("grand %ld\n", grand);
    return 0;
}
