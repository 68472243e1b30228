/* Cache scratching: each thread repeatedly frees a small block allocated by
 * the main thread next to the others' and allocates its own, then writes it
 * many times; an allocator that hands neighbouring blocks of one cache line
 * to different threads makes them fight over it (the spirit of
 * cache-scratch).
 *   scratch [threads] [iterations (thousands)] [writes per iteration] */
#include <pthread.h>
#include <stdio.h>
#include "common.h"

static long iterations, writes;
static unsigned char *initial[64];

static void *scratch(void *arg) {
    int id = (int)(uintptr_t)arg;
    unsigned char *p = initial[id];
    for (long i = 0; i < iterations; i++) {
        free(p);
        p = malloc(8);
        escape(p);
        for (long w = 0; w < writes; w++) {
            p[w & 7] = (unsigned char)(p[w & 7] + 1);
            escape(p);
        }
    }
    free(p);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = (int)arg_or(argc, argv, 1, 2);
    iterations = arg_or(argc, argv, 2, 1000) * 1000;
    writes = arg_or(argc, argv, 3, 50);
    for (int i = 0; i < threads; i++) initial[i] = malloc(8);
    pthread_t t[64];
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, scratch, (void *)(uintptr_t)i);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("scratch: %d threads\n", threads);
    return 0;
}
