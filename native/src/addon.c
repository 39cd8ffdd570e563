/* Module init: the property table of src/native.ts's NativeBinding. */
#include "kvmchan.h"

#include <errno.h>
#include <stdlib.h>

static void free_state(napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    kc_env_state *state = data;
    kc_eventfd_cleanup(state);
    free(state->scratch);
    free(state);
}

kc_env_state *kc_state(napi_env env)
{
    void *data = NULL;
    if (napi_get_instance_data(env, &data) != napi_ok)
        return NULL;
    return data;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */)
{
    /* Per-environment state, so the addon also works when loaded in worker threads. */
    kc_env_state *state = calloc(1, sizeof(*state));
    if (state == NULL)
        return kc_throw_errno(env, ENOMEM, "calloc");
    napi_status st = napi_set_instance_data(env, state, free_state, NULL);
    if (st != napi_ok) {
        free(state);
        return kc_throw_napi(env, st, "napi_set_instance_data");
    }

#define FN(js, c)                                            \
    {                                                        \
        js, NULL, c, NULL, NULL, NULL, napi_enumerable, NULL \
    }
    static const napi_property_descriptor props[] = {
        FN("memfdCreate", kc_memfd_create),
        FN("fdSize", kc_fd_size),
        FN("raiseNofileLimit", kc_raise_nofile_limit),
        FN("punchHole", kc_punch_hole),
        FN("mmap", kc_mmap),
        FN("munmap", kc_munmap),
        FN("mappingCount", kc_mapping_count),
        FN("eventfd", kc_eventfd),
        FN("eventfdRead", kc_eventfd_read),
        FN("eventfdWrite", kc_eventfd_write),
        FN("close", kc_close),
        FN("dup", kc_dup),
        FN("setNonblocking", kc_set_nonblocking),
        FN("socketpair", kc_socketpair),
        FN("listenUnix", kc_listen_unix),
        FN("accept", kc_accept),
        FN("connectUnix", kc_connect_unix),
        FN("shutdown", kc_shutdown),
        FN("sendmsg", kc_sendmsg),
        FN("recvmsg", kc_recvmsg),
        FN("peerCred", kc_peer_cred),
        FN("peerGroups", kc_peer_groups),
        FN("groupId", kc_group_id),
        FN("sendDatagram", kc_send_datagram),
        FN("ioctl", kc_ioctl),
        FN("pread", kc_pread),
        FN("pwrite", kc_pwrite),
        FN("copyBytes", kc_copy_bytes),
    };
#undef FN
    KC_CALL(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
    if (!kc_poller_init(env, exports))
        return NULL;
    return exports;
}
