//! Faults: the message a caught panic carries ([`panic_message`]), and crash points for the
//! kill-and-resume tests: with `FEDSIM_KILL_AT=POINT:N` in the
//! environment, the process sends itself SIGKILL the N-th time it reaches POINT ("checkpoint":
//! just after a checkpoint is written; "distill": in the middle of a FedRevive distillation,
//! after synthesis and before the student trains; "eval": in the middle of an evaluation).
//! No outside timer can aim a kill at these moments. Without the variable a point costs one
//! relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

const SIGKILL: i32 = 9;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// The armed point and the hit that kills, if any.
fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var("FEDSIM_KILL_AT").ok()?;
            let (point, hit) = value.split_once(':')?;
            Some((point.to_owned(), hit.parse().ok()?))
        })
        .as_ref()
}

/// Counts a hit of `point`; the armed hit kills the process.
pub fn reached(point: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some((armed_point, kill_at)) = armed() else { return };
    if armed_point == point && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *kill_at {
        // SAFETY: signals this very process, as `kill -9` from outside would.
        unsafe { kill(std::process::id() as i32, SIGKILL) };
    }
}

/// The text a panic was raised with, if it carried one (a `&str` or a `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<String> {
    panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned())
}
