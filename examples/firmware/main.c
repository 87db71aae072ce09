/* A firmware on a packed project's library (wvirt.h): every task once on float32 inputs of a
   fixed pattern, each output printed as float32 bit patterns: `task <name> out <k> <words>`.
   Built WV_EXCLUSIVE_EXTERNAL, it reads the exclusive pages through a page reader. */
#include <stdint.h>

#include "wvirt.h"

static uint32_t inputs[(WV_MAX_INPUT_BYTES + 3) / 4];
static uint32_t outputs[(WV_MAX_OUTPUT_BYTES + 3) / 4];

static void put_word(uint32_t value, int digits, int base) {
  char text[12] = " ";
  for (int i = 0; i < digits; ++i) {
    uint32_t scale = 1;
    for (int j = 1; j < digits - i; ++j) scale *= (uint32_t)base;
    text[1 + i] = "0123456789abcdef"[(value / scale) % (uint32_t)base];
  }
  wv_platform_write(text);
}

#ifdef WV_EXCLUSIVE_EXTERNAL
/* Exclusive pages from storage that is not memory-mapped: here a file (on QEMU, of the host,
   through semihosting); on a board, external flash or an SD card. */
static int32_t read_exclusive(uint32_t offset, void* dst, uint32_t bytes) {
  return wv_platform_read(WV_EXCLUSIVE_FILE, offset, dst, bytes);
}
#endif

int main(void) {
#ifdef WV_EXCLUSIVE_EXTERNAL
  wv_set_page_reader(read_exclusive);
#endif
  for (int32_t task = 0; task < WV_N_TASKS; ++task) {
    const wv_task_io_t* io = &wv_task_io[task];
    void* in[WV_MAX_INPUTS > 0 ? WV_MAX_INPUTS : 1];
    void* out[WV_MAX_OUTPUTS];
    uint32_t offset = 0;
    for (int32_t k = 0; k < io->n_inputs; ++k) {
      float* x = (float*)&inputs[offset];
      for (uint32_t i = 0; i < io->input_bytes[k] / 4; ++i) x[i] = 0.25f * (float)(i % 7) - 0.75f;
      in[k] = x;
      offset += io->input_bytes[k] / 4;
    }
    offset = 0;
    for (int32_t k = 0; k < io->n_outputs; ++k) {
      out[k] = &outputs[offset];
      offset += io->output_bytes[k] / 4;
    }
    if (wv_switch(task) != 0 || wv_run(task, in, out) != 0) return 1;
    for (int32_t k = 0; k < io->n_outputs; ++k) {
      wv_platform_write("task ");
      wv_platform_write(io->name);
      wv_platform_write(" out");
      put_word((uint32_t)k, 3, 10);
      const uint32_t* words = (const uint32_t*)out[k];
      for (uint32_t i = 0; i < io->output_bytes[k] / 4; ++i) put_word(words[i], 8, 16);
      wv_platform_write("\n");
    }
  }
  wv_platform_write("done\n");
  return 0;
}
