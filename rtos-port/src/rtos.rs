//! Thin Rust wrappers over the FreeRTOS calls the demo makes, through the
//! bindgen bindings. Each is one call; the macros of the C API (`xQueueSend`,
//! `xQueueCreate`, ...) are spelled out as the functions they expand to.

use crate::ffi;
use core::ffi::{c_void, CStr};
use core::marker::PhantomData;
use core::mem::MaybeUninit;

pub type Ticks = ffi::TickType_t;
pub const MAX_DELAY: Ticks = Ticks::MAX;
const PD_TRUE: ffi::BaseType_t = 1;
/// `queueSEND_TO_BACK` and `queueQUEUE_TYPE_BASE` (queue.h).
const SEND_TO_BACK: ffi::BaseType_t = 0;
const QUEUE_TYPE_BASE: u8 = 0;

/// A FreeRTOS queue of `T`s, copied in and out by value.
pub struct Queue<T: Copy> {
    handle: ffi::QueueHandle_t,
    _items: PhantomData<T>,
}

// SAFETY: a FreeRTOS queue is made to be shared between tasks and cores:
// every operation runs in a kernel critical section. Items are copied, so
// `T` itself must be sendable.
unsafe impl<T: Copy + Send> Send for Queue<T> {}
// SAFETY: as above.
unsafe impl<T: Copy + Send> Sync for Queue<T> {}

impl<T: Copy> Queue<T> {
    /// A queue of `len` items (`xQueueCreate`). Panics if the heap is full.
    pub fn new(len: u32) -> Self {
        // SAFETY: plain allocation from the kernel's heap.
        let handle = unsafe { ffi::xQueueGenericCreate(len as _, core::mem::size_of::<T>() as _, QUEUE_TYPE_BASE) };
        assert!(!handle.is_null(), "xQueueCreate: out of FreeRTOS heap");
        Queue { handle, _items: PhantomData }
    }

    /// Copies `item` to the back (`xQueueSend`); false on timeout.
    pub fn send(&self, item: &T, timeout: Ticks) -> bool {
        // SAFETY: the queue copies size_of::<T>() bytes from `item`.
        unsafe {
            ffi::xQueueGenericSend(self.handle, item as *const T as *const c_void, timeout, SEND_TO_BACK) == PD_TRUE
        }
    }

    /// The item at the front (`xQueueReceive`); None on timeout.
    pub fn receive(&self, timeout: Ticks) -> Option<T> {
        let mut slot = MaybeUninit::<T>::uninit();
        // SAFETY: on success the queue wrote size_of::<T>() bytes, a `T`
        // that a `send` copied in (T: Copy, so a bitwise copy is a value).
        unsafe {
            if ffi::xQueueReceive(self.handle, slot.as_mut_ptr() as *mut c_void, timeout) == PD_TRUE {
                Some(slot.assume_init())
            } else {
                None
            }
        }
    }
}

/// A task function: runs forever or deletes itself with [`exit`].
pub type TaskFn = extern "C" fn(*mut c_void);

/// Creates a task (`xTaskCreate`); `arg` is passed to `f`. Panics if the
/// heap is full.
pub fn spawn(name: &CStr, stack_words: u32, priority: u32, f: TaskFn, arg: usize) {
    // SAFETY: the kernel copies the name and allocates the stack and TCB;
    // `f` is a valid task function for the life of the program.
    let r = unsafe {
        ffi::xTaskCreate(
            Some(f),
            name.as_ptr(),
            stack_words as _,
            arg as *mut c_void,
            priority as _,
            core::ptr::null_mut(),
        )
    };
    assert_eq!(r, PD_TRUE, "xTaskCreate: out of FreeRTOS heap");
}

/// A task to notify (`TaskHandle_t`).
#[derive(Clone, Copy)]
pub struct TaskHandle(ffi::TaskHandle_t);

// SAFETY: a task handle is an opaque pointer the kernel lets any task or
// ISR on any core pass to the notification calls.
unsafe impl Send for TaskHandle {}
// SAFETY: as above.
unsafe impl Sync for TaskHandle {}

impl TaskHandle {
    pub fn into_raw(self) -> *mut c_void {
        self.0.cast()
    }
    pub fn from_raw(p: *mut c_void) -> Self {
        TaskHandle(p.cast())
    }
}

/// The calling task's handle.
pub fn current() -> TaskHandle {
    // SAFETY: called from a task.
    TaskHandle(unsafe { ffi::xTaskGetCurrentTaskHandle() })
}

/// Gives `t` a notification from an ISR (`vTaskNotifyGiveFromISR`), and
/// asks for a switch on the way out if that woke a task of higher priority.
pub fn notify_from_isr(t: TaskHandle) {
    let mut woken: ffi::BaseType_t = 0;
    // SAFETY: called from the port's IRQ handler with a live task's handle.
    unsafe {
        ffi::vTaskGenericNotifyGiveFromISR(t.0, 0, &mut woken);
        ffi::vPortYieldFromISR(woken);
    }
}

/// Waits up to `timeout` for notifications and takes them all
/// (`ulTaskNotifyTake(pdTRUE, ..)`); how many there were.
pub fn notify_take(timeout: Ticks) -> u32 {
    // SAFETY: called from a task.
    unsafe { ffi::ulTaskGenericNotifyTake(0, PD_TRUE, timeout) }
}

/// Enables interrupt `id` for the calling core; it then reaches
/// `vApplicationIRQHandler`.
pub fn enable_interrupt(id: u32) {
    // SAFETY: configures this core's GIC interface and the distributor.
    unsafe { ffi::vPortEnableInterrupt(id) }
}

/// Runs the tasks; never returns.
pub fn start_scheduler() -> ! {
    // SAFETY: called once, from main, before any task runs.
    unsafe { ffi::vTaskStartScheduler() };
    panic!("vTaskStartScheduler returned: not enough heap for the idle tasks");
}

/// Blocks the calling task for `ticks`.
pub fn delay(ticks: Ticks) {
    // SAFETY: called from a task.
    unsafe { ffi::vTaskDelay(ticks) }
}

/// Blocks until `*last + period`, then sets `*last` to it (`xTaskDelayUntil`).
pub fn delay_until(last: &mut Ticks, period: Ticks) {
    // SAFETY: called from a task, with a valid pointer.
    unsafe { ffi::xTaskDelayUntil(last, period) };
}

pub fn tick_count() -> Ticks {
    // SAFETY: reads the kernel's tick count.
    unsafe { ffi::xTaskGetTickCount() }
}

/// Ends the calling task (`vTaskDelete(NULL)`).
pub fn exit() -> ! {
    // SAFETY: deleting the calling task; the idle task frees its memory.
    unsafe { ffi::vTaskDelete(core::ptr::null_mut()) };
    unreachable!("a deleted task ran on");
}

/// The core (vCPU) running the caller.
pub fn core() -> u32 {
    // SAFETY: reads MPIDR.
    unsafe { ffi::xPortCurrentCore() as u32 }
}

/// The virtual counter (CNTVCT) and its frequency.
pub fn counter() -> u64 {
    // SAFETY: reads CNTVCT.
    unsafe { ffi::ullPortCounter() }
}

pub fn counter_frequency() -> u32 {
    // SAFETY: reads CNTFRQ.
    unsafe { ffi::ulPortCounterFrequency() }
}

/// The counter value at which tick `t` was due.
pub fn tick_to_counter(t: Ticks) -> u64 {
    // SAFETY: pure arithmetic on the port's tick timeline.
    unsafe { ffi::ullPortTickToCounter(t) }
}

/// configNUMBER_OF_CORES of the kernel this binary was linked with.
pub fn kernel_cores() -> u32 {
    // SAFETY: returns a constant.
    unsafe { ffi::xPortCoreCount() as u32 }
}

pub fn kernel_version() -> &'static str {
    // SAFETY: a static NUL-terminated string in the kernel image.
    unsafe { CStr::from_ptr(ffi::pcPortKernelVersion()) }.to_str().unwrap_or("?")
}

pub fn port_stats() -> ffi::PortStats_t {
    let mut s = MaybeUninit::<ffi::PortStats_t>::uninit();
    // SAFETY: the port fills the whole struct.
    unsafe {
        ffi::vPortGetStats(s.as_mut_ptr());
        s.assume_init()
    }
}
