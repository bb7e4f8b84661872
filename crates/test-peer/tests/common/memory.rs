//! The machine's shared memory in use, as the kernel counts it.

/// `Shmem:` of `/proc/meminfo`, in KiB: every shared page in use on the machine (named segments
/// and sealed memory alike).
pub fn shmem_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Shmem:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("Shmem: in /proc/meminfo")
}
