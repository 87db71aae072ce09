/* Host platform for the same generated C: stdout and a tick counter that reads 0. */
#include <stdio.h>

#include "wv_runtime.h"

void wv_platform_write(const char* text) { fputs(text, stdout); }

uint64_t wv_platform_ticks(void) { return 0; }
