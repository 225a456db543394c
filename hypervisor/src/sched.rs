//! Scheduling policy, free of any CPU detail.
//!
//! Each pCPU owns one run queue of the vCPUs placed on it at VM creation and
//! time-slices them round-robin with the HYP timer; a vCPU that is off,
//! blocked or whose VM has stopped is skipped. Placement puts each vCPU on
//! the least-loaded pCPU its VM's affinity allows, so a VM may have more
//! vCPUs than the board has cores.

/// Round-robin queue of vCPU handles.
pub struct RunQueue<T: Copy, const N: usize> {
    items: [Option<T>; N],
    len: usize,
    /// Index to start the next search from.
    next: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

impl<T: Copy, const N: usize> RunQueue<T, N> {
    pub const fn new() -> Self {
        Self { items: [None; N], len: 0, next: 0 }
    }

    pub fn push(&mut self, item: T) -> Result<(), QueueFull> {
        if self.len == N {
            return Err(QueueFull);
        }
        self.items[self.len] = Some(item);
        self.len += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }

    /// The next runnable item after the one picked last, wrapping around;
    /// the last one picked comes again only if nothing else can run.
    pub fn pick(&mut self, mut runnable: impl FnMut(T) -> bool) -> Option<T> {
        for k in 0..self.len {
            let i = (self.next + k) % self.len;
            let item = self.items[i].expect("queue slots below len are filled");
            if runnable(item) {
                self.next = (i + 1) % self.len;
                return Some(item);
            }
        }
        None
    }

    /// How many items are runnable (decides whether a time slice is needed).
    pub fn count(&self, mut runnable: impl FnMut(T) -> bool) -> usize {
        self.iter().filter(|&t| runnable(t)).count()
    }
}

impl<T: Copy, const N: usize> Default for RunQueue<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The pCPU for a new vCPU: the least loaded one in `affinity` (bit n =
/// pCPU n), lowest index on ties. `None` if the mask names no pCPU in `load`.
pub fn place(load: &[u32], affinity: u32) -> Option<usize> {
    (0..load.len().min(32)).filter(|&p| affinity & (1 << p) != 0).min_by_key(|&p| (load[p], p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_skips_what_cannot_run() {
        let mut q: RunQueue<u32, 4> = RunQueue::new();
        for v in [10, 11, 12] {
            q.push(v).unwrap();
        }
        let picks: Vec<_> = (0..6).map(|_| q.pick(|_| true).unwrap()).collect();
        assert_eq!(picks, [10, 11, 12, 10, 11, 12]);
        let picks: Vec<_> = (0..4).map(|_| q.pick(|v| v != 11).unwrap()).collect();
        assert_eq!(picks, [10, 12, 10, 12]);
        assert_eq!(q.pick(|v| v == 12), Some(12), "a lone runnable vCPU keeps running");
        assert_eq!(q.pick(|v| v == 12), Some(12));
        assert_eq!(q.pick(|_| false), None);
        assert_eq!(q.count(|v| v > 10), 2);
    }

    #[test]
    fn full_queue_is_an_error() {
        let mut q: RunQueue<u8, 1> = RunQueue::new();
        q.push(1).unwrap();
        assert_eq!(q.push(2), Err(QueueFull));
    }

    #[test]
    fn placement_balances_within_affinity() {
        let mut load = [0u32; 2];
        // A 4-vCPU VM allowed on both pCPUs spreads 2 + 2.
        for _ in 0..4 {
            let p = place(&load, 0b11).unwrap();
            load[p] += 1;
        }
        assert_eq!(load, [2, 2]);
        // Pinned to pCPU 1 whatever the load.
        assert_eq!(place(&load, 0b10), Some(1));
        assert_eq!(place(&load, 0b100), None);
        assert_eq!(place(&[0; 2], 0), None);
    }
}
