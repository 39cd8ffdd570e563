/* libkvmchan: the original libkvmchan API. The vchan calls run over the vchan core (chan.c) and
 * block, as in the original; the libkvmchan_shmem_* calls over the region calls of shmem.c
 * (docs/clib.md, "libkvmchan_shmem_*"). */
#include "../include/libkvmchan.h"

#include "../include/kvmchan-shmem.h"
#include "chan.h"

#include <errno.h>
#include <pthread.h>

static inline struct kvc_chan *chan_of(struct libkvmchan *chan)
{
    return (struct kvc_chan *)(void *)chan;
}

/*
 * The original library kicked the peer on every write, and its header promises an event fd
 * "that will unblock when data is available": after every call, the fd is armed again
 * (kvc_chan_keep_data_event), so a select() on it never misses data (docs/clib.md, "Wake-ups").
 */
static int io_done(struct libkvmchan *chan, int rc)
{
    kvc_chan_keep_data_event(chan_of(chan));
    return rc;
}

static struct libkvmchan *created(struct kvc_chan *c)
{
    kvc_chan_keep_data_event(c);
    return (struct libkvmchan *)(void *)c;
}

static int result(int rc)
{
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return rc;
}

KVC_EXPORT struct libkvmchan *libkvmchan_server_init(uint32_t domain, uint32_t port, size_t read_min, size_t write_min)
{
    struct kvc_chan *c;
    int rc = kvc_chan_server_init(&c, domain, port, read_min, write_min);
    if (rc < 0) {
        errno = -rc;
        return NULL;
    }
    return created(c);
}

KVC_EXPORT struct libkvmchan *libkvmchan_client_init(uint32_t domain, uint32_t port)
{
    struct kvc_chan *c;
    int rc = kvc_chan_client_init(&c, domain, port);
    if (rc < 0) {
        errno = -rc;
        return NULL;
    }
    return created(c);
}

KVC_EXPORT int libkvmchan_recv(struct libkvmchan *chan, void *data, size_t size)
{
    return chan == NULL ? result(-EINVAL) : result(io_done(chan, kvc_chan_recv(chan_of(chan), data, size, true)));
}

KVC_EXPORT int libkvmchan_send(struct libkvmchan *chan, void *data, size_t size)
{
    return chan == NULL ? result(-EINVAL) : result(io_done(chan, kvc_chan_send(chan_of(chan), data, size, true)));
}

KVC_EXPORT int libkvmchan_read(struct libkvmchan *chan, void *data, size_t size)
{
    return chan == NULL ? result(-EINVAL) : result(io_done(chan, kvc_chan_read(chan_of(chan), data, size, true)));
}

KVC_EXPORT int libkvmchan_write(struct libkvmchan *chan, void *data, size_t size)
{
    return chan == NULL ? result(-EINVAL) : result(io_done(chan, kvc_chan_write(chan_of(chan), data, size, true)));
}

KVC_EXPORT int libkvmchan_get_eventfd(struct libkvmchan *chan)
{
    if (chan == NULL)
        return result(-EINVAL);
    /* The select fd (wait eventfd + daemon connection): the daemon reports a dead peer on the
     * connection (wire-protocol.md §7.3), so the wait eventfd alone would miss it. */
    struct kvc_chan *c = chan_of(chan);
    return c->select_fd >= 0 ? c->select_fd : c->wait_fd;
}

KVC_EXPORT void libkvmchan_clear_eventfd(struct libkvmchan *chan)
{
    if (chan == NULL)
        return;
    kvc_chan_clear_event(chan_of(chan));
    kvc_chan_keep_data_event(chan_of(chan));
}

KVC_EXPORT bool libkvmchan_close(struct libkvmchan *chan)
{
    if (chan == NULL)
        return false;
    kvc_chan_close(chan_of(chan));
    return true;
}

KVC_EXPORT size_t libkvmchan_data_ready(struct libkvmchan *chan)
{
    return chan == NULL ? 0 : (size_t)kvc_chan_data_ready(chan_of(chan));
}

KVC_EXPORT size_t libkvmchan_buffer_space(struct libkvmchan *chan)
{
    return chan == NULL ? 0 : (size_t)kvc_chan_buffer_space(chan_of(chan));
}

KVC_EXPORT int libkvmchan_get_state(struct libkvmchan *chan)
{
    return chan == NULL ? -1 : kvc_chan_is_open(chan_of(chan));
}

/*
 * Shared-memory regions. A handle is one kvmchan_shmem_t (one daemon connection) plus the list of
 * what it obtained, because the original names a region to close by its pointer or by
 * (peer domain, id) and closing means different things for the creator and for a connector
 * (docs/clib.md, "libkvmchan_shmem_*").
 */
struct shm_entry {
    struct shm_entry *next;
    void *addr;
    uint32_t peer_dom, id;
    bool creator;
};

struct libkvmchan_shmem {
    /* Guards `entries`; held across each call so an entry and the mapping it names change
     * together. Taken before the kvmchan_shmem_t's own lock, never after it. */
    pthread_mutex_t lock;
    kvmchan_shmem_t *h;
    struct shm_entry *entries;
};

KVC_EXPORT struct libkvmchan_shmem *libkvmchan_shmem_start(void)
{
    struct libkvmchan_shmem *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->h = kvmchan_shmem_open();
    if (s->h == NULL) {
        int e = errno;
        free(s);
        errno = e;
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

/* Records a mapping just obtained; on failure undoes it (creator: release too). Lock held. */
static void *remember(struct libkvmchan_shmem *s, void *addr, uint32_t peer_dom, uint32_t id, bool creator)
{
    struct shm_entry *e = malloc(sizeof(*e));
    if (e == NULL) {
        if (creator)
            (void)kvmchan_shmem_release(s->h, id);
        (void)kvmchan_shmem_unmap(s->h, addr);
        errno = ENOMEM;
        return NULL;
    }
    *e = (struct shm_entry){ .next = s->entries, .addr = addr, .peer_dom = peer_dom, .id = id, .creator = creator };
    s->entries = e;
    return addr;
}

KVC_EXPORT void *libkvmchan_shmem_region_create(struct libkvmchan_shmem *handle, uint32_t client_dom,
                                                uint32_t page_count, uint32_t *region_id_out)
{
    /* The domain is a u32 here and an int in kvmchan-shmem.h: above INT_MAX it names no
     * domain anyway. */
    if (handle == NULL || client_dom > INT32_MAX) {
        errno = EINVAL;
        return NULL;
    }
    pthread_mutex_lock(&handle->lock);
    uint32_t id = 0;
    void *addr = kvmchan_shmem_share(handle->h, (int)client_dom, page_count, &id);
    if (addr != NULL)
        addr = remember(handle, addr, client_dom, id, true);
    pthread_mutex_unlock(&handle->lock);
    /* The original allows a NULL region_id_out (the id is then simply not reported). */
    if (addr != NULL && region_id_out != NULL)
        *region_id_out = id;
    return addr;
}

KVC_EXPORT void *libkvmchan_shmem_region_connect(struct libkvmchan_shmem *handle, uint32_t server_dom,
                                                 uint32_t region_id)
{
    if (handle == NULL || server_dom > INT32_MAX) {
        errno = EINVAL;
        return NULL;
    }
    pthread_mutex_lock(&handle->lock);
    void *addr = kvmchan_shmem_map(handle->h, (int)server_dom, region_id, NULL);
    if (addr != NULL)
        addr = remember(handle, addr, server_dom, region_id, false);
    pthread_mutex_unlock(&handle->lock);
    return addr;
}

/* Creator: release (nobody new connects), then unmap; connector: unmap. The entry goes either
 * way, so a second close of the same pointer or id fails. Lock held. */
static int close_entry(struct libkvmchan_shmem *s, struct shm_entry **pp)
{
    struct shm_entry *e = *pp;
    *pp = e->next;
    int rc = 0, err = 0;
    if (e->creator && kvmchan_shmem_release(s->h, e->id) != 0) {
        rc = -1;
        err = errno;
    }
    if (kvmchan_shmem_unmap(s->h, e->addr) != 0 && rc == 0) {
        rc = -1;
        err = errno;
    }
    free(e);
    if (rc != 0)
        errno = err;
    return rc;
}

KVC_EXPORT void libkvmchan_shmem_end(struct libkvmchan_shmem *handle)
{
    if (handle == NULL)
        return;
    /* Each region closed as by _region_close, so that when end() returns the daemon has
     * released them: closing the connection alone would release them too, but only once the
     * daemon has noticed, after end() returned. */
    int saved = errno;
    while (handle->entries != NULL)
        (void)close_entry(handle, &handle->entries);
    kvmchan_shmem_close(handle->h);
    errno = saved;
    pthread_mutex_destroy(&handle->lock);
    free(handle);
}

KVC_EXPORT int libkvmchan_shmem_region_close(struct libkvmchan_shmem *handle, void *ptr)
{
    if (handle == NULL || ptr == NULL) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&handle->lock);
    struct shm_entry **pp = &handle->entries;
    while (*pp != NULL && (*pp)->addr != ptr)
        pp = &(*pp)->next;
    int rc;
    if (*pp == NULL) {
        errno = EINVAL;
        rc = -1;
    } else {
        rc = close_entry(handle, pp);
    }
    pthread_mutex_unlock(&handle->lock);
    return rc;
}

KVC_EXPORT int libkvmchan_shmem_region_close_by_id(struct libkvmchan_shmem *handle, uint32_t peer_dom,
                                                   uint32_t region_id)
{
    if (handle == NULL) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&handle->lock);
    /* The list is newest first: of several mappings of one region, the latest goes. */
    struct shm_entry **pp = &handle->entries;
    while (*pp != NULL && ((*pp)->peer_dom != peer_dom || (*pp)->id != region_id))
        pp = &(*pp)->next;
    int rc;
    if (*pp == NULL) {
        errno = ENOENT;
        rc = -1;
    } else {
        rc = close_entry(handle, pp);
    }
    pthread_mutex_unlock(&handle->lock);
    return rc;
}
