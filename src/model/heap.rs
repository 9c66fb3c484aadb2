//! The process heap's settings for the encoder's buffers. Owns nothing else.
//!
//! Each encoder layer allocates its activations afresh (candle's tensors own their storage):
//! at batch 32 × 256 tokens the feed-forward's are 50 MB, and glibc's malloc hands any block
//! past its mmap threshold (at most 32 MB by its own adjustment) to a fresh `mmap` and gives it
//! back to the kernel on free, so every layer of every batch faulted its pages in again and had
//! them zeroed: a quarter of the time of a long-ticket batch on 2 cores went to the kernel. With
//! the heap keeping freed memory for the next batch, the pages stay mapped; peak memory is the
//! same, and stays in use after the peak instead of going back.

/// Environment variables through which an operator sets glibc's malloc by hand; when one is
/// set, [`keep_freed_memory`] leaves the heap as configured.
const OPERATOR_SETTINGS: [&str; 3] = [
    "GLIBC_TUNABLES",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
];

/// Largest block the heap serves itself, and most free memory it keeps at its top: past any
/// buffer of the encoder at its largest batch (batch 32 × 512 tokens × 1,536 f32 is 100 MB).
const KEEP_BYTES: i32 = 1 << 30;

/// Makes glibc's malloc keep freed memory for reuse instead of unmapping it (see the module
/// documentation). Call once at start-up, before other threads run; returns whether the
/// settings were applied (not on other C libraries, nor when the operator set malloc's own).
pub fn keep_freed_memory() -> bool {
    if OPERATOR_SETTINGS
        .iter()
        .any(|name| std::env::var_os(name).is_some())
    {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: `mallopt` only changes the allocator's parameters under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP_BYTES) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    }
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
    fn the_heap_keeps_freed_memory_on_glibc() {
        // The test binary's environment has none of the operator's settings (CI sets none).
        if OPERATOR_SETTINGS
            .iter()
            .any(|name| std::env::var_os(name).is_some())
        {
            assert!(!keep_freed_memory());
            return;
        }
        assert_eq!(
            keep_freed_memory(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
