/* Shared-memory regions (kvmchan-shmem.h; docs/shmem.md, docs/wire-protocol.md §6.11). */
#define _GNU_SOURCE
#include "chan.h"
#include "daemon.h"

#include "../include/kvmchan-shmem.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KVC_CMD_SHM_SHARE 0x0030u
#define KVC_CMD_SHM_MAP 0x0031u
#define KVC_CMD_SHM_UNMAP 0x0032u
#define KVC_CMD_SHM_RELEASE 0x0033u
#define SHM_PAGE 4096u
#define SHM_MAX_PAGES 262144u
#define REGION_INFO_SIZE 32u

/* A region mapped by this library (share or map): unmapped at close. */
struct mapping {
    struct mapping *next;
    void *addr;
    size_t length;
    uint32_t owner_domain, id;
};

struct kvmchan_shmem {
    /* One request is outstanding on a connection at a time (daemon.h): the lock serialises
     * the calls of every thread, and guards the mapping list. */
    pthread_mutex_t lock;
    struct kvc_conn conn;
    struct mapping *maps;
};

struct region_info {
    uint32_t id, owner_domain, target_domain, pages;
    uint64_t offset, length;
};

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32);
}

/* A request {u32 a, u32 b} with no reply data and no fds. 0 or -errno. */
static int call_plain(struct kvc_conn *c, uint16_t id, uint32_t a, uint32_t b)
{
    uint8_t p[8];
    put32(p, a);
    put32(p + 4, b);
    return kvc_conn_call(c, id, p, sizeof(p), NULL, 0, NULL, NULL, 0, NULL);
}

/* SHM_SHARE / SHM_MAP: the region and its fd (the caller owns it). 0 or -errno. */
static int call_region(struct kvc_conn *c, uint16_t id, uint32_t a, uint32_t b, struct region_info *info, int *fd)
{
    uint8_t p[8], d[REGION_INFO_SIZE];
    int fds[KVC_MAX_FDS], nfds = 0;
    size_t len = 0;
    put32(p, a);
    put32(p + 4, b);
    int rc = kvc_conn_call(c, id, p, sizeof(p), d, sizeof(d), &len, fds, KVC_MAX_FDS, &nfds);
    if (rc < 0)
        return rc;
    if (len != sizeof(d) || nfds != 1) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return -EPROTO;
    }
    info->id = get32(d);
    info->owner_domain = get32(d + 4);
    info->target_domain = get32(d + 8);
    info->pages = get32(d + 12);
    info->offset = get64(d + 16);
    info->length = get64(d + 24);
    /* The daemon is trusted, but a length that cannot be mapped must not reach mmap() as a
     * truncated size_t. */
    if (info->length == 0 || info->length > (uint64_t)SHM_MAX_PAGES * SHM_PAGE || info->offset % SHM_PAGE != 0 ||
        info->offset > (uint64_t)INT64_MAX - info->length) {
        close(fds[0]);
        return -EPROTO;
    }
    *fd = fds[0];
    return 0;
}

static int fail(int negerr)
{
    errno = -negerr;
    return -1;
}

KVC_EXPORT kvmchan_shmem_t *kvmchan_shmem_open(void)
{
    kvmchan_shmem_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    int rc = kvc_conn_open(&h->conn);
    if (rc < 0) {
        free(h);
        errno = -rc;
        return NULL;
    }
    pthread_mutex_init(&h->lock, NULL);
    return h;
}

KVC_EXPORT void kvmchan_shmem_close(kvmchan_shmem_t *h)
{
    if (h == NULL)
        return;
    int saved = errno;
    for (struct mapping *m = h->maps, *next; m != NULL; m = next) {
        next = m->next;
        munmap(m->addr, m->length);
        free(m);
    }
    /* Closing the connection gives back every hold and releases what h shared (docs/shmem.md §3). */
    kvc_conn_close(&h->conn);
    pthread_mutex_destroy(&h->lock);
    free(h);
    errno = saved;
}

/* Maps a region just obtained and records it; on failure gives the hold back. Lock held. */
static void *map_region(kvmchan_shmem_t *h, const struct region_info *info, int fd, int shared_here)
{
    struct mapping *m = malloc(sizeof(*m));
    void *addr = MAP_FAILED;
    int err = ENOMEM;
    if (m != NULL) {
        addr = mmap(NULL, (size_t)info->length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)info->offset);
        if (addr == MAP_FAILED)
            err = errno;
    }
    close(fd);
    if (addr == MAP_FAILED) {
        free(m);
        /* The daemon counted this mapping (and, for a share, created the region): undo both. */
        if (shared_here)
            (void)call_plain(&h->conn, KVC_CMD_SHM_RELEASE, info->id, 0);
        (void)call_plain(&h->conn, KVC_CMD_SHM_UNMAP, info->owner_domain, info->id);
        errno = err;
        return NULL;
    }
    m->addr = addr;
    m->length = (size_t)info->length;
    m->owner_domain = info->owner_domain;
    m->id = info->id;
    m->next = h->maps;
    h->maps = m;
    return addr;
}

KVC_EXPORT void *kvmchan_shmem_share(kvmchan_shmem_t *h, int domain, size_t pages, uint32_t *id_out)
{
    if (h == NULL || domain < 0 || pages == 0 || id_out == NULL) {
        errno = EINVAL;
        return NULL;
    }
    if (pages > SHM_MAX_PAGES) {
        errno = EMSGSIZE;
        return NULL;
    }
    pthread_mutex_lock(&h->lock);
    struct region_info info;
    int fd = -1;
    void *addr = NULL;
    int rc = call_region(&h->conn, KVC_CMD_SHM_SHARE, (uint32_t)domain, (uint32_t)pages, &info, &fd);
    if (rc < 0)
        errno = -rc;
    else if ((addr = map_region(h, &info, fd, 1)) != NULL)
        *id_out = info.id;
    pthread_mutex_unlock(&h->lock);
    return addr;
}

KVC_EXPORT void *kvmchan_shmem_map(kvmchan_shmem_t *h, int domain, uint32_t id, size_t *length_out)
{
    if (h == NULL || domain < 0) {
        errno = EINVAL;
        return NULL;
    }
    pthread_mutex_lock(&h->lock);
    struct region_info info;
    int fd = -1;
    void *addr = NULL;
    int rc = call_region(&h->conn, KVC_CMD_SHM_MAP, (uint32_t)domain, id, &info, &fd);
    if (rc < 0)
        errno = -rc;
    else if ((addr = map_region(h, &info, fd, 0)) != NULL && length_out != NULL)
        *length_out = (size_t)info.length;
    pthread_mutex_unlock(&h->lock);
    return addr;
}

KVC_EXPORT int kvmchan_shmem_mmap_params(kvmchan_shmem_t *h, int domain, uint32_t id,
                                         struct kvmchan_shmem_mmap_params *out)
{
    if (h == NULL || domain < 0 || out == NULL)
        return fail(-EINVAL);
    pthread_mutex_lock(&h->lock);
    struct region_info info;
    int fd = -1;
    int rc = call_region(&h->conn, KVC_CMD_SHM_MAP, (uint32_t)domain, id, &info, &fd);
    pthread_mutex_unlock(&h->lock);
    if (rc < 0)
        return fail(rc);
    out->fd = fd;
    out->offset = (off_t)info.offset;
    out->length = (size_t)info.length;
    out->prot = PROT_READ | PROT_WRITE;
    out->flags = MAP_SHARED;
    return 0;
}

KVC_EXPORT int kvmchan_shmem_unmap(kvmchan_shmem_t *h, void *addr)
{
    if (h == NULL || addr == NULL)
        return fail(-EINVAL);
    pthread_mutex_lock(&h->lock);
    struct mapping **pp = &h->maps;
    while (*pp != NULL && (*pp)->addr != addr)
        pp = &(*pp)->next;
    struct mapping *m = *pp;
    if (m == NULL) {
        pthread_mutex_unlock(&h->lock);
        return fail(-EINVAL);
    }
    *pp = m->next;
    munmap(m->addr, m->length);
    int rc = call_plain(&h->conn, KVC_CMD_SHM_UNMAP, m->owner_domain, m->id);
    pthread_mutex_unlock(&h->lock);
    free(m);
    return rc < 0 ? fail(rc) : 0;
}

KVC_EXPORT int kvmchan_shmem_release(kvmchan_shmem_t *h, uint32_t id)
{
    if (h == NULL)
        return fail(-EINVAL);
    pthread_mutex_lock(&h->lock);
    int rc = call_plain(&h->conn, KVC_CMD_SHM_RELEASE, id, 0);
    pthread_mutex_unlock(&h->lock);
    return rc < 0 ? fail(rc) : 0;
}
