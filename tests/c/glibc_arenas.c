/* Under the preload, glibc's allocator serves only the blocks above the
 * medium classes, and keeps at most one arena per CPU (at least 2): many
 * threads that each hold a large block at the same time must not give
 * glibc an arena each (each stays resident for the rest of the process).
 * Prints the number of glibc arenas (the <heap> elements of malloc_info),
 * the number of threads that held a block and the number of CPUs the
 * process may run on.
 *   glibc_arenas <threads> */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_barrier_t all_hold;

static void *hold(void *arg) {
    (void)arg;
    /* Well above the medium classes: glibc's. */
    char *block = malloc(16384);
    if (!block) return NULL;
    memset(block, 1, 16384);
    /* Every thread holds its block at once, so glibc cannot hand one
     * thread's arena to the next. */
    pthread_barrier_wait(&all_hold);
    free(block);
    return block;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 8;
    if (threads < 1 || threads > 256) return 2;
    pthread_t t[256];
    pthread_barrier_init(&all_hold, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, hold, NULL) != 0) return 3;
    pthread_barrier_wait(&all_hold);
    int held = 0;
    for (int i = 0; i < threads; i++) {
        void *r;
        pthread_join(t[i], &r);
        held += r != NULL;
    }
    char *xml = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&xml, &len);
    if (!out) return 4;
    malloc_info(0, out);
    fclose(out);
    int arenas = 0;
    for (char *p = xml; (p = strstr(p, "<heap nr=")) != NULL; p++) arenas++;
    free(xml);
    cpu_set_t set;
    int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    printf("%d arenas, %d threads, %d cpus\n", arenas, held, cpus);
    return 0;
}
