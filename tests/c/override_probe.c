/* Loaded with dlopen by tests/cabi_override.rs: C code of a shared library
 * whose malloc must be the executable's (PyMalloc's, with the `override`
 * feature). */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

/* Allocates `n` bytes with malloc and returns the block (for the Rust side
 * to inspect and free). */
void *probe_malloc(size_t n) { return malloc(n); }

/* Frees a block the Rust side allocated. */
void probe_free(void *p) { free(p); }

/* Usable size as this library sees it. */
size_t probe_usable_size(void *p) { return malloc_usable_size(p); }

/* A copy made by libc itself (strdup calls malloc internally). */
char *probe_strdup(const char *s) { return strdup(s); }
