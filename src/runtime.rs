//! How a strata process runs: the async runtime, and the allocator set up for
//! a client that streams large trees through a few threads.

/// How many glibc malloc arenas the process uses. An upload reads 32 KiB chunks
/// on blocking threads and frees them on the runtime's; glibc gives every
/// thread its own arena and keeps what was freed there, so a 20,000-file
/// upload touched about 30 MiB with the default (8 per core) and about 17 MiB
/// with two, at the same speed (docs/benchmarks.md).
const MALLOC_ARENAS: i32 = 2;

/// The runtime `strata` runs on, with the process's allocator tuned first
/// (the tuning is process-wide, so it belongs to whoever owns the process:
/// the binary, or a benchmark standing in for it).
pub fn new() -> std::io::Result<tokio::runtime::Runtime> {
    limit_malloc_arenas();
    tokio::runtime::Runtime::new()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets a tunable; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {
    let _ = MALLOC_ARENAS;
}
