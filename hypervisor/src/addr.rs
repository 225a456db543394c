//! Address types. A guest-physical address (IPA) and a host physical address
//! are different things; mixing them up is the classic hypervisor bug, so they
//! are distinct types. The hypervisor identity-maps RAM in HYP mode, so a
//! `PhysAddr` is also the address HYP code dereferences.

use core::fmt;

macro_rules! addr_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            pub const fn new(a: u64) -> Self { Self(a) }
            pub const fn raw(self) -> u64 { self.0 }
            pub const fn add(self, off: u64) -> Self { Self(self.0 + off) }
            pub const fn is_aligned(self, align: u64) -> bool { self.0 % align == 0 }
            pub const fn align_up(self, align: u64) -> Self { Self(self.0.div_ceil(align) * align) }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#010x}", self.0)
            }
        }
    };
}

addr_type!(
    /// A host physical address.
    PhysAddr
);
addr_type!(
    /// A guest-physical address (stage-2 input, "intermediate physical address").
    /// Anything a guest hands us is an `Ipa` and a claim until checked.
    Ipa
);

pub const PAGE_SIZE: u64 = 4096;
pub const BLOCK_2M: u64 = 2 << 20;
