//! Stage-2 translation tables (Armv7-A LPAE long-descriptor format, Arm ARM
//! B3.6). Every VM gets its own tables; whatever IPA they do not map faults
//! into the hypervisor, which is what keeps a guest away from the hypervisor's
//! memory and from other VMs.
//!
//! Geometry: 32-bit IPA space (VTCR.T0SZ = 0), walk starting at level 1
//! (VTCR.SL0 = 1): a 4-entry level-1 table of 1 GiB slots, level-2 tables of
//! 2 MiB blocks, level-3 tables of 4 KiB pages. The builder is plain Rust over
//! a [`TableMem`] so the host tests walk the same tables the MMU will.

use crate::addr::{Ipa, PhysAddr, BLOCK_2M, PAGE_SIZE};

/// Where tables live. On the target this is identity-mapped RAM from the
/// frame allocator; in host tests, a map.
pub trait TableMem {
    /// A zeroed, 4 KiB aligned table.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
    fn read(&self, table: PhysAddr, index: usize) -> u64;
    fn write(&mut self, table: PhysAddr, index: usize, value: u64);
}

/// Memory type of a stage-2 mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    /// Normal, inner/outer write-back: guest RAM.
    Normal,
    /// Device-nGnRE: pass-through device registers (the GIC virtual CPU interface).
    Device,
}

/// Access rights of a stage-2 mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Access {
    pub const RWX: Access = Access { read: true, write: true, exec: true };
    pub const RW: Access = Access { read: true, write: true, exec: false };
    pub const RO: Access = Access { read: true, write: false, exec: false };
}

const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 0b11 << 8;
const S2AP_R: u64 = 1 << 6;
const S2AP_W: u64 = 1 << 7;
const MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
const MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
const XN: u64 = 1 << 54;
const ADDR_MASK: u64 = 0x0000_00ff_ffff_f000;

/// A VTTBR value (root table and VMID) for tables this module built. Only
/// [`Stage2::vttbr`] makes one, so loading it never points stage 2 at memory
/// that is not a translation table; tables are never freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vttbr(u64);

impl Vttbr {
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The VMID (bits 55:48).
    pub fn vmid(self) -> u8 {
        (self.0 >> 48) as u8
    }

    /// A value for host tests, which never load it into an MMU.
    #[cfg(any(test, feature = "fake"))]
    pub fn for_tests(vmid: u8) -> Self {
        Vttbr((vmid as u64) << 48 | 0x1000)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Addresses or size not 4 KiB aligned, or the range leaves the 4 GiB IPA space.
    Misaligned,
    /// Part of the range is already mapped.
    Overlap(Ipa),
    /// The frame allocator ran dry.
    NoMemory,
}

pub struct Stage2 {
    root: PhysAddr,
}

fn leaf_attrs(mem: MemType, access: Access) -> u64 {
    let mut d = AF;
    d |= match mem {
        MemType::Normal => MEMATTR_NORMAL_WB | SH_INNER,
        MemType::Device => MEMATTR_DEVICE_NGNRE,
    };
    if access.read {
        d |= S2AP_R;
    }
    if access.write {
        d |= S2AP_W;
    }
    if !access.exec {
        d |= XN;
    }
    d
}

/// Where the 2 MiB block descriptors of a range of guest RAM live, for a
/// VM whose RAM is mapped block by block as it is first used (see
/// `mem::GuestRam::new_lazy`): the level-2 tables exist, the entries stay
/// invalid until [`LazyBlocks::entry`]'s descriptor is written.
#[derive(Clone, Copy, Debug)]
pub struct LazyBlocks {
    ipa: Ipa,
    pa: PhysAddr,
    blocks: usize,
    attrs: u64,
    /// The level-2 table of each 1 GiB slot the range touches.
    l2: [Option<PhysAddr>; 4],
}

impl LazyBlocks {
    /// Block `k`'s entry: (level-2 table, index, descriptor that maps it).
    pub fn entry(&self, k: usize) -> Option<(PhysAddr, usize, u64)> {
        if k >= self.blocks {
            return None;
        }
        let (i, p) = (self.ipa.raw() + k as u64 * BLOCK_2M, self.pa.raw() + k as u64 * BLOCK_2M);
        let table = self.l2[(i >> 30) as usize & 3]?;
        Some((table, (i >> 21) as usize & 511, p | self.attrs | VALID))
    }

    pub fn blocks(&self) -> usize {
        self.blocks
    }
}

/// Result of a software walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub pa: PhysAddr,
    pub mem: MemType,
    pub access: Access,
}

impl Stage2 {
    pub fn new(mem: &mut impl TableMem) -> Result<Self, MapError> {
        let root = mem.alloc_table().ok_or(MapError::NoMemory)?;
        Ok(Self { root })
    }

    /// VTTBR value: BADDR | VMID << 48.
    pub fn vttbr(&self, vmid: u8) -> Vttbr {
        Vttbr(self.root.raw() | (vmid as u64) << 48)
    }

    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Maps `[ipa, ipa + size)` to `[pa, pa + size)`, with 2 MiB blocks where
    /// both sides are aligned and 4 KiB pages elsewhere. Refuses to replace an
    /// existing mapping.
    pub fn map(
        &mut self,
        tm: &mut impl TableMem,
        ipa: Ipa,
        pa: PhysAddr,
        size: u64,
        mem: MemType,
        access: Access,
    ) -> Result<(), MapError> {
        if !ipa.is_aligned(PAGE_SIZE) || !pa.is_aligned(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned);
        }
        if ipa.raw() + size > 1 << 32 {
            return Err(MapError::Misaligned);
        }
        let attrs = leaf_attrs(mem, access);
        let mut off = 0;
        while off < size {
            let (i, p) = (ipa.raw() + off, pa.raw() + off);
            let l2 = self.next_table(tm, self.root, (i >> 30) as usize & 3)?;
            let l2i = (i >> 21) as usize & 511;
            if i % BLOCK_2M == 0 && p % BLOCK_2M == 0 && size - off >= BLOCK_2M {
                if tm.read(l2, l2i) & VALID != 0 {
                    return Err(MapError::Overlap(Ipa(i)));
                }
                tm.write(l2, l2i, p | attrs | VALID);
                off += BLOCK_2M;
            } else {
                let l3 = self.next_table(tm, l2, l2i)?;
                let l3i = (i >> 12) as usize & 511;
                if tm.read(l3, l3i) & VALID != 0 {
                    return Err(MapError::Overlap(Ipa(i)));
                }
                tm.write(l3, l3i, p | attrs | TABLE_OR_PAGE | VALID);
                off += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Prepares `[ipa, ipa + size)` (all three 2 MiB aligned: a block
    /// past the end would map memory that is not the range's) to be
    /// mapped one 2 MiB block at a time later: creates the level-2 tables,
    /// maps nothing. Refuses a range where something is mapped already.
    pub fn prepare_blocks(
        &mut self,
        tm: &mut impl TableMem,
        ipa: Ipa,
        pa: PhysAddr,
        size: u64,
        mem: MemType,
        access: Access,
    ) -> Result<LazyBlocks, MapError> {
        if !ipa.is_aligned(BLOCK_2M)
            || !pa.is_aligned(BLOCK_2M)
            || !size.is_multiple_of(BLOCK_2M)
            || ipa.raw() + size > 1 << 32
        {
            return Err(MapError::Misaligned);
        }
        let blocks = (size / BLOCK_2M) as usize;
        let mut l2 = [None; 4];
        for k in 0..blocks as u64 {
            let i = ipa.raw() + k * BLOCK_2M;
            let t = self.next_table(tm, self.root, (i >> 30) as usize & 3)?;
            if tm.read(t, (i >> 21) as usize & 511) & VALID != 0 {
                return Err(MapError::Overlap(Ipa(i)));
            }
            l2[(i >> 30) as usize & 3] = Some(t);
        }
        Ok(LazyBlocks { ipa, pa, blocks, attrs: leaf_attrs(mem, access), l2 })
    }

    /// The table behind entry `index` of `table`, created if absent.
    fn next_table(&self, tm: &mut impl TableMem, table: PhysAddr, index: usize) -> Result<PhysAddr, MapError> {
        let d = tm.read(table, index);
        if d & VALID == 0 {
            let t = tm.alloc_table().ok_or(MapError::NoMemory)?;
            tm.write(table, index, t.raw() | TABLE_OR_PAGE | VALID);
            return Ok(t);
        }
        if d & TABLE_OR_PAGE == 0 {
            // A block is already there.
            return Err(MapError::Overlap(Ipa(0)));
        }
        Ok(PhysAddr(d & ADDR_MASK))
    }

    /// Walks the tables as the MMU would.
    pub fn translate(&self, tm: &impl TableMem, ipa: Ipa) -> Option<Translation> {
        let i = ipa.raw();
        if i >= 1 << 32 {
            return None;
        }
        let d1 = tm.read(self.root, (i >> 30) as usize & 3);
        if d1 & VALID == 0 || d1 & TABLE_OR_PAGE == 0 {
            return None;
        }
        let d2 = tm.read(PhysAddr(d1 & ADDR_MASK), (i >> 21) as usize & 511);
        if d2 & VALID == 0 {
            return None;
        }
        let (desc, page_mask) = if d2 & TABLE_OR_PAGE == 0 {
            (d2, BLOCK_2M - 1)
        } else {
            let d3 = tm.read(PhysAddr(d2 & ADDR_MASK), (i >> 12) as usize & 511);
            if d3 & (VALID | TABLE_OR_PAGE) != VALID | TABLE_OR_PAGE {
                return None;
            }
            (d3, PAGE_SIZE - 1)
        };
        let base = desc & ADDR_MASK & !page_mask;
        let mem = if desc & (0b1111 << 2) == MEMATTR_NORMAL_WB { MemType::Normal } else { MemType::Device };
        Some(Translation {
            pa: PhysAddr(base | (i & page_mask)),
            mem,
            access: Access { read: desc & S2AP_R != 0, write: desc & S2AP_W != 0, exec: desc & XN == 0 },
        })
    }
}

/// VTCR for this geometry: T0SZ = 0, SL0 = 1 (start at level 1), inner
/// shareable write-back walks. Bit 31 is RES1.
pub const VTCR: u32 = (1 << 31) | (0b11 << 12) | (0b01 << 10) | (0b01 << 8) | (0b01 << 6);

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Tables in a hash map, at fake physical addresses.
    #[derive(Default)]
    pub struct FakeMem {
        pub tables: HashMap<u64, Box<[u64; 512]>>,
        next: u64,
        pub limit: usize,
    }

    impl TableMem for FakeMem {
        fn alloc_table(&mut self) -> Option<PhysAddr> {
            if self.limit != 0 && self.tables.len() >= self.limit {
                return None;
            }
            self.next += PAGE_SIZE;
            let pa = 0x7000_0000 + self.next;
            self.tables.insert(pa, Box::new([0; 512]));
            Some(PhysAddr(pa))
        }
        fn read(&self, t: PhysAddr, i: usize) -> u64 {
            self.tables[&t.raw()][i]
        }
        fn write(&mut self, t: PhysAddr, i: usize, v: u64) {
            self.tables.get_mut(&t.raw()).unwrap()[i] = v;
        }
    }

    #[test]
    fn ram_maps_with_blocks_and_translates() {
        let mut tm = FakeMem::default();
        let mut s2 = Stage2::new(&mut tm).unwrap();
        s2.map(&mut tm, Ipa(0x4000_0000), PhysAddr(0x4200_0000), 16 << 20, MemType::Normal, Access::RWX).unwrap();
        // root + one level-2 table: eight 2 MiB blocks, no level-3 tables.
        assert_eq!(tm.tables.len(), 2);
        let t = s2.translate(&tm, Ipa(0x4012_3456)).unwrap();
        assert_eq!(t, Translation { pa: PhysAddr(0x4212_3456), mem: MemType::Normal, access: Access::RWX });
        assert_eq!(s2.translate(&tm, Ipa(0x4100_0000)), None, "first byte past RAM is unmapped");
        assert_eq!(s2.translate(&tm, Ipa(0x3fff_ffff)), None);
        assert_eq!(s2.translate(&tm, Ipa(0x0900_0000)), None);
    }

    #[test]
    fn lazy_blocks_map_one_at_a_time_across_1g_slots() {
        let mut tm = FakeMem::default();
        let mut s2 = Stage2::new(&mut tm).unwrap();
        // 1 GiB - 4 MiB .. 1 GiB + 4 MiB: two level-2 tables.
        let (ipa, pa) = (Ipa(0x3fc0_0000), PhysAddr(0x4200_0000));
        let lazy = s2.prepare_blocks(&mut tm, ipa, pa, 8 << 20, MemType::Normal, Access::RWX).unwrap();
        assert_eq!(lazy.blocks(), 4);
        assert_eq!(s2.translate(&tm, Ipa(0x3fc0_0000)), None, "nothing is mapped yet");
        for k in [3, 0] {
            let (table, index, desc) = lazy.entry(k).unwrap();
            tm.write(table, index, desc);
        }
        let t = s2.translate(&tm, Ipa(0x4020_0010)).unwrap();
        assert_eq!(t, Translation { pa: PhysAddr(0x4260_0010), mem: MemType::Normal, access: Access::RWX });
        assert_eq!(s2.translate(&tm, Ipa(0x3fc0_0004)).map(|t| t.pa), Some(PhysAddr(0x4200_0004)));
        assert_eq!(s2.translate(&tm, Ipa(0x3fe0_0000)), None, "block 1 is still unmapped");
        assert_eq!(lazy.entry(4), None);
        let short = s2.prepare_blocks(&mut tm, Ipa(0x8000_0000), pa, 3 << 20, MemType::Normal, Access::RWX);
        assert_eq!(short.err(), Some(MapError::Misaligned), "a partial last block would map past the range");
        let busy = s2.prepare_blocks(&mut tm, ipa, pa, 8 << 20, MemType::Normal, Access::RWX);
        assert_eq!(busy.err(), Some(MapError::Overlap(Ipa(0x3fc0_0000))));
    }

    #[test]
    fn unaligned_ranges_use_pages() {
        let mut tm = FakeMem::default();
        let mut s2 = Stage2::new(&mut tm).unwrap();
        s2.map(&mut tm, Ipa(0x0801_0000), PhysAddr(0x0804_0000), 0x2000, MemType::Device, Access::RW).unwrap();
        let t = s2.translate(&tm, Ipa(0x0801_1004)).unwrap();
        assert_eq!(t, Translation { pa: PhysAddr(0x0804_1004), mem: MemType::Device, access: Access::RW });
        assert_eq!(s2.translate(&tm, Ipa(0x0801_2000)), None);
    }

    #[test]
    fn overlap_and_misalignment_are_refused() {
        let mut tm = FakeMem::default();
        let mut s2 = Stage2::new(&mut tm).unwrap();
        s2.map(&mut tm, Ipa(0x4000_0000), PhysAddr(0x4200_0000), 2 << 20, MemType::Normal, Access::RWX).unwrap();
        assert!(matches!(
            s2.map(&mut tm, Ipa(0x4010_0000), PhysAddr(0x5000_0000), 0x1000, MemType::Normal, Access::RW),
            Err(MapError::Overlap(_))
        ));
        assert_eq!(
            s2.map(&mut tm, Ipa(0x4000_0800), PhysAddr(0x5000_0000), 0x1000, MemType::Normal, Access::RW),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            s2.map(&mut tm, Ipa(0xffff_f000), PhysAddr(0x5000_0000), 0x2000, MemType::Normal, Access::RW),
            Err(MapError::Misaligned)
        );
    }

    #[test]
    fn table_exhaustion_is_an_error() {
        let mut tm = FakeMem { limit: 1, ..Default::default() };
        let mut s2 = Stage2::new(&mut tm).unwrap();
        assert_eq!(
            s2.map(&mut tm, Ipa(0x4000_0000), PhysAddr(0x4200_0000), 2 << 20, MemType::Normal, Access::RWX),
            Err(MapError::NoMemory)
        );
    }

    #[test]
    fn vtcr_and_vttbr_encoding() {
        // T0SZ=0, SL0=01, IRGN0=01, ORGN0=01, SH0=11, RES1 bit 31 (Arm ARM B4.1.159).
        assert_eq!(VTCR, 0x8000_3540);
        let mut tm = FakeMem::default();
        let s2 = Stage2::new(&mut tm).unwrap();
        assert_eq!(s2.vttbr(3).vmid(), 3);
        assert_eq!(s2.vttbr(3).raw() & ADDR_MASK, s2.root().raw());
    }
}
