/* Recursive-descent JSON reader (RFC 8259 subset sufficient for test data). */
#include "json.h"

#include <stdlib.h>
#include <string.h>

struct parser {
    const char *p;
    const char *err;
    int depth;
};

static void skip_ws(struct parser *ps)
{
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')
        ps->p++;
}

static int parse_value(struct parser *ps, struct json *out);

static int fail(struct parser *ps, const char *msg)
{
    if (ps->err == NULL)
        ps->err = msg;
    return -1;
}

static void put_utf8(char **w, unsigned cp)
{
    char *o = *w;
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    *w = o;
}

static int parse_string(struct parser *ps, char **out)
{
    if (*ps->p != '"')
        return fail(ps, "expected string");
    const char *s = ++ps->p;
    size_t len = 0;
    while (s[len] != '"') {
        if (s[len] == '\0')
            return fail(ps, "unterminated string");
        if (s[len] == '\\' && s[len + 1] != '\0')
            len++;
        len++;
    }
    char *buf = malloc(len + 1), *w = buf;
    if (buf == NULL)
        return fail(ps, "out of memory");
    while (*ps->p != '"') {
        char c = *ps->p++;
        if (c != '\\') {
            *w++ = c;
            continue;
        }
        c = *ps->p++;
        switch (c) {
        case 'n': *w++ = '\n'; break;
        case 't': *w++ = '\t'; break;
        case 'r': *w++ = '\r'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'u': {
            unsigned cp = 0;
            for (int i = 0; i < 4; i++) {
                char h = *ps->p++;
                cp <<= 4;
                if (h >= '0' && h <= '9')
                    cp |= (unsigned)(h - '0');
                else if (h >= 'a' && h <= 'f')
                    cp |= (unsigned)(h - 'a' + 10);
                else if (h >= 'A' && h <= 'F')
                    cp |= (unsigned)(h - 'A' + 10);
                else {
                    free(buf);
                    return fail(ps, "bad \\u escape");
                }
            }
            put_utf8(&w, cp);
            break;
        }
        default: *w++ = c; break;
        }
    }
    ps->p++;
    *w = '\0';
    *out = buf;
    return 0;
}

static int grow(struct json *v, size_t *cap, int with_keys)
{
    if (v->count < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    struct json *items = realloc(v->items, ncap * sizeof(*items));
    if (items == NULL)
        return -1;
    v->items = items;
    if (with_keys) {
        char **keys = realloc(v->keys, ncap * sizeof(*keys));
        if (keys == NULL)
            return -1;
        v->keys = keys;
    }
    *cap = ncap;
    return 0;
}

static int parse_container(struct parser *ps, struct json *out, int object)
{
    char close = object ? '}' : ']';
    size_t cap = 0;
    out->type = object ? JSON_OBJECT : JSON_ARRAY;
    if (++ps->depth > 64)
        return fail(ps, "nesting too deep");
    ps->p++;
    skip_ws(ps);
    if (*ps->p == close) {
        ps->p++;
        ps->depth--;
        return 0;
    }
    for (;;) {
        if (grow(out, &cap, object) < 0)
            return fail(ps, "out of memory");
        skip_ws(ps);
        if (object) {
            if (parse_string(ps, &out->keys[out->count]) < 0)
                return -1;
            skip_ws(ps);
            if (*ps->p++ != ':') {
                free(out->keys[out->count]);
                return fail(ps, "expected ':'");
            }
        }
        memset(&out->items[out->count], 0, sizeof(out->items[0]));
        out->count++;
        if (parse_value(ps, &out->items[out->count - 1]) < 0)
            return -1;
        skip_ws(ps);
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == close) {
            ps->p++;
            ps->depth--;
            return 0;
        }
        return fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int parse_value(struct parser *ps, struct json *out)
{
    skip_ws(ps);
    char c = *ps->p;
    if (c == '{' || c == '[')
        return parse_container(ps, out, c == '{');
    if (c == '"') {
        out->type = JSON_STRING;
        return parse_string(ps, &out->string);
    }
    if (strncmp(ps->p, "true", 4) == 0) {
        out->type = JSON_BOOL;
        out->number = 1;
        ps->p += 4;
        return 0;
    }
    if (strncmp(ps->p, "false", 5) == 0) {
        out->type = JSON_BOOL;
        ps->p += 5;
        return 0;
    }
    if (strncmp(ps->p, "null", 4) == 0) {
        out->type = JSON_NULL;
        ps->p += 4;
        return 0;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char *end;
        out->type = JSON_NUMBER;
        out->number = strtod(ps->p, &end);
        if (end == ps->p)
            return fail(ps, "bad number");
        ps->p = end;
        return 0;
    }
    return fail(ps, "unexpected character");
}

static void free_inner(struct json *v)
{
    free(v->string);
    for (size_t i = 0; i < v->count; i++) {
        free_inner(&v->items[i]);
        if (v->keys != NULL)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
}

void json_free(struct json *v)
{
    if (v == NULL)
        return;
    free_inner(v);
    free(v);
}

struct json *json_parse(const char *text, const char **err)
{
    struct parser ps = { .p = text };
    struct json *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return NULL;
    if (parse_value(&ps, v) == 0) {
        skip_ws(&ps);
        if (*ps.p == '\0')
            return v;
        fail(&ps, "trailing characters");
    }
    if (err != NULL)
        *err = ps.err;
    json_free(v);
    return NULL;
}

const struct json *json_get(const struct json *obj, const char *key)
{
    if (obj == NULL || obj->type != JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return &obj->items[i];
    return NULL;
}

double json_num(const struct json *obj, const char *key, double dflt)
{
    const struct json *v = json_get(obj, key);
    return v != NULL && (v->type == JSON_NUMBER || v->type == JSON_BOOL) ? v->number : dflt;
}

const char *json_str(const struct json *obj, const char *key)
{
    const struct json *v = json_get(obj, key);
    return v != NULL && v->type == JSON_STRING ? v->string : NULL;
}
