//! Which live processes hold shmpipe segments open or mapped (Linux: `/proc/<pid>/fd` and
//! `/proc/<pid>/maps`).
//!
//! Every shmpipe handle keeps its segment's descriptor open and its mapping in place for as long
//! as it lives, so "held by no process" means "no handle left anywhere". A mapping or descriptor
//! whose name was already removed shows as `/dev/shm/<name> (deleted)`; removed shared arrays are
//! left out (holding one does not make a process a receiver). Processes whose entries
//! cannot be read (other users', unless we are root) are reported as such, so that callers can
//! stay on the safe side.

use std::collections::{HashMap, HashSet};

/// What the scan found.
#[derive(Debug, Default)]
pub(super) struct Holders {
    /// Inode of a `/dev/shm` entry → pids holding it (a descriptor or a mapping).
    pub by_inode: HashMap<u64, Vec<u32>>,
    /// Pids holding a shmpipe segment whose name was already removed.
    pub of_removed: Vec<u32>,
    /// Processes whose descriptors or mappings could not be read: (pid, uid).
    pub unreadable: Vec<(u32, u32)>,
    /// Inodes in `by_inode` that are shared arrays (holding one does not make a receiver).
    pub arrays: HashSet<u64>,
}

impl Holders {
    /// The pids holding the `/dev/shm` entry with inode `inode`.
    pub fn of(&self, inode: u64) -> Vec<u32> {
        self.by_inode.get(&inode).cloned().unwrap_or_default()
    }
}

/// Scans every process, or returns `None` where the platform gives no way to.
pub(super) fn scan() -> Option<Holders> {
    imp::scan()
}

/// The command name of the process `pid` (Linux: `/proc/<pid>/comm`), where it can be read.
pub(super) fn command(pid: u32) -> Option<String> {
    imp::command(pid)
}

#[cfg(target_os = "linux")]
mod imp {
    use super::Holders;
    use crate::inventory::names::is_listed;
    use crate::name::generated_bits;
    use std::io::ErrorKind;
    use std::os::unix::fs::MetadataExt;

    const PREFIX: &str = "/dev/shm/";
    const DELETED: &str = " (deleted)";

    /// What a path from `/proc` names.
    enum Found {
        /// One of our segments ([`is_listed`]) whose name is still there; a shared array's?
        Present { array: bool },
        /// A generated segment whose name was removed (a removed shared array is left out).
        Removed,
    }

    /// What `path` names, or `None` if not one of ours.
    fn ours(path: &str) -> Option<Found> {
        let rest = path.strip_prefix(PREFIX)?;
        match rest.strip_suffix(DELETED) {
            Some(name) => generated_bits(name).map(|_| Found::Removed),
            None => is_listed(rest).then(|| Found::Present {
                array: generated_bits(rest).is_none(),
            }),
        }
    }

    pub fn scan() -> Option<Holders> {
        let mut out = Holders::default();
        // Only what lives on this `/dev/shm`: a process in another mount namespace may map its
        // own tmpfs's `/dev/shm/shmpipe_*`, whose inode numbers overlap with ours.
        let shm_dev = std::fs::metadata("/dev/shm").ok().map(|m| m.dev());
        for item in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = item
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Err(e) = scan_process(pid, shm_dev, &mut out) {
                if e.kind() != ErrorKind::NotFound {
                    // Gone meanwhile is fine; anything else means "cannot tell".
                    let uid = std::fs::metadata(format!("/proc/{pid}"))
                        .map(|m| m.uid())
                        .unwrap_or(0);
                    out.unreadable.push((pid, uid));
                }
            }
        }
        for pids in out.by_inode.values_mut() {
            pids.sort_unstable();
            pids.dedup();
        }
        out.of_removed.sort_unstable();
        out.of_removed.dedup();
        Some(out)
    }

    pub fn command(pid: u32) -> Option<String> {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let comm = comm.trim_end_matches('\n');
        (!comm.is_empty()).then(|| comm.to_owned())
    }

    /// A `/proc/<pid>/maps` device field (`major:minor`, hexadecimal) as a device number.
    fn maps_device(field: &str) -> Option<u64> {
        let (major, minor) = field.split_once(':')?;
        let (major, minor) = (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        );
        #[allow(clippy::unnecessary_cast)] // dev_t is narrower on some targets
        Some(libc::makedev(major, minor) as u64)
    }

    /// Scans `pid`'s mappings and descriptors for our segments on the device `shm_dev` (any
    /// device where it is unknown).
    fn scan_process(pid: u32, shm_dev: Option<u64>, out: &mut Holders) -> std::io::Result<()> {
        let on_shm = |dev: Option<u64>| shm_dev.is_none() || dev == shm_dev;
        let mut note = |inode: Option<u64>, found: Found| match (found, inode) {
            (Found::Present { array }, Some(inode)) => {
                out.by_inode.entry(inode).or_default().push(pid);
                if array {
                    out.arrays.insert(inode);
                }
            }
            _ => out.of_removed.push(pid),
        };
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
        for line in maps.lines() {
            // address perms offset dev inode path
            let mut fields = line.split_ascii_whitespace();
            let dev = fields.nth(3).and_then(maps_device);
            let inode = fields.next().and_then(|f| f.parse::<u64>().ok());
            let Some(start) = line.find(PREFIX) else {
                continue;
            };
            if !on_shm(dev) {
                continue;
            }
            if let Some(found) = ours(&line[start..]) {
                note(inode, found);
            }
        }
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue; // closed meanwhile
            };
            let Some(found) = target.to_str().and_then(ours) else {
                continue;
            };
            // The inode of what the descriptor refers to, even if its name is gone.
            let meta = std::fs::metadata(fd.path()).ok();
            if !on_shm(meta.as_ref().map(|m| m.dev())) {
                continue;
            }
            note(meta.map(|m| m.ino()), found);
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Holders;

    pub fn scan() -> Option<Holders> {
        None
    }

    pub fn command(_pid: u32) -> Option<String> {
        None
    }
}
