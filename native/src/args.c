/* Argument validation: every JS value is checked before it reaches a syscall. */
#include "kvmchan.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const char *type_name(napi_env env, napi_value v)
{
    napi_valuetype t;
    if (napi_typeof(env, v, &t) != napi_ok)
        return "unknown";
    switch (t) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_object: return "object";
    case napi_function: return "function";
    case napi_external: return "external";
    case napi_bigint: return "bigint";
    }
    return "unknown";
}

static bool is_type(napi_env env, napi_value v, napi_valuetype want)
{
    napi_valuetype t;
    return napi_typeof(env, v, &t) == napi_ok && t == want;
}

static bool bad_type(napi_env env, const char *name, const char *expected, napi_value v)
{
    kc_throw_type(env, "ERR_INVALID_ARG_TYPE", "The \"%s\" argument must be %s. Received type %s", name, expected,
                  type_name(env, v));
    return false;
}

bool kc_get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, napi_value *this_arg)
{
    size_t argc = n;
    KC_CALL_BOOL(env, napi_get_cb_info(env, info, &argc, argv, this_arg, NULL));
    /* napi_get_cb_info already fills missing arguments with undefined. */
    return true;
}

bool kc_arg_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t *out)
{
    if (!is_type(env, v, napi_number))
        return bad_type(env, name, "of type number", v);
    double d;
    KC_CALL_BOOL(env, napi_get_value_double(env, v, &d));
    /* Both bounds are within ±2^53 here, so the comparisons below are exact. */
    if (!isfinite(d) || trunc(d) != d || d < (double)min || d > (double)max) {
        kc_throw_range(env, "ERR_OUT_OF_RANGE",
                       "The value of \"%s\" is out of range. It must be an integer >= %lld && <= "
                       "%lld. Received %.17g",
                       name, (long long)min, (long long)max, d);
        return false;
    }
    *out = (int64_t)d;
    return true;
}

bool kc_arg_fd(napi_env env, napi_value v, const char *name, int *out)
{
    int64_t fd;
    if (!kc_arg_int(env, v, name, 0, INT32_MAX, &fd))
        return false;
    *out = (int)fd;
    return true;
}

bool kc_arg_size(napi_env env, napi_value v, const char *name, uint64_t max, uint64_t *out)
{
    int64_t n;
    if (max > (uint64_t)KC_MAX_SAFE_INTEGER)
        max = (uint64_t)KC_MAX_SAFE_INTEGER;
    if (!kc_arg_int(env, v, name, 0, (int64_t)max, &n))
        return false;
    *out = (uint64_t)n;
    return true;
}

bool kc_arg_bool(napi_env env, napi_value v, const char *name, bool *out)
{
    if (!is_type(env, v, napi_boolean))
        return bad_type(env, name, "of type boolean", v);
    KC_CALL_BOOL(env, napi_get_value_bool(env, v, out));
    return true;
}

bool kc_arg_string(napi_env env, napi_value v, const char *name, char **out, size_t *len)
{
    if (!is_type(env, v, napi_string))
        return bad_type(env, name, "of type string", v);
    size_t n;
    KC_CALL_BOOL(env, napi_get_value_string_utf8(env, v, NULL, 0, &n));
    char *buf = malloc(n + 1);
    if (buf == NULL) {
        kc_throw_errno(env, ENOMEM, "malloc");
        return false;
    }
    size_t copied;
    napi_status st = napi_get_value_string_utf8(env, v, buf, n + 1, &copied);
    if (st != napi_ok) {
        free(buf);
        kc_throw_napi(env, st, "napi_get_value_string_utf8");
        return false;
    }
    /* An embedded NUL would silently shorten a path or name at the syscall. */
    if (memchr(buf, '\0', copied) != NULL) {
        free(buf);
        kc_throw_type(env, "ERR_INVALID_ARG_VALUE", "The \"%s\" argument must be a string without null bytes", name);
        return false;
    }
    *out = buf;
    if (len != NULL)
        *len = copied;
    return true;
}

bool kc_arg_bytes(napi_env env, napi_value v, const char *name, void **data, size_t *len)
{
    bool yes = false;
    KC_CALL_BOOL(env, napi_is_typedarray(env, v, &yes));
    if (yes) {
        napi_typedarray_type type;
        size_t length;
        KC_CALL_BOOL(env, napi_get_typedarray_info(env, v, &type, &length, data, NULL, NULL));
        size_t elem = 1;
        switch (type) {
        case napi_int8_array:
        case napi_uint8_array:
        case napi_uint8_clamped_array: elem = 1; break;
        case napi_int16_array:
        case napi_uint16_array: elem = 2; break;
        case napi_int32_array:
        case napi_uint32_array:
        case napi_float32_array: elem = 4; break;
        case napi_float64_array:
        case napi_bigint64_array:
        case napi_biguint64_array: elem = 8; break;
        }
        *len = length * elem;
        if (*len == 0)
            *data = NULL;
        return true;
    }
    KC_CALL_BOOL(env, napi_is_dataview(env, v, &yes));
    if (yes) {
        KC_CALL_BOOL(env, napi_get_dataview_info(env, v, len, data, NULL, NULL));
        if (*len == 0)
            *data = NULL;
        return true;
    }
    return bad_type(env, name, "an instance of Uint8Array (or another ArrayBufferView)", v);
}

bool kc_arg_offset(napi_env env, napi_value v, const char *name, int64_t *out)
{
    if (is_type(env, v, napi_bigint)) {
        int64_t value;
        bool lossless = false;
        KC_CALL_BOOL(env, napi_get_value_bigint_int64(env, v, &value, &lossless));
        if (!lossless || value < 0) {
            kc_throw_range(env, "ERR_OUT_OF_RANGE",
                           "The value of \"%s\" is out of range. It must be >= 0n && <= "
                           "9223372036854775807n",
                           name);
            return false;
        }
        *out = value;
        return true;
    }
    if (is_type(env, v, napi_number)) {
        return kc_arg_int(env, v, name, 0, KC_MAX_SAFE_INTEGER, out);
    }
    return bad_type(env, name, "of type number or bigint", v);
}

bool kc_arg_socktype(napi_env env, napi_value v, const char *name, int *out)
{
    if (!is_type(env, v, napi_string))
        return bad_type(env, name, "of type string", v);
    char buf[16];
    size_t n;
    KC_CALL_BOOL(env, napi_get_value_string_utf8(env, v, buf, sizeof(buf), &n));
    if (strcmp(buf, "stream") == 0 && n == 6) {
        *out = SOCK_STREAM;
        return true;
    }
    if (strcmp(buf, "seqpacket") == 0 && n == 9) {
        *out = SOCK_SEQPACKET;
        return true;
    }
    if (strcmp(buf, "dgram") == 0 && n == 5) {
        *out = SOCK_DGRAM;
        return true;
    }
    kc_throw_type(env, "ERR_INVALID_ARG_VALUE", "The \"%s\" argument must be 'stream', 'seqpacket' or 'dgram'", name);
    return false;
}

bool kc_arg_function(napi_env env, napi_value v, const char *name)
{
    if (!is_type(env, v, napi_function))
        return bad_type(env, name, "of type function", v);
    return true;
}
