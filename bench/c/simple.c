/* The tightest loop: malloc and free of one small size at a time, on one
 * thread or several (the spirit of glibc's simple and thread benchmarks).
 *   simple [threads] [iterations (millions)] */
#include <pthread.h>
#include <stdio.h>
#include "common.h"

static long iterations;

static void *loop(void *arg) {
    size_t size = 16 + (size_t)(uintptr_t)arg * 48 % 400;
    unsigned long sum = 0;
    for (long i = 0; i < iterations; i++) {
        unsigned char *p = malloc(size);
        p[0] = (unsigned char)i;
        escape(p);
        sum += p[0];
        free(p);
    }
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv) {
    int threads = (int)arg_or(argc, argv, 1, 1);
    iterations = arg_or(argc, argv, 2, 50) * 1000000L;
    pthread_t t[64];
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, loop, (void *)(uintptr_t)i);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("simple: %d threads\n", threads);
    return 0;
}
