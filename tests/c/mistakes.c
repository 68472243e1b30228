/* One memory mistake per run, for the debug allocator to report
 * (PYMEM_DEBUG=1 with the preload): the first argument names it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void free_sized(void *, size_t) __attribute__((weak));

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *m = argv[1];
    /* Keep the compiler from reasoning about the mistakes. */
    char *volatile p;
    if (!strcmp(m, "double-free-small")) {
        p = malloc(40);
        free(p);
        free(p);
    } else if (!strcmp(m, "double-free-large")) {
        p = malloc(5000);
        free(p);
        free(p);
    } else if (!strcmp(m, "overrun")) {
        p = malloc(40);
        p[40] = 'x';
        free(p);
    } else if (!strcmp(m, "wild")) {
        p = (char *)(uintptr_t)0xDDDDDDDDDDDDDDDDull;
        free(p);
    } else if (!strcmp(m, "stack")) {
        char local[64];
        p = local + 16;
        free(p);
    } else if (!strcmp(m, "wrong-size")) {
        if (!free_sized) return 3;
        p = malloc(100);
        free_sized(p, 64);
    } else {
        return 2;
    }
    puts("not caught");
    return 0;
}
