/*
 * Poller: a uv_poll_t watcher on the Node loop (docs/architecture.md, "The native addon").
 *
 * Ownership: the struct has two owners, the JS wrapper (until its finalizer runs) and the uv
 * handle (until its close callback runs); it is freed when both are gone, so neither a late
 * finalizer nor a late close callback can touch freed memory.
 *
 * Liveness: while started, the wrapper is held by a strong reference, so a watcher that can
 * still fire is never collected; stopped or closed, the reference is weak and GC may take the
 * wrapper, whose finalizer then closes the handle. The callback is stored on the wrapper itself
 * (under a symbol), not in a native reference: a callback that closes over its own Poller then
 * forms an ordinary JS cycle instead of rooting the Poller forever.
 *
 * After close() no callback runs: the close flag is checked before every call into JS, and
 * libuv itself never calls a closing handle's poll callback.
 *
 * Environment teardown (process or worker exit) with a handle still open: an async cleanup
 * hook closes it and completes once the close callback ran, so a worker's loop can close.
 */
#include "kvmchan.h"

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

typedef struct kc_poller {
  uv_poll_t handle;
  napi_env env;
  napi_ref self;       /* the wrapper: weak, strong while started */
  napi_async_context async_context;
  napi_async_cleanup_hook_handle cleanup;
  int in_callback;     /* depth of napi_make_callback calls in progress */
  bool started;
  bool closing;        /* uv_close() was called */
  bool js_released;    /* references and async context given back */
  bool js_gone;        /* the wrapper was finalized */
  bool handle_gone;    /* the uv close callback ran */
} kc_poller;

static const napi_type_tag poller_tag = {0x6b766d6368616e2dULL, 0x706f6c6c6572ab02ULL};

#define VALID_EVENTS (UV_READABLE | UV_WRITABLE | UV_DISCONNECT | UV_PRIORITIZED)

static void maybe_free(kc_poller *p) {
  if (p->js_gone && p->handle_gone) free(p);
}

static void on_close(uv_handle_t *h) {
  kc_poller *p = h->data;
  p->handle_gone = true;
  if (p->cleanup != NULL) {
    /* Unregisters the hook, or, during teardown, tells Node this handle is done. */
    napi_remove_async_cleanup_hook(p->cleanup);
    p->cleanup = NULL;
  }
  maybe_free(p);
}

static void close_handle(kc_poller *p) {
  if (p->closing) return;
  p->closing = true;
  uv_close((uv_handle_t *)&p->handle, on_close);
}

static void on_env_teardown(napi_async_cleanup_hook_handle h, void *arg) {
  (void)h;
  close_handle(arg);
}

static void destroy_async_context(kc_poller *p) {
  if (p->async_context != NULL && p->in_callback == 0) {
    napi_async_destroy(p->env, p->async_context);
    p->async_context = NULL;
  }
}

/* Gives back everything that keeps JS objects alive; the async context is destroyed later
 * when this runs inside the callback that still uses it. */
static void release_js(kc_poller *p) {
  if (p->js_released) return;
  p->js_released = true;
  if (p->self != NULL) {
    napi_delete_reference(p->env, p->self);
    p->self = NULL;
  }
  p->started = false;
  destroy_async_context(p);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  kc_poller *p = data;
  release_js(p);
  p->js_gone = true;
  if (!p->closing) {
    close_handle(p); /* on_close frees */
  } else {
    maybe_free(p);
  }
}

/* The symbol keying the callback property, or NULL if it cannot be had. */
static napi_value callback_key(napi_env env) {
  kc_env_state *state = kc_state(env);
  napi_value key = NULL;
  if (state == NULL || state->poller_callback_key == NULL ||
      napi_get_reference_value(env, state->poller_callback_key, &key) != napi_ok) {
    return NULL;
  }
  return key;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  kc_poller *p = h->data;
  if (p->closing || p->js_released) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value self = NULL, key, cb = NULL, argv[2], result;
  napi_valuetype cb_type = napi_undefined;
  if (napi_get_reference_value(env, p->self, &self) == napi_ok && self != NULL &&
      (key = callback_key(env)) != NULL && napi_get_property(env, self, key, &cb) == napi_ok &&
      napi_typeof(env, cb, &cb_type) == napi_ok && cb_type == napi_function) {
    if (status < 0) {
      argv[0] = kc_errno_error(env, -status, "uv_poll", NULL);
      if (argv[0] == NULL) napi_get_null(env, &argv[0]);
    } else {
      napi_get_null(env, &argv[0]);
    }
    napi_create_int32(env, status < 0 ? 0 : events, &argv[1]);
    p->in_callback++;
    /* recv must be an object, or the call silently does not happen (docs/architecture.md, "The native addon"). */
    napi_status st = napi_make_callback(env, p->async_context, self, cb, 2, argv, &result);
    p->in_callback--;
    if (st == napi_pending_exception) {
      /* A throwing callback is an uncaught exception, as for any other event source. */
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
    }
    /* close() inside the callback deferred this until the call returned. */
    if (p->js_released) destroy_async_context(p);
  }
  napi_close_handle_scope(env, scope);
}

/* Resolves `this` to its poller; throws unless `this` is a Poller. */
static kc_poller *unwrap_this(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  napi_value self;
  if (!kc_get_args(env, info, n, argv, &self)) return NULL;
  bool ok = false;
  napi_valuetype t;
  if (napi_typeof(env, self, &t) == napi_ok && t == napi_object &&
      napi_check_object_type_tag(env, self, &poller_tag, &ok) == napi_ok && ok) {
    void *data = NULL;
    if (napi_unwrap(env, self, &data) == napi_ok && data != NULL) return data;
  }
  kc_throw_type(env, "ERR_INVALID_THIS", "Value of \"this\" must be of type Poller");
  return NULL;
}

static napi_value poller_new(napi_env env, napi_callback_info info) {
  napi_value new_target;
  KC_CALL(env, napi_get_new_target(env, info, &new_target));
  if (new_target == NULL) {
    return kc_throw_type(env, "ERR_CONSTRUCT_CALL_REQUIRED",
                         "Class constructor Poller cannot be invoked without 'new'");
  }
  napi_value argv[2], self;
  int fd;
  if (!kc_get_args(env, info, 2, argv, &self) || !kc_arg_fd(env, argv[0], "fd", &fd) ||
      !kc_arg_function(env, argv[1], "callback")) {
    return NULL;
  }
  uv_loop_t *loop;
  KC_CALL(env, napi_get_uv_event_loop(env, &loop));
  kc_poller *p = calloc(1, sizeof(*p));
  if (p == NULL) return kc_throw_errno(env, ENOMEM, "calloc");
  p->env = env;
  /* Also switches the fd to O_NONBLOCK, and fails for fds epoll cannot watch (EPERM). */
  int r = uv_poll_init(loop, &p->handle, fd);
  if (r != 0) {
    free(p);
    return kc_throw_errno(env, -r, "uv_poll_init");
  }
  p->handle.data = p;

  napi_value name, key = callback_key(env);
  napi_status st = key == NULL ? napi_generic_failure : napi_ok;
  if (st == napi_ok) {
    napi_property_descriptor prop = {NULL, key, NULL, NULL, NULL, argv[1], napi_writable, NULL};
    st = napi_define_properties(env, self, 1, &prop);
  }
  if (st == napi_ok) st = napi_create_string_utf8(env, "kvmchan:Poller", NAPI_AUTO_LENGTH, &name);
  if (st == napi_ok) st = napi_create_reference(env, self, 0, &p->self);
  if (st == napi_ok) st = napi_async_init(env, self, name, &p->async_context);
  if (st == napi_ok) st = napi_type_tag_object(env, self, &poller_tag);
  if (st == napi_ok) st = napi_wrap(env, self, p, finalize, NULL, NULL);
  if (st != napi_ok) {
    release_js(p);
    p->js_gone = true;
    close_handle(p);
    return kc_throw_napi(env, st, "Poller construction");
  }
  /* The wrapper owns p now; a failure below leaves the cleanup to the finalizer. */
  KC_CALL(env, napi_add_async_cleanup_hook(env, on_env_teardown, p, &p->cleanup));
  return self;
}

static napi_value poller_start(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  kc_poller *p = unwrap_this(env, info, 1, argv);
  if (p == NULL) return NULL;
  int64_t events;
  if (!kc_arg_int(env, argv[0], "events", 1, VALID_EVENTS, &events)) return NULL;
  if ((events & ~(int64_t)VALID_EVENTS) != 0) {
    return kc_throw_range(env, "ERR_OUT_OF_RANGE",
                          "The \"events\" argument may only combine READABLE (1), WRITABLE (2), "
                          "DISCONNECT (4) and PRIORITIZED (8). Received %lld",
                          (long long)events);
  }
  if (p->closing) {
    return kc_throw_error(env, "ERR_INVALID_STATE", "Invalid state: the Poller is closed");
  }
  int r = uv_poll_start(&p->handle, (int)events, on_poll);
  if (r != 0) return kc_throw_errno(env, -r, "uv_poll_start");
  if (!p->started) {
    KC_CALL(env, napi_reference_ref(env, p->self, NULL));
    p->started = true;
  }
  return kc_undefined(env);
}

static napi_value poller_stop(napi_env env, napi_callback_info info) {
  kc_poller *p = unwrap_this(env, info, 0, NULL);
  if (p == NULL) return NULL;
  if (!p->closing) {
    uv_poll_stop(&p->handle);
    if (p->started) {
      p->started = false;
      KC_CALL(env, napi_reference_unref(env, p->self, NULL));
    }
  }
  return kc_undefined(env);
}

static napi_value poller_close(napi_env env, napi_callback_info info) {
  kc_poller *p = unwrap_this(env, info, 0, NULL);
  if (p == NULL) return NULL;
  if (!p->closing) {
    release_js(p);
    close_handle(p);
    /* Let go of the callback (and whatever it closes over) even if this Poller lives on. */
    napi_value self, key = callback_key(env), undef;
    if (key != NULL && napi_get_cb_info(env, info, NULL, NULL, &self, NULL) == napi_ok &&
        napi_get_undefined(env, &undef) == napi_ok) {
      napi_set_property(env, self, key, undef);
    }
  }
  return kc_undefined(env);
}

static napi_value poller_ref(napi_env env, napi_callback_info info) {
  kc_poller *p = unwrap_this(env, info, 0, NULL);
  if (p == NULL) return NULL;
  if (!p->closing) uv_ref((uv_handle_t *)&p->handle);
  return kc_undefined(env);
}

static napi_value poller_unref(napi_env env, napi_callback_info info) {
  kc_poller *p = unwrap_this(env, info, 0, NULL);
  if (p == NULL) return NULL;
  if (!p->closing) uv_unref((uv_handle_t *)&p->handle);
  return kc_undefined(env);
}

bool kc_poller_init(napi_env env, napi_value exports) {
#define METHOD(js, c) {js, NULL, c, NULL, NULL, NULL, napi_default, NULL}
  static const napi_property_descriptor methods[] = {
      METHOD("start", poller_start), METHOD("stop", poller_stop), METHOD("close", poller_close),
      METHOD("ref", poller_ref),     METHOD("unref", poller_unref),
  };
#undef METHOD
  kc_env_state *state = kc_state(env);
  napi_value key, description;
  KC_CALL_BOOL(env, napi_create_string_utf8(env, "kvmchan.Poller.callback", NAPI_AUTO_LENGTH,
                                            &description));
  KC_CALL_BOOL(env, napi_create_symbol(env, description, &key));
  KC_CALL_BOOL(env, napi_create_reference(env, key, 1, &state->poller_callback_key));
  napi_value cls;
  KC_CALL_BOOL(env, napi_define_class(env, "Poller", NAPI_AUTO_LENGTH, poller_new, NULL,
                                      sizeof(methods) / sizeof(methods[0]), methods, &cls));
  KC_CALL_BOOL(env, napi_set_named_property(env, exports, "Poller", cls));
  return true;
}
