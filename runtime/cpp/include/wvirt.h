/* libwvirt_runtime: run the tasks of a packed library (`wvirt build --target llvm`) over one
 * resident page pool (a .wvpack), switching tasks in memory. No Python: the library links TVM's
 * runtime (libtvm_runtime, libtvm_ffi) and nothing else.
 *
 * A switch gathers the task's pages into the one weight buffer (materialize mode) and runs the
 * task's weight transform on them, or does nothing (fused mode); a task's exclusive pages stay
 * in the .wvpack file (level 2) and are read by byte range at its switch, or ahead of it by
 * `wv_prefetch` on a background thread. The outputs are those of the Python runtime
 * (`MultitaskRuntime`), bit for bit.
 *
 * Errors: every call that can fail returns a wv_status; `wv_last_error()` is the message of the
 * last failed call in the calling thread (naming the file, task, input or field at fault).
 *
 * Thread safety: one lock per runtime. Concurrent `wv_run` calls are served one at a time, each
 * with its own task's weights. A prefetch reads only the prefetch scratch, which a switch reads
 * only after the prefetch has finished. */
#ifndef WVIRT_H_
#define WVIRT_H_

#include <stddef.h>
#include <stdint.h>

#if defined(WVIRT_BUILDING) && defined(__GNUC__)
#define WV_API __attribute__((visibility("default")))
#else
#define WV_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  WV_OK = 0,
  WV_ERROR_ARGUMENT = 1, /* an unknown task, a wrong input count or size, a NULL pointer */
  WV_ERROR_FILE = 2,     /* a file missing, unreadable or truncated */
  WV_ERROR_FORMAT = 3,   /* a file of the wrong format, or a library and pack that differ */
  WV_ERROR_TVM = 4,      /* TVM's runtime failed (loading the library, running a kernel) */
} wv_status;

typedef struct wv_runtime wv_runtime;

/* A tensor's type: its shape (ndim values), dtype ("float32", "int64", ...) and bytes. */
typedef struct {
  int32_t ndim;
  const int64_t* shape;
  const char* dtype;
  size_t nbytes;
} wv_tensor_type;

typedef struct {
  uint64_t requests;
  uint64_t switches;
  uint64_t bytes_gathered;  /* pages a switch's gather moved into the weight buffer */
  uint64_t bytes_read_l2;   /* exclusive pages read from the .wvpack file */
  uint64_t prefetch_hits;   /* switches whose exclusive pages were already prefetched */
  double switch_seconds;
  double inference_seconds;
} wv_counters;

/* Load `library_dir` (library.so + library.json from `wvirt build`) and the pool and page
 * tables of `pack_path` (the .wvpack it was built from) onto the CPU. */
WV_API wv_status wv_open(const char* library_dir, const char* pack_path, wv_runtime** runtime);
WV_API void wv_close(wv_runtime* runtime);
WV_API const char* wv_last_error(void);

WV_API int32_t wv_task_count(const wv_runtime* runtime);
/* NULL when `index` is out of range */
WV_API const char* wv_task_name(const wv_runtime* runtime, int32_t index);

/* A task's inputs and outputs (outputs flattened, as the Python runtime returns them). */
WV_API wv_status wv_input_count(const wv_runtime* runtime, const char* task, int32_t* count);
WV_API wv_status wv_input_type(const wv_runtime* runtime, const char* task, int32_t index,
                        wv_tensor_type* type);
WV_API wv_status wv_output_count(const wv_runtime* runtime, const char* task, int32_t* count);
WV_API wv_status wv_output_type(const wv_runtime* runtime, const char* task, int32_t index,
                         wv_tensor_type* type);

/* Make `task` current (`wv_run` switches by itself when needed). */
WV_API wv_status wv_switch(wv_runtime* runtime, const char* task);
/* Start reading `task`'s exclusive pages into the prefetch scratch in the background (nothing
 * for a task without exclusive pages). */
WV_API wv_status wv_prefetch(wv_runtime* runtime, const char* task);
/* Run `task`: `inputs[i]` holds input i's bytes (wv_input_type), `outputs[i]` receives output
 * i's bytes (wv_output_type). */
WV_API wv_status wv_run(wv_runtime* runtime, const char* task, const void* const* inputs,
                 int32_t n_inputs, void* const* outputs, int32_t n_outputs);

typedef enum { WV_POLICY_FIFO = 0, WV_POLICY_GROUP = 1 } wv_policy;
/* The order to serve a queue of `n` requests in, for the tasks `tasks[i]` in arrival order:
   `order[k]` is the index of the k-th to serve. FIFO: arrival order. GROUP: keep serving the
   current task's oldest pending request, else switch to the oldest pending request's task;
   a request that `max_wait` later ones have overtaken is served next (the Python runtime's
   `schedule`). */
WV_API wv_status wv_schedule(const wv_runtime* runtime, const char* const* tasks, int32_t n,
                             wv_policy policy, int32_t max_wait, int32_t* order);

WV_API wv_status wv_get_counters(const wv_runtime* runtime, wv_counters* counters);
/* Level-1 weight memory held: pool + page tables + weight buffer + exclusive scratches. */
WV_API uint64_t wv_resident_bytes(const wv_runtime* runtime);

#ifdef __cplusplus
}
#endif

#endif /* WVIRT_H_ */
