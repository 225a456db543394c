//! The system registers the hypervisor uses, declared once, one per line
//! (names as in the Arm ARM, Armv7-A B4.1). Accessors come from the
//! `aarch32-cpu` crate's `SysReg` traits; this table adds the HYP and 64-bit
//! registers that crate does not name (VTTBR, HTTBR, VTCR, HTCR, ...) and
//! keeps every encoding the hypervisor relies on in one place.

use aarch32_cpu::register::{SysReg, SysReg64, SysRegRead, SysRegRead64, SysRegWrite, SysRegWrite64};

macro_rules! reg32 {
    ($name:ident, $op1:literal, $crn:literal, $crm:literal, $op2:literal) => {
        #[allow(clippy::upper_case_acronyms, non_camel_case_types)] // names as in the Arm ARM
        #[allow(dead_code)] // the table declares every register the hypervisor relies on
        pub struct $name;
        impl SysReg for $name {
            const CP: u32 = 15;
            const CRN: u32 = $crn;
            const OP1: u32 = $op1;
            const CRM: u32 = $crm;
            const OP2: u32 = $op2;
        }
        impl SysRegRead for $name {}
        impl SysRegWrite for $name {}
        #[allow(dead_code)] // both accessors of each register; not every one is used
        impl $name {
            #[inline(always)]
            pub fn read() -> u32 {
                <Self as SysRegRead>::read_raw()
            }
            /// # Safety
            /// The caller must follow the Arm ARM rules for this register.
            #[inline(always)]
            pub unsafe fn write(v: u32) {
                // SAFETY: forwarded to the caller.
                unsafe { <Self as SysRegWrite>::write_raw(v) }
            }
        }
    };
}

macro_rules! reg64 {
    ($name:ident, $op1:literal, $crm:literal) => {
        #[allow(clippy::upper_case_acronyms, non_camel_case_types)] // names as in the Arm ARM
        #[allow(dead_code)] // the table declares every register the hypervisor relies on
        pub struct $name;
        impl SysReg64 for $name {
            const CP: u32 = 15;
            const OP1: u32 = $op1;
            const CRM: u32 = $crm;
        }
        impl SysRegRead64 for $name {}
        impl SysRegWrite64 for $name {}
        #[allow(dead_code)] // both accessors of each register; not every one is used
        impl $name {
            #[inline(always)]
            pub fn read() -> u64 {
                <Self as SysRegRead64>::read_raw()
            }
            /// # Safety
            /// The caller must follow the Arm ARM rules for this register.
            #[inline(always)]
            pub unsafe fn write(v: u64) {
                // SAFETY: forwarded to the caller.
                unsafe { <Self as SysRegWrite64>::write_raw(v) }
            }
        }
    };
}

//     name        op1 crn crm op2
reg32!(MIDR, 0, 0, 0, 0);
reg32!(MPIDR, 0, 0, 0, 5);
reg32!(CTR, 0, 0, 0, 1);
// HYP configuration and syndrome.
reg32!(HSCTLR, 4, 1, 0, 0);
reg32!(HCR, 4, 1, 1, 0);
reg32!(HDCR, 4, 1, 1, 1);
reg32!(HCPTR, 4, 1, 1, 2);
reg32!(HSTR, 4, 1, 1, 3);
reg32!(HTCR, 4, 2, 0, 2);
reg32!(VTCR, 4, 2, 1, 2);
reg32!(HSR, 4, 5, 2, 0);
reg32!(HDFAR, 4, 6, 0, 0);
reg32!(HIFAR, 4, 6, 0, 2);
reg32!(HPFAR, 4, 6, 0, 4);
reg32!(HMAIR0, 4, 10, 2, 0);
reg32!(HVBAR, 4, 12, 0, 0);
reg32!(HTPIDR, 4, 13, 0, 2);
reg32!(VPIDR, 4, 0, 0, 0);
reg32!(VMPIDR, 4, 0, 0, 5);
// Timers.
reg32!(CNTFRQ, 0, 14, 0, 0);
reg32!(CNTHCTL, 4, 14, 1, 0);
reg32!(CNTHP_TVAL, 4, 14, 2, 0);
reg32!(CNTHP_CTL, 4, 14, 2, 1);
// Guest PL1 state switched with the vCPU.
reg32!(SCTLR, 0, 1, 0, 0);
reg32!(CPACR, 0, 1, 0, 2);
reg32!(TTBCR, 0, 2, 0, 2);
reg32!(DACR, 0, 3, 0, 0);
reg32!(DFSR, 0, 5, 0, 0);
reg32!(IFSR, 0, 5, 0, 1);
reg32!(DFAR, 0, 6, 0, 0);
reg32!(IFAR, 0, 6, 0, 2);
reg32!(PRRR, 0, 10, 2, 0);
reg32!(NMRR, 0, 10, 2, 1);
reg32!(VBAR, 0, 12, 0, 0);
reg32!(CONTEXTIDR, 0, 13, 0, 1);
reg32!(TPIDRURW, 0, 13, 0, 2);
reg32!(TPIDRURO, 0, 13, 0, 3);
reg32!(TPIDRPRW, 0, 13, 0, 4);
reg32!(CSSELR, 2, 0, 0, 0);
reg32!(CNTKCTL, 0, 14, 1, 0);
reg32!(CNTV_CTL, 0, 14, 3, 1);
// TLB and cache maintenance (write-only operations).
reg32!(TLBIALLH, 4, 8, 7, 0);
reg32!(TLBIALLNSNHIS, 4, 8, 3, 4);
reg32!(TLBIALLNSNH, 4, 8, 7, 4);
reg32!(BPIALL, 0, 7, 5, 6);
reg32!(ICIALLU, 0, 7, 5, 0);
reg32!(ICIALLUIS, 0, 7, 1, 0);
reg32!(DCCMVAC, 0, 7, 10, 1);
reg32!(DCCISW, 0, 7, 14, 2);
reg32!(DCCSW, 0, 7, 10, 2);
reg32!(CLIDR, 1, 0, 0, 1);
reg32!(CCSIDR, 1, 0, 0, 0);

//     name        op1 crm
reg64!(HTTBR, 4, 2);
reg64!(VTTBR, 6, 2);
reg64!(TTBR0, 0, 2);
reg64!(TTBR1, 1, 2);
reg64!(PAR, 0, 7);
reg64!(CNTPCT, 0, 14);
reg64!(CNTVOFF, 4, 14);
reg64!(CNTV_CVAL, 3, 14);
reg64!(CNTHP_CVAL, 6, 14);
