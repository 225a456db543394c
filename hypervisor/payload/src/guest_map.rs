//! The guest-physical map every VM sees: the one description the
//! hypervisor, the packer's guest DTB writer, the test guests and C guests
//! (`guest-drivers/include/tessera/guest_map.h`, which `cargo xtask gen-abi`
//! renders from here) take their addresses from. It is QEMU `virt`'s layout, so images built for that board run
//! unchanged.

/// Emulated GICv2 distributor (trapped).
pub const GICD: u32 = 0x0800_0000;
pub const GICD_SIZE: u32 = 0x1000;
/// The hardware's virtual CPU interface (GICV) is mapped here.
pub const GICC: u32 = 0x0801_0000;
pub const GICC_SIZE: u32 = 0x2000;
/// Emulated PL011 UART (trapped), on SPI 1 (INTID 33).
pub const UART: u32 = 0x0900_0000;
pub const UART_SIZE: u32 = 0x1000;
pub const UART_SPI: u32 = 1;
/// The hypercall console's input interrupt (TESSERA_CONSOLE_READ): SPI 2
/// (INTID 34), an edge whenever typed input arrives.
pub const CONSOLE_SPI: u32 = 2;
/// virtio-mmio slot 0 and its interrupt, SPI 16; slot n is
/// `VIRTIO_SLOT_SIZE * n` above, with SPI 16 + n.
pub const VIRTIO0: u32 = 0x0a00_0000;
pub const VIRTIO_SLOT_SIZE: u32 = 0x200;
pub const VIRTIO0_SPI: u32 = 16;
/// Channel k: its memory at `CHANNEL0 + k * CHANNEL_STRIDE` (the same
/// address in every member), its doorbell SPI `CHANNEL0_SPI + k`.
pub const CHANNEL0: u32 = 0x1000_0000;
pub const CHANNEL_STRIDE: u32 = 16 << 20;
pub const CHANNEL_WINDOW_END: u32 = 0x3000_0000;
pub const CHANNEL0_SPI: u32 = VIRTIO0_SPI + crate::MAX_DEVICES as u32;
/// Guest RAM starts here (QEMU virt's RAM base).
pub const RAM: u32 = 0x4000_0000;
/// Interrupt IDs of the architected timer and the vGIC (PPIs).
pub const PPI_VTIMER: u32 = 27;

/// Slot `slot`'s register window and SPI.
pub const fn virtio_slot(slot: u32) -> (u32, u32) {
    (VIRTIO0 + slot * VIRTIO_SLOT_SIZE, VIRTIO0_SPI + slot)
}

/// Channel `k`'s address and doorbell SPI.
pub const fn channel(k: u32) -> (u32, u32) {
    (CHANNEL0 + k * CHANNEL_STRIDE, CHANNEL0_SPI + k)
}

/// `(name, value)` of every constant, for generated headers.
pub const ALL: &[(&str, u32)] = &[
    ("GICD", GICD),
    ("GICD_SIZE", GICD_SIZE),
    ("GICC", GICC),
    ("GICC_SIZE", GICC_SIZE),
    ("UART", UART),
    ("UART_SIZE", UART_SIZE),
    ("UART_SPI", UART_SPI),
    ("CONSOLE_SPI", CONSOLE_SPI),
    ("VIRTIO0", VIRTIO0),
    ("VIRTIO_SLOT_SIZE", VIRTIO_SLOT_SIZE),
    ("VIRTIO0_SPI", VIRTIO0_SPI),
    ("CHANNEL0", CHANNEL0),
    ("CHANNEL_STRIDE", CHANNEL_STRIDE),
    ("CHANNEL_WINDOW_END", CHANNEL_WINDOW_END),
    ("CHANNEL0_SPI", CHANNEL0_SPI),
    ("RAM", RAM),
    ("PPI_VTIMER", PPI_VTIMER),
];

// The channels and the virtio slots must fit where they are put.
const _: () = assert!(CHANNEL0 + crate::MAX_CHANNELS as u32 * CHANNEL_STRIDE <= CHANNEL_WINDOW_END);
const _: () = assert!(CHANNEL_WINDOW_END <= RAM);
const _: () = assert!(VIRTIO0 + crate::MAX_DEVICES as u32 * VIRTIO_SLOT_SIZE <= CHANNEL0);
// 64 SPIs: what the vGIC emulates (`hypervisor/src/vgic.rs`, NR_SPIS).
const _: () = assert!(CHANNEL0_SPI + crate::MAX_CHANNELS as u32 <= 64);
const _: () = assert!(UART_SPI != CONSOLE_SPI && CONSOLE_SPI < VIRTIO0_SPI);
