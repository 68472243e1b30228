/* A long-running program with a slow leak: small and medium blocks churn
 * through a working set while one allocation in a hundred is never freed
 * (the spirit of mleak): the live set grows steadily, and an allocator's
 * overhead on it shows in peak RSS.
 *   leak [steps (millions)] */
#include <stdio.h>
#include "common.h"

int main(int argc, char **argv) {
    long steps = arg_or(argc, argv, 1, 10) * 1000000L;
    enum { WORK = 4096 };
    unsigned char *work[WORK] = {0};
    uint64_t rng = 4242;
    unsigned long leaked = 0;
    for (long s = 0; s < steps; s++) {
        size_t size = 16 + xorshift(&rng) % 700;
        unsigned char *p = malloc(size);
        touch(p, size, (unsigned char)s);
        if (xorshift(&rng) % 100 == 0) {
            leaked += size; /* never freed */
            continue;
        }
        int i = (int)(xorshift(&rng) % WORK);
        free(work[i]);
        work[i] = p;
    }
    for (int i = 0; i < WORK; i++) free(work[i]);
    printf("leak: %lu bytes leaked\n", leaked);
    return 0;
}
