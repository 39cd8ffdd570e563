/*
 * A shared-memory region user written against <kvmchan-shmem.h> only, driven by
 * test/clib/shmem.test.ts: one command per stdin line, one answer per line on stdout,
 * "ok ..." or "err <ERRNO-NAME>".
 *
 *   share <domain> <pages>      -> ok <id>              kvmchan_shmem_share
 *   map <domain> <id>           -> ok <length>          kvmchan_shmem_map
 *   params <domain> <id>        -> ok <offset> <length> kvmchan_shmem_mmap_params, then our own
 *                                                       mmap() at the offset; we close the fd
 *   fill <id> <seed>            -> ok <sha256>          the whole mapping, xorshift32 bytes (as
 *                                                       test/helpers/prng.ts Prng.bytes)
 *   hash <id>                   -> ok <sha256>
 *   unmap <id>                  -> ok                   kvmchan_shmem_unmap, or munmap() for params
 *   release <id>                -> ok                   kvmchan_shmem_release
 *   threads <domain> <n>        -> ok                   n threads share, map, unmap, release at once
 * Exits at end of input (kvmchan_shmem_close).
 */
#define _GNU_SOURCE
#include <kvmchan-shmem.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sha256.h"

#define MAX_MAPS 64

struct map {
    uint32_t id;
    void *addr;
    size_t length;
    int own; /* mapped by us from mmap parameters */
};

static struct map maps[MAX_MAPS];
static kvmchan_shmem_t *h;

static struct map *find(uint32_t id)
{
    for (int i = 0; i < MAX_MAPS; i++)
        if (maps[i].addr != NULL && maps[i].id == id)
            return &maps[i];
    return NULL;
}

static int add(uint32_t id, void *addr, size_t length, int own)
{
    for (int i = 0; i < MAX_MAPS; i++)
        if (maps[i].addr == NULL) {
            maps[i] = (struct map){ .id = id, .addr = addr, .length = length, .own = own };
            return 0;
        }
    return -1;
}

static void err(int e)
{
    const char *name = strerrorname_np(e);
    printf("err %s\n", name != NULL ? name : "EUNKNOWN");
}

static void hash(const struct map *m)
{
    struct sha256 s;
    char hex[65];
    sha256_init(&s);
    sha256_update(&s, m->addr, m->length);
    sha256_hex(&s, hex);
    printf("ok %s\n", hex);
}

static void *thread_main(void *arg)
{
    int domain = *(int *)arg;
    for (int i = 0; i < 50; i++) {
        uint32_t id;
        uint8_t *p = kvmchan_shmem_share(h, domain, 2, &id);
        if (p == NULL)
            return (void *)1;
        p[4097] = (uint8_t)i;
        size_t len = 0;
        uint8_t *q = kvmchan_shmem_map(h, domain, id, &len);
        if (q == NULL || len != 8192 || q[4097] != (uint8_t)i)
            return (void *)2;
        if (kvmchan_shmem_release(h, id) != 0 || kvmchan_shmem_unmap(h, q) != 0 || kvmchan_shmem_unmap(h, p) != 0)
            return (void *)3;
    }
    return NULL;
}

int main(void)
{
    h = kvmchan_shmem_open();
    if (h == NULL) {
        err(errno);
        return 1;
    }
    char line[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof(line), stdin) != NULL) {
        char op[16];
        unsigned long long a = 0, b = 0;
        if (sscanf(line, "%15s %llu %llu", op, &a, &b) < 1)
            continue;
        if (strcmp(op, "share") == 0) {
            uint32_t id;
            void *p = kvmchan_shmem_share(h, (int)a, (size_t)b, &id);
            if (p == NULL)
                err(errno);
            else if (add(id, p, (size_t)b * 4096, 0) == 0)
                printf("ok %" PRIu32 "\n", id);
        } else if (strcmp(op, "map") == 0) {
            size_t len = 0;
            void *p = kvmchan_shmem_map(h, (int)a, (uint32_t)b, &len);
            if (p == NULL)
                err(errno);
            else if (add((uint32_t)b, p, len, 0) == 0)
                printf("ok %zu\n", len);
        } else if (strcmp(op, "params") == 0) {
            struct kvmchan_shmem_mmap_params mp;
            if (kvmchan_shmem_mmap_params(h, (int)a, (uint32_t)b, &mp) != 0) {
                err(errno);
                continue;
            }
            /* The consumer's own mmap(), then the fd it owns is closed. */
            void *p = mmap(NULL, mp.length, mp.prot, mp.flags, mp.fd, mp.offset);
            int e = errno;
            close(mp.fd);
            if (p == MAP_FAILED)
                err(e);
            else if (add((uint32_t)b, p, mp.length, 1) == 0)
                printf("ok %lld %zu\n", (long long)mp.offset, mp.length);
        } else if (strcmp(op, "fill") == 0 || strcmp(op, "hash") == 0) {
            struct map *m = find((uint32_t)a);
            if (m == NULL) {
                err(ENOENT);
                continue;
            }
            if (op[0] == 'f') {
                uint32_t x = (uint32_t)b != 0 ? (uint32_t)b : 0x9e3779b9u;
                uint8_t *p = m->addr;
                for (size_t i = 0; i < m->length; i++) {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    p[i] = (uint8_t)x;
                }
            }
            hash(m);
        } else if (strcmp(op, "unmap") == 0) {
            struct map *m = find((uint32_t)a);
            if (m == NULL) {
                err(ENOENT);
                continue;
            }
            int rc = m->own ? munmap(m->addr, m->length) : kvmchan_shmem_unmap(h, m->addr);
            m->addr = NULL;
            if (rc != 0)
                err(errno);
            else
                printf("ok\n");
        } else if (strcmp(op, "release") == 0) {
            if (kvmchan_shmem_release(h, (uint32_t)a) != 0)
                err(errno);
            else
                printf("ok\n");
        } else if (strcmp(op, "threads") == 0) {
            int domain = (int)a, n = (int)b, bad = 0;
            pthread_t t[16];
            if (n < 1 || n > 16)
                n = 4;
            for (int i = 0; i < n; i++)
                pthread_create(&t[i], NULL, thread_main, &domain);
            for (int i = 0; i < n; i++) {
                void *r;
                pthread_join(t[i], &r);
                bad |= r != NULL;
            }
            if (bad)
                err(EPROTO);
            else
                printf("ok\n");
        } else {
            err(EINVAL);
        }
    }
    kvmchan_shmem_close(h);
    return 0;
}
