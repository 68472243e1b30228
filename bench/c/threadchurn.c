/* Thread churn: waves of short-lived threads, each allocating and freeing
 * small and medium blocks and leaving some of them for the next wave to
 * free (the shape of thread-per-request servers and of glibc-thread).
 *   threadchurn [waves] [threads per wave] [operations per thread] */
#include <pthread.h>
#include <stdio.h>
#include "common.h"

#define KEEP 128
static unsigned char *handed[64][KEEP];
static long ops;

static void *work(void *arg) {
    int id = (int)(uintptr_t)arg;
    uint64_t rng = (uint64_t)id * 2654435761u + 17;
    unsigned char *local[256] = {0};
    /* Free what the previous thread of this slot left. */
    for (int i = 0; i < KEEP; i++) {
        free(handed[id][i]);
        handed[id][i] = NULL;
    }
    for (long n = 0; n < ops; n++) {
        int i = (int)(xorshift(&rng) % 256);
        free(local[i]);
        size_t size = (xorshift(&rng) & 7) ? 8 + xorshift(&rng) % 248 : 256 + xorshift(&rng) % 3800;
        local[i] = malloc(size);
        touch(local[i], size, (unsigned char)n);
    }
    for (int i = 0; i < 256; i++) {
        if (i < KEEP) handed[id][i] = local[i];
        else free(local[i]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int waves = (int)arg_or(argc, argv, 1, 300);
    int threads = (int)arg_or(argc, argv, 2, 4);
    ops = arg_or(argc, argv, 3, 20000);
    pthread_t t[64];
    for (int w = 0; w < waves; w++) {
        for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, (void *)(uintptr_t)i);
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    }
    for (int i = 0; i < threads; i++)
        for (int k = 0; k < KEEP; k++) free(handed[i][k]);
    printf("threadchurn: %d waves\n", waves);
    return 0;
}
