/*
 * The pure Node-API side of the finalizer-lag probe (probe.ts builds it with the system C
 * compiler against the running Node's headers). It hands out Buffers the three ways an addon can:
 *
 * - external(len, adjust): malloc'd memory wrapped by napi_create_external_buffer, freed by a
 *   finalizer (the way crates/node hands out blob views and recycled copies);
 * - externalArrayBuffer(len, adjust): the same through napi_create_external_arraybuffer;
 * - copy(len): napi_create_buffer_copy, memory from Node's ArrayBuffer allocator, which V8 frees
 *   itself (the way crates/node copies values under 32 MiB).
 *
 * `adjust` also reports the length with napi_adjust_external_memory (and takes it back in the
 * finalizer), as crates/node does. Built with NAPI_EXPERIMENTAL, the finalizer is a "basic" one
 * (node_api_basic_env: it touches no JavaScript), the kind Node-API may run during a collection. Every page is written, so the memory is resident.
 * stats() returns [made, finalized, bytes still allocated by external buffers].
 */
#include <node_api.h>
#include <stdlib.h>
#include <string.h>

static double made = 0, finalized = 0, live_bytes = 0;

typedef struct {
  size_t len;
  int adjust;
} hint_t;

#ifdef NAPI_EXPERIMENTAL
typedef node_api_basic_env finalize_env;
#else
typedef napi_env finalize_env;
#endif

static void finalize(finalize_env env, void* data, void* hint) {
  hint_t* h = (hint_t*)hint;
  if (h->adjust) {
    int64_t ignored;
    napi_adjust_external_memory(env, -(int64_t)h->len, &ignored);
  }
  live_bytes -= (double)h->len;
  finalized += 1;
  free(data);
  free(h);
}

static int args(napi_env env, napi_callback_info info, size_t* len, int* adjust) {
  size_t argc = 2;
  napi_value argv[2];
  double d = 0;
  bool b = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return 0;
  if (argc < 1 || napi_get_value_double(env, argv[0], &d) != napi_ok || d < 1) {
    napi_throw_type_error(env, NULL, "expected a length >= 1");
    return 0;
  }
  if (argc > 1) napi_get_value_bool(env, argv[1], &b);
  *len = (size_t)d;
  *adjust = b;
  return 1;
}

static napi_value make_external(napi_env env, napi_callback_info info, int arraybuffer) {
  size_t len;
  int adjust;
  napi_value result = NULL;
  if (!args(env, info, &len, &adjust)) return NULL;
  void* data = malloc(len);
  hint_t* h = malloc(sizeof *h);
  if (data == NULL || h == NULL) {
    free(data);
    free(h);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  memset(data, 1, len);
  h->len = len;
  h->adjust = adjust;
  if (adjust) {
    int64_t ignored;
    napi_adjust_external_memory(env, (int64_t)len, &ignored);
  }
  napi_status s = arraybuffer
      ? napi_create_external_arraybuffer(env, data, len, finalize, h, &result)
      : napi_create_external_buffer(env, len, data, finalize, h, &result);
  if (s != napi_ok) {
    free(data);
    free(h);
    napi_throw_error(env, NULL, "creating the external buffer failed");
    return NULL;
  }
  made += 1;
  live_bytes += (double)len;
  return result;
}

static napi_value external(napi_env env, napi_callback_info info) {
  return make_external(env, info, 0);
}

static napi_value external_arraybuffer(napi_env env, napi_callback_info info) {
  return make_external(env, info, 1);
}

static napi_value copy(napi_env env, napi_callback_info info) {
  size_t len;
  int adjust;
  void* data = NULL;
  napi_value result = NULL;
  if (!args(env, info, &len, &adjust)) return NULL;
  if (napi_create_buffer(env, len, &data, &result) != napi_ok) {
    napi_throw_error(env, NULL, "creating the buffer failed");
    return NULL;
  }
  memset(data, 1, len);
  made += 1;
  return result;
}

static napi_value stats(napi_env env, napi_callback_info info) {
  napi_value arr, v;
  double xs[3] = {made, finalized, live_bytes};
  napi_create_array_with_length(env, 3, &arr);
  for (uint32_t i = 0; i < 3; i++) {
    napi_create_double(env, xs[i], &v);
    napi_set_element(env, arr, i, v);
  }
  return arr;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"external", NULL, external, NULL, NULL, NULL, napi_default, NULL},
      {"externalArrayBuffer", NULL, external_arraybuffer, NULL, NULL, NULL, napi_default, NULL},
      {"copy", NULL, copy, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, stats, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
