/* Single-threaded churn: a working set of live blocks of 8..512 bytes
 * (and an occasional larger one), each step freeing a random block and
 * allocating a new one of a random size in its place; the blocks are
 * touched. The pattern of interpreters and compilers (cfrac, espresso).
 *   churn [steps (millions)] [live blocks] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv) {
    long steps = (argc > 1 ? atol(argv[1]) : 20) * 1000000L;
    size_t live = argc > 2 ? (size_t)atol(argv[2]) : 10000;
    unsigned char **slots = calloc(live, sizeof *slots);
    uint64_t sum = 0;
    for (long s = 0; s < steps; s++) {
        size_t i = next() % live;
        if (slots[i]) {
            sum += slots[i][0];
            free(slots[i]);
        }
        uint64_t r = next();
        size_t size = (r & 1023) < 1020 ? 8 + (r >> 10) % 505 : 513 + (r >> 10) % 8000;
        slots[i] = malloc(size);
        slots[i][0] = (unsigned char)s;
        slots[i][size - 1] = 1;
    }
    for (size_t i = 0; i < live; i++) free(slots[i]);
    free(slots);
    printf("churn: %llu\n", (unsigned long long)sum);
    return 0;
}
