/* Shared by the C benchmark workloads: a small PRNG and argument parsing. */
#ifndef PYMEM_BENCH_COMMON_H
#define PYMEM_BENCH_COMMON_H
#include <stdint.h>
#include <stdlib.h>

static inline uint64_t xorshift(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static inline long arg_or(int argc, char **argv, int i, long fallback) {
    return argc > i ? atol(argv[i]) : fallback;
}

/* Makes the compiler assume `p` is used, so it cannot elide a malloc/free
 * pair (GCC removes a malloc whose block never escapes). */
static inline void escape(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

/* Touch the first and last byte, as a program initialising a block does. */
static inline void touch(unsigned char *p, size_t size, unsigned char v) {
    p[0] = v;
    p[size - 1] = v;
}
#endif
