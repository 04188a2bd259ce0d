//! Rank 0's last words when the job ends under it. A training rank that dies (killed, out of
//! memory, a segfault in a library) makes mpirun end every process, rank 0 with SIGTERM
//! first; its handler then writes which tasks each training rank held, so the message names
//! the task the dead rank held (mpirun's own names the rank). The handler only reads atomics,
//! formats into a stack buffer and calls write(2) and _exit(2), which are safe in a handler.

use std::sync::atomic::{AtomicU64, Ordering};

/// Ranks whose holdings are tracked (a larger job reports its first ranks).
const TRACKED: usize = 256;
const SIGTERM: i32 = 15;

/// Per rank: the lowest task it holds (u64::MAX: none) and how many it holds.
static FIRST_TASK: [AtomicU64; TRACKED] = [const { AtomicU64::new(u64::MAX) }; TRACKED];
static TASKS: [AtomicU64; TRACKED] = [const { AtomicU64::new(0) }; TRACKED];

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn _exit(status: i32) -> !;
}

/// Records the tasks `rank` holds now.
pub fn holding(rank: usize, tasks: impl Iterator<Item = u64>) {
    if rank >= TRACKED {
        return;
    }
    let (first, count) = tasks.fold((u64::MAX, 0), |(first, count), t| (first.min(t), count + 1));
    FIRST_TASK[rank].store(first, Ordering::Relaxed);
    TASKS[rank].store(count, Ordering::Relaxed);
}

/// A stack buffer that text and numbers are appended to without allocating.
struct Line {
    bytes: [u8; 4096],
    len: usize,
}

impl Line {
    fn text(&mut self, text: &[u8]) {
        let n = text.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&text[..n]);
        self.len += n;
    }

    fn number(&mut self, mut value: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.text(&digits[i..]);
    }
}

/// The message, e.g. "... rank 1 held task 35 (and 1 more); rank 2 held no task".
fn last_words(line: &mut Line) {
    line.text(b"\nfedsim rank 0: the MPI job is ending (a rank died or mpirun was stopped); ");
    line.text(b"the run directory keeps its logs and last checkpoint (fedsim resume continues it). Held at the end:");
    for rank in 1..TRACKED {
        let count = TASKS[rank].load(Ordering::Relaxed);
        if count == 0 {
            continue;
        }
        line.text(b" rank ");
        line.number(rank as u64);
        line.text(b" held task ");
        line.number(FIRST_TASK[rank].load(Ordering::Relaxed));
        if count > 1 {
            line.text(b" (and ");
            line.number(count - 1);
            line.text(b" more)");
        }
        line.text(b";");
    }
    line.text(b"\n");
}

extern "C" fn on_sigterm(_: i32) {
    let mut line = Line { bytes: [0; 4096], len: 0 };
    last_words(&mut line);
    // SAFETY: async-signal-safe write of a stack buffer, then an immediate exit.
    unsafe {
        write(2, line.bytes.as_ptr(), line.len);
        _exit(143)
    }
}

/// Installs the handler on rank 0 of a job of several ranks.
pub fn install() {
    // SAFETY: the handler only uses async-signal-safe operations.
    unsafe { signal(SIGTERM, on_sigterm as extern "C" fn(i32) as usize) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_words_name_each_rank_and_the_first_task_it_held() {
        holding(1, [37u64, 35].into_iter());
        holding(2, std::iter::empty());
        holding(3, [1_000_000_000_000u64].into_iter());
        let mut line = Line { bytes: [0; 4096], len: 0 };
        last_words(&mut line);
        let text = std::str::from_utf8(&line.bytes[..line.len]).unwrap();
        assert!(text.contains(" rank 1 held task 35 (and 1 more);"), "{text}");
        assert!(!text.contains("rank 2 held"), "{text}");
        assert!(text.contains(" rank 3 held task 1000000000000;"), "{text}");
    }
}
