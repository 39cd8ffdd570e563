/*
 * Who is on the other end of a socket, and which gid a group name has: the facts kvmchand
 * decides privilege on (docs/security.md, "Local socket"). Both come from the kernel or
 * from NSS, never from files a process can race: SO_PEERGROUPS is recorded at connect()
 * like SO_PEERCRED, so a pid reused after the client exited cannot lend its groups.
 */
#include "kvmchan.h"

#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

/* peerGroups(fd) → number[]: the supplementary groups the peer had at connect(). */
napi_value kc_peer_groups(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    int fd;
    if (!kc_get_args(env, info, 1, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd))
        return NULL;
    socklen_t len = 64 * sizeof(gid_t);
    gid_t *groups = NULL;
    for (;;) {
        gid_t *grown = realloc(groups, len);
        if (grown == NULL) {
            free(groups);
            return kc_throw_errno(env, ENOMEM, "realloc");
        }
        groups = grown;
        socklen_t got = len;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &got) == 0) {
            len = got;
            break;
        }
        /* ERANGE: the kernel wrote the size it needs into `got`. */
        if (errno != ERANGE || got <= len || got > 65536 * sizeof(gid_t)) {
            int e = errno;
            free(groups);
            return kc_throw_errno(env, e, "getsockopt");
        }
        len = got;
    }
    size_t n = len / sizeof(gid_t);
    napi_value result;
    napi_status st = napi_create_array_with_length(env, n, &result);
    for (size_t i = 0; st == napi_ok && i < n; i++) {
        napi_value gid;
        st = napi_create_uint32(env, groups[i], &gid);
        if (st == napi_ok)
            st = napi_set_element(env, result, (uint32_t)i, gid);
    }
    free(groups);
    if (st != napi_ok)
        return kc_throw_napi(env, st, "napi_set_element");
    return result;
}

/* groupId(name) → number | null: the group's gid through NSS (getgrnam_r), null if unknown. */
napi_value kc_group_id(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    char *name;
    if (!kc_get_args(env, info, 1, argv, NULL) || !kc_arg_string(env, argv[0], "name", &name, NULL))
        return NULL;
    size_t cap = 4096;
    char *buf = NULL;
    struct group grp, *found = NULL;
    int rc;
    for (;;) {
        char *grown = realloc(buf, cap);
        if (grown == NULL) {
            rc = ENOMEM;
            break;
        }
        buf = grown;
        rc = getgrnam_r(name, &grp, buf, cap, &found);
        if (rc != ERANGE || cap >= (1u << 20))
            break;
        cap *= 2;
    }
    free(name);
    gid_t gid = found != NULL ? found->gr_gid : 0;
    free(buf);
    /* "Not found" is rc 0 with found NULL; some NSS modules answer ENOENT/ESRCH for it. */
    if (rc != 0 && rc != ENOENT && rc != ESRCH)
        return kc_throw_errno(env, rc, "getgrnam_r");
    napi_value result;
    if (found == NULL)
        KC_CALL(env, napi_get_null(env, &result));
    else
        KC_CALL(env, napi_create_uint32(env, gid, &result));
    return result;
}
