/* SPDX-License-Identifier: MIT */
/*
 * FreeRTOS port for an Armv7-A guest of the Tessera hypervisor: boot code,
 * exception vectors and the context switch (the C half is port.c).
 *
 * Modes: tasks run in System mode on their own stacks. An SVC (a yield) or
 * an IRQ saves the interrupted task's whole context on the task's stack:
 *
 *     low address  r0 r1 ... r12 lr  pc cpsr  high address
 *                  ^ pxTopOfStack (the TCB's first word)
 *
 * then runs C on the core's SVC or IRQ stack (whatever the exception mode
 * holds is left empty), and resumes a task with LDM + RFE. IRQs never nest
 * and are only ever enabled in tasks, so an IRQ always interrupts a task.
 *
 * Per-core exception stacks, from __port_stacks_top down, 16 KiB a core:
 * SVC 8 KiB (boot, main(), yields), IRQ 4 KiB, abort 2 KiB, undefined 2 KiB.
 *
 * New code for Tessera.
 */
    .syntax unified
    .arm

    .equ MODE_IRQ, 0x12
    .equ MODE_SVC, 0x13
    .equ MODE_ABT, 0x17
    .equ MODE_UND, 0x1b
    .equ MODE_SYS, 0x1f
    .equ CORE_STACKS, 0x4000
    .equ SVC_STACK, 0x2000
    .equ IRQ_STACK, 0x1000
    .equ ABT_STACK, 0x800
    .equ KIND_DATA, 0
    .equ KIND_PREFETCH, 1
    .equ KIND_UNDEF, 2

/* \reg = this core's index (MPIDR.Aff0: Tessera's vCPU index). */
.macro CORE_ID reg
    mrc     p15, 0, \reg, c0, c0, 5
    and     \reg, \reg, #0xff
.endm

/* \reg = the address of the current-task pointer of core \core. */
.macro TCB_SLOT reg, core
#if configNUMBER_OF_CORES > 1
    ldr     \reg, =pxCurrentTCBs
    add     \reg, \reg, \core, lsl #2
#else
    ldr     \reg, =pxCurrentTCB
#endif
.endm

/* Entered in an exception mode whose lr is the task's resume address and
 * whose SPSR is the task's CPSR. Leaves System mode, r0 = core. */
.macro SAVE_TASK_CONTEXT
    srsdb   sp!, #MODE_SYS          /* pc, cpsr onto the task's stack */
    cps     #MODE_SYS
    push    {r0-r12, lr}
    CORE_ID r0
    TCB_SLOT r1, r0
    ldr     r1, [r1]
    str     sp, [r1]                /* pxTopOfStack */
.endm

/* r0 = core: resume the current task of that core (never returns). */
.macro RESTORE_TASK_CONTEXT
    TCB_SLOT r1, r0
    ldr     r1, [r1]
    cps     #MODE_SYS
    ldr     sp, [r1]
    clrex                           /* no exclusive reservation crosses tasks */
    pop     {r0-r12, lr}
    rfeia   sp!
.endm

/* Branch to \target unless the exception interrupted System mode (a task).
 * Uses the exception mode's own stack for one scratch register. */
.macro IF_NOT_FROM_TASK target
    push    {r0}
    mrs     r0, spsr
    and     r0, r0, #0x1f
    cmp     r0, #MODE_SYS
    pop     {r0}
    bne     \target
.endm

    .section .text.start, "ax"
    .global _start
/* vCPU 0 from Tessera: SVC mode, MMU off, IRQs masked, r2 = DTB address. */
_start:
    ldr     r4, =__bss_start
    ldr     r5, =__bss_end
    mov     r6, #0
1:  cmp     r4, r5
    strlo   r6, [r4], #4
    blo     1b
    ldr     r4, =ulPortBootDtbAddress
    str     r2, [r4]
    mov     r0, #0
    bl      prvSetupCore
    bl      main
    bl      vPortMainReturned       /* r0 = main's value: the exit status */
2:  b       2b

    .text
#if configNUMBER_OF_CORES > 1
/* A secondary vCPU from PSCI CPU_ON: r0 = context id = core index. */
    .global _secondary_start
    .type _secondary_start, %function
_secondary_start:
    mov     r4, r0
    bl      prvSetupCore
    mov     r0, r4
    bl      vPortSecondaryStart
3:  b       3b
#endif

/* r0 = core: every mode's stack, the vectors, alignment checking on.
 * Returns in SVC mode; clobbers r1-r3. */
prvSetupCore:
    ldr     r1, =__port_stacks_top
    mov     r2, #CORE_STACKS
    mul     r3, r0, r2
    sub     r1, r1, r3              /* this core's top */
    mov     r3, lr
    cps     #MODE_SVC
    mov     sp, r1
    sub     r1, r1, #SVC_STACK
    cps     #MODE_IRQ
    mov     sp, r1
    sub     r1, r1, #IRQ_STACK
    cps     #MODE_ABT
    mov     sp, r1
    sub     r1, r1, #ABT_STACK
    cps     #MODE_UND
    mov     sp, r1
    cps     #MODE_SVC
    ldr     r1, =port_vectors
    mcr     p15, 0, r1, c12, c0, 0  /* VBAR */
    mrc     p15, 0, r1, c1, c0, 0   /* SCTLR */
    orr     r1, r1, #(1 << 1)       /* A: fault unaligned accesses */
    bic     r1, r1, #(1 << 13)      /* V: vectors at VBAR */
    mcr     p15, 0, r1, c1, c0, 0
    isb
    bx      r3

/* r0 = core: resets this core's SVC and IRQ stacks (main() is done with
 * them) and runs its current task. */
    .global vPortStartFirstTask
    .type vPortStartFirstTask, %function
vPortStartFirstTask:
    ldr     r1, =__port_stacks_top
    mov     r2, #CORE_STACKS
    mul     r3, r0, r2
    sub     r1, r1, r3
    cps     #MODE_SVC
    mov     sp, r1
    sub     r1, r1, #SVC_STACK
    cps     #MODE_IRQ
    mov     sp, r1
    RESTORE_TASK_CONTEXT

    .balign 32
port_vectors:
    b       .                       /* reset: not used by a guest */
    b       vector_undef
    b       vector_svc
    b       vector_prefetch_abort
    b       vector_data_abort
    b       .                       /* unused */
    b       vector_irq
    b       .                       /* FIQ: never enabled */

/* portYIELD() from a task: save it, let the kernel choose, resume. */
vector_svc:
    IF_NOT_FROM_TASK svc_not_from_task
    SAVE_TASK_CONTEXT
    cps     #MODE_SVC
    mov     r4, r0
    bl      vTaskSwitchContext      /* (core) for SMP; UP takes no argument */
    mov     r0, r4
    RESTORE_TASK_CONTEXT
svc_not_from_task:
    mov     r0, lr
    mov     r1, #0
    mov     r2, #0
    mov     r3, #KIND_UNDEF
    mrs     r12, spsr
    push    {r12, lr}               /* 5th argument: the SPSR (8-byte aligned) */
    bl      vPortFatalException
4:  b       4b

vector_irq:
    sub     lr, lr, #4
    IF_NOT_FROM_TASK irq_not_from_task
    SAVE_TASK_CONTEXT
    cps     #MODE_IRQ
    mov     r4, r0
    bl      ulPortIrqHandler        /* r0 = core; returns "switch" */
    cmp     r0, #0
    movne   r0, r4
    blne    vTaskSwitchContext
    mov     r0, r4
    RESTORE_TASK_CONTEXT
irq_not_from_task:
    mov     r0, lr
    mov     r1, #0
    mov     r2, #0
    mov     r3, #KIND_UNDEF
    mrs     r12, spsr
    push    {r12, lr}
    bl      vPortFatalException
5:  b       5b

/* Faults. From a task (System mode, IRQs on, so not in a critical section):
 * the task "returns" to vPortTaskFault(pc, address, status, kind) in
 * System mode on its own stack; the rest of the system runs on. Otherwise
 * vPortFatalException stops the VM. */
vector_data_abort:
    sub     lr, lr, #8
    mrc     p15, 0, r1, c6, c0, 0   /* DFAR */
    mrc     p15, 0, r2, c5, c0, 0   /* DFSR */
    mov     r3, #KIND_DATA
    b       fault_common
vector_prefetch_abort:
    sub     lr, lr, #4
    mrc     p15, 0, r1, c6, c0, 2   /* IFAR */
    mrc     p15, 0, r2, c5, c0, 1   /* IFSR */
    mov     r3, #KIND_PREFETCH
    b       fault_common
vector_undef:
    mrs     r1, spsr
    tst     r1, #0x20
    subne   lr, lr, #2              /* Thumb */
    subeq   lr, lr, #4
    mov     r1, #0
    mov     r2, #0
    mov     r3, #KIND_UNDEF
    /* fall through */
fault_common:
    mov     r0, lr                  /* faulting instruction */
    mrs     r12, spsr
    and     r4, r12, #0x1f
    cmp     r4, #MODE_SYS
    bne     fault_fatal
    tst     r12, #0x80              /* IRQs masked: a critical section */
    bne     fault_fatal
    ldr     r4, =0x0600fc20         /* clear IT state and Thumb: ARM code */
    bic     r12, r12, r4
    msr     spsr_cxsf, r12
    ldr     lr, =vPortTaskFault
    movs    pc, lr
fault_fatal:
    push    {r12, lr}               /* 5th argument: the SPSR */
    bl      vPortFatalException
6:  b       6b

    .ltorg
