/* Large blocks: a few live blocks of 64 KiB .. 16 MiB, replaced at random
 * and touched page by page (the spirit of malloc-large).
 *   large [replacements] */
#include <stdio.h>
#include "common.h"

int main(int argc, char **argv) {
    long steps = arg_or(argc, argv, 1, 2000);
    unsigned char *live[8] = {0};
    uint64_t rng = 777;
    unsigned long sum = 0;
    for (long s = 0; s < steps; s++) {
        int i = (int)(xorshift(&rng) % 8);
        if (live[i]) sum += live[i][0];
        free(live[i]);
        size_t size = (size_t)65536 << (xorshift(&rng) % 9);
        size += xorshift(&rng) % size;
        live[i] = malloc(size);
        for (size_t off = 0; off < size; off += 4096) live[i][off] = (unsigned char)s;
    }
    for (int i = 0; i < 8; i++) free(live[i]);
    printf("large: %lu\n", sum);
    return 0;
}
