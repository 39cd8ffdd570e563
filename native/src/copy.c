/*
 * copyBytes: bulk copies between ring data and user buffers for the TypeScript ring. The loop
 * itself is clib/src/copy.h, shared with the C libraries; it explains why it is not memcpy.
 */
#include "kvmchan.h"

#include "copy.h"

/* copyBytes(dst, dstOffset, src, srcOffset, length): bounds-checked, no overlap handling
 * (callers copy between a ring and a user buffer, never within one buffer). */
napi_value kc_copy_bytes(napi_env env, napi_callback_info info)
{
    napi_value argv[5];
    if (!kc_get_args(env, info, 5, argv, NULL))
        return NULL;
    void *dst = NULL, *src = NULL;
    size_t dst_len = 0, src_len = 0;
    uint64_t dst_off = 0, src_off = 0, len = 0;
    if (!kc_arg_bytes(env, argv[0], "dst", &dst, &dst_len))
        return NULL;
    if (!kc_arg_size(env, argv[1], "dstOffset", UINT32_MAX, &dst_off))
        return NULL;
    if (!kc_arg_bytes(env, argv[2], "src", &src, &src_len))
        return NULL;
    if (!kc_arg_size(env, argv[3], "srcOffset", UINT32_MAX, &src_off))
        return NULL;
    if (!kc_arg_size(env, argv[4], "length", UINT32_MAX, &len))
        return NULL;
    if (dst_off + len > dst_len || src_off + len > src_len) {
        return kc_throw_range(env, "ERR_OUT_OF_RANGE", "copyBytes: range outside the buffers");
    }
    if (len > 0)
        kvc_payload_copy((unsigned char *)dst + dst_off, (const unsigned char *)src + src_off, (size_t)len);
    return NULL;
}
