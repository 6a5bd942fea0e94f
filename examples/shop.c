// The bundled example: a tiny order-pricing loop with a function worth
// probing and an SDT marker. `./run demo` lists and traces it.
#include <stdio.h>
#include <sys/sdt.h>

struct order {
    int id;
    int quantity;
    const char *item;
};

// noinline: the demo probes its entry and its return.
__attribute__((noinline)) long price(const struct order *o, long unit_cents) {
    long total = (long)o->quantity * unit_cents;
    if (o->quantity >= 10) total -= total / 10;  // bulk discount
    DTRACE_PROBE3(shop, priced, o->id, o->item, total);
    return total;
}

int main(void) {
    static const struct order orders[] = {
        {1, 2, "apple"}, {2, 12, "pear"}, {3, 1, "melon"}, {4, 30, "fig"}, {5, 5, "plum"},
    };
    static const long unit_cents[] = {40, 55, 300, 25, 35};
    long sum = 0;
    for (int i = 0; i < 5; i++) {
        long total = price(&orders[i], unit_cents[i]);
        printf("order %d: %d x %s = %ld.%02ld\n", orders[i].id, orders[i].quantity, orders[i].item,
               total / 100, total % 100);
        sum += total;
    }
    printf("sum = %ld.%02ld\n", sum / 100, sum % 100);
    return 0;
}
