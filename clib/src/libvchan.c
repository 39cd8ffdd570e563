/* libvchan-kvm: the Qubes libvchan.h API over the vchan core (chan.c). */
#include "../include/libvchan.h"

#include "chan.h"

#include <errno.h>

static inline struct kvc_chan *chan_of(libvchan_t *ctrl)
{
    return (struct kvc_chan *)(void *)ctrl;
}

/* Negative errno → -1 with errno set; counts pass through. */
static int result(int rc)
{
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return rc;
}

static inline bool blocking_of(struct kvc_chan *c)
{
    return __atomic_load_n(&c->blocking, __ATOMIC_RELAXED) != 0;
}

KVC_EXPORT libvchan_t *libvchan_server_init(int domain, int port, size_t read_min, size_t write_min)
{
    struct kvc_chan *c;
    if (domain < 0) {
        errno = EINVAL;
        return NULL;
    }
    int rc = kvc_chan_server_init(&c, (uint32_t)domain, (uint32_t)port, read_min, write_min);
    if (rc < 0) {
        errno = -rc;
        return NULL;
    }
    return (libvchan_t *)(void *)c;
}

KVC_EXPORT libvchan_t *libvchan_client_init(int domain, int port)
{
    struct kvc_chan *c;
    if (domain < 0) {
        errno = EINVAL;
        return NULL;
    }
    int rc = kvc_chan_client_init(&c, (uint32_t)domain, (uint32_t)port);
    if (rc < 0) {
        errno = -rc;
        return NULL;
    }
    return (libvchan_t *)(void *)c;
}

KVC_EXPORT libvchan_t *libvchan_client_init_async(int domain, int port, EVTCHN *watch_fd)
{
    struct kvc_chan *c;
    if (domain < 0 || watch_fd == NULL) {
        errno = EINVAL;
        return NULL;
    }
    int rc = kvc_chan_client_start(&c, (uint32_t)domain, (uint32_t)port, watch_fd);
    if (rc < 0) {
        errno = -rc;
        return NULL;
    }
    return (libvchan_t *)(void *)c;
}

KVC_EXPORT int libvchan_client_init_async_finish(libvchan_t *ctrl, bool blocking)
{
    if (ctrl == NULL) {
        errno = EINVAL;
        return -1;
    }
    int rc = kvc_chan_client_finish(chan_of(ctrl), blocking);
    if (rc < 0)
        errno = -rc;
    return rc < 0 ? -1 : rc;
}

KVC_EXPORT int libvchan_write(libvchan_t *ctrl, const void *data, size_t size)
{
    if (ctrl == NULL)
        return result(-EINVAL);
    struct kvc_chan *c = chan_of(ctrl);
    return result(kvc_chan_write(c, data, size, blocking_of(c)));
}

KVC_EXPORT int libvchan_send(libvchan_t *ctrl, const void *data, size_t size)
{
    if (ctrl == NULL)
        return result(-EINVAL);
    struct kvc_chan *c = chan_of(ctrl);
    return result(kvc_chan_send(c, data, size, blocking_of(c)));
}

KVC_EXPORT int libvchan_read(libvchan_t *ctrl, void *data, size_t size)
{
    if (ctrl == NULL)
        return result(-EINVAL);
    struct kvc_chan *c = chan_of(ctrl);
    return result(kvc_chan_read(c, data, size, blocking_of(c)));
}

KVC_EXPORT int libvchan_recv(libvchan_t *ctrl, void *data, size_t size)
{
    if (ctrl == NULL)
        return result(-EINVAL);
    struct kvc_chan *c = chan_of(ctrl);
    return result(kvc_chan_recv(c, data, size, blocking_of(c)));
}

KVC_EXPORT int libvchan_wait(libvchan_t *ctrl)
{
    if (ctrl == NULL)
        return result(-EINVAL);
    return result(kvc_chan_wait(chan_of(ctrl)));
}

KVC_EXPORT void libvchan_close(libvchan_t *ctrl)
{
    kvc_chan_close(chan_of(ctrl));
}

KVC_EXPORT EVTCHN libvchan_fd_for_select(libvchan_t *ctrl)
{
    if (ctrl == NULL)
        return result(-EINVAL);
    struct kvc_chan *c = chan_of(ctrl);
    if (!kvc_chan_ready(c))
        return result(-EAGAIN);
    return c->select_fd >= 0 ? c->select_fd : c->wait_fd;
}

KVC_EXPORT int libvchan_is_open(libvchan_t *ctrl)
{
    if (ctrl == NULL)
        return VCHAN_DISCONNECTED;
    return kvc_chan_is_open(chan_of(ctrl));
}

KVC_EXPORT int libvchan_data_ready(libvchan_t *ctrl)
{
    return ctrl == NULL ? 0 : kvc_chan_data_ready(chan_of(ctrl));
}

KVC_EXPORT int libvchan_buffer_space(libvchan_t *ctrl)
{
    return ctrl == NULL ? 0 : kvc_chan_buffer_space(chan_of(ctrl));
}

KVC_EXPORT void libvchan_set_blocking(libvchan_t *ctrl, bool blocking)
{
    if (ctrl != NULL)
        __atomic_store_n(&chan_of(ctrl)->blocking, blocking ? 1 : 0, __ATOMIC_RELAXED);
}
