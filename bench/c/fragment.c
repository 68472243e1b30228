/* A fragmentation-heavy trace: phases that fill memory with one mix of
 * sizes, free most of it at random, then fill again with another mix, so
 * an allocator that cannot reuse or return the holes grows. Peak RSS is
 * the figure to watch.
 *   fragment [phases] [blocks per phase (thousands)] */
#include <stdio.h>
#include "common.h"

int main(int argc, char **argv) {
    int phases = (int)arg_or(argc, argv, 1, 12);
    size_t n = (size_t)arg_or(argc, argv, 2, 400) * 1000;
    unsigned char **live = calloc(n, sizeof *live);
    uint64_t rng = 12345;
    unsigned long sum = 0;
    for (int phase = 0; phase < phases; phase++) {
        /* Each phase favours other sizes: small, then medium, then mixed. */
        size_t lo = phase % 3 == 0 ? 8 : phase % 3 == 1 ? 200 : 16;
        size_t span = phase % 3 == 0 ? 120 : phase % 3 == 1 ? 1800 : 600;
        for (size_t i = 0; i < n; i++) {
            if (live[i]) continue;
            size_t size = lo + xorshift(&rng) % span;
            live[i] = malloc(size);
            touch(live[i], size, (unsigned char)phase);
        }
        /* Keep one block in eight. */
        for (size_t i = 0; i < n; i++) {
            if (live[i] && xorshift(&rng) % 8 != 0) {
                sum += live[i][0];
                free(live[i]);
                live[i] = NULL;
            }
        }
    }
    for (size_t i = 0; i < n; i++) free(live[i]);
    free(live);
    printf("fragment: %lu\n", sum);
    return 0;
}
