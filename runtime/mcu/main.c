/* Serve the request list: switch, run, print ticks and outputs (as float bit patterns). */
#include <stdint.h>

#include "wv_requests.h"
#include "wv_runtime.h"

static char line[128];
static uint32_t line_len;

static void put_str(const char* text) {
  while (*text) {
    if (line_len == sizeof(line) - 1) {
      line[line_len] = 0;
      wv_platform_write(line);
      line_len = 0;
    }
    line[line_len++] = *text++;
  }
}

static void put_dec(uint64_t value) {
  char digits[21];
  int n = 0;
  do digits[n++] = (char)('0' + value % 10); while ((value /= 10) != 0);
  char text[21];
  for (int i = 0; i < n; ++i) text[i] = digits[n - 1 - i];
  text[n] = 0;
  put_str(text);
}

static void put_hex(uint32_t value) {
  char text[10] = " ";
  for (int i = 0; i < 8; ++i) text[1 + i] = "0123456789abcdef"[(value >> (28 - 4 * i)) & 0xF];
  text[9] = 0;
  put_str(text);
}

static void end_line(void) {
  put_str("\n");
  line[line_len] = 0;
  wv_platform_write(line);
  line_len = 0;
}

int main(void) {
  int32_t current = -1;
  for (int32_t r = 0; r < wv_n_requests; ++r) {
    const wv_request_t* request = &wv_requests[r];
    uint64_t start = wv_platform_ticks();
    if (request->task != current) {
      if (wv_switch(request->task) != 0) return 1;
      const uint64_t switch_ticks = wv_platform_ticks() - start;
      current = request->task;
      put_str("switch ");
      put_str(wv_tasks[request->task].name);
      put_str(" ");
      put_dec(switch_ticks);
      end_line();
      start = wv_platform_ticks();
    }
    if (wv_run(request->task, request->inputs, request->outputs) != 0) return 1;
    const uint64_t ticks = wv_platform_ticks() - start;
    put_str("run ");
    put_str(wv_tasks[request->task].name);
    put_str(" ");
    put_dec(ticks);
    end_line();
    for (int32_t k = 0; k < request->n_outputs; ++k) {
      const uint32_t* words = (const uint32_t*)request->outputs[k];
      put_str("out ");
      put_dec((uint64_t)r);
      put_str(" ");
      put_dec((uint64_t)k);
      for (uint32_t i = 0; i < request->output_words[k]; ++i) put_hex(words[i]);
      end_line();
    }
  }
  put_str("done");
  end_line();
  return 0;
}
