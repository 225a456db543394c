/* SPDX-License-Identifier: MIT */
/*
 * What the Tessera FreeRTOS port offers applications beyond the FreeRTOS API:
 * the virtual counter, the tick's timeline, the boot DTB, interrupts of
 * their own, a console logger and the port's counters.
 */
#ifndef TESSERA_PORT_H
#define TESSERA_PORT_H

#include <stdint.h>

#include "FreeRTOS.h"
#include <tessera/guest_map.h>

#ifdef __cplusplus
extern "C" {
#endif

/* GIC interrupt IDs the port owns. */
#define portYIELD_SGI     0u  /* cross-core yield request */
#define portVTIMER_PPI    TESSERA_MAP_PPI_VTIMER /* EL1 virtual timer: the tick */

/* The virtual counter CNTVCT (starts at 0 when the VM starts) and CNTFRQ. */
uint64_t ullPortCounter(void);
uint32_t ulPortCounterFrequency(void);

/* The counter value at which tick `xTick` was due (the ideal release time
 * of a task that vTaskDelayUntil() woke on that tick). */
uint64_t ullPortTickToCounter(TickType_t xTick);

/* The guest-physical address of the DTB Tessera passed in r2 at entry. */
uint32_t ulPortBootDtb(void);

/* configNUMBER_OF_CORES of this build, and the calling core. */
BaseType_t xPortCoreCount(void);
BaseType_t xPortCurrentCore(void);

/* Enables interrupt `ulId` (PPI or SPI) at the kernel's priority, routed to
 * the calling core; it then reaches vApplicationIRQHandler(ulId). */
void vPortEnableInterrupt(uint32_t ulId);

/* portYIELD_FROM_ISR(xSwitchRequired) for code that cannot use the macro
 * (Rust): from an ISR, asks for a task switch on the way out. */
void vPortYieldFromISR(BaseType_t xSwitchRequired);

/* Called from the port's IRQ handler (interrupts masked, on the core's IRQ
 * stack) for every interrupt that is not the tick or the yield SGI. Use the
 * FromISR API and portYIELD_FROM_ISR(). The default reports the ID. */
void vApplicationIRQHandler(uint32_t ulId);

/* Called in the context of a task that took a data abort, prefetch abort
 * or undefined instruction (the task is then suspended forever). ulKind:
 * 0 data abort, 1 prefetch abort, 2 undefined instruction. The default does
 * nothing beyond the port's report line. */
void vApplicationTaskFaultHook(uint32_t ulKind, uint32_t ulPc, uint32_t ulAddress, uint32_t ulStatus);

/* printf-like line to the VM's console (one hypercall per call): %s %c %d
 * %u %x, with an optional width and 0 flag (%08x). */
void vPortLog(const char *pcFormat, ...) __attribute__((format(printf, 1, 2)));

/* The port's counters since boot. */
typedef struct {
    uint32_t ulTicks;          /* tick interrupts taken (core 0) */
    uint32_t ulLateTicks;      /* ticks that were already overdue when the
                                * tick interrupt ran (the vCPU was not running) */
    uint32_t ulYieldSgisSent;  /* cross-core yield requests */
    uint32_t ulYieldSgisTaken[2]; /* ... taken per core */
    uint32_t ulTaskFaults;     /* tasks stopped by a fault */
    uint32_t ulLockContended;  /* SMP: kernel-lock acquisitions that had to wait */
    uint32_t ulLockWaitMax;    /* SMP: the longest such wait, counter ticks */
} PortStats_t;
void vPortGetStats(PortStats_t *pxStats);

#ifdef __cplusplus
}
#endif

#endif /* TESSERA_PORT_H */
