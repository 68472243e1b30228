/* A server-like load: each thread owns a table of live blocks of 8..1000
 * bytes and replaces random entries; every round the tables change hands
 * (a new thread takes over each table and the old one exits), so blocks
 * are freed by threads other than their allocator, long after. In the
 * spirit of larson.
 *   server [threads] [rounds] [replacements per round (thousands)] [table size] */
#include <pthread.h>
#include <stdio.h>
#include "common.h"

struct table { unsigned char **slots; size_t size; uint64_t rng; long replacements; };

static void *serve(void *arg) {
    struct table *t = arg;
    for (long n = 0; n < t->replacements; n++) {
        size_t i = xorshift(&t->rng) % t->size;
        free(t->slots[i]);
        size_t size = 8 + xorshift(&t->rng) % 993;
        t->slots[i] = malloc(size);
        touch(t->slots[i], size, (unsigned char)n);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = (int)arg_or(argc, argv, 1, 2);
    int rounds = (int)arg_or(argc, argv, 2, 10);
    long per_round = arg_or(argc, argv, 3, 1000) * 1000;
    size_t size = (size_t)arg_or(argc, argv, 4, 5000);
    struct table tables[64];
    for (int i = 0; i < threads; i++) {
        tables[i].slots = calloc(size, sizeof(unsigned char *));
        tables[i].size = size;
        tables[i].rng = (uint64_t)i * 977 + 3;
        tables[i].replacements = per_round;
    }
    pthread_t t[64];
    for (int r = 0; r < rounds; r++) {
        /* Each round, table i goes to a new thread; rotate the tables so
         * no thread frees only its own predecessor's blocks. */
        for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, serve, &tables[(i + r) % threads]);
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    }
    for (int i = 0; i < threads; i++) {
        for (size_t k = 0; k < size; k++) free(tables[i].slots[k]);
        free(tables[i].slots);
    }
    printf("server: %d rounds\n", rounds);
    return 0;
}
