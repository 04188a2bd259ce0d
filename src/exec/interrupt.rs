//! Signals: the first SIGINT (Ctrl-C) asks the run to stop at its next step (the executor
//! checks [`requested`] before applying anything more, and the run is recorded as
//! interrupted); a second one ends the process at once. The handler only touches an atomic
//! flag and calls write(2) and _exit(2), which are safe in a signal handler. SIGXFSZ (a file
//! over the size limit) is ignored, so such a write fails with an error fedsim reports instead
//! of killing the process mid-write. SIGPIPE gets its default back (Rust ignores it), so that
//! `fedsim info | head -1` ends quietly, as other command-line tools do, instead of panicking
//! on a write to the closed pipe.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPT: AtomicBool = AtomicBool::new(false);

const SIGINT: i32 = 2;
const SIGXFSZ: i32 = 25;
const SIGPIPE: i32 = 13;
const SIG_IGN: usize = 1;
const SIG_DFL: usize = 0;

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn _exit(status: i32) -> !;
}

extern "C" fn on_sigint(_: i32) {
    if INTERRUPT.swap(true, Ordering::SeqCst) {
        // SAFETY: async-signal-safe; ends the process without running anything else.
        unsafe { _exit(130) }
    }
    let message =
        b"\ninterrupted: stopping at the next step and writing what ran (Ctrl-C again to quit at once)\n";
    // SAFETY: async-signal-safe write of a static buffer to stderr.
    unsafe { write(2, message.as_ptr(), message.len()) };
}

/// Installs the handler (the command line does, once).
pub fn install() {
    // SAFETY: registers a handler that only uses async-signal-safe operations, and ignores a
    // signal whose default would end the process.
    unsafe {
        signal(SIGINT, on_sigint as extern "C" fn(i32) as usize);
        signal(SIGXFSZ, SIG_IGN);
        signal(SIGPIPE, SIG_DFL);
    }
}

/// Whether the user asked the run to stop.
pub fn requested() -> bool {
    INTERRUPT.load(Ordering::Relaxed)
}
