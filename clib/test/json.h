/* A tiny JSON reader for the test suite (conformance vectors): no external dependencies. */
#ifndef KVC_TEST_JSON_H
#define KVC_TEST_JSON_H

#include <stddef.h>

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
    enum json_type type;
    double number;      /* JSON_NUMBER, JSON_BOOL (0/1) */
    char *string;       /* JSON_STRING (NUL-terminated) */
    size_t count;       /* JSON_ARRAY, JSON_OBJECT */
    struct json *items; /* array elements or object values */
    char **keys;        /* JSON_OBJECT keys */
};

/* Parses text; NULL on a syntax error (message in *err). Free with json_free. */
struct json *json_parse(const char *text, const char **err);
void json_free(struct json *v);

/* Object member by key, or NULL. */
const struct json *json_get(const struct json *obj, const char *key);
/* Convenience accessors with defaults for missing/mistyped values. */
double json_num(const struct json *obj, const char *key, double dflt);
const char *json_str(const struct json *obj, const char *key);

#endif
