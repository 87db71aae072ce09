/* wv_runtime: page gathers (and SmartDeal decodes) at a switch, and the workspace allocator
   the TVM kernels call. */
#include "wv_runtime.h"

#include <string.h>

#include "tvm/runtime/c_backend_api.h"

extern uint8_t wv_workspace[];
extern const uint32_t wv_workspace_bytes;

static int32_t wv_current = -1;
static uint32_t wv_workspace_top;
static wv_page_reader_t wv_reader;

void wv_set_page_reader(wv_page_reader_t reader) { wv_reader = reader; }

/* The value of the q-th code of a packed row: word q / n, bits (q % n) * code_bits on, with
   n = 32 / code_bits codes a word. */
static inline float wv_code(const uint32_t* restrict row, uint32_t q) {
  const uint32_t per_word = 32u / wv_memory.code_bits;
  const uint32_t word = row[q / per_word], shift = (q % per_word) * wv_memory.code_bits;
  return wv_memory.code_values[(word >> shift) & ((1u << wv_memory.code_bits) - 1u)];
}

/* An IEEE float16 (its bits) as the float32 of the same value: exact for every half, zeros,
   subnormals, infinities and NaNs included. On the MCU (-mfp16-format=ieee) the FPU's vcvtb
   does it; elsewhere (the host build) the bits are rebiased. */
static inline float wv_half_to_float(uint16_t half) {
#if defined(__ARM_FP16_FORMAT_IEEE)
  __fp16 value;
  memcpy(&value, &half, sizeof value);
  return (float)value;
#else
  const uint32_t sign = (uint32_t)(half & 0x8000u) << 16;
  uint32_t exponent = (half >> 10) & 0x1Fu, mantissa = half & 0x3FFu, bits;
  if (exponent == 0x1Fu) { /* infinity, NaN */
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) { /* normal: rebias 15 -> 127 */
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) { /* zero */
    bits = sign;
  } else { /* subnormal (mantissa * 2^-24): normalise */
    exponent = 113u;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
#endif
}

/* weights[3r + j] = sum_k value(code 3r + k) * basis[k][j], summed k = 0, 1, 2 in order (as
   the host's wv_gather_coded_pages; -ffp-contract=off keeps each product rounded). The basis is
   read once, widened to float32, into registers. */
static void wv_decode_page(float* restrict weights, const uint32_t* restrict codes,
                           const uint16_t* restrict basis) {
  const float b00 = wv_half_to_float(basis[0]), b01 = wv_half_to_float(basis[1]);
  const float b02 = wv_half_to_float(basis[2]), b10 = wv_half_to_float(basis[3]);
  const float b11 = wv_half_to_float(basis[4]), b12 = wv_half_to_float(basis[5]);
  const float b20 = wv_half_to_float(basis[6]), b21 = wv_half_to_float(basis[7]);
  const float b22 = wv_half_to_float(basis[8]);
  for (uint32_t r = 0; r < wv_memory.page_size; r += 3) {
    const float c0 = wv_code(codes, r);
    const float c1 = wv_code(codes, r + 1);
    const float c2 = wv_code(codes, r + 2);
    weights[r] = c0 * b00 + c1 * b10 + c2 * b20;
    weights[r + 1] = c0 * b01 + c1 * b11 + c2 * b21;
    weights[r + 2] = c0 * b02 + c1 * b12 + c2 * b22;
  }
}

int32_t wv_switch(int32_t task) {
  if (task < 0 || task >= wv_n_tasks) return -1;
  const wv_task_t* t = &wv_tasks[task];
  const uint32_t page_size = wv_memory.page_size;
  for (uint32_t i = 0; i < t->n_pages; ++i) {
    const uint32_t id = t->page_table[i];
    float* weights = wv_memory.weights + i * page_size;
    if (id >= wv_memory.n_pool_pages && t->exclusive_codes != NULL) {
      const uint32_t k = id - wv_memory.n_pool_pages;
      wv_decode_page(weights, t->exclusive_codes + k * wv_memory.code_row_words,
                     t->exclusive_bases + k * 9);
    } else if (id >= wv_memory.n_pool_pages) {
      const uint32_t k = id - wv_memory.n_pool_pages, bytes = page_size * sizeof(float);
      if (wv_reader != NULL) {
        if (wv_reader(t->exclusive_offset + k * bytes, weights, bytes) != 0) return -2;
      } else if (t->exclusive_pages != NULL) {
        memcpy(weights, t->exclusive_pages + k * page_size, bytes);
      } else {
        return -2; /* a WV_EXCLUSIVE_EXTERNAL build without a page reader */
      }
    } else if (wv_memory.codes != NULL) {
      wv_decode_page(weights, wv_memory.codes + id * wv_memory.code_row_words,
                     wv_memory.bases + id * 9);
    } else {
      memcpy(weights, wv_memory.pool + id * page_size, page_size * sizeof(float));
    }
  }
  wv_current = task;
  return 0;
}

void wv_gather_weight(float* dst, const uint16_t* table, uint32_t numel) {
  const uint32_t page_size = wv_memory.page_size;
  if (wv_memory.codes != NULL) { /* whole pages: the scratch holds them */
    for (uint32_t k = 0; k * page_size < numel; ++k) {
      wv_decode_page(dst + k * page_size, wv_memory.codes + table[k] * wv_memory.code_row_words,
                     wv_memory.bases + table[k] * 9);
    }
    return;
  }
  for (uint32_t k = 0; numel > 0; ++k) {
    const uint32_t n = numel < page_size ? numel : page_size;
    memcpy(dst + k * page_size, wv_memory.pool + table[k] * page_size, n * sizeof(float));
    numel -= n;
  }
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
