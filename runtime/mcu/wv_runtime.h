/* wv_runtime: context switches between tasks whose weights share one page pool. */
#ifndef WV_RUNTIME_H_
#define WV_RUNTIME_H_

#include <stddef.h>
#include <stdint.h>

/* One task: its page table (ids < n_pool_pages: pool pages in RAM, others: its exclusive pages
   in flash, float32 or, with a coded pool, SmartDeal-coded like it) and its generated
   executor. */
typedef struct {
  const char* name;
  uint16_t n_pages;
  const uint16_t* page_table;
  /* [n_exclusive_pages][page_size], flash; NULL when coded, or when built WV_EXCLUSIVE_EXTERNAL
     (then read through the page reader from exclusive_pages.bin, at exclusive_offset) */
  const float* exclusive_pages;
  uint32_t exclusive_offset;       /* bytes into exclusive_pages.bin of its float32 pages */
  const uint32_t* exclusive_codes; /* [n_exclusive_pages][code_row_words], flash; or NULL */
  const uint16_t* exclusive_bases; /* [n_exclusive_pages][3][3] float16 bits, flash; or NULL */
  int32_t (*run)(void* const* inputs, void* const* outputs);
} wv_task_t;

/* The page pool and the weight buffer the current task's pages are gathered into. The pool is
   float32 pages, or SmartDeal pages (`codes` set, `pool` NULL): page i's weights are its codes
   as a (page_size / 3) x 3 matrix of powers of two times its 3x3 basis (IEEE float16, widened
   to float32 exactly before the product); the codes are packed
   `code_bits` bits each, 32 / code_bits to a word (LSB first), a row of `code_row_words`
   words per page. */
typedef struct {
  const float* pool;        /* [n_pool_pages][page_size], RAM; NULL when coded */
  const uint32_t* codes;    /* [n_pool_pages][code_row_words], RAM; NULL when not coded */
  const uint16_t* bases;    /* [n_pool_pages][3][3] float16 bits, RAM */
  const float* code_values; /* [1 << code_bits], flash: the value of each code */
  uint16_t n_pool_pages;
  uint16_t page_size;
  float* weights; /* [pages of the largest task][page_size], RAM */
  uint8_t code_bits;
  uint16_t code_row_words;
} wv_memory_t;

extern const wv_task_t wv_tasks[];
extern const int32_t wv_n_tasks;
extern const wv_memory_t wv_memory;

/* WV_EXCLUSIVE_EXTERNAL (CMake: -DWVIRT_EXCLUSIVE_EXTERNAL=ON): the float32 exclusive pages are
   not linked; a switch reads them from the project's exclusive_pages.bin, kept where the firmware
   says (external flash, an SD card), through the reader it sets. */
#ifdef WV_EXCLUSIVE_EXTERNAL
#define WV_EXCLUSIVE_ARRAY(array) NULL
#else
#define WV_EXCLUSIVE_ARRAY(array) array
#endif

/* Copy `bytes` bytes at `offset` of exclusive_pages.bin into `dst`; 0 on success. */
typedef int32_t (*wv_page_reader_t)(uint32_t offset, void* dst, uint32_t bytes);
/* Read float32 exclusive pages through `reader` instead of from flash (NULL: from flash).
   SmartDeal-coded exclusive pages are always read from flash. */
void wv_set_page_reader(wv_page_reader_t reader);

/* Gather `task`'s pages into the weight buffer (decoding SmartDeal pages); 0 on success, -1 for
   a task out of range, -2 when an exclusive page cannot be read (the reader failed, or none is
   set in a WV_EXCLUSIVE_EXTERNAL build). */
int32_t wv_switch(int32_t task);
/* Zero-copy builds: copy a weight's `numel` values from the pages its page-table slice `table`
   lists into `dst` (a kernel that reads the weight many times reads this copy); SmartDeal
   pages are decoded, whole pages, into `dst`. */
void wv_gather_weight(float* dst, const uint16_t* table, uint32_t numel);
/* Run `task` (switching first if another task is current); 0 on success. */
int32_t wv_run(int32_t task, void* const* inputs, void* const* outputs);

/* What the platform (startup.c on the MCU, host.c on the host) provides: text output, a tick
   counter, and (for examples/firmware's page reader) reading bytes of a file on the host running
   QEMU (semihosting) or of a file (host build); 0 on success. */
void wv_platform_write(const char* text);
uint64_t wv_platform_ticks(void);
int32_t wv_platform_read(const char* path, uint32_t offset, void* dst, uint32_t bytes);

#endif /* WV_RUNTIME_H_ */
