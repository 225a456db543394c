/* SPDX-License-Identifier: MIT */
/*
 * FreeRTOS port for an Armv7-A guest of the Tessera hypervisor: the C half
 * (the assembly half, portASM.S, has the vectors, the boot code and the
 * context switch).
 *
 * What Tessera gives the guest and how this port uses it:
 *  - tick: the EL1 virtual timer (CNTV, PPI 27), programmed with an absolute
 *    compare value (CNTV_CVAL) that advances by one tick period each time,
 *    so ticks never drift; ticks that are overdue when the interrupt is taken
 *    (the vCPU was not running) are all counted, so FreeRTOS time stays equal
 *    to the virtual counter's. Tessera has no timer hypercall and needs none:
 *    the virtual timer is the guest's own hardware, saved and restored with
 *    the vCPU, and its expiry wakes a vCPU that sleeps in WFI.
 *  - interrupts: the GICv2 CPU interface at 0x0801_0000 is the hardware's
 *    virtual CPU interface (acknowledge and EOI do not trap); the
 *    distributor at 0x0800_0000 is emulated, so it is written only with
 *    single 32-bit loads and stores without writeback (mmio_* below).
 *  - idle: WFI, which traps to Tessera and gives the pCPU to other vCPUs.
 *  - console: the TESSERA_CONSOLE_WRITE hypercall (tessera/guest.h).
 *  - SMP: the secondary core is a second vCPU started with PSCI CPU_ON over
 *    HVC; cross-core yields are SGIs written to GICD_SGIR.
 *
 * New code for Tessera; the kernel's sources are used unchanged.
 */
#include <stdarg.h>
#include <stdint.h>

#include "FreeRTOS.h"
#include "task.h"
#include "tessera_port.h"
#include <tessera/guest.h>
#include <tessera/guest_map.h>

/* ---- The virtual GIC (the guest map's addresses, as the guest DTB says) ---- */
#define GICD_BASE       TESSERA_MAP_GICD
#define GICD_CTLR       (GICD_BASE + 0x000u)
#define GICD_ISENABLER  (GICD_BASE + 0x100u)
#define GICD_IPRIORITYR (GICD_BASE + 0x400u)
#define GICD_ITARGETSR  (GICD_BASE + 0x800u)
#define GICD_SGIR       (GICD_BASE + 0xf00u)
#define GICC_BASE       TESSERA_MAP_GICC
#define GICC_CTLR       (GICC_BASE + 0x00u)
#define GICC_PMR        (GICC_BASE + 0x04u)
#define GICC_IAR        (GICC_BASE + 0x0cu)
#define GICC_EOIR       (GICC_BASE + 0x10u)
#define GIC_SPURIOUS    1020u

/* One device-register access as a single `str`/`ldr` with an immediate-free
 * addressing mode: Tessera emulates trapped device accesses from the
 * syndrome, which describes only loads and stores without writeback. */
static inline void mmio_write(uint32_t addr, uint32_t value)
{
    __asm__ volatile("str %1, [%0]" ::"r"(addr), "r"(value) : "memory");
}

static inline uint32_t mmio_read(uint32_t addr)
{
    uint32_t v;
    __asm__ volatile("ldr %0, [%1]" : "=r"(v) : "r"(addr) : "memory");
    return v;
}

/* ---- State ---- */
volatile uint32_t ulPortInterruptNesting[configNUMBER_OF_CORES];
volatile uint32_t ulPortYieldRequired[configNUMBER_OF_CORES];
uint32_t ulPortBootDtbAddress; /* written by _start */

static uint32_t ulTickPeriod;        /* counter ticks per FreeRTOS tick */
static uint64_t ullTickZero;         /* counter value of tick 0 */
static uint64_t ullNextTickDue;      /* counter value the next tick is due at */
static volatile PortStats_t xStats;

/* In portASM.S. */
extern void vPortStartFirstTask(BaseType_t xCoreID) __attribute__((noreturn));
extern void _secondary_start(void);

/* ---- The virtual counter and timer (Arm ARM B8, CP15 c14) ---- */
uint64_t ullPortCounter(void)
{
    uint32_t lo, hi;
    __asm__ volatile("isb\n\tmrrc p15, 1, %0, %1, c14" : "=r"(lo), "=r"(hi));
    return ((uint64_t)hi << 32) | lo;
}

uint32_t ulPortCounterFrequency(void)
{
    uint32_t f;
    __asm__ volatile("mrc p15, 0, %0, c14, c0, 0" : "=r"(f));
    return f;
}

static void prvVirtualTimerAt(uint64_t cval)
{
    /* CNTV_CVAL, then CNTV_CTL = ENABLE (IMASK clear). */
    __asm__ volatile("mcrr p15, 3, %0, %1, c14\n\t"
                     "mcr p15, 0, %2, c14, c3, 1\n\t"
                     "isb" ::"r"((uint32_t)cval),
                     "r"((uint32_t)(cval >> 32)), "r"(1u)
                     : "memory");
}

uint64_t ullPortTickToCounter(TickType_t xTick)
{
    return ullTickZero + (uint64_t)xTick * ulTickPeriod;
}

uint32_t ulPortBootDtb(void)
{
    return ulPortBootDtbAddress;
}

BaseType_t xPortCoreCount(void)
{
    return configNUMBER_OF_CORES;
}

BaseType_t xPortCurrentCore(void)
{
    return portGET_CORE_ID();
}

void vPortGetStats(PortStats_t *pxStats)
{
    *pxStats = xStats;
}

/* ---- Console ---- */
static void prvPutNumber(char *buf, size_t *n, size_t cap, uint32_t v, unsigned base, unsigned width, char pad)
{
    char digits[12];
    unsigned k = 0;
    do {
        unsigned d = v % base;
        digits[k++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v != 0 && k < sizeof digits);
    while (width > k && *n < cap) {
        buf[(*n)++] = pad;
        width--;
    }
    while (k > 0 && *n < cap) {
        buf[(*n)++] = digits[--k];
    }
}

void vPortLog(const char *pcFormat, ...)
{
    char buf[256];
    size_t n = 0;
    const size_t cap = sizeof buf;
    va_list ap;
    va_start(ap, pcFormat);
    for (const char *p = pcFormat; *p != '\0' && n < cap; p++) {
        if (*p != '%') {
            buf[n++] = *p;
            continue;
        }
        p++;
        char pad = ' ';
        unsigned width = 0;
        if (*p == '0') {
            pad = '0';
            p++;
        }
        while (*p >= '0' && *p <= '9') {
            width = width * 10 + (unsigned)(*p++ - '0');
        }
        switch (*p) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            while (s != NULL && *s != '\0' && n < cap) {
                buf[n++] = *s++;
            }
            break;
        }
        case 'c':
            buf[n++] = (char)va_arg(ap, int);
            break;
        case 'd': {
            int v = va_arg(ap, int);
            if (v < 0 && n < cap) {
                buf[n++] = '-';
                v = -v;
            }
            prvPutNumber(buf, &n, cap, (uint32_t)v, 10, width, pad);
            break;
        }
        case 'u':
            prvPutNumber(buf, &n, cap, va_arg(ap, unsigned), 10, width, pad);
            break;
        case 'x':
            prvPutNumber(buf, &n, cap, va_arg(ap, unsigned), 16, width, pad);
            break;
        case '%':
            buf[n++] = '%';
            break;
        default: /* unknown conversion, or the format ended after '%' */
            p--;
            break;
        }
    }
    va_end(ap);
    (void)tessera_console_write_all(buf, n);
}

/* ---- Fatal conditions: reported, then the VM stops with a status ---- */
enum {
    STATUS_ASSERT = 3,
    STATUS_START = 4,
    STATUS_FATAL_EXCEPTION = 5,
    STATUS_STACK_OVERFLOW = 6,
    STATUS_OUT_OF_MEMORY = 7,
};

void vPortAssertFailed(const char *pcFile, unsigned long ulLine)
{
    portDISABLE_INTERRUPTS();
    vPortLog("FreeRTOS: assertion FAILED at %s:%u (core %d); stopping the VM\n", pcFile,
             (unsigned)ulLine, (int)portGET_CORE_ID());
    tessera_vm_shutdown(STATUS_ASSERT);
}

void vApplicationStackOverflowHook(TaskHandle_t xTask, char *pcTaskName)
{
    (void)xTask;
    portDISABLE_INTERRUPTS();
    vPortLog("FreeRTOS: task \"%s\" overflowed its stack; stopping the VM\n", pcTaskName);
    tessera_vm_shutdown(STATUS_STACK_OVERFLOW);
}

void vApplicationMallocFailedHook(void)
{
    portDISABLE_INTERRUPTS();
    vPortLog("FreeRTOS: out of heap (configTOTAL_HEAP_SIZE %u); stopping the VM\n",
             (unsigned)configTOTAL_HEAP_SIZE);
    tessera_vm_shutdown(STATUS_OUT_OF_MEMORY);
}

static const char *prvKindName(uint32_t ulKind)
{
    switch (ulKind) {
    case 0:
        return "data abort";
    case 1:
        return "prefetch abort";
    default:
        return "undefined instruction";
    }
}

/* Short-descriptor fault status (Arm ARM B3.13.3), as Tessera's guests run
 * with LPAE off (or the MMU off). */
static const char *prvFaultStatusName(uint32_t ulKind, uint32_t ulFsr)
{
    uint32_t fs = ((ulFsr >> 6) & 0x10u) | (ulFsr & 0xfu);
    if (ulKind == 2) {
        return "undefined or disabled (VFP/NEON is off in this port)";
    }
    switch (fs) {
    case 0x01:
        return "alignment fault";
    case 0x05:
    case 0x07:
        return "translation fault";
    case 0x08:
        return "synchronous external abort";
    case 0x02:
        return "debug event";
    default:
        return "other fault";
    }
}

/* A task took an exception: portASM.S made the task itself return here (in
 * System mode, on its own stack) with the fault's registers. The task is
 * reported and suspended; the rest of the system runs on. */
void vPortTaskFault(uint32_t ulPc, uint32_t ulAddress, uint32_t ulStatus, uint32_t ulKind)
{
    xStats.ulTaskFaults++;
    if (ulKind == 0) {
        vPortLog("FreeRTOS: task \"%s\" on core %d: %s at PC 0x%08x, address 0x%08x (DFSR 0x%x: %s); task suspended\n",
                 pcTaskGetName(NULL), (int)portGET_CORE_ID(), prvKindName(ulKind), (unsigned)ulPc,
                 (unsigned)ulAddress, (unsigned)ulStatus, prvFaultStatusName(ulKind, ulStatus));
    } else {
        vPortLog("FreeRTOS: task \"%s\" on core %d: %s at PC 0x%08x (%s); task suspended\n",
                 pcTaskGetName(NULL), (int)portGET_CORE_ID(), prvKindName(ulKind), (unsigned)ulPc,
                 prvFaultStatusName(ulKind, ulStatus));
    }
    vApplicationTaskFaultHook(ulKind, ulPc, ulAddress, ulStatus);
    for (;;) {
        vTaskSuspend(NULL);
    }
}

/* An exception where no task can be blamed (in the kernel with interrupts
 * masked, in an interrupt handler, before the scheduler): stop the VM. */
void vPortFatalException(uint32_t ulPc, uint32_t ulAddress, uint32_t ulStatus, uint32_t ulKind, uint32_t ulSpsr)
{
    vPortLog("FreeRTOS: %s at PC 0x%08x, address 0x%08x (FSR 0x%x: %s) in CPU mode 0x%x with IRQs %s, "
             "core %d: no task to blame; stopping the VM\n",
             prvKindName(ulKind), (unsigned)ulPc, (unsigned)ulAddress, (unsigned)ulStatus,
             prvFaultStatusName(ulKind, ulStatus), (unsigned)(ulSpsr & 0x1fu),
             (ulSpsr & 0x80u) ? "masked" : "enabled", (int)portGET_CORE_ID());
    tessera_vm_shutdown(STATUS_FATAL_EXCEPTION);
}

__attribute__((weak)) void vApplicationTaskFaultHook(uint32_t ulKind, uint32_t ulPc, uint32_t ulAddress,
                                                     uint32_t ulStatus)
{
    (void)ulKind;
    (void)ulPc;
    (void)ulAddress;
    (void)ulStatus;
}

/* ---- Tasks ---- */
static void prvTaskReturned(void)
{
    vPortLog("FreeRTOS: task \"%s\" returned from its function (not allowed); task deleted\n",
             pcTaskGetName(NULL));
    vTaskDelete(NULL);
    for (;;) {
    }
}

#define CPSR_MODE_SYS 0x1fu
#define CPSR_THUMB    0x20u

/* The frame portASM.S restores: r0-r12, lr, then pc and CPSR (for RFE),
 * lowest address first. */
StackType_t *pxPortInitialiseStack(StackType_t *pxTopOfStack, TaskFunction_t pxCode, void *pvParameters)
{
    uint32_t entry = (uint32_t)pxCode;
    /* The kernel hands an 8-byte aligned top; keep it so for AAPCS. */
    *--pxTopOfStack = CPSR_MODE_SYS | ((entry & 1u) ? CPSR_THUMB : 0u); /* IRQs on */
    *--pxTopOfStack = entry & ~1u;                                      /* pc */
    *--pxTopOfStack = (StackType_t)prvTaskReturned;                     /* lr */
    for (int r = 12; r >= 1; r--) {
        *--pxTopOfStack = 0x01010101u * (uint32_t)r; /* r12..r1: recognisable */
    }
    *--pxTopOfStack = (StackType_t)pvParameters; /* r0 */
    return pxTopOfStack;
}

/* ---- The GIC ---- */
static void prvSetPriority(uint32_t id, uint32_t prio)
{
    uint32_t reg = GICD_IPRIORITYR + (id & ~3u);
    uint32_t shift = 8u * (id & 3u);
    mmio_write(reg, (mmio_read(reg) & ~(0xffu << shift)) | (prio << shift));
}

void vPortEnableInterrupt(uint32_t ulId)
{
    prvSetPriority(ulId, configKERNEL_INTERRUPT_PRIORITY);
    if (ulId >= 32u) {
        uint32_t reg = GICD_ITARGETSR + (ulId & ~3u);
        uint32_t shift = 8u * (ulId & 3u);
        uint32_t me = 1u << portGET_CORE_ID();
        mmio_write(reg, (mmio_read(reg) & ~(0xffu << shift)) | (me << shift));
    }
    mmio_write(GICD_ISENABLER + 4u * (ulId / 32u), 1u << (ulId % 32u));
}

/* This core's CPU interface on, with the port's interrupts (SGIs and PPIs
 * are banked per core in the distributor). */
static void prvGicCpuInit(void)
{
    vPortEnableInterrupt(portYIELD_SGI);
    if (portGET_CORE_ID() == 0) {
        vPortEnableInterrupt(portVTIMER_PPI); /* core 0 keeps the tick */
    }
    mmio_write(GICC_PMR, 0xf0u); /* every priority above 0xf0 passes */
    mmio_write(GICC_CTLR, 1u);
}

void vPortYieldFromISR(BaseType_t xSwitchRequired)
{
    portYIELD_FROM_ISR(xSwitchRequired);
}

__attribute__((weak)) void vApplicationIRQHandler(uint32_t ulId)
{
    vPortLog("FreeRTOS: unexpected interrupt %u on core %d (no vApplicationIRQHandler)\n", (unsigned)ulId,
             (int)portGET_CORE_ID());
}

/* The tick: count every tick that is due (more than one if this vCPU was
 * descheduled past a deadline), then aim the timer at the next one. */
static void prvTick(void)
{
    uint64_t now = ullPortCounter();
    uint32_t due = 0;
    while (ullNextTickDue <= now) {
        ullNextTickDue += ulTickPeriod;
        due++;
    }
    prvVirtualTimerAt(ullNextTickDue);
    if (due == 0) {
        return; /* early (cannot happen with CVAL, but harmless) */
    }
    xStats.ulTicks++;
    xStats.ulLateTicks += due - 1u;
#if configNUMBER_OF_CORES > 1
    UBaseType_t saved = taskENTER_CRITICAL_FROM_ISR();
#endif
    while (due-- > 0) {
        if (xTaskIncrementTick() != pdFALSE) {
            ulPortYieldRequired[portGET_CORE_ID()] = pdTRUE;
        }
    }
#if configNUMBER_OF_CORES > 1
    taskEXIT_CRITICAL_FROM_ISR(saved);
#endif
}

/* Called by portASM.S on an IRQ, on this core's IRQ stack with IRQs masked;
 * the interrupted task's context is already saved. Returns whether the
 * kernel must pick another task before returning. */
uint32_t ulPortIrqHandler(BaseType_t xCoreID)
{
    ulPortInterruptNesting[xCoreID]++;
    for (;;) {
        uint32_t iar = mmio_read(GICC_IAR);
        uint32_t id = iar & 0x3ffu;
        if (id >= GIC_SPURIOUS) {
            break;
        }
        if (id == portVTIMER_PPI) {
            prvTick();
        } else if (id == portYIELD_SGI) {
            xStats.ulYieldSgisTaken[xCoreID & 1]++;
            ulPortYieldRequired[xCoreID] = pdTRUE;
        } else {
            vApplicationIRQHandler(id);
        }
        mmio_write(GICC_EOIR, iar);
    }
    ulPortInterruptNesting[xCoreID]--;
    uint32_t yield = ulPortYieldRequired[xCoreID];
    ulPortYieldRequired[xCoreID] = pdFALSE;
    return yield;
}

/* ---- Idle: give the pCPU back to the hypervisor until an interrupt ---- */
static inline void prvWaitForInterrupt(void)
{
    __asm__ volatile("dsb\n\twfi" ::: "memory");
}

__attribute__((weak)) void vApplicationIdleHook(void)
{
    prvWaitForInterrupt();
}

#if configNUMBER_OF_CORES > 1
__attribute__((weak)) void vApplicationPassiveIdleHook(void)
{
    prvWaitForInterrupt();
}
#endif

/* ---- SMP ---- */
#if configNUMBER_OF_CORES > 1
void vPortYieldCore(BaseType_t xCoreID)
{
    if (xCoreID == portGET_CORE_ID()) {
        if (portCHECK_IF_IN_ISR()) {
            ulPortYieldRequired[xCoreID] = pdTRUE;
        } else {
            portYIELD();
        }
        return;
    }
    xStats.ulYieldSgisSent++;
    /* GICD_SGIR: TargetListFilter 0 (the list), CPUTargetList, SGI ID. */
    __asm__ volatile("dsb" ::: "memory"); /* the kernel's writes before the SGI */
    mmio_write(GICD_SGIR, (1u << (16u + (uint32_t)xCoreID)) | portYIELD_SGI);
}

/* The kernel's task and ISR locks: recursive spinlocks (the owner core may
 * take them again), on LDREX/STREX. A waiting core sleeps in WFE, which
 * Tessera may use to run another vCPU, so a lock holder whose vCPU is
 * descheduled is not spun against for a whole time slice. */
#define LOCK_FREE 0xffffffffu
static volatile uint32_t ulLockOwner[2] = {LOCK_FREE, LOCK_FREE};
static uint32_t ulLockDepth[2];

void vPortLockAcquire(uint32_t ulLock, BaseType_t xCoreID)
{
    if (__atomic_load_n(&ulLockOwner[ulLock], __ATOMIC_RELAXED) == (uint32_t)xCoreID) {
        ulLockDepth[ulLock]++;
        return;
    }
    uint64_t waiting_since = 0;
    for (;;) {
        uint32_t expected = LOCK_FREE;
        if (__atomic_compare_exchange_n(&ulLockOwner[ulLock], &expected, (uint32_t)xCoreID, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED)) {
            break;
        }
        if (waiting_since == 0) {
            waiting_since = ullPortCounter();
        }
        __asm__ volatile("wfe" ::: "memory");
    }
    ulLockDepth[ulLock] = 1;
    if (waiting_since != 0) {
        /* Contended: how long this core spun (the other core's vCPU may
         * have been descheduled while it held the lock). */
        uint64_t waited = ullPortCounter() - waiting_since;
        xStats.ulLockContended++;
        if (waited > xStats.ulLockWaitMax) {
            xStats.ulLockWaitMax = (uint32_t)(waited > 0xffffffffu ? 0xffffffffu : waited);
        }
    }
}

void vPortLockRelease(uint32_t ulLock, BaseType_t xCoreID)
{
    configASSERT(ulLockOwner[ulLock] == (uint32_t)xCoreID);
    if (--ulLockDepth[ulLock] == 0) {
        __atomic_store_n(&ulLockOwner[ulLock], LOCK_FREE, __ATOMIC_RELEASE);
        __asm__ volatile("dsb\n\tsev" ::: "memory");
    }
}

/* A secondary core, from portASM.S's _secondary_start (stacks and vectors
 * set, IRQs masked): its GIC interface, then its first task. */
void vPortSecondaryStart(BaseType_t xCoreID)
{
    prvGicCpuInit();
    vPortStartFirstTask(xCoreID);
}
#endif

/* ---- Starting and ending the scheduler ---- */
BaseType_t xPortStartScheduler(void)
{
    configASSERT(portGET_CORE_ID() == 0);
    mmio_write(GICD_CTLR, 1u);
    prvGicCpuInit();

    ulTickPeriod = ulPortCounterFrequency() / configTICK_RATE_HZ;
    configASSERT(ulTickPeriod > 0);
    ullTickZero = ullPortCounter();
    ullNextTickDue = ullTickZero + ulTickPeriod;
    prvVirtualTimerAt(ullNextTickDue);

#if configNUMBER_OF_CORES > 1
    for (uint32_t core = 1; core < configNUMBER_OF_CORES; core++) {
        int32_t r = tessera_psci_cpu_on(core, (uint32_t)_secondary_start, core);
        if (r != TESSERA_PSCI_SUCCESS) {
            vPortLog("FreeRTOS: PSCI CPU_ON of core %u returned %d: this build needs %d vCPUs; stopping the VM\n",
                     (unsigned)core, (int)r, configNUMBER_OF_CORES);
            tessera_vm_shutdown(STATUS_START);
        }
    }
#endif
    vPortStartFirstTask(0);
}

/* main() returned before (or instead of) starting the scheduler. */
void vPortMainReturned(int iStatus)
{
    tessera_vm_shutdown((uint32_t)iStatus);
}

void vPortEndScheduler(void)
{
    /* Nothing to return to on a bare-metal guest: the application stops the
     * VM with tessera_vm_shutdown() instead. */
    configASSERT(0);
}
