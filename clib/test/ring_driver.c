/*
 * Differential-test driver: runs ring operations read from stdin through the
 * C ring and prints one result line per operation, in the format that
 * test/clib/differential.test.ts produces from the TypeScript RingEndpoint.
 *
 * Input lines:
 *   new <c2s_order> <s2c_order> <start>      fresh region, all indices at <start>
 *   poke <offset> <u32>                      hostile peer: store a u32 in the control page
 *   <s|c> read <n> | recv <n>                stream read / packet receive
 *   <s|c> write <hex> | send <hex>           stream write / packet send ('-' = empty)
 *   <s|c> data_ready | buffer_space | peek_r | peek_w | state | attach | close
 *   <s|c> pwr <min> | pww <min>              prepare to wait readable / writable
 * Output: "<result> <fnv32 of bytes read> <kicks to server> <kicks to client> <10 fields>"
 * where result is a number or eof/closed/corrupt/msgsize.
 */
#include "../src/ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *region;
static struct kvc_ring server, client;
static unsigned kicks_to_server, kicks_to_client;
static int have_pair;

static void kick_server(void *a)
{
    (void)a;
    kicks_to_server++;
}
static void kick_client(void *a)
{
    (void)a;
    kicks_to_client++;
}

static const size_t field_offs[] = {
    KVC_OFF_C2S_PROD, KVC_OFF_S2C_CONS,     KVC_OFF_CLIENT_STATE, KVC_OFF_C2S_WRAPS,     KVC_OFF_S2C_PROD,
    KVC_OFF_C2S_CONS, KVC_OFF_SERVER_STATE, KVC_OFF_S2C_WRAPS,    KVC_OFF_CLIENT_NOTIFY, KVC_OFF_SERVER_NOTIFY,
};

static uint32_t get32(size_t off)
{
    return (uint32_t)region[off] | (uint32_t)region[off + 1] << 8 | (uint32_t)region[off + 2] << 16 |
           (uint32_t)region[off + 3] << 24;
}

static void put32(size_t off, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        region[off + (size_t)i] = (uint8_t)(v >> (8 * i));
}

static uint32_t fnv32(const uint8_t *p, long n)
{
    uint32_t h = 0x811c9dc5u;
    for (long i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x01000193u;
    }
    return h;
}

/* The driver's outcome names; -EPIPE is end of stream for reads, "peer closed" for writes. */
static const char *name(long rc, const char *op)
{
    switch (rc) {
    case -EPIPE: return op[0] == 'r' ? "eof" : "closed";
    case -EBADF: return "closed";
    case -EPROTO: return "corrupt";
    case -EMSGSIZE: return "msgsize";
    default: return "invalid";
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return 0;
}

int main(void)
{
    size_t cap = 1 << 20;
    char *line = malloc(cap);
    uint8_t *buf = malloc(1 << 22);
    if (line == NULL || buf == NULL)
        return 2;
    ssize_t got;
    while ((got = getline(&line, &cap, stdin)) > 0) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '\0')
            continue;
        char *save = NULL;
        char *w0 = strtok_r(line, " ", &save);
        if (strcmp(w0, "new") == 0) {
            unsigned c2s = (unsigned)strtoul(strtok_r(NULL, " ", &save), NULL, 0);
            unsigned s2c = (unsigned)strtoul(strtok_r(NULL, " ", &save), NULL, 0);
            uint32_t start = (uint32_t)strtoul(strtok_r(NULL, " ", &save), NULL, 0);
            size_t len = kvc_ring_region_length(c2s, s2c);
            free(region);
            region = aligned_alloc(4096, (len + 4095) & ~(size_t)4095);
            if (region == NULL)
                return 2;
            kvc_ring_init_region(region, c2s, s2c);
            put32(KVC_OFF_C2S_PROD, start);
            put32(KVC_OFF_S2C_CONS, start);
            put32(KVC_OFF_S2C_PROD, start);
            put32(KVC_OFF_C2S_CONS, start);
            kicks_to_server = kicks_to_client = 0;
            int a = kvc_ring_setup(&server, region, len, KVC_ROLE_SERVER, c2s, s2c, start, start, kick_client, NULL);
            int b = kvc_ring_setup(&client, region, len, KVC_ROLE_CLIENT, c2s, s2c, start, start, kick_server, NULL);
            have_pair = a == 0 && b == 0;
            printf("new %d %d\n", a, b);
            fflush(stdout);
            continue;
        }
        if (!have_pair) {
            printf("error no pair\n");
            continue;
        }
        if (strcmp(w0, "poke") == 0) {
            size_t off = strtoul(strtok_r(NULL, " ", &save), NULL, 0);
            uint32_t v = (uint32_t)strtoul(strtok_r(NULL, " ", &save), NULL, 0);
            if (off + 4 <= KVC_RING_HEADER_SIZE)
                put32(off, v);
            printf("poke\n");
            continue;
        }
        struct kvc_ring *r = w0[0] == 's' ? &server : &client;
        char *op = strtok_r(NULL, " ", &save);
        char *arg = strtok_r(NULL, " ", &save);
        long rc = 0, nread = 0;
        if (op == NULL) {
            printf("error syntax\n");
            continue;
        }
        if (strcmp(op, "read") == 0 || strcmp(op, "recv") == 0) {
            size_t n = strtoul(arg, NULL, 0);
            if (n > (1u << 22))
                n = 1u << 22;
            rc = op[2] == 'a' ? kvc_ring_read(r, buf, n) : kvc_ring_recv(r, buf, n);
            nread = rc > 0 ? rc : 0;
        } else if (strcmp(op, "write") == 0 || strcmp(op, "send") == 0) {
            size_t n = strcmp(arg, "-") == 0 ? 0 : strlen(arg) / 2;
            if (n > (1u << 22))
                n = 1u << 22;
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)(hexval(arg[2 * i]) << 4 | hexval(arg[2 * i + 1]));
            rc = op[0] == 'w' ? kvc_ring_write(r, buf, n) : kvc_ring_send(r, buf, n);
        } else if (strcmp(op, "data_ready") == 0) {
            rc = kvc_ring_data_ready(r);
        } else if (strcmp(op, "buffer_space") == 0) {
            rc = kvc_ring_buffer_space(r);
        } else if (strcmp(op, "peek_r") == 0) {
            rc = kvc_ring_peek_readable(r);
        } else if (strcmp(op, "peek_w") == 0) {
            rc = kvc_ring_peek_writable(r);
        } else if (strcmp(op, "pwr") == 0) {
            rc = kvc_ring_prepare_wait_readable(r, strtoul(arg, NULL, 0));
        } else if (strcmp(op, "pww") == 0) {
            rc = kvc_ring_prepare_wait_writable(r, strtoul(arg, NULL, 0));
        } else if (strcmp(op, "state") == 0) {
            rc = kvc_ring_peer_state(r);
        } else if (strcmp(op, "attach") == 0) {
            rc = kvc_ring_attach(r);
        } else if (strcmp(op, "close") == 0) {
            kvc_ring_close(r);
        } else {
            printf("error unknown op %s\n", op);
            continue;
        }
        if (rc >= 0)
            printf("%ld", rc);
        else
            printf("%s", name(rc, op));
        printf(" %08x %u %u", fnv32(buf, nread), kicks_to_server, kicks_to_client);
        for (size_t i = 0; i < sizeof(field_offs) / sizeof(field_offs[0]); i++)
            printf(" %x", get32(field_offs[i]));
        printf("\n");
    }
    free(line);
    free(buf);
    free(region);
    return 0;
}
