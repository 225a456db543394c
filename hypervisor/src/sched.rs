//! Scheduling policy, free of any CPU detail.
//!
//! Each pCPU owns one run queue of the vCPUs placed on it at VM creation and
//! time-slices them round-robin with the HYP timer; a vCPU that is off,
//! blocked or whose VM has stopped is skipped. Placement puts each vCPU on
//! the least-loaded pCPU its VM's affinity allows, so a VM may have more
//! vCPUs than the board has cores.
//!
//! Nothing the scheduler does per switch visits every vCPU: the vCPUs that
//! may run wait in a FIFO ([`ReadyRing`]), the descheduled vCPUs' virtual
//! timer deadlines sit in a min-heap ([`DeadlineHeap`]), and a wake-up
//! names the vCPU it is for (a bit per run-queue slot in [`Wakeups`]), so
//! picking, arming the next event and taking wake-ups cost the same with
//! 2 vCPUs as with 256.

extern crate alloc;

use crate::arch::MAX_CPUS;
use crate::platform::Platform;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The most vCPUs one pCPU's run queue holds.
pub const MAX_QUEUE: usize = tessera_payload::MAX_VCPUS_PER_PCPU as usize;
const WAKE_WORDS: usize = MAX_QUEUE.div_ceil(32);

/// How one pCPU tells another (or itself) that a vCPU it owns may have
/// become runnable: a flag per pCPU, and an interrupt if it is another one.
///
/// A wake-up never preempts the running vCPU at once: the owner only makes
/// sure the running vCPU has a time slice (Linux sends IPIs while holding
/// spinlocks, the runqueue lock among them, and switching away right then
/// leaves its siblings spinning on a lock whose holder is not running). An
/// idle owner picks the woken vCPU at once.
///
/// [`Wakeups::wake`] also names the slot of the vCPU that may have become
/// runnable, so its owner looks at that vCPU only, not at its whole queue.
///
/// It also carries what balancing needs to see of other pCPUs: the load
/// each publishes, and the requests for work an idle or lightly loaded
/// pCPU leaves with a busier one (which answers at its next scheduling
/// point by sending it a vCPU).
pub struct Wakeups {
    woken: [AtomicBool; MAX_CPUS],
    /// Per pCPU, a bit per run-queue slot woken since the owner last looked,
    /// and a bit per word of those that has any set.
    slots: [[AtomicU32; WAKE_WORDS]; MAX_CPUS],
    slot_words: [AtomicU32; MAX_CPUS],
    /// Per pCPU, how many of its vCPUs can run (waiting or running).
    load: [AtomicU32; MAX_CPUS],
    /// Per pCPU, the pCPUs that asked it for a vCPU (bit n = pCPU n).
    asks: [AtomicU32; MAX_CPUS],
    /// The pCPUs running their loops (bit n = pCPU n).
    online: AtomicU32,
    /// Per pCPU, free run-queue slots not yet promised to a sender
    /// ([`Wakeups::reserve`]); 0 while it is off.
    room: [AtomicU32; MAX_CPUS],
    /// pCPUs being powered on (CPU_ON issued, loop not started yet).
    starting: AtomicU32,
    platform: &'static dyn Platform,
}

impl Wakeups {
    pub fn new(platform: &'static dyn Platform) -> Self {
        Self {
            woken: [const { AtomicBool::new(false) }; MAX_CPUS],
            slots: [const { [const { AtomicU32::new(0) }; WAKE_WORDS] }; MAX_CPUS],
            slot_words: [const { AtomicU32::new(0) }; MAX_CPUS],
            load: [const { AtomicU32::new(0) }; MAX_CPUS],
            asks: [const { AtomicU32::new(0) }; MAX_CPUS],
            online: AtomicU32::new(0),
            room: [const { AtomicU32::new(0) }; MAX_CPUS],
            starting: AtomicU32::new(0),
            platform,
        }
    }

    /// The vCPU in slot `slot` of pCPU `pcpu` may have become runnable:
    /// note it, then make that pCPU look.
    pub fn wake(&self, pcpu: u32, slot: u32) {
        self.note(pcpu, slot);
        self.kick(pcpu);
    }

    /// Notes a woken slot without kicking its pCPU (the caller kicks each
    /// pCPU once after noting all of them).
    pub fn note(&self, pcpu: u32, slot: u32) {
        if let Some(w) = self.slots.get(pcpu as usize).and_then(|s| s.get(slot as usize / 32)) {
            w.fetch_or(1 << (slot % 32), Ordering::Release);
            self.slot_words[pcpu as usize].fetch_or(1 << (slot / 32), Ordering::Release);
        }
    }

    /// Takes pCPU `pcpu`'s woken slots, calling `f` with each (lowest
    /// first). Bounded by the queue's capacity, not by how many vCPUs exist.
    pub fn take_woken(&self, pcpu: usize, mut f: impl FnMut(usize)) {
        let summary = &self.slot_words[pcpu];
        if summary.load(Ordering::Relaxed) == 0 {
            return;
        }
        // The summary bit is taken before its word: a slot noted after the
        // word was swapped sets the bit again for the next look.
        let mut words = summary.swap(0, Ordering::Acquire);
        while words != 0 {
            let k = words.trailing_zeros() as usize;
            words &= words - 1;
            let mut bits = self.slots[pcpu][k].swap(0, Ordering::Acquire);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                f(k * 32 + b);
            }
        }
    }

    pub fn platform(&self) -> &'static dyn Platform {
        self.platform
    }

    /// Makes pCPU `pcpu` look at its run queue again.
    pub fn kick(&self, pcpu: u32) {
        if let Some(f) = self.woken.get(pcpu as usize) {
            f.store(true, Ordering::Release);
            if pcpu != self.platform.this_cpu() {
                self.platform.interrupt(pcpu);
            }
        }
    }

    /// Has pCPU `pcpu` been kicked since it last took its flag?
    pub fn pending(&self, pcpu: usize) -> bool {
        self.woken[pcpu].load(Ordering::Acquire)
    }

    /// pCPU `pcpu`'s own flag, for its loop to look at after every exit.
    pub fn flag(&self, pcpu: usize) -> WokenFlag<'_> {
        WokenFlag(&self.woken[pcpu])
    }

    pub fn clear(&self, pcpu: usize) {
        self.woken[pcpu].store(false, Ordering::Release);
    }

    /// Publishes how many vCPUs pCPU `pcpu` can run now.
    pub fn set_load(&self, pcpu: usize, n: usize) {
        self.load[pcpu].store(n as u32, Ordering::Relaxed);
    }

    /// pCPU `pcpu` runs its loop with `room` free queue slots: it may be
    /// sent vCPUs.
    pub fn go_online(&self, pcpu: usize, room: usize) {
        self.room[pcpu].store(room as u32, Ordering::Release);
        self.online.fetch_or(1 << pcpu, Ordering::AcqRel);
        self.starting.fetch_and(!(1 << pcpu), Ordering::AcqRel);
    }

    /// pCPU `pcpu` stops taking vCPUs, if no sender has promised it one:
    /// its room must still be `room` (all its free slots). False, and it
    /// stays online, if a vCPU may be on its way.
    pub fn go_offline(&self, pcpu: usize, room: usize) -> bool {
        self.online.fetch_and(!(1 << pcpu), Ordering::AcqRel);
        if self.room[pcpu].compare_exchange(room as u32, 0, Ordering::AcqRel, Ordering::Acquire).is_err() {
            self.online.fetch_or(1 << pcpu, Ordering::AcqRel);
            return false;
        }
        self.load[pcpu].store(0, Ordering::Relaxed);
        true
    }

    pub fn online(&self) -> u32 {
        self.online.load(Ordering::Acquire)
    }

    /// Promises `n` of pCPU `pcpu`'s free slots to a sender; false if it
    /// has fewer (or is off).
    pub fn reserve(&self, pcpu: usize, n: usize) -> bool {
        let r = &self.room[pcpu];
        r.fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| free.checked_sub(n as u32)).is_ok()
    }

    /// Gives back `n` slots (a vCPU left, or a promise was not used).
    pub fn release(&self, pcpu: usize, n: usize) {
        self.room[pcpu].fetch_add(n as u32, Ordering::AcqRel);
    }

    /// Marks pCPU `pcpu` as being powered on; false if it already is (or
    /// is on).
    pub fn begin_start(&self, pcpu: usize) -> bool {
        let bit = 1 << pcpu;
        self.online() & bit == 0 && self.starting.fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    /// Powering pCPU `pcpu` on failed.
    pub fn end_start(&self, pcpu: usize) {
        self.starting.fetch_and(!(1 << pcpu), Ordering::AcqRel);
    }

    /// Is some pCPU being powered on?
    pub fn starting(&self) -> u32 {
        self.starting.load(Ordering::Acquire)
    }

    /// (pCPU, published load) of every online pCPU other than `me`.
    fn other_loads(&self, me: usize) -> impl Iterator<Item = (usize, u32)> + '_ {
        let online = self.online.load(Ordering::Acquire);
        let loads = self.load.iter().map(|l| l.load(Ordering::Relaxed)).enumerate();
        loads.filter(move |&(p, _)| p != me && online & (1 << p) != 0)
    }

    /// The online pCPU other than `me` with the fewest runnable vCPUs.
    pub fn least_loaded(&self, me: usize) -> Option<(usize, u32)> {
        self.other_loads(me).min_by_key(|&(p, n)| (n, p))
    }

    /// What pCPU `pcpu` last published.
    pub fn load_of(&self, pcpu: usize) -> u32 {
        self.load.get(pcpu).map_or(0, |l| l.load(Ordering::Relaxed))
    }

    /// The pCPU other than `me` with the most runnable vCPUs, if it has at
    /// least `at_least`.
    pub fn busiest(&self, me: usize, at_least: u32) -> Option<usize> {
        let (p, n) = self.other_loads(me).max_by_key(|&(p, n)| (n, core::cmp::Reverse(p)))?;
        (n >= at_least).then_some(p)
    }

    /// pCPU `from` asks pCPU `to` for a vCPU. No kick: `to` has a vCPU
    /// waiting, so its time slice is armed and it looks within one slice.
    pub fn ask(&self, from: usize, to: usize) {
        self.asks[to].fetch_or(1 << from, Ordering::Release);
    }

    /// The pCPUs that asked `pcpu` for a vCPU since it last looked.
    pub fn take_asks(&self, pcpu: usize) -> u32 {
        let a = &self.asks[pcpu];
        if a.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        a.swap(0, Ordering::Acquire)
    }
}

/// One pCPU's wake-up flag (see [`Wakeups::flag`]).
#[derive(Clone, Copy)]
pub struct WokenFlag<'a>(&'a AtomicBool);

impl WokenFlag<'_> {
    /// Takes the flag. A plain load first: the swap is an exclusive-access
    /// loop, and most exits (every hypercall) find nothing.
    #[inline(always)]
    pub fn take(self) -> bool {
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::AcqRel)
    }
}

/// The items (vCPU slots) a pCPU owns, by slot index. Items are owned:
/// the queue is where a vCPU's saved context lives, so whoever holds the
/// queue holds the only way to reach it. A slot index stays its item's
/// while the item is here; an item taken out (a vCPU migrating) leaves a
/// hole the next push fills.
pub struct RunQueue<T> {
    items: Vec<Option<T>>,
    /// Holes, reused first.
    free: Vec<u16>,
    /// How many items it holds.
    count: usize,
    /// The most items it may hold (set at creation; pushing never allocates
    /// past it, so the hot path never allocates).
    capacity: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

impl<T> RunQueue<T> {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { items: Vec::with_capacity(capacity), free: Vec::with_capacity(capacity), count: 0, capacity }
    }

    /// Adds an item; its slot index, or the item back if the queue is full.
    pub fn push(&mut self, item: T) -> Result<usize, (QueueFull, T)> {
        if let Some(i) = self.free.pop() {
            self.items[i as usize] = Some(item);
            self.count += 1;
            return Ok(i as usize);
        }
        if self.items.len() == self.capacity {
            return Err((QueueFull, item));
        }
        self.items.push(Some(item));
        self.count += 1;
        Ok(self.items.len() - 1)
    }

    /// Takes item `i` out, leaving a hole.
    pub fn take(&mut self, i: usize) -> Option<T> {
        let item = self.items.get_mut(i)?.take()?;
        self.free.push(i as u16);
        self.count -= 1;
        Some(item)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + Clone + '_ {
        self.items.iter().flatten()
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)?.as_ref()
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i)?.as_mut()
    }

    /// Item `i` mutably and every other item beside it, so the running
    /// vCPU's context and the rest of the queue can be used at once without
    /// two mutable paths to the same item. Panics if there is no item `i`
    /// (a hypervisor bug: indices come from the pCPU's own queues).
    pub fn split(&mut self, i: usize) -> (&mut T, Others<'_, T>) {
        let (before, rest) = self.items.split_at_mut(i);
        let (me, after) = rest.split_first_mut().expect("run queue index in range");
        (me.as_mut().expect("a run queue slot in use"), Others { before, skip: i, after })
    }
}

/// The items of a queue other than the one [`RunQueue::split`] took.
pub struct Others<'a, T> {
    before: &'a mut [Option<T>],
    skip: usize,
    after: &'a mut [Option<T>],
}

impl<T> Others<'_, T> {
    /// (index in the queue, item) for every other item.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> + Clone + '_ {
        let skip = self.skip;
        let before = self.before.iter().enumerate();
        let after = self.after.iter().enumerate().map(move |(k, t)| (skip + 1 + k, t));
        before.chain(after).filter_map(|(i, t)| Some((i, t.as_ref()?)))
    }

    /// Item `i`, unless it is the one taken (or out of range).
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i < self.skip {
            self.before.get_mut(i)?.as_mut()
        } else if i > self.skip {
            self.after.get_mut(i - self.skip - 1)?.as_mut()
        } else {
            None
        }
    }
}

/// The slots that may run, first in first out: a slot is in it at most
/// once, and whether it really can run is asked when it comes out (a VM may
/// have stopped meanwhile), so a stale entry costs one question.
pub struct ReadyRing {
    buf: Vec<u16>,
    head: usize,
    len: usize,
    queued: Vec<bool>,
}

impl ReadyRing {
    /// A ring for slots `0..capacity`, allocated once.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: alloc::vec![0; capacity], head: 0, len: 0, queued: alloc::vec![false; capacity] }
    }

    /// Appends `slot` unless it is queued already (or out of range).
    pub fn push(&mut self, slot: usize) {
        if slot >= self.queued.len() || self.queued[slot] {
            return;
        }
        self.queued[slot] = true;
        let mut tail = self.head + self.len;
        if tail >= self.buf.len() {
            tail -= self.buf.len();
        }
        self.buf[tail] = slot as u16;
        self.len += 1;
    }

    pub fn pop(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let slot = self.buf[self.head] as usize;
        self.head = if self.head + 1 == self.buf.len() { 0 } else { self.head + 1 };
        self.len -= 1;
        self.queued[slot] = false;
        Some(slot)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Takes the first queued slot that `pred` accepts, keeping the order
    /// of the rest (for migration: rare, so a pass over the ring is fine).
    pub fn take_where(&mut self, mut pred: impl FnMut(usize) -> bool) -> Option<usize> {
        let n = self.len;
        let mut found = None;
        for _ in 0..n {
            let s = self.pop()?;
            if found.is_none() && pred(s) {
                found = Some(s);
            } else {
                self.push(s);
            }
        }
        found
    }
}

const ABSENT: u16 = u16::MAX;

/// The virtual-timer deadlines of descheduled vCPUs, earliest first: an
/// indexed binary min-heap (a slot's position is kept, so a deadline is
/// replaced or removed in O(log n) when its vCPU is loaded again).
pub struct DeadlineHeap {
    heap: Vec<(u64, u16)>,
    pos: Vec<u16>,
}

impl DeadlineHeap {
    /// A heap for slots `0..capacity`, allocated once.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { heap: Vec::with_capacity(capacity), pos: alloc::vec![ABSENT; capacity] }
    }

    /// Sets (or replaces) `slot`'s deadline.
    pub fn set(&mut self, slot: usize, deadline: u64) {
        if slot >= self.pos.len() {
            return;
        }
        self.remove(slot);
        let i = self.heap.len();
        self.heap.push((deadline, slot as u16));
        self.pos[slot] = i as u16;
        self.up(i);
    }

    /// Forgets `slot`'s deadline, if it has one.
    pub fn remove(&mut self, slot: usize) {
        let Some(&p) = self.pos.get(slot) else { return };
        if p == ABSENT {
            return;
        }
        let i = p as usize;
        let last = self.heap.len() - 1;
        self.swap(i, last);
        self.heap.pop();
        self.pos[slot] = ABSENT;
        if i < self.heap.len() {
            self.down(i);
            self.up(i);
        }
    }

    /// The earliest deadline and its slot.
    pub fn peek(&self) -> Option<(u64, usize)> {
        self.heap.first().map(|&(d, s)| (d, s as usize))
    }

    /// Removes and returns the earliest slot if its deadline is at or
    /// before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<usize> {
        let (d, s) = self.peek()?;
        if d > now {
            return None;
        }
        self.remove(s);
        Some(s)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1 as usize] = a as u16;
        self.pos[self.heap[b].1 as usize] = b as u16;
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].0 <= self.heap[i].0 {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < n && self.heap[l].0 < self.heap[least].0 {
                least = l;
            }
            if r < n && self.heap[r].0 < self.heap[least].0 {
                least = r;
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }
}

/// The pCPU for a new vCPU (the rule the packer checks limits with).
pub use tessera_payload::place;

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(items: &[u32]) -> RunQueue<u32> {
        let mut q = RunQueue::with_capacity(4);
        for &v in items {
            q.push(v).unwrap();
        }
        q
    }

    #[test]
    fn full_queue_is_an_error() {
        let mut q = RunQueue::with_capacity(1);
        q.push(1u8).unwrap();
        assert_eq!(q.push(2), Err((QueueFull, 2)));
        assert_eq!(q.items.capacity(), 1, "capacity is reserved up front");
    }

    #[test]
    fn taken_items_leave_holes_the_next_push_fills() {
        let mut q = queue(&[10, 11, 12]);
        assert_eq!(q.take(1), Some(11));
        assert_eq!(q.take(1), None);
        assert_eq!((q.len(), q.iter().copied().collect::<Vec<_>>()), (2, vec![10, 12]));
        let (me, others) = q.split(2);
        assert_eq!((*me, others.iter().collect::<Vec<_>>()), (12, vec![(0, &10)]));
        assert_eq!(q.push(20), Ok(1), "the hole is reused: other slots keep their index");
        assert_eq!(q.push(21), Ok(3));
        assert_eq!(q.get(1), Some(&20));
    }

    #[test]
    fn split_gives_the_rest_with_their_indices() {
        let mut q = queue(&[10, 11, 12, 13]);
        let (me, mut others) = q.split(1);
        *me += 100;
        assert_eq!(others.iter().collect::<Vec<_>>(), [(0, &10), (2, &12), (3, &13)]);
        assert!(others.get_mut(1).is_none(), "the taken item is not reachable twice");
        *others.get_mut(3).unwrap() += 1;
        assert!(others.get_mut(4).is_none());
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), [10, 111, 12, 14]);
        let (first, others) = q.split(0);
        assert_eq!((*first, others.iter().map(|(i, _)| i).collect::<Vec<_>>()), (10, vec![1, 2, 3]));
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

    #[test]
    fn ready_ring_is_fifo_without_duplicates() {
        let mut r = ReadyRing::with_capacity(3);
        r.push(2);
        r.push(0);
        r.push(2);
        r.push(7); // out of range: ignored
        assert_eq!(r.len(), 2);
        assert_eq!(r.pop(), Some(2));
        r.push(1);
        r.push(2);
        assert_eq!((r.pop(), r.pop(), r.pop(), r.pop()), (Some(0), Some(1), Some(2), None));
        for round in 0..5 {
            r.push(round % 3);
            assert_eq!(r.pop(), Some(round % 3), "wraps around its buffer");
        }
        assert!(r.is_empty());
        for s in [2, 0, 1] {
            r.push(s);
        }
        assert_eq!(r.take_where(|s| s < 2), Some(0));
        assert_eq!(r.take_where(|s| s > 5), None);
        assert_eq!((r.pop(), r.pop(), r.pop()), (Some(2), Some(1), None), "the rest keep their order");
    }

    #[test]
    fn deadline_heap_orders_replaces_and_removes() {
        let mut h = DeadlineHeap::with_capacity(8);
        for (slot, d) in [(0, 50), (1, 10), (2, 40), (3, 30), (4, 20), (5, 60)] {
            h.set(slot, d);
        }
        assert_eq!(h.peek(), Some((10, 1)));
        h.set(1, 70); // replaced, not added
        assert_eq!(h.len(), 6);
        h.remove(4);
        h.remove(4);
        assert_eq!(h.pop_due(29), None, "nothing due yet");
        let due: Vec<_> = core::iter::from_fn(|| h.pop_due(55)).collect();
        assert_eq!(due, [3, 2, 0]);
        assert_eq!(h.peek(), Some((60, 5)));
        h.set(9, 1); // out of range: ignored
        assert_eq!(core::iter::from_fn(|| h.pop_due(u64::MAX)).collect::<Vec<_>>(), [5, 1]);
        assert!(h.is_empty());
    }

    #[test]
    fn deadline_heap_matches_a_sorted_model() {
        // A small deterministic pseudo-random walk against a plain model.
        let mut h = DeadlineHeap::with_capacity(16);
        let mut model = [None::<u64>; 16];
        let mut x = 0x2545_f491u32;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let slot = (x % 16) as usize;
            if x & 0x100 != 0 {
                let d = u64::from(x >> 20);
                h.set(slot, d);
                model[slot] = Some(d);
            } else {
                h.remove(slot);
                model[slot] = None;
            }
            let best = model.iter().filter_map(|d| *d).min();
            assert_eq!(h.peek().map(|(d, _)| d), best);
            if let Some((d, s)) = h.peek() {
                assert_eq!(model[s], Some(d));
            }
        }
    }

    #[test]
    fn wakeups_name_their_slots() {
        let board = crate::arch::fake::FakeBoard::new();
        let w = Wakeups::new(board);
        w.wake(1, 3);
        w.wake(1, MAX_QUEUE as u32 - 1);
        w.wake(1, 3);
        w.wake(1, MAX_QUEUE as u32); // out of range: ignored
        assert!(w.pending(1));
        let mut seen = Vec::new();
        w.take_woken(1, |s| seen.push(s));
        assert_eq!(seen, [3, MAX_QUEUE - 1]);
        w.take_woken(1, |_| panic!("taken once"));
        w.take_woken(0, |_| panic!("another pCPU's"));
    }
}
