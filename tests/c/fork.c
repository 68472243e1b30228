/* fork while other threads allocate: every child must be able to allocate
 * and free (small, large, aligned, from a new thread too) and exit cleanly.
 *   fork [forks] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;

static void *churn(void *arg) {
    uint64_t x = (uintptr_t)arg * 88172645463325252ull + 1;
    void *slots[64] = {0};
    while (!stop) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int i = (int)(x % 64);
        free(slots[i]);
        slots[i] = malloc(x % 4 ? 8 + (x >> 8) % 500 : 600 + (x >> 8) % 100000);
        memset(slots[i], 1, 8);
    }
    for (int i = 0; i < 64; i++) free(slots[i]);
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) free(malloc(16 + i % 3000));
    return NULL;
}

static int child(void) {
    void *blocks[1000];
    for (int i = 0; i < 1000; i++) {
        blocks[i] = i % 10 ? malloc(16 + i % 500) : calloc(1, 4096 + i);
        if (!blocks[i]) return 2;
        memset(blocks[i], 7, 16);
    }
    void *aligned = NULL;
    if (posix_memalign(&aligned, 4096, 100)) return 3;
    for (int i = 0; i < 1000; i++) free(blocks[i]);
    free(aligned);
    pthread_t t;
    if (pthread_create(&t, NULL, child_thread, NULL)) return 4;
    pthread_join(t, NULL);
    return 0;
}

int main(int argc, char **argv) {
    int forks = argc > 1 ? atoi(argv[1]) : 100;
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) pthread_create(&threads[i], NULL, churn, (void *)(uintptr_t)(i + 1));
    for (int f = 0; f < forks; f++) {
        pid_t pid = fork();
        if (pid == 0) _exit(child());
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "fork %d: child failed (status %d)\n", f, status);
            return 1;
        }
    }
    stop = 1;
    for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
    printf("fork: %d children\n", forks);
    return 0;
}
