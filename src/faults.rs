//! Faults: the message a caught panic carries ([`panic_message`]), and crash points for the
//! kill-and-resume tests: with `FEDSIM_KILL_AT=POINT:N` in the environment, the process sends
//! itself SIGKILL the N-th time it reaches POINT ("checkpoint": just after a checkpoint is
//! written; "distill": in the middle of a FedRevive distillation, after synthesis and before
//! the student trains; "eval": in the middle of an evaluation; "train": when an MPI training
//! rank is given a cohort). `FEDSIM_STOP_AT=POINT:N` sends SIGSTOP instead: the process
//! hangs, as a rank that stops answering does. No outside timer can aim a signal at these
//! moments. Without the variables a point costs two relaxed atomic loads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

const SIGKILL: i32 = 9;
const SIGSTOP: i32 = 19;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// The point and hit an environment variable arms, if any.
fn armed(variable: &str) -> Option<(String, u64)> {
    let value = std::env::var(variable).ok()?;
    let (point, hit) = value.split_once(':')?;
    Some((point.to_owned(), hit.parse().ok()?))
}

/// Counts a hit of `point`; the armed hit signals the process (SIGKILL or SIGSTOP).
pub fn reached(point: &str) {
    static ARMED: OnceLock<[Option<(String, u64)>; 2]> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| [armed("FEDSIM_KILL_AT"), armed("FEDSIM_STOP_AT")]);
    for (arm, signal) in armed.iter().zip([SIGKILL, SIGSTOP]) {
        let Some((armed_point, at)) = arm else { continue };
        if armed_point == point && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *at {
            // SAFETY: signals this very process, as `kill -9` (or `kill -STOP`) from outside would.
            unsafe { kill(std::process::id() as i32, signal) };
        }
    }
}

/// The text a panic was raised with, if it carried one (a `&str` or a `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<String> {
    panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned())
}
