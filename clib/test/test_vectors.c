/*
 * Runs the language-neutral conformance vectors (docs/ring-protocol.md §9,
 * test/vectors/ring-vectors.json) through the C ring, exactly as
 * test/ring/vectors.test.ts runs them through the TypeScript engine.
 *
 * usage: test_vectors [path/to/ring-vectors.json]
 */
#include "../src/ring.h"
#include "harness.h"
#include "json.h"

#include <stdint.h>

static const struct {
    const char *name;
    size_t off;
} fields[] = {
    { "c2s_prod", KVC_OFF_C2S_PROD },           { "s2c_cons", KVC_OFF_S2C_CONS },
    { "client_state", KVC_OFF_CLIENT_STATE },   { "c2s_wraps", KVC_OFF_C2S_WRAPS },
    { "s2c_prod", KVC_OFF_S2C_PROD },           { "c2s_cons", KVC_OFF_C2S_CONS },
    { "server_state", KVC_OFF_SERVER_STATE },   { "s2c_wraps", KVC_OFF_S2C_WRAPS },
    { "client_notify", KVC_OFF_CLIENT_NOTIFY }, { "server_notify", KVC_OFF_SERVER_NOTIFY },
};

static int field_offset(const char *name)
{
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (strcmp(fields[i].name, name) == 0)
            return (int)fields[i].off;
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes hex into a fresh buffer; *len gets the byte count. */
static uint8_t *unhex(const char *hex, size_t *len)
{
    size_t n = hex != NULL ? strlen(hex) / 2 : 0;
    uint8_t *b = malloc(n + 1);
    REQUIRE(b != NULL, "malloc");
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        REQUIRE(hi >= 0 && lo >= 0, "bad hex");
        b[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = n;
    return b;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL, "open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)len + 1);
    REQUIRE(text != NULL, "malloc");
    REQUIRE(fread(text, 1, (size_t)len, f) == (size_t)len, "read %s", path);
    text[len] = '\0';
    fclose(f);
    return text;
}

static int kicks;
static void count_kick(void *arg)
{
    (void)arg;
    kicks++;
}

/* The vectors' outcome names (ring-protocol.md §9); -EPIPE is "eof" for reads, "closed" for writes. */
static const char *outcome(long rc, const char *kind)
{
    switch (rc) {
    case -EPIPE: return kind[0] == 'r' ? "eof" : "closed";
    case -EPROTO: return "corrupt";
    case -EMSGSIZE: return "msgsize";
    case -EBADF: return "local-closed";
    default: return "?";
    }
}

static void apply_patches(uint8_t *region, size_t len, const struct json *patches, const char *name)
{
    for (size_t i = 0; patches != NULL && i < patches->count; i++) {
        const struct json *p = &patches->items[i];
        size_t off = (size_t)json_num(p, "offset", 0), n;
        uint8_t *bytes = unhex(json_str(p, "hex"), &n);
        REQUIRE(off + n <= len, "%s: patch outside region", name);
        memcpy(region + off, bytes, n);
        free(bytes);
    }
}

static void run_vector(const struct json *v)
{
    const char *name = json_str(v, "name");
    const char *role = json_str(v, "role");
    unsigned c2s = (unsigned)json_num(v, "c2s_order", 10), s2c = (unsigned)json_num(v, "s2c_order", 10);
    const struct json *priv = json_get(v, "private"), *op = json_get(v, "op"), *expect = json_get(v, "expect");
    REQUIRE(name != NULL && role != NULL && op != NULL && expect != NULL, "malformed vector");

    size_t len = kvc_ring_region_length(c2s, s2c);
    uint8_t *region = aligned_alloc(4096, (len + 4095) & ~(size_t)4095);
    REQUIRE(region != NULL, "alloc");
    memset(region, 0, len);
    apply_patches(region, len, json_get(v, "image"), name);

    struct kvc_ring r;
    kicks = 0;
    const char *kind = json_str(op, "kind");
    size_t size = (size_t)json_num(op, "size", 0), dlen;
    uint8_t *data = unhex(json_str(op, "hex"), &dlen);
    uint8_t *out = calloc(1, size + 1);
    long result;
    int rc = kvc_ring_setup(&r, region, len, strcmp(role, "server") == 0 ? KVC_ROLE_SERVER : KVC_ROLE_CLIENT, c2s, s2c,
                            (uint32_t)json_num(priv, "read_cons", 0), (uint32_t)json_num(priv, "write_prod", 0),
                            count_kick, NULL);
    if (rc < 0) {
        result = rc;
    } else if (strcmp(kind, "read") == 0) {
        result = kvc_ring_read(&r, out, size);
    } else if (strcmp(kind, "recv") == 0) {
        result = kvc_ring_recv(&r, out, size);
    } else if (strcmp(kind, "write") == 0) {
        result = kvc_ring_write(&r, data, dlen);
    } else if (strcmp(kind, "send") == 0) {
        result = kvc_ring_send(&r, data, dlen);
    } else if (strcmp(kind, "data_ready") == 0) {
        result = kvc_ring_data_ready(&r);
    } else if (strcmp(kind, "buffer_space") == 0) {
        result = kvc_ring_buffer_space(&r);
    } else if (strcmp(kind, "attach") == 0) {
        result = kvc_ring_attach(&r);
    } else if (strcmp(kind, "close") == 0) {
        kvc_ring_close(&r);
        result = 0;
    } else {
        REQUIRE(0, "%s: unknown op %s", name, kind);
    }

    const struct json *want = json_get(expect, "result");
    REQUIRE(want != NULL, "%s: no expected result", name);
    if (want->type == JSON_NUMBER) {
        CHECK(result == (long)want->number, "vector '%s': result %ld (%s), want %.0f", name, result,
              result < 0 ? outcome(result, kind) : "count", want->number);
        const char *whex = json_str(expect, "hex");
        if (whex != NULL && result >= 0) {
            size_t wn;
            uint8_t *wb = unhex(whex, &wn);
            CHECK(wn == (size_t)result && memcmp(wb, out, wn) == 0, "vector '%s': bytes read differ", name);
            free(wb);
        }
    } else {
        CHECK(result < 0 && strcmp(outcome(result, kind), want->string) == 0, "vector '%s': result %ld (%s), want %s",
              name, result, result < 0 ? outcome(result, kind) : "count", want->string);
    }
    const struct json *f = json_get(expect, "fields");
    for (size_t i = 0; f != NULL && i < f->count; i++) {
        int off = field_offset(f->keys[i]);
        REQUIRE(off >= 0, "%s: unknown field %s", name, f->keys[i]);
        uint32_t got = (uint32_t)region[off] | (uint32_t)region[off + 1] << 8 | (uint32_t)region[off + 2] << 16 |
                       (uint32_t)region[off + 3] << 24;
        CHECK(got == (uint32_t)(long long)f->items[i].number, "vector '%s': field %s = %u, want %.0f", name, f->keys[i],
              got, f->items[i].number);
    }
    const struct json *reg = json_get(expect, "region");
    for (size_t i = 0; reg != NULL && i < reg->count; i++) {
        size_t off = (size_t)json_num(&reg->items[i], "offset", 0), n;
        uint8_t *wb = unhex(json_str(&reg->items[i], "hex"), &n);
        CHECK(off + n <= len && memcmp(region + off, wb, n) == 0, "vector '%s': region bytes at %zu differ", name, off);
        free(wb);
    }
    const struct json *kick = json_get(expect, "kick");
    int want_kicks = kick != NULL && kick->number != 0 ? 1 : 0;
    CHECK(kicks == want_kicks, "vector '%s': %d kicks, want %d", name, kicks, want_kicks);

    free(out);
    free(data);
    free(region);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "../test/vectors/ring-vectors.json";
    char *text = read_file(path);
    const char *err = NULL;
    struct json *doc = json_parse(text, &err);
    REQUIRE(doc != NULL, "parse %s: %s", path, err ? err : "?");
    REQUIRE(json_num(doc, "version", 0) == 1, "vector file version");
    const struct json *vectors = json_get(doc, "vectors");
    REQUIRE(vectors != NULL && vectors->type == JSON_ARRAY, "no vectors");
    CHECK(vectors->count >= 40, "only %zu vectors", vectors->count);
    for (size_t i = 0; i < vectors->count; i++)
        run_vector(&vectors->items[i]);
    printf("# %zu conformance vectors\n", vectors->count);
    json_free(doc);
    free(text);
    return t_report("ring conformance vectors");
}
