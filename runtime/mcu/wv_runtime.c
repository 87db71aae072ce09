/* wv_runtime: page gathers at a switch, and the workspace allocator the TVM kernels call. */
#include "wv_runtime.h"

#include <string.h>

#include "tvm/runtime/c_backend_api.h"

extern uint8_t wv_workspace[];
extern const uint32_t wv_workspace_bytes;

static int32_t wv_current = -1;
static uint32_t wv_workspace_top;

int32_t wv_switch(int32_t task) {
  if (task < 0 || task >= wv_n_tasks) return -1;
  const wv_task_t* t = &wv_tasks[task];
  const uint32_t page_bytes = (uint32_t)wv_memory.page_size * sizeof(float);
  for (uint32_t i = 0; i < t->n_pages; ++i) {
    const uint32_t id = t->page_table[i];
    const float* page = id < wv_memory.n_pool_pages
                            ? wv_memory.pool + id * wv_memory.page_size
                            : t->exclusive_pages + (id - wv_memory.n_pool_pages) * wv_memory.page_size;
    memcpy(wv_memory.weights + i * wv_memory.page_size, page, page_bytes);
  }
  wv_current = task;
  return 0;
}

int32_t wv_run(int32_t task, void* const* inputs, void* const* outputs) {
  if (task != wv_current && wv_switch(task) != 0) return -1;
  return wv_tasks[task].run(inputs, outputs);
}

/* Kernels allocate temporaries and free them in reverse order: a bump allocator suffices. */
void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes,
                               int dtype_code_hint, int dtype_bits_hint) {
  (void)device_type, (void)device_id, (void)dtype_code_hint, (void)dtype_bits_hint;
  const uint32_t start = (wv_workspace_top + 15u) & ~15u;
  if (start + nbytes > wv_workspace_bytes) return 0;
  wv_workspace_top = start + (uint32_t)nbytes;
  return wv_workspace + start;
}

int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) {
  (void)device_type, (void)device_id;
  wv_workspace_top = (uint32_t)((uint8_t*)ptr - wv_workspace);
  return 0;
}
