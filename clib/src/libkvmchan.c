/* libkvmchan: the original libkvmchan vchan API over the vchan core (chan.c).
 * Every I/O call blocks, as in the original; the shmem_* calls are not here yet. */
#include "../include/libkvmchan.h"

#include "chan.h"

#include <errno.h>

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
    return chan == NULL ? result(-EINVAL) : chan_of(chan)->wait_fd;
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
