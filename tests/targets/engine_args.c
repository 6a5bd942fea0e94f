// Calls add_pair(i, i * 2) for i in 0..N-1 (N = argv[1], default 1000),
// tag() with three known strings and peek() with a pointer 56 bytes into a
// 64-byte-aligned pattern (byte k is k * 7 mod 256, so probes can read
// words around a cache-line boundary), then prints what it computed, so a
// traced run's output can be compared with an untraced one byte for byte.
#include <stdio.h>
#include <stdlib.h>

long engine_global = 0x1234abcd;

__attribute__((noinline)) long add_pair(long a, long b) { return a + b; }

__attribute__((noinline)) int tag(const char *text, int n) { return (int)text[0] + n; }

_Alignas(64) unsigned char engine_bytes[192];

__attribute__((noinline)) long peek(const unsigned char *p) { return p[0] + p[15]; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    long sum = 0;
    for (long i = 0; i < n; ++i) sum += add_pair(i, i * 2);
    int tags = tag("alpha", 1) + tag("beta", 2) + tag("gamma", 3);
    for (int k = 0; k < 192; ++k) engine_bytes[k] = (unsigned char)(k * 7);
    printf("sum %ld tags %d peek %ld\n", sum, tags, peek(engine_bytes + 56));
    return 0;
}
