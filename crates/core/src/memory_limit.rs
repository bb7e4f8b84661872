//! Whether a new reservation of shared memory fits the memory this process may still take, so
//! that a reservation too large is a [`crate::Error::NoSpace`] naming the limit instead of a
//! kill by the OOM killer.
//!
//! Reserving the pages of anonymous shared memory (`posix_fallocate` of a `memfd`) past a
//! cgroup's limit or past the machine's memory does not fail: the kernel's OOM killer ends a
//! process. So the check runs before the reservation, against two kinds of limit; the tightest
//! one decides:
//!
//! - **The cgroup's**, at the process's own cgroup and at every ancestor up to the root of the
//!   mounted hierarchy: cgroup v2 `memory.max` against `memory.current` (`max` is no limit), or,
//!   where the memory controller is mounted as cgroup v1, `memory.limit_in_bytes` against
//!   `memory.usage_in_bytes`. The hierarchy is found in `/proc/self/mountinfo`, and the
//!   process's place in it in `/proc/self/cgroup`. A level whose files are missing or do not
//!   parse sets no limit. Swap does not count here: a reservation that only fits if the cgroup
//!   swaps out its own memory is refused.
//! - **The machine's**: `MemAvailable` plus `SwapFree` of `/proc/meminfo` (shared memory pages
//!   can be swapped out, so with swap the OOM killer comes only after both are used up). With
//!   `vm.overcommit_memory = 2` the kernel itself refuses the reservation past its commit limit.
//!
//! The check reads two small files per cgroup level and `/proc/meminfo` (about 0.1 ms); where
//! the process sits in the hierarchies is looked up once. It is advice taken at one instant:
//! another process can take the memory between the check and the reservation.
//!
//! Elsewhere than on Linux every reservation passes the check. The measurements behind these
//! rules are in `docs/decisions/2026-12-07-sealed-memory.md`.

use crate::error::Result;

/// Checks that `bytes` more of shared memory fit under this process's cgroup limits and the
/// machine's available memory; [`crate::Error::NoSpace`] names the limit that does not leave
/// room for them. Always `Ok` elsewhere than on Linux.
pub fn check_headroom(bytes: u64) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        linux::check_headroom(bytes)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = bytes;
        Ok(())
    }
}

/// The memory this process may use at most: the tightest of its cgroups' limits and the
/// machine's total memory (Linux); `None` where that cannot be read, or elsewhere.
pub fn memory_size() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        linux::memory_size()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The error for a reservation of `bytes` that the kernel refused after the check passed.
#[cfg(target_os = "linux")]
pub(crate) use linux::refused;

#[cfg(target_os = "linux")]
mod linux {
    use crate::error::{Error, Result, SpaceLimit};
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    /// [`super::check_headroom`] on Linux. Where this process sits in the cgroup hierarchies is
    /// looked up once per process (a process moved to another cgroup later is still checked
    /// against the first one's limits).
    pub(super) fn check_headroom(bytes: u64) -> Result<()> {
        let root = Path::new("/");
        check_headroom_in(bytes, root, own_cgroup_dirs())
    }

    /// This process's cgroup directories, looked up once.
    fn own_cgroup_dirs() -> &'static [LevelDir] {
        static DIRS: OnceLock<Vec<LevelDir>> = OnceLock::new();
        DIRS.get_or_init(|| cgroup_dirs(Path::new("/")))
    }

    /// [`super::memory_size`] on Linux.
    pub(super) fn memory_size() -> Option<u64> {
        let root = Path::new("/");
        let cgroups = own_cgroup_dirs()
            .iter()
            .filter_map(|dir| read_level(root, dir))
            .map(|level| level.max);
        let machine = meminfo_field(root, "MemTotal");
        cgroups.chain(machine).min()
    }

    /// [`check_headroom`] against the cgroup directories `dirs`, with every file read under
    /// `root` (`/` for the real files, a directory laid out the same way in the tests).
    fn check_headroom_in(bytes: u64, root: &Path, dirs: &[LevelDir]) -> Result<()> {
        let mut tightest: Option<(u64, SpaceLimit)> = None;
        let mut consider = |room: u64, limit: SpaceLimit| {
            if !matches!(&tightest, Some((least, _)) if room >= *least) {
                tightest = Some((room, limit));
            }
        };
        for level in dirs.iter().filter_map(|dir| read_level(root, dir)) {
            consider(level.max.saturating_sub(level.current), level.into_limit());
        }
        if let Some(available) = machine_available(root) {
            consider(available, SpaceLimit::Machine { available });
        }
        match tightest {
            Some((room, limit)) if bytes > room => Err(Error::NoSpace {
                needed: bytes,
                free: Some(room),
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// One cgroup's memory limit and use.
    #[derive(Debug, PartialEq, Eq)]
    struct Level {
        /// The file that holds the limit (`…/memory.max` or `…/memory.limit_in_bytes`), as a
        /// path of the real filesystem.
        file: String,
        /// The limit in bytes.
        max: u64,
        /// The bytes in use.
        current: u64,
    }

    impl Level {
        fn into_limit(self) -> SpaceLimit {
            SpaceLimit::Cgroup {
                file: self.file,
                max: self.max,
                current: self.current,
            }
        }
    }

    /// The two layouts of the memory controller: its limit file and its usage file.
    const V2_FILES: (&str, &str) = ("memory.max", "memory.current");
    const V1_FILES: (&str, &str) = ("memory.limit_in_bytes", "memory.usage_in_bytes");

    /// A cgroup directory whose memory limit applies to this process, with the names of its
    /// limit and usage files.
    #[derive(Debug)]
    struct LevelDir {
        dir: PathBuf,
        files: (&'static str, &'static str),
    }

    /// Every cgroup directory whose memory limit applies to this process: its own cgroup and
    /// its ancestors, in the v2 hierarchy and in a v1 hierarchy that holds the memory
    /// controller (a machine has one or the other for memory).
    fn cgroup_dirs(root: &Path) -> Vec<LevelDir> {
        let read = |p: &str| std::fs::read_to_string(under(root, Path::new(p))).ok();
        let (Some(membership), Some(mountinfo)) =
            (read("/proc/self/cgroup"), read("/proc/self/mountinfo"))
        else {
            return Vec::new();
        };
        let mut levels = Vec::new();
        for line in membership.lines() {
            // "ID:CONTROLLERS:PATH": ID 0 with no controllers is the v2 hierarchy.
            let mut fields = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let (mount, files) = if id == "0" && controllers.is_empty() {
                (
                    find_mount(&mountinfo, |fstype, _| fstype == "cgroup2"),
                    V2_FILES,
                )
            } else if controllers.split(',').any(|c| c == "memory") {
                let memory = |fstype: &str, options: &str| {
                    fstype == "cgroup" && options.split(',').any(|o| o == "memory")
                };
                (find_mount(&mountinfo, memory), V1_FILES)
            } else {
                continue;
            };
            let Some((mount_root, mount_point)) = mount else {
                continue;
            };
            let Some(dir) = cgroup_dir(&mount_root, &mount_point, path) else {
                continue;
            };
            let mut at = dir.as_path();
            loop {
                levels.push(LevelDir {
                    dir: at.to_owned(),
                    files,
                });
                if at == mount_point {
                    break;
                }
                match at.parent() {
                    Some(parent) => at = parent,
                    None => break,
                }
            }
        }
        levels
    }

    /// The root (inside the hierarchy) and the mount point of the first mount in `mountinfo`
    /// whose filesystem type and super options `wanted` accepts.
    fn find_mount(
        mountinfo: &str,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> Option<(PathBuf, PathBuf)> {
        mountinfo.lines().find_map(|line| {
            // "ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER-OPTIONS"
            let (before, after) = line.split_once(" - ")?;
            let mut before = before.split(' ');
            let (mount_root, mount_point) = (before.nth(3)?, before.next()?);
            let mut after = after.split(' ');
            let (fstype, options) = (after.next()?, after.nth(1)?);
            wanted(fstype, options)
                .then(|| (unescape(mount_root).into(), unescape(mount_point).into()))
        })
    }

    /// A mountinfo field with its octal escapes (`\040` for a space) decoded.
    fn unescape(field: &str) -> String {
        let bytes = field.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let octal = bytes.get(i + 1..i + 4).and_then(|d| {
                let d = std::str::from_utf8(d).ok()?;
                u8::from_str_radix(d, 8).ok()
            });
            match (bytes[i], octal) {
                (b'\\', Some(byte)) => {
                    out.push(byte);
                    i += 4;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The directory of the cgroup `path` (as `/proc/self/cgroup` names it) in the hierarchy
    /// mounted at `mount_point` from its directory `mount_root`; `None` if the cgroup is outside
    /// what that mount shows.
    fn cgroup_dir(mount_root: &Path, mount_point: &Path, path: &str) -> Option<PathBuf> {
        let inside = Path::new(path).strip_prefix(mount_root).ok()?;
        if inside
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return None;
        }
        Some(mount_point.join(inside))
    }

    /// The memory limit and use of the cgroup directory `dir`, if it has a limit that parses.
    /// A limit of 2^62 bytes or more is none: cgroup v1 writes "no limit" as about 2^63.
    fn read_level(root: &Path, dir: &LevelDir) -> Option<Level> {
        let LevelDir {
            dir,
            files: (limit_file, usage_file),
        } = dir;
        let read = |name: &str| std::fs::read_to_string(under(root, &dir.join(name))).ok();
        let max: u64 = read(limit_file)?.trim().parse().ok()?; // "max": no limit
        if max >= 1 << 62 {
            return None;
        }
        let current: u64 = read(usage_file)?.trim().parse().ok()?;
        Some(Level {
            file: dir.join(limit_file).to_string_lossy().into_owned(),
            max,
            current,
        })
    }

    /// The error for a reservation of `bytes` that the kernel refused although the check
    /// passed (memory ran out meanwhile, or a strict overcommit policy): the limit the check
    /// names now, else the machine's.
    pub(crate) fn refused(bytes: u64) -> Error {
        let root = Path::new("/");
        check_headroom_in(bytes, root, &cgroup_dirs(root))
            .err()
            .unwrap_or_else(|| Error::NoSpace {
                needed: bytes,
                free: None,
                limit: SpaceLimit::Machine {
                    available: machine_available(root).unwrap_or(0),
                },
            })
    }

    /// Bytes the machine can still give: `MemAvailable` plus `SwapFree` (`None` if
    /// `/proc/meminfo` cannot be read or has no `MemAvailable`).
    fn machine_available(root: &Path) -> Option<u64> {
        Some(
            meminfo_field(root, "MemAvailable")?
                .saturating_add(meminfo_field(root, "SwapFree").unwrap_or(0)),
        )
    }

    /// Field `name` of `/proc/meminfo` under `root`, in bytes.
    fn meminfo_field(root: &Path, name: &str) -> Option<u64> {
        let meminfo = std::fs::read_to_string(under(root, Path::new("/proc/meminfo"))).ok()?;
        let line = meminfo
            .lines()
            .find(|l| l.split(':').next() == Some(name))?;
        let kib: u64 = line
            .split(':')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib.saturating_mul(1024))
    }

    /// The absolute path `path` under `root`.
    fn under(root: &Path, path: &Path) -> PathBuf {
        root.join(path.strip_prefix("/").unwrap_or(path))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::sync::atomic::{AtomicU32, Ordering};

        /// A fresh directory standing for `/`, removed on drop.
        struct FakeRoot(PathBuf);

        impl FakeRoot {
            fn new() -> Self {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let dir = std::env::temp_dir().join(format!(
                    "shmpipe-memory-limit-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&dir).unwrap();
                Self(dir)
            }

            /// Writes `contents` to the absolute path `path` under this root.
            fn write(&self, path: &str, contents: &str) -> &Self {
                let at = under(&self.0, Path::new(path));
                std::fs::create_dir_all(at.parent().unwrap()).unwrap();
                std::fs::write(at, contents).unwrap();
                self
            }

            fn check(&self, bytes: u64) -> Result<()> {
                check_headroom_in(bytes, &self.0, &cgroup_dirs(&self.0))
            }
        }

        impl Drop for FakeRoot {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }

        const GIB: u64 = 1 << 30;
        const MIB: u64 = 1 << 20;

        /// A machine with 16 GiB available and no swap, in the v2 cgroup `/app/worker` of a
        /// unified hierarchy mounted at /sys/fs/cgroup.
        fn v2_machine() -> FakeRoot {
            let root = FakeRoot::new();
            root.write("/proc/meminfo", "MemTotal: 33554432 kB\nMemAvailable: 16777216 kB\nSwapFree: 0 kB\n")
                .write("/proc/self/cgroup", "0::/app/worker\n")
                .write(
                    "/proc/self/mountinfo",
                    "22 1 0:21 / / rw - ext4 /dev/vda rw\n\
                     30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n",
                );
            root
        }

        fn limit_of(result: Result<()>) -> (u64, Option<u64>, SpaceLimit) {
            match result {
                Err(Error::NoSpace {
                    needed,
                    free,
                    limit,
                }) => (needed, free, limit),
                other => panic!("expected NoSpace, got {other:?}"),
            }
        }

        fn cgroup(file: &str, max: u64, current: u64) -> SpaceLimit {
            SpaceLimit::Cgroup {
                file: file.to_owned(),
                max,
                current,
            }
        }

        #[test]
        fn the_tightest_of_nested_cgroup_limits_wins() {
            let root = v2_machine();
            // The parent allows 1 GiB with 900 MiB used (124 MiB free); the cgroup itself
            // 256 MiB with 100 MiB used (156 MiB free).
            root.write("/sys/fs/cgroup/app/memory.max", &format!("{GIB}\n"))
                .write(
                    "/sys/fs/cgroup/app/memory.current",
                    &format!("{}\n", 900 * MIB),
                )
                .write(
                    "/sys/fs/cgroup/app/worker/memory.max",
                    &format!("{}\n", 256 * MIB),
                )
                .write(
                    "/sys/fs/cgroup/app/worker/memory.current",
                    &format!("{}\n", 100 * MIB),
                );
            assert!(root.check(124 * MIB).is_ok());
            let (needed, free, limit) = limit_of(root.check(124 * MIB + 1));
            assert_eq!((needed, free), (124 * MIB + 1, Some(124 * MIB)));
            assert_eq!(
                limit,
                cgroup("/sys/fs/cgroup/app/memory.max", GIB, 900 * MIB)
            );
            // With the parent's use down, the cgroup's own limit is the tighter one.
            root.write(
                "/sys/fs/cgroup/app/memory.current",
                &format!("{}\n", 10 * MIB),
            );
            assert!(root.check(156 * MIB).is_ok());
            let (_, free, limit) = limit_of(root.check(200 * MIB));
            assert_eq!(free, Some(156 * MIB));
            assert_eq!(
                limit,
                cgroup("/sys/fs/cgroup/app/worker/memory.max", 256 * MIB, 100 * MIB)
            );
        }

        #[test]
        fn the_error_names_the_limit_in_its_message() {
            let root = v2_machine();
            root.write("/sys/fs/cgroup/app/worker/memory.max", "67108864\n")
                .write("/sys/fs/cgroup/app/worker/memory.current", "60000000\n");
            assert_eq!(
                root.check(GIB).unwrap_err().to_string(),
                "not enough memory for 1073741824 bytes (1024.0 MiB) of shared memory: the cgroup \
                 limit /sys/fs/cgroup/app/worker/memory.max is 67108864 bytes (64.0 MiB), \
                 60000000 in use (57.2 MiB); a container's memory limit (`docker run --memory`, a \
                 Kubernetes memory limit) sets it"
            );
            root.write("/sys/fs/cgroup/app/worker/memory.max", "max\n");
            assert_eq!(
                root.check(32 * GIB).unwrap_err().to_string(),
                "not enough memory for 34359738368 bytes (32768.0 MiB) of shared memory: the \
                 machine has 17179869184 bytes (16384.0 MiB) available (MemAvailable + SwapFree \
                 in /proc/meminfo)"
            );
        }

        #[test]
        fn max_means_no_limit_and_the_machine_decides() {
            let root = v2_machine();
            root.write("/sys/fs/cgroup/app/worker/memory.max", "max\n")
                .write("/sys/fs/cgroup/app/worker/memory.current", "4096\n")
                .write("/sys/fs/cgroup/app/memory.max", "max\n")
                .write("/sys/fs/cgroup/app/memory.current", "8192\n");
            assert!(root.check(16 * GIB).is_ok());
            let (_, free, limit) = limit_of(root.check(16 * GIB + 1));
            assert_eq!(free, Some(16 * GIB));
            assert_eq!(
                limit,
                SpaceLimit::Machine {
                    available: 16 * GIB
                }
            );
        }

        #[test]
        fn the_machine_counts_free_swap() {
            let root = v2_machine();
            root.write(
                "/proc/meminfo",
                "MemAvailable: 1048576 kB\nSwapTotal: 4194304 kB\nSwapFree: 2097152 kB\n",
            );
            assert!(root.check(3 * GIB).is_ok());
            let (_, _, limit) = limit_of(root.check(3 * GIB + 1));
            assert_eq!(limit, SpaceLimit::Machine { available: 3 * GIB });
        }

        #[test]
        fn missing_files_set_no_limit() {
            // No cgroup files at all (no memory controller, nothing mounted).
            let root = v2_machine();
            assert!(root.check(16 * GIB).is_ok());
            // A limit without its usage file, and a usage file without a limit.
            root.write("/sys/fs/cgroup/app/worker/memory.max", "4096\n")
                .write("/sys/fs/cgroup/app/memory.current", "4096\n");
            assert!(root.check(16 * GIB).is_ok());
            assert!(root.check(16 * GIB + 1).is_err());
            // No /proc/meminfo, no /proc/self/cgroup: nothing to go by, the check passes.
            let empty = FakeRoot::new();
            assert!(empty.check(u64::MAX).is_ok());
        }

        #[test]
        fn garbage_sets_no_limit_and_does_not_panic() {
            let root = v2_machine();
            root.write("/sys/fs/cgroup/app/worker/memory.max", "lots\n")
                .write("/sys/fs/cgroup/app/worker/memory.current", "1\n")
                .write("/sys/fs/cgroup/app/memory.max", "4096\n")
                .write("/sys/fs/cgroup/app/memory.current", "-1\n");
            assert!(root.check(16 * GIB).is_ok());
            for (cgroup, mountinfo, meminfo) in [
                ("", "", ""),
                ("0::", "garbage", "MemAvailable:"),
                (
                    "0::/../../etc",
                    "1 2 3 / /sys/fs/cgroup - cgroup2",
                    "MemAvailable: x kB",
                ),
                (":::\n\n0", " - - - ", "SwapFree: 1 kB"),
                (
                    "0::/app/worker",
                    "1 2 0:1 /\\777 /sys/fs/cgroup - cgroup2 c rw",
                    "\u{0}",
                ),
            ] {
                let root = FakeRoot::new();
                root.write("/proc/self/cgroup", cgroup)
                    .write("/proc/self/mountinfo", mountinfo)
                    .write("/proc/meminfo", meminfo)
                    .write("/sys/fs/cgroup/memory.max", "1")
                    .write("/sys/fs/cgroup/memory.current", "1");
                assert!(
                    root.check(GIB).is_ok(),
                    "{cgroup:?} {mountinfo:?} {meminfo:?}"
                );
            }
        }

        #[test]
        fn a_cgroup_v1_memory_hierarchy_is_read_from_where_it_is_mounted() {
            // The layout of a machine whose memory controller is on cgroup v1 (this project's
            // VM): the v2 hierarchy has no memory files.
            let root = FakeRoot::new();
            root.write(
                "/proc/meminfo",
                "MemAvailable: 16777216 kB\nSwapFree: 0 kB\n",
            )
            .write(
                "/proc/self/cgroup",
                "9:name=systemd:/\n8:pids:/\n4:memory:/jobs/a1\n1:cpu:/\n0::/\n",
            )
            .write(
                "/proc/self/mountinfo",
                "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                     32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                     35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                     41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
            )
            .write(
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            )
            .write(
                "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                "5000000000\n",
            )
            .write(
                "/sys/fs/cgroup/memory/jobs/memory.limit_in_bytes",
                "9223372036854771712\n",
            )
            .write(
                "/sys/fs/cgroup/memory/jobs/memory.usage_in_bytes",
                "8015872\n",
            )
            .write(
                "/sys/fs/cgroup/memory/jobs/a1/memory.limit_in_bytes",
                "67108864\n",
            )
            .write(
                "/sys/fs/cgroup/memory/jobs/a1/memory.usage_in_bytes",
                "60000000\n",
            )
            .write("/sys/fs/cgroup/cpu/jobs/a1/memory.limit_in_bytes", "1\n")
            .write(
                "/sys/fs/cgroup/unified/memory.pressure",
                "some avg10=0.00\n",
            );
            assert!(root.check(7_108_864).is_ok());
            let (_, free, limit) = limit_of(root.check(GIB));
            assert_eq!(free, Some(7_108_864));
            assert_eq!(
                limit,
                cgroup(
                    "/sys/fs/cgroup/memory/jobs/a1/memory.limit_in_bytes",
                    67108864,
                    60000000
                )
            );
        }

        #[test]
        fn a_v1_hierarchy_without_the_memory_controller_sets_no_limit() {
            let root = FakeRoot::new();
            root.write("/proc/meminfo", "MemAvailable: 16777216 kB\n")
                .write("/proc/self/cgroup", "3:cpu,cpuacct:/a1\n")
                .write(
                    "/proc/self/mountinfo",
                    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
                )
                .write("/sys/fs/cgroup/cpu,cpuacct/a1/memory.limit_in_bytes", "1\n")
                .write("/sys/fs/cgroup/cpu,cpuacct/a1/memory.usage_in_bytes", "1\n");
            assert!(root.check(16 * GIB).is_ok());
        }

        #[test]
        fn a_cgroup_mount_of_a_subtree_is_joined_from_its_root() {
            // A container without a cgroup namespace: its hierarchy is mounted from the
            // directory of its own cgroup, which /proc/self/cgroup names in full.
            let root = v2_machine();
            root.write("/proc/self/cgroup", "0::/docker/c0ffee\n")
                .write(
                    "/proc/self/mountinfo",
                    "30 22 0:26 /docker/c0ffee /sys/fs/cgroup\\040x ro - cgroup2 cgroup2 rw\n",
                )
                .write("/sys/fs/cgroup x/memory.max", "1048576\n")
                .write("/sys/fs/cgroup x/memory.current", "0\n")
                .write("/sys/fs/cgroup x/docker/c0ffee/memory.max", "1\n")
                .write("/sys/fs/cgroup x/docker/c0ffee/memory.current", "0\n");
            let (_, _, limit) = limit_of(root.check(MIB + 1));
            assert_eq!(limit, cgroup("/sys/fs/cgroup x/memory.max", MIB, 0));
            // A cgroup outside the mounted subtree is not read.
            root.write("/proc/self/cgroup", "0::/elsewhere\n");
            assert!(root.check(MIB + 1).is_ok());
        }
    }
}

#[cfg(test)]
mod memory_size_tests {
    #[test]
    fn the_memory_size_is_at_most_the_machines() {
        let found = super::memory_size();
        if !cfg!(target_os = "linux") {
            assert_eq!(found, None);
            return;
        }
        let size = found.expect("Linux always has MemTotal");
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        assert!(size > 0 && size <= total_kib * 1024, "{size}");
    }
}
