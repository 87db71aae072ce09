/* Cortex-M startup and platform: vector table, .data/.bss/pool setup, FPU, SysTick counter,
   semihosting output, file reads and exit (a fault exits too, so a crash cannot hang QEMU). */
#include <stdint.h>
#include <string.h>

#include "wv_runtime.h"

#define SCB_CPACR (*(volatile uint32_t*)0xE000ED88u)
#define SYST_CSR (*(volatile uint32_t*)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018u)
#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_WRITE0 0x04
#define SYS_READ 0x06
#define SYS_SEEK 0x0A
#define SYS_EXIT 0x18
#define ADP_STOPPED_APPLICATION_EXIT 0x20026
#define ADP_STOPPED_RUNTIME_ERROR 0x20023

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
extern uint32_t __wv_pool_load, __wv_pool_start, __wv_pool_end;
int main(void);

static volatile uint32_t systick_wraps;

static int semihost(int op, const void* arg) {
  register int r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void wv_platform_write(const char* text) { semihost(SYS_WRITE0, text); }

/* A file of the host running QEMU, through semihosting (mode 1: "rb"). */
int32_t wv_platform_read(const char* path, uint32_t offset, void* dst, uint32_t bytes) {
  const uint32_t open_args[3] = {(uint32_t)path, 1u, (uint32_t)strlen(path)};
  const int handle = semihost(SYS_OPEN, open_args);
  if (handle < 0) return -1;
  const uint32_t seek_args[2] = {(uint32_t)handle, offset};
  const uint32_t read_args[3] = {(uint32_t)handle, (uint32_t)dst, bytes};
  const int ok = semihost(SYS_SEEK, seek_args) == 0 && semihost(SYS_READ, read_args) == 0;
  const uint32_t close_args[1] = {(uint32_t)handle};
  semihost(SYS_CLOSE, close_args);
  return ok ? 0 : -1;
}

/* SysTick runs on the CPU clock; under `-icount` its count follows the instructions run. */
uint64_t wv_platform_ticks(void) {
  uint32_t wraps, value;
  do {
    wraps = systick_wraps;
    value = SYST_CVR;
  } while (wraps != systick_wraps);
  return ((uint64_t)wraps << 24) + (0xFFFFFFu - value);
}

static void __attribute__((noreturn)) wv_exit(int reason) {
  semihost(SYS_EXIT, (const void*)reason);
  for (;;) {
  }
}

void SysTick_Handler(void) { systick_wraps++; }

void Fault_Handler(void) {
  wv_platform_write("FAULT\n");
  wv_exit(ADP_STOPPED_RUNTIME_ERROR);
}

void __attribute__((noreturn)) Reset_Handler(void) {
  SCB_CPACR |= 0xFu << 20; /* CP10, CP11: the FPU */
  __asm__ volatile("dsb\n isb");
  memcpy(&__data_start, &__data_load, (uint32_t)&__data_end - (uint32_t)&__data_start);
  memcpy(&__wv_pool_start, &__wv_pool_load,
         (uint32_t)&__wv_pool_end - (uint32_t)&__wv_pool_start);
  memset(&__bss_start, 0, (uint32_t)&__bss_end - (uint32_t)&__bss_start);
  SYST_RVR = 0xFFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 0x7u; /* enable, interrupt on wrap, CPU clock */
  while (SYST_CVR == 0) { /* the first tick loads the reload value */
  }
  wv_exit(main() == 0 ? ADP_STOPPED_APPLICATION_EXIT : ADP_STOPPED_RUNTIME_ERROR);
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&__stack_top, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler,
    SysTick_Handler,
};
