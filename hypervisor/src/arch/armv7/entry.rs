//! Boot entry, the HYP vector table and the world switch.
//!
//! `tessera_enter_guest` saves the hypervisor's callee-saved registers on the
//! HYP stack, loads the guest's and ERETs. Any trap or interrupt from the
//! guest lands in the vector table, which stores the guest registers into
//! the same `GuestRegs` (found through HTPIDR) and returns from
//! `tessera_enter_guest` with an exit code. So a trap is, to Rust, a
//! function return: handlers are ordinary code on the ordinary stack.
//!
//! Every entry clears the exclusive monitor (CLREX): without it, two vCPUs
//! sharing a pCPU can interleave LDREX/STREX pairs and lose an update (seen
//! as a Linux ticket lock that nobody holds).
//!
//! The guest never changes SP_hyp, so on a trap SP still points at the frame
//! `tessera_enter_guest` pushed. HYP mode shares LR with User mode (Arm ARM
//! B1.3.2), so the guest's LR_usr is saved and restored here too.

use crate::arch::Exit;
use crate::context::offsets;

/// Stack per pCPU.
pub const STACK_SIZE: usize = 64 * 1024;
/// Stacks are reserved for this many pCPUs (`link.x`).
pub const MAX_CPUS: usize = 8;

pub const EXIT_TRAP: u32 = 0;
pub const EXIT_IRQ: u32 = 1;
pub const EXIT_FIQ: u32 = 2;
pub const EXIT_SERROR: u32 = 3;

core::arch::global_asm!(
    r#"
    .arch_extension virt
    .arm

    .section .text.boot, "ax"
    .global _start
_start:
    cpsid   aif
    mov     r10, r2                 @ a DTB address, if the loader passed one
    ldr     r0, =__bss_start
    ldr     r1, =__bss_end
    mov     r2, #0
1:  cmp     r0, r1
    strlo   r2, [r0], #4
    blo     1b
    mov     r0, #0                  @ the boot CPU is pCPU 0
    b       2f

    @ PSCI CPU_ON entry for secondary pCPUs; r0 = context id = pCPU index.
    .global tessera_secondary_start
tessera_secondary_start:
    cpsid   aif
    mov     r10, #0
2:  ldr     r1, =__stacks_start
    add     r2, r0, #1
    ldr     r3, ={stack_size}
    mla     r4, r2, r3, r1
    mov     sp, r4                  @ top of this pCPU's stack
    ldr     r1, =tessera_hyp_vectors
    mcr     p15, 4, r1, c12, c0, 0  @ HVBAR
    isb
    mov     r1, r10
    bl      tessera_cpu_entry       @ (pCPU index, DTB) -> !
3:  wfi
    b       3b

    .section .text.vectors, "ax"
    .balign 32
    .global tessera_hyp_vectors
tessera_hyp_vectors:
    b       hyp_fault_reset         @ 0x00 (unused in HYP)
    b       hyp_fault_undef         @ 0x04 undefined instruction in HYP
    b       hyp_fault_hvc           @ 0x08 HVC from HYP mode
    b       hyp_fault_pabort        @ 0x0c prefetch abort in HYP
    b       hyp_fault_dabort        @ 0x10 data abort in HYP
    b       guest_trap              @ 0x14 Hyp Trap: anything from the guest
    b       guest_irq               @ 0x18 IRQ (routed to HYP by HCR.IMO)
    b       guest_fiq               @ 0x1c FIQ

    .macro SAVE_GUEST_AND_RETURN code
    push    {{r0}}
    mrc     p15, 4, r0, c13, c0, 2  @ HTPIDR = &GuestRegs of the running vCPU
    stmib   r0, {{r1-r12}}
    pop     {{r1}}
    str     r1, [r0, #{r0_off}]
    str     lr, [r0, #{lr_off}]
    mrs     r1, elr_hyp
    str     r1, [r0, #{pc_off}]
    mrs     r1, spsr
    str     r1, [r0, #{cpsr_off}]
    bl      serror_probe            @ r12 = 1: the guest left an SError
    cmp     r12, #1
    moveq   r0, #{exit_serror}
    movne   r0, #\code
    pop     {{r4-r12, pc}}          @ return from tessera_enter_guest
    .endm

    @ An asynchronous abort (SError) the guest caused and that is still
    @ pending must be taken now, while it is the guest's, not once another
    @ VM runs: wait for outstanding accesses, then open the window for it.
    @ Taken, it lands in hyp_fault_dabort, which returns with r12 = 1.
serror_probe:
    mov     r12, #0
    dsb     sy
    isb
serror_window:
    cpsie   a
    isb
    cpsid   a
serror_window_end:
    bx      lr

guest_trap:
    SAVE_GUEST_AND_RETURN {exit_trap}
guest_irq:
    SAVE_GUEST_AND_RETURN {exit_irq}
guest_fiq:
    SAVE_GUEST_AND_RETURN {exit_fiq}

    .macro HYP_FAULT kind
    mov     r0, #\kind
    mrs     r1, elr_hyp
    mov     r2, sp
    b       tessera_hyp_fault
    .endm
hyp_fault_reset:  HYP_FAULT 0
hyp_fault_undef:  HYP_FAULT 1
hyp_fault_hvc:    HYP_FAULT 2
hyp_fault_pabort: HYP_FAULT 3
hyp_fault_dabort:
    push    {{r0, r1}}
    mrs     r0, elr_hyp
    ldr     r1, =serror_window
    cmp     r0, r1
    blo     1f
    ldr     r1, =serror_window_end
    cmp     r0, r1
    bhi     1f
    pop     {{r0, r1}}
    mov     r12, #1                 @ the guest's SError, taken in the window
    eret
1:  pop     {{r0, r1}}
    HYP_FAULT 4

    .section .text.tessera_enter_guest, "ax"
    .global tessera_enter_guest
tessera_enter_guest:                @ (regs: *mut GuestRegs) -> exit code
    push    {{r4-r12, lr}}
    mcr     p15, 4, r0, c13, c0, 2  @ HTPIDR
    ldr     r1, [r0, #{pc_off}]
    msr     elr_hyp, r1
    ldr     r1, [r0, #{cpsr_off}]
    msr     spsr_cxsf, r1
    ldr     lr, [r0, #{lr_off}]
    @ Clear the local exclusive monitor: Armv7 does not on exception return,
    @ and a vCPU preempted between LDREX and STREX must not complete its
    @ STREX on a reservation that another vCPU (or this hypervisor) made.
    clrex
    ldm     r0, {{r0-r12}}
    eret
    "#,
    stack_size = const STACK_SIZE,
    r0_off = const offsets::R0,
    lr_off = const offsets::LR_USR,
    pc_off = const offsets::PC,
    cpsr_off = const offsets::CPSR,
    exit_trap = const EXIT_TRAP,
    exit_irq = const EXIT_IRQ,
    exit_fiq = const EXIT_FIQ,
    exit_serror = const EXIT_SERROR,
);

unsafe extern "C" {
    fn tessera_enter_guest(regs: *mut crate::context::GuestRegs) -> u32;
    pub fn tessera_secondary_start();
}

/// Runs the guest until its next trap or interrupt.
///
/// Whatever state is loaded (`Cpu::load_vcpu`) is what the guest runs with;
/// stage 2 confines it to its own VM either way.
#[inline]
pub fn enter_guest(regs: &mut crate::context::GuestRegs) -> Exit {
    // SAFETY: the world switch saves and restores every register the Rust
    // caller may rely on (r4-r12, lr, sp); `regs` stays valid and exclusively
    // ours across the call; the guest runs behind stage-2, which confines it
    // to its own memory, so it cannot touch hypervisor state.
    match unsafe { tessera_enter_guest(regs) } {
        EXIT_TRAP => Exit::Trap,
        EXIT_IRQ => Exit::Irq,
        EXIT_SERROR => Exit::AsyncAbort,
        _ => Exit::Fiq,
    }
}

#[unsafe(no_mangle)]
extern "C" fn tessera_hyp_fault(kind: u32, elr: u32, sp: u32) -> ! {
    let what = ["reset vector", "undefined instruction", "HVC", "prefetch abort", "data abort"]
        .get(kind as usize)
        .copied()
        .unwrap_or("?");
    let hsr = super::sysreg::HSR::read();
    panic!(
        "exception in HYP mode: {what} at {elr:#010x} (HSR {hsr:#010x}, HDFAR {:#010x}, HIFAR {:#010x}, SP {sp:#010x})",
        super::sysreg::HDFAR::read(),
        super::sysreg::HIFAR::read()
    );
}
