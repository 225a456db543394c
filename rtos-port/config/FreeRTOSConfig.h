/* SPDX-License-Identifier: MIT */
/*
 * FreeRTOS configuration for the Tessera guest port (rtos-port/port).
 *
 * Some values are passed on the compiler command line by rtos-port/build.rs
 * (through the freertos-build crate) and are therefore not defined here:
 * configNUMBER_OF_CORES (1 or 2: two kernel builds), configMINIMAL_STACK_SIZE,
 * configTOTAL_HEAP_SIZE, configMAX_PRIORITIES, configUSE_PREEMPTION and the
 * INCLUDE_* switches that the freertos-next crate's features select.
 */
#ifndef FREERTOS_CONFIG_H
#define FREERTOS_CONFIG_H

#ifndef configNUMBER_OF_CORES
#error "configNUMBER_OF_CORES comes from rtos-port/build.rs"
#endif

/* The tick: the Arm generic virtual timer (CNTV, PPI 27); see port.c. */
#define configTICK_RATE_HZ                      1000
#define configCPU_CLOCK_HZ                      0 /* unused: the tick is derived from CNTFRQ */
#define configTICK_TYPE_WIDTH_IN_BITS           TICK_TYPE_WIDTH_32_BITS

/* Scheduling. The generic task selection is required by the SMP kernel and
 * used for both builds so they behave alike. Time slicing is off: with an idle
 * task on every core it would send every idle core a yield SGI on every tick,
 * waking its vCPU for nothing; the demo's tasks block instead of spinning. */
#define configUSE_PORT_OPTIMISED_TASK_SELECTION 0
#define configUSE_TIME_SLICING                  0
#define configIDLE_SHOULD_YIELD                 1
#define configMAX_TASK_NAME_LEN                 16
#define configENABLE_BACKWARD_COMPATIBILITY     0

#if configNUMBER_OF_CORES > 1
#define configRUN_MULTIPLE_PRIORITIES           1
#define configUSE_CORE_AFFINITY                 0
#define configUSE_PASSIVE_IDLE_HOOK             1
#endif

/* Memory: dynamic allocation from heap_4 (configTOTAL_HEAP_SIZE). */
#define configSUPPORT_DYNAMIC_ALLOCATION        1
#define configSUPPORT_STATIC_ALLOCATION         0
#define configUSE_MALLOC_FAILED_HOOK            1
#define configCHECK_FOR_STACK_OVERFLOW          2

/* Features the demo uses. */
#define configUSE_IDLE_HOOK                     1 /* WFI: gives the pCPU back to Tessera */
#define configUSE_TICK_HOOK                     0
#define configUSE_MUTEXES                       1
#define configUSE_TASK_NOTIFICATIONS            1
#define configUSE_TIMERS                        0
#define configUSE_CO_ROUTINES                   0
#define configUSE_QUEUE_SETS                    0
#define configQUEUE_REGISTRY_SIZE               0
#define configUSE_STATS_FORMATTING_FUNCTIONS    0
#define configGENERATE_RUN_TIME_STATS           0
#define INCLUDE_vTaskDelay                      1
#define INCLUDE_xTaskGetCurrentTaskHandle       1
#define INCLUDE_xTaskGetSchedulerState          1
#define INCLUDE_uxTaskPriorityGet               1
#define INCLUDE_vTaskPrioritySet                1

/* Interrupts: the port masks IRQs with CPSR.I and never nests them, so
 * every interrupt runs at the kernel's priority (see port.c). */
#define configKERNEL_INTERRUPT_PRIORITY         0xa0
#define configMAX_SYSCALL_INTERRUPT_PRIORITY    0xa0

#ifndef __ASSEMBLER__
/* A failed assertion is reported on the console and stops the VM. */
void vPortAssertFailed(const char *pcFile, unsigned long ulLine);
#define configASSERT(x)                                                        \
    do {                                                                       \
        if ((x) == 0) {                                                        \
            vPortAssertFailed(__FILE__, __LINE__);                             \
        }                                                                      \
    } while (0)
#endif

#endif /* FREERTOS_CONFIG_H */
