//! Memory management: the physical frame allocator and stage-2 page tables.
pub mod frame;
pub mod stage2;
