/* Host platform for the same generated C: stdout, a tick counter that reads 0, file reads. */
#include <stdio.h>

#include "wv_runtime.h"

void wv_platform_write(const char* text) { fputs(text, stdout); }

uint64_t wv_platform_ticks(void) { return 0; }

int32_t wv_platform_read(const char* path, uint32_t offset, void* dst, uint32_t bytes) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return -1;
  const int ok = fseek(f, (long)offset, SEEK_SET) == 0 && fread(dst, 1, bytes, f) == bytes;
  fclose(f);
  return ok ? 0 : -1;
}
