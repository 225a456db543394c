/* SPDX-License-Identifier: MIT */
/*
 * FreeRTOS port macros for an Armv7-A guest of the Tessera hypervisor.
 *
 * Tasks run in System mode (privileged, sharing the User registers), so a
 * yield (`svc #0`) and an interrupt can save the whole task context on the
 * task's own stack. Interrupts are masked with CPSR.I and never nest: every
 * interrupt the port takes (the tick, the cross-core yield SGI and the
 * application's) runs at the kernel's priority. Critical-section nesting is
 * kept in the TCB (portCRITICAL_NESTING_IN_TCB), which the SMP kernel needs
 * and the single-core kernel supports, so both builds share one port.
 *
 * New code for Tessera; written after reading the kernel's porting notes and
 * the GCC/ARM_CA9 port, not derived from its sources.
 */
#ifndef PORTMACRO_H
#define PORTMACRO_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Types ---- */
#define portCHAR        char
#define portFLOAT       float
#define portDOUBLE      double
#define portLONG        long
#define portSHORT       short
#define portSTACK_TYPE  uint32_t
#define portBASE_TYPE   long

typedef portSTACK_TYPE StackType_t;
typedef long BaseType_t;
typedef unsigned long UBaseType_t;
typedef uint32_t TickType_t;
#define portMAX_DELAY              ((TickType_t)0xffffffffUL)
#define portTICK_TYPE_IS_ATOMIC    1

#define portSTACK_GROWTH           (-1)
#define portTICK_PERIOD_MS         ((TickType_t)1000 / configTICK_RATE_HZ)
#define portBYTE_ALIGNMENT         8
#define portPOINTER_SIZE_TYPE      uint32_t
#define portCRITICAL_NESTING_IN_TCB 1

/* ---- Interrupt masking (CPSR.I) ---- */
static inline __attribute__((always_inline)) UBaseType_t uxPortMaskIrqs(void)
{
    UBaseType_t cpsr;
    __asm__ volatile("mrs %0, cpsr\n\tcpsid i" : "=r"(cpsr)::"memory");
    return cpsr & 0x80u;
}

static inline __attribute__((always_inline)) void vPortRestoreIrqs(UBaseType_t was_masked)
{
    if (was_masked == 0u) {
        __asm__ volatile("cpsie i" ::: "memory");
    }
}

#define portDISABLE_INTERRUPTS()                 __asm__ volatile("cpsid i" ::: "memory")
#define portENABLE_INTERRUPTS()                  __asm__ volatile("cpsie i" ::: "memory")
#define portSET_INTERRUPT_MASK()                 uxPortMaskIrqs()
#define portCLEAR_INTERRUPT_MASK(x)              vPortRestoreIrqs(x)
#define portSET_INTERRUPT_MASK_FROM_ISR()        uxPortMaskIrqs()
#define portCLEAR_INTERRUPT_MASK_FROM_ISR(x)     vPortRestoreIrqs(x)

/* ---- Critical sections: the kernel's, nesting count in the TCB ---- */
extern void vTaskEnterCritical(void);
extern void vTaskExitCritical(void);
#define portENTER_CRITICAL()    vTaskEnterCritical()
#define portEXIT_CRITICAL()     vTaskExitCritical()

#if configNUMBER_OF_CORES > 1
extern UBaseType_t vTaskEnterCriticalFromISR(void);
extern void vTaskExitCriticalFromISR(UBaseType_t uxSavedInterruptStatus);
#define portENTER_CRITICAL_FROM_ISR()     vTaskEnterCriticalFromISR()
#define portEXIT_CRITICAL_FROM_ISR(x)     vTaskExitCriticalFromISR(x)
#endif

/* ---- Which core, which context ---- */
/* The vCPU index: Tessera sets MPIDR.Aff0 to it (PSCI CPU_ON's target). */
static inline __attribute__((always_inline)) BaseType_t xPortGetCoreID(void)
{
    uint32_t mpidr;
    __asm__ volatile("mrc p15, 0, %0, c0, c0, 5" : "=r"(mpidr));
    return (BaseType_t)(mpidr & 0xffu);
}
#define portGET_CORE_ID()    xPortGetCoreID()

/* Per-core interrupt nesting: non-zero while the port's IRQ handler runs. */
extern volatile uint32_t ulPortInterruptNesting[configNUMBER_OF_CORES];
#define portCHECK_IF_IN_ISR()    (ulPortInterruptNesting[portGET_CORE_ID()] != 0u)
#define portASSERT_IF_IN_ISR()   configASSERT(portCHECK_IF_IN_ISR() == 0)

/* ---- Yields ---- */
/* From a task: a supervisor call, whose handler switches tasks. */
#define portYIELD()    __asm__ volatile("svc #0" ::: "memory")

/* From an interrupt handler: switch when the handler returns. */
extern volatile uint32_t ulPortYieldRequired[configNUMBER_OF_CORES];
#define portYIELD_FROM_ISR(x)                                                  \
    do {                                                                       \
        if ((x) != pdFALSE) {                                                  \
            ulPortYieldRequired[portGET_CORE_ID()] = pdTRUE;                   \
        }                                                                      \
    } while (0)
#define portEND_SWITCHING_ISR(x)    portYIELD_FROM_ISR(x)

#if configNUMBER_OF_CORES > 1
/* Another core: a software-generated interrupt (SGI portYIELD_SGI) through
 * the virtual GIC; this core: as from a task or an ISR. */
void vPortYieldCore(BaseType_t xCoreID);
#define portYIELD_CORE(x)    vPortYieldCore(x)

/* The kernel's two recursive locks (task lock, ISR lock). */
void vPortLockAcquire(uint32_t ulLock, BaseType_t xCoreID);
void vPortLockRelease(uint32_t ulLock, BaseType_t xCoreID);
#define portGET_TASK_LOCK(xCoreID)        vPortLockAcquire(0u, (xCoreID))
#define portRELEASE_TASK_LOCK(xCoreID)    vPortLockRelease(0u, (xCoreID))
#define portGET_ISR_LOCK(xCoreID)         vPortLockAcquire(1u, (xCoreID))
#define portRELEASE_ISR_LOCK(xCoreID)     vPortLockRelease(1u, (xCoreID))
#endif

/* ---- Misc ---- */
#define portNOP()                 __asm__ volatile("nop")
#define portMEMORY_BARRIER()      __asm__ volatile("dmb ish" ::: "memory")
#define portDONT_DISCARD          __attribute__((used))
#define portTASK_FUNCTION_PROTO(vFunction, pvParameters) void vFunction(void *pvParameters)
#define portTASK_FUNCTION(vFunction, pvParameters)       void vFunction(void *pvParameters)

#ifdef __cplusplus
}
#endif

#endif /* PORTMACRO_H */
