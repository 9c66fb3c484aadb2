//! The process heap's settings for the encoder's buffers. Owns nothing else.
//!
//! Each encoder layer allocates its activations afresh (candle's tensors own their storage):
//! at batch 32 × 256 tokens the feed-forward's are 50 MB, and glibc's malloc hands any block
//! past its mmap threshold (at most 32 MB by its own adjustment) to a fresh `mmap` and gives it
//! back to the kernel on free, so every layer of every batch faulted its pages in again and had
//! them zeroed: a quarter of the time of a long-ticket batch on 2 cores went to the kernel. With
//! the heap keeping freed memory for the next batch, the pages stay mapped; peak memory is the
//! same, and stays in use after the peak instead of going back. (A thread other than the main
//! one allocates from an arena of heaps of at most 64 MiB each, so there a block above that
//! still gets its own mapping whatever the threshold; at the default batch budget the largest
//! is 50 MB.)

/// Settings of glibc's malloc an operator may have made; when one is, [`keep_freed_memory`]
/// leaves the heap as configured.
const OPERATOR_SETTINGS: [&str; 2] = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"];

/// The same settings as glibc tunables, inside `GLIBC_TUNABLES`.
const OPERATOR_TUNABLES: [&str; 2] = ["glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold"];

/// Most free memory the heap keeps at its top, and the largest block it serves itself (older
/// glibc refuses a threshold above 32 MiB, which is then used instead).
const KEEP_BYTES: [i32; 2] = [1 << 30, 32 << 20];

/// Whether the operator set malloc's thresholds themselves.
fn operator_set() -> bool {
    OPERATOR_SETTINGS
        .iter()
        .any(|name| std::env::var_os(name).is_some())
        || std::env::var("GLIBC_TUNABLES")
            .is_ok_and(|t| OPERATOR_TUNABLES.iter().any(|name| t.contains(name)))
}

/// Makes glibc's malloc keep freed memory for reuse instead of unmapping it (see the module
/// documentation). Call once at start-up, before other threads run; returns whether the
/// settings were applied (not on other C libraries, nor when the operator set malloc's own).
pub fn keep_freed_memory() -> bool {
    !operator_set() && apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: `mallopt` only changes the allocator's parameters under its own lock.
    let set = |option, value| unsafe { libc::mallopt(option, value) == 1 };
    let trim = set(libc::M_TRIM_THRESHOLD, KEEP_BYTES[0]);
    let mmap = KEEP_BYTES
        .iter()
        .any(|&bytes| set(libc::M_MMAP_THRESHOLD, bytes));
    trim && mmap
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    let _ = KEEP_BYTES;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heap_keeps_freed_memory_on_glibc_unless_the_operator_set_it() {
        if operator_set() {
            assert!(!keep_freed_memory());
            return;
        }
        assert_eq!(
            keep_freed_memory(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
