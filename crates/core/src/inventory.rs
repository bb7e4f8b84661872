//! The segments on this machine: list them with their owner, and remove those whose owner died.
//!
//! Every segment names its creator (pid, start time and PID namespace) in its header, and the
//! creator owns it (see the README). [`clean`] removes a segment only when it can tell the owner
//! is dead, and never one a live process still needs:
//!
//! - creator alive: [`Status::OwnerAlive`] (ready) or [`Status::Creating`] (not ready, or the
//!   header half written): kept;
//! - creator dead: a queue is [`Status::OwnerDead`], a blob never committed
//!   [`Status::AbandonedBlob`], a committed blob that no live process could receive
//!   [`Status::UndeliverableBlob`]: removed; a committed blob that a live process may still
//!   receive (or when that cannot be told) is [`Status::MaybeInUse`], naming those processes
//!   ([`SegmentInfo::may_be_used_by`]): kept unless [`CleanOptions::force`];
//! - a shared array (ready): arrays outlive their creator by design, so whether the creator is
//!   alive does not decide. Open or mapped by no process: [`Status::Array`]; by some (or where
//!   that cannot be told): [`Status::ArrayInUse`]. Kept, unless named in [`CleanOptions::only`]
//!   or [`CleanOptions::arrays`]; one in use only with [`CleanOptions::force`] too;
//! - sealed memory ([`Backing::Memfd`], Linux), listed by its name's record as what the memory
//!   holds, with the memory's size and the record's live holders: ready and held by a live
//!   process (the creator or not) is [`Status::OwnerAlive`] ([`Status::ArrayInUse`] for an
//!   array): kept; ready and held by none is [`Status::OwnerDead`] (the kernel freed the memory
//!   with its last holder; only the record is left): removed; not ready is
//!   [`Status::Creating`] while its creator lives, [`Status::OwnerDead`] after. The record is
//!   read, never joined, and removed only while still unheld and still the name's;
//! - owned by another user than the caller's effective uid: [`Status::OtherUser`] (in any state
//!   but [`Status::OtherPidNamespace`]): kept, unless [`CleanOptions::all_users`], which judges
//!   it like one's own (root, common in containers and CI, can read every user's segments);
//! - creator in another PID namespace, or its namespace not recorded (older segments) and no
//!   such process running here: [`Status::OtherPidNamespace`]: kept;
//! - header not valid for this layout version: [`Status::Invalid`]: kept, unless
//!   [`CleanOptions::force_invalid`] and no process holds it open or mapped;
//! - not readable: [`Status::Unreadable`]: kept.
//!
//! Removing a queue whose creator died is what the creator's normal exit would have done: the
//! other processes' mappings stay valid, new attaches fail with `NotFound`. A committed blob is
//! different: its consumer has not mapped it yet, and removing it would lose the message. A blob
//! does not record its queue, so "no live process could receive it" means (Linux): no process
//! that could open it (its owner's user, or root) holds any queue, or any shmpipe segment whose
//! name is gone, and every such process could be inspected. Dead queues are removed first, so
//! nobody can attach to one and become a receiver between the check and the removal.
//!
//! Liveness is by pid *and* start time (a recycled pid is not the creator), and only within this
//! PID namespace: a creator in another container sharing `/dev/shm` is not judged at all.
//!
//! Platforms: Linux lists `/dev/shm`; macOS lists a per-user registry of names (`registry.rs`),
//! without the holder scan (so blobs of dead creators stay [`Status::MaybeInUse`]); on Windows
//! nothing is listed and clean does nothing (see the README).

mod enumerate;
mod holders;
mod names;

use crate::backing::Backing;
use crate::error::{Error, Result};
use crate::name::validate_name;
use crate::process::{pid_namespace, ProcessIdentity};
use crate::segment::{HeaderFields, SegmentKind, MAGIC};
use enumerate::{Entry, HeaderRead, RecordRead};
use holders::Holders;
use names::is_listed;
use std::collections::HashSet;
use std::fmt;
use std::time::SystemTime;

/// Whether a segment's creator is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The creator (same pid and start time) is running.
    Alive,
    /// The creator has exited (or its pid now belongs to another process).
    Dead,
    /// The header does not say, or the creator cannot be checked from here.
    Unknown,
}

/// Why a header is not one this version can judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidHeader {
    /// Shorter than a header.
    TooSmall,
    /// All zero: its creator never wrote the header (or died before).
    NoHeader,
    /// Not shmpipe's magic number.
    BadMagic,
    /// Written by another layout version (the number is given).
    OtherLayoutVersion(u32),
    /// A segment kind this version does not know.
    UnknownKind(u32),
}

/// A segment's state, and with it what [`clean`] does with it (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The creator is alive and the segment ready; for sealed memory, a live process holds it
    /// (the creator or another). Kept.
    OwnerAlive,
    /// Being created: not ready yet and the creator alive, or the header only half written.
    /// Kept.
    Creating,
    /// A queue or array whose creator is dead; for sealed memory, no live process holds it (the
    /// kernel has freed the memory: only its record is left), or its creator died before it
    /// was ready. Removed.
    OwnerDead,
    /// A blob whose creator died before committing it: never readable. Removed.
    AbandonedBlob,
    /// A committed blob whose creator is dead, and no live process could receive it. Removed.
    UndeliverableBlob,
    /// A committed blob whose creator is dead, which a live process may still receive (or that
    /// cannot be told). Kept.
    MaybeInUse,
    /// The creator lives in another PID namespace (its pid means nothing here), or its namespace
    /// was not recorded and no process with its pid and start time runs here (it may have died,
    /// or run elsewhere). Kept.
    OtherPidNamespace,
    /// The header is not valid for this version. Kept unless forced and held by no process.
    Invalid(InvalidHeader),
    /// The segment cannot be read. Kept.
    Unreadable,
    /// A shared array that no process has open or mapped. Kept unless named or
    /// [`CleanOptions::arrays`] (arrays outlive their creator by design).
    Array,
    /// A shared array that live processes have open or mapped (see
    /// [`SegmentInfo::may_be_used_by`]), or where that cannot be told; in sealed memory, one
    /// that live processes hold. Kept unless named or [`CleanOptions::arrays`], and
    /// [`CleanOptions::force`].
    ArrayInUse,
    /// Owned by another user (this uid), in any state but [`Status::OtherPidNamespace`]. Kept
    /// unless [`CleanOptions::all_users`].
    OtherUser(u32),
}

impl Status {
    /// Whether [`clean`] removes a segment in this state with default options.
    pub fn removable(&self) -> bool {
        matches!(
            self,
            Self::OwnerDead | Self::AbandonedBlob | Self::UndeliverableBlob
        )
    }

    /// A stable short name: `owner-alive`, `creating`, `owner-dead`, `abandoned-blob`,
    /// `undeliverable-blob`, `maybe-in-use`, `other-pid-namespace`, `invalid`, `unreadable`,
    /// `array`, `array-in-use`, `other-user`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::OwnerAlive => "owner-alive",
            Self::Creating => "creating",
            Self::OwnerDead => "owner-dead",
            Self::AbandonedBlob => "abandoned-blob",
            Self::UndeliverableBlob => "undeliverable-blob",
            Self::MaybeInUse => "maybe-in-use",
            Self::OtherPidNamespace => "other-pid-namespace",
            Self::Invalid(_) => "invalid",
            Self::Unreadable => "unreadable",
            Self::Array => "array",
            Self::ArrayInUse => "array-in-use",
            Self::OtherUser(_) => "other-user",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OwnerAlive => f.write_str("owner alive"),
            Self::Creating => f.write_str("being created"),
            Self::OwnerDead => f.write_str("owner dead"),
            Self::AbandonedBlob => f.write_str("owner died before sending it"),
            Self::UndeliverableBlob => f.write_str("owner dead, no live process can receive it"),
            Self::MaybeInUse => f.write_str("owner dead, maybe in use (a receiver may be alive)"),
            Self::OtherPidNamespace => {
                f.write_str("owner in another PID namespace (or unrecorded, not running here)")
            }
            Self::Invalid(InvalidHeader::TooSmall) => f.write_str("invalid: smaller than a header"),
            Self::Invalid(InvalidHeader::NoHeader) => f.write_str("invalid: no header written"),
            Self::Invalid(InvalidHeader::BadMagic) => f.write_str("invalid: not a shmpipe header"),
            Self::Invalid(InvalidHeader::OtherLayoutVersion(v)) => {
                write!(f, "invalid: layout version {v}")
            }
            Self::Invalid(InvalidHeader::UnknownKind(k)) => write!(f, "invalid: unknown kind {k}"),
            Self::Unreadable => f.write_str("unreadable"),
            Self::Array => f.write_str("shared array, open in no process"),
            Self::ArrayInUse => f.write_str("shared array, maybe open in a process"),
            Self::OtherUser(uid) => write!(f, "other user (uid {uid})"),
        }
    }
}

/// A live process, as shown in the reasons a segment is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRef {
    /// Its pid (in this PID namespace).
    pub pid: u32,
    /// Its command name (Linux: `/proc/<pid>/comm`), where it can be read.
    pub command: Option<String>,
}

impl fmt::Display for ProcessRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.command {
            Some(c) => write!(f, "pid {} ({c})", self.pid),
            None => write!(f, "pid {}", self.pid),
        }
    }
}

/// One segment found on this machine.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Its name, as passed to `Queue::open` (a shared array's: `shmpipe_a_<array name>`).
    pub name: String,
    /// What it holds, if the header says (and is valid); for sealed memory, what the memory
    /// holds (its record says; never [`SegmentKind::SealedRecord`]), once the record is filled.
    pub kind: Option<SegmentKind>,
    /// Bytes it occupies; for sealed memory, the memory's length (0 until the record is filled),
    /// not its record's.
    pub size: u64,
    /// Where its memory lives: a named file ([`Backing::Shm`]), or sealed memory
    /// ([`Backing::Memfd`]) that the name's record stands for.
    pub backing: Backing,
    /// Its creator, from the header (when the header is valid).
    pub creator: Option<ProcessIdentity>,
    /// Whether the creator is alive.
    pub owner: Liveness,
    /// The layout version in the header, if it has shmpipe's magic number.
    pub layout_version: Option<u32>,
    /// Whether the creator published it as ready (when the header is valid).
    pub ready: Option<bool>,
    /// The user owning it, where the platform says.
    pub uid: Option<u32>,
    /// When it was created: the file's birth time where the file system records it (Linux
    /// tmpfs), else its last modification (its sizing, at creation); `None` where unknown.
    pub created: Option<SystemTime>,
    /// Pids of the processes holding it open or mapped; `None` where that cannot be told. For
    /// sealed memory: its record's live holders, and whoever else has the record open or mapped.
    pub held_by: Option<Vec<u32>>,
    /// For a segment kept because live processes may still use it, those processes: for
    /// [`Status::MaybeInUse`], the ones that could receive the blob (they hold a pipe or a
    /// removed segment, or could not be inspected); for [`Status::ArrayInUse`], the ones that
    /// have the array open or mapped. Empty otherwise, or where processes cannot be inspected.
    pub may_be_used_by: Vec<ProcessRef>,
    /// Its state, which decides what [`clean`] does with it.
    pub status: Status,
}

impl SegmentInfo {
    /// Whether [`clean`] with `opts` removes it.
    pub fn removable_with(&self, opts: &CleanOptions) -> bool {
        let named = || opts.only.as_ref().is_some_and(|o| o.contains(&self.name));
        match self.status {
            s if s.removable() => true,
            Status::Invalid(_) => {
                opts.force_invalid && self.held_by.as_ref().is_some_and(|h| h.is_empty())
            }
            Status::MaybeInUse => opts.force,
            Status::Array => opts.arrays || named(),
            Status::ArrayInUse => opts.force && (opts.arrays || named()),
            _ => false,
        }
    }

    /// The state in words, with the processes that keep it where there are some, e.g.
    /// `owner dead, maybe in use: a receiver may be alive (pid 42 (node))`.
    pub fn detail(&self) -> String {
        // Every one of them: a reason that leaves one out would not say why.
        let processes = || {
            let text: Vec<String> = self
                .may_be_used_by
                .iter()
                .map(ProcessRef::to_string)
                .collect();
            text.join(", ")
        };
        match self.status {
            Status::MaybeInUse if !self.may_be_used_by.is_empty() => format!(
                "owner dead, maybe in use: a receiver may be alive ({})",
                processes()
            ),
            Status::ArrayInUse if !self.may_be_used_by.is_empty() => {
                format!("shared array, open in {}", processes())
            }
            status => status.to_string(),
        }
    }
}

/// Options of [`list_segments_with`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Judge other users' segments like one's own instead of listing them as
    /// [`Status::OtherUser`].
    pub all_users: bool,
}

/// Options of [`clean`].
#[derive(Debug, Clone, Default)]
pub struct CleanOptions {
    /// Also remove segments with an invalid header (no header, another magic number or layout
    /// version), but only those no process holds open or mapped (so never one being created);
    /// only where that can be checked (Linux).
    pub force_invalid: bool,
    /// Only consider these names (others are left alone whatever their state). Naming a shared
    /// array asks for its removal, as [`arrays`](Self::arrays) does.
    pub only: Option<Vec<String>>,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
    /// Also judge (and so remove, when their owner is dead) other users' segments, which are
    /// otherwise kept as [`Status::OtherUser`]. Only root can read them (and remove them from
    /// the sticky `/dev/shm`).
    pub all_users: bool,
    /// Also remove shared arrays that no process has open or mapped ([`Status::Array`]).
    pub arrays: bool,
    /// Also remove what live processes may still use: blobs a live process may receive
    /// ([`Status::MaybeInUse`]; the message is lost) and, with [`arrays`](Self::arrays) or by
    /// name, arrays open in live processes ([`Status::ArrayInUse`]; they keep their mapping, but
    /// nobody can attach to the name any more). Never a pipe or message whose owner is alive.
    pub force: bool,
}

/// What [`clean`] did.
#[derive(Debug, Default)]
pub struct CleanReport {
    /// Segments removed (or, with `dry_run`, that would be).
    pub removed: Vec<SegmentInfo>,
    /// Segments left in place, with their status saying why.
    pub kept: Vec<SegmentInfo>,
    /// Segments whose removal failed, with the error.
    pub failed: Vec<(SegmentInfo, Error)>,
}

/// Every shmpipe segment on this machine (see the module documentation for the platforms),
/// shared arrays included, sorted by name; other users' as [`Status::OtherUser`].
pub fn list_segments() -> Result<Vec<SegmentInfo>> {
    list_segments_with(&ListOptions::default())
}

/// Every shmpipe segment on this machine, as [`list_segments`], with `opts`.
pub fn list_segments_with(opts: &ListOptions) -> Result<Vec<SegmentInfo>> {
    list(&is_listed, opts.all_users)
}

/// Removes the segments whose owner is dead, with default options (see [`clean`]).
pub fn clean_dead() -> Result<CleanReport> {
    clean(&CleanOptions::default())
}

/// Removes the segments [`SegmentInfo::removable_with`] says may go, and never one whose owner
/// is alive. Removing is unlinking the name: processes that still map the segment keep it.
pub fn clean(opts: &CleanOptions) -> Result<CleanReport> {
    let only: Option<HashSet<&str>> = match &opts.only {
        Some(names) => {
            for name in names {
                validate_name(name)?;
            }
            Some(names.iter().map(String::as_str).collect())
        }
        None => None,
    };
    let wanted = |name: &str| is_listed(name) && only.as_ref().map_or(true, |o| o.contains(name));
    let mut report = CleanReport::default();
    let first = list(&wanted, opts.all_users)?;
    if opts.dry_run {
        let (removed, kept) = first.into_iter().partition(|s| s.removable_with(opts));
        report.removed = removed;
        report.kept = kept;
        return Ok(report);
    }
    // First what does not depend on who holds what. Dead owners' queues go before any blob is
    // judged, so that nobody can attach to one (and become a receiver) after the holders are
    // scanned; again while owners keep dying meanwhile (a few rounds at most).
    let mut removed_names = HashSet::new();
    let mut infos = first;
    for _round in 0..4 {
        let (dead, rest): (Vec<_>, Vec<_>) = infos
            .into_iter()
            .partition(|i| matches!(i.status, Status::OwnerDead | Status::AbandonedBlob));
        if dead.is_empty() {
            infos = rest;
            break;
        }
        for info in dead {
            remove(info, &mut report, &mut removed_names);
        }
        // A fresh look (and scan of the holders) at what is left.
        infos = list(
            &|name| wanted(name) && !removed_names.contains(name),
            opts.all_users,
        )?;
    }
    for info in infos {
        if info.removable_with(opts) {
            remove(info, &mut report, &mut removed_names);
        } else {
            report.kept.push(info);
        }
    }
    Ok(report)
}

fn remove(info: SegmentInfo, report: &mut CleanReport, removed: &mut HashSet<String>) {
    #[cfg(target_os = "linux")]
    if info.backing == Backing::Memfd {
        // Only while nothing holds it still, and the name still stands for that record.
        match crate::rendezvous::remove_if_abandoned(&info.name) {
            Ok(true) => {
                removed.insert(info.name.clone());
                report.removed.push(info);
            }
            Ok(false) => report.kept.push(info), // held (or replaced) meanwhile
            Err(Error::NotFound { .. }) => {
                removed.insert(info.name.clone());
            }
            Err(e) => report.failed.push((info, e)),
        }
        return;
    }
    match crate::segment::unlink(&info.name) {
        Ok(()) => {
            removed.insert(info.name.clone());
            report.removed.push(info);
        }
        Err(Error::NotFound { .. }) => {
            removed.insert(info.name.clone()); // removed by someone else meanwhile
        }
        Err(e) => report.failed.push((info, e)),
    }
}

/// The segments whose name passes `wanted`, classified; other users' as [`Status::OtherUser`]
/// unless `all_users`.
fn list(wanted: &dyn Fn(&str) -> bool, all_users: bool) -> Result<Vec<SegmentInfo>> {
    let entries = enumerate::entries(wanted)?;
    // After reading the headers (we hold none of them open now).
    let holders = holders::scan();
    // Segments that cannot make their holder a receiver: blobs and arrays.
    let not_queues: HashSet<u64> = entries
        .iter()
        .filter(|e| {
            let kind = match (&e.header, &e.record) {
                // Sealed memory: what its record stands for.
                (_, Some(record)) => record.target_kind,
                (HeaderRead::Fields(h), None) if h.magic == MAGIC => h.kind,
                _ => return false,
            };
            matches!(
                SegmentKind::from_u32(kind),
                Some(SegmentKind::Blob | SegmentKind::Array)
            )
        })
        .filter_map(|e| e.inode)
        .collect();
    let ctx = Context {
        our_pid_ns: pid_namespace(),
        holders: holders.as_ref(),
        not_queues: &not_queues,
    };
    let our_uid = if all_users { None } else { effective_uid() };
    let mut out: Vec<SegmentInfo> = entries
        .into_iter()
        .map(|e| {
            let mut info = ctx.classify(e);
            if let (Some(ours), Some(uid)) = (our_uid, info.uid) {
                // Another namespace's segment is not judged at all: it stays listed as such.
                if uid != ours && info.status != Status::OtherPidNamespace {
                    info.status = Status::OtherUser(uid);
                    info.may_be_used_by.clear();
                }
            }
            info
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What classification needs besides the segment itself.
struct Context<'a> {
    our_pid_ns: u64,
    holders: Option<&'a Holders>,
    not_queues: &'a HashSet<u64>,
}

impl Context<'_> {
    /// Whether a live process could still receive a blob owned by `uid`: `Some(false)` only when
    /// every process that could open it was inspected and none holds a queue or a removed
    /// shmpipe segment.
    fn could_receive(&self, uid: Option<u32>) -> Option<bool> {
        let h = self.holders?;
        let holds_queue = h
            .by_inode
            .iter()
            .any(|(inode, pids)| !pids.is_empty() && self.may_be_queue(h, *inode));
        let uninspected = h
            .unreadable
            .iter()
            .any(|&(_, puid)| uid.map_or(true, |u| puid == u || puid == 0));
        if holds_queue || !h.of_removed.is_empty() {
            Some(true)
        } else if uninspected {
            None
        } else {
            Some(false)
        }
    }

    /// Whether the held segment `inode` may be a queue (holding one may make a receiver): not a
    /// blob or array listed here, nor an array by its name.
    fn may_be_queue(&self, h: &Holders, inode: u64) -> bool {
        !self.not_queues.contains(&inode) && !h.arrays.contains(&inode)
    }

    /// The processes that could receive a blob owned by `uid` (see [`could_receive`]): those
    /// holding a queue or a removed shmpipe segment, and those that could not be inspected.
    ///
    /// [`could_receive`]: Self::could_receive
    fn possible_receivers(&self, uid: Option<u32>) -> Vec<u32> {
        let Some(h) = self.holders else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = h
            .by_inode
            .iter()
            .filter(|(inode, _)| self.may_be_queue(h, **inode))
            .flat_map(|(_, pids)| pids.iter().copied())
            .chain(h.of_removed.iter().copied())
            .chain(
                h.unreadable
                    .iter()
                    .filter(|&&(_, puid)| uid.map_or(true, |u| puid == u || puid == 0))
                    .map(|&(pid, _)| pid),
            )
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn classify(&self, e: Entry) -> SegmentInfo {
        let held_by = match (self.holders, e.inode) {
            (Some(h), Some(inode)) => Some(h.of(inode)),
            _ => None,
        };
        let held = held_by.as_ref().map(|h| !h.is_empty());
        let mut info = SegmentInfo {
            name: e.name,
            kind: None,
            size: e.size,
            backing: Backing::Shm,
            creator: None,
            owner: Liveness::Unknown,
            layout_version: None,
            ready: None,
            uid: e.uid,
            created: e.created,
            held_by,
            may_be_used_by: Vec::new(),
            status: Status::Unreadable,
        };
        let h: HeaderFields = match e.header {
            HeaderRead::Unreadable => return info,
            HeaderRead::TooSmall => {
                info.status = match held {
                    Some(true) => Status::Creating, // its creator has not sized it yet
                    _ => Status::Invalid(InvalidHeader::TooSmall),
                };
                return info;
            }
            HeaderRead::Fields(h) => h,
        };
        if h.magic == 0 {
            info.status = match held {
                Some(true) => Status::Creating,
                _ => Status::Invalid(InvalidHeader::NoHeader),
            };
            return info;
        }
        if h.magic != MAGIC {
            info.status = Status::Invalid(InvalidHeader::BadMagic);
            return info;
        }
        info.layout_version = Some(h.layout_version);
        if h.layout_version != crate::LAYOUT_VERSION {
            info.status = Status::Invalid(InvalidHeader::OtherLayoutVersion(h.layout_version));
            return info;
        }
        let Some(kind) = SegmentKind::from_u32(h.kind) else {
            info.status = Status::Invalid(InvalidHeader::UnknownKind(h.kind));
            return info;
        };
        info.kind = Some(kind);
        info.ready = Some(h.ready);
        let record = if kind == SegmentKind::SealedRecord {
            let Some(record) = e.record else {
                info.kind = None;
                info.status = Status::Invalid(InvalidHeader::TooSmall);
                return info;
            };
            info.backing = Backing::Memfd;
            info.kind = SegmentKind::from_u32(record.target_kind)
                .filter(|&k| k != SegmentKind::SealedRecord);
            info.size = record.target_len;
            let held_by = info.held_by.get_or_insert_with(Vec::new);
            held_by.extend_from_slice(&record.holders);
            held_by.sort_unstable();
            held_by.dedup();
            Some(record)
        } else {
            None
        };
        if h.creator.pid == 0 {
            info.status = Status::Creating; // the header is being written
            return info;
        }
        info.creator = Some(h.creator);
        let linux = cfg!(target_os = "linux");
        if linux && h.creator_pid_ns != 0 && h.creator_pid_ns != self.our_pid_ns {
            info.status = Status::OtherPidNamespace;
            return info;
        }
        if let Some(record) = record {
            if linux && h.creator_pid_ns == 0 {
                // Its holders' pids are only known to be this namespace's if its creator's is.
                info.status = Status::OtherPidNamespace;
                return info;
            }
            return self.classify_record(info, &h, record);
        }
        let alive = h.creator.is_alive();
        if kind == SegmentKind::Array && h.ready {
            // Arrays outlive their creator by design: who has it open decides, not the creator.
            info.owner = match (alive, linux && h.creator_pid_ns == 0) {
                (true, _) => Liveness::Alive,
                (false, true) => Liveness::Unknown,
                (false, false) => Liveness::Dead,
            };
            info.status = match held {
                Some(false) => Status::Array,
                _ => Status::ArrayInUse,
            };
            info.may_be_used_by = processes(info.held_by.as_deref().unwrap_or_default());
            return info;
        }
        if alive {
            info.owner = Liveness::Alive;
            info.status = if h.ready {
                Status::OwnerAlive
            } else {
                Status::Creating
            };
            return info;
        }
        if linux && h.creator_pid_ns == 0 {
            // Not recorded (an older segment): "not running here" may mean "running elsewhere".
            info.status = Status::OtherPidNamespace;
            return info;
        }
        info.owner = Liveness::Dead;
        info.status = match (kind, h.ready) {
            (SegmentKind::Blob, false) => Status::AbandonedBlob,
            (SegmentKind::Blob, true) => match self.could_receive(info.uid) {
                Some(false) => Status::UndeliverableBlob,
                _ => {
                    info.may_be_used_by = processes(&self.possible_receivers(info.uid));
                    Status::MaybeInUse
                }
            },
            // A queue, or an array its creator died before finishing (a record is judged
            // above, by its holders).
            (SegmentKind::Queue | SegmentKind::Array | SegmentKind::SealedRecord, _) => {
                Status::OwnerDead
            }
        };
        info
    }

    /// Judges sealed memory by its record (`info` filled from it, `h` its header): by its live
    /// holders once ready (the kernel frees the memory with its last holder, whoever created
    /// it), by its creator before.
    fn classify_record(
        &self,
        mut info: SegmentInfo,
        h: &HeaderFields,
        record: RecordRead,
    ) -> SegmentInfo {
        let alive = h.creator.is_alive();
        info.owner = if alive {
            Liveness::Alive
        } else {
            Liveness::Dead
        };
        info.status = if !h.ready {
            if alive {
                Status::Creating
            } else {
                Status::OwnerDead
            }
        } else if info.kind.is_none() {
            Status::Invalid(InvalidHeader::UnknownKind(record.target_kind))
        } else if record.holders.is_empty() {
            Status::OwnerDead
        } else if info.kind == Some(SegmentKind::Array) {
            info.may_be_used_by = processes(&record.holders);
            Status::ArrayInUse
        } else {
            Status::OwnerAlive
        };
        info
    }
}

/// `pids` with their command names.
fn processes(pids: &[u32]) -> Vec<ProcessRef> {
    pids.iter()
        .map(|&pid| ProcessRef {
            pid,
            command: holders::command(pid),
        })
        .collect()
}

/// This process's effective uid, where the platform has one.
fn effective_uid() -> Option<u32> {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Some(unsafe { libc::geteuid() })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::segment::Segment;

    fn info(name: &str) -> SegmentInfo {
        let mut found = list(&|n| n == name, false).unwrap();
        assert_eq!(found.len(), 1, "{name} listed once");
        found.pop().unwrap()
    }

    fn only(name: &str) -> CleanOptions {
        CleanOptions {
            only: Some(vec![name.to_owned()]),
            ..CleanOptions::default()
        }
    }

    fn exists(name: &str) -> bool {
        std::path::Path::new("/dev/shm").join(name).exists()
    }

    fn names(infos: &[SegmentInfo]) -> Vec<&str> {
        infos.iter().map(|i| i.name.as_str()).collect()
    }

    /// Rewrites the creator as a dead process: our pid with another start time (a recycled pid).
    fn kill_creator(seg: &Segment) {
        seg.header().forge(|h| h.creator.start += 1);
    }

    #[test]
    fn a_live_creators_segment_is_listed_and_kept_in_every_state() {
        let q = Segment::create(SegmentKind::Queue, 4096).unwrap();
        let i = info(q.name());
        assert_eq!(i.status, Status::Creating, "not ready yet");
        assert_eq!(i.owner, Liveness::Alive);
        assert_eq!(i.creator, Some(ProcessIdentity::current()));
        assert_eq!(i.kind, Some(SegmentKind::Queue));
        assert_eq!(i.ready, Some(false));
        assert_eq!(i.layout_version, Some(crate::LAYOUT_VERSION));
        assert!(i.size >= 4096 + 128, "size {}", i.size);
        assert!(i.held_by.unwrap().contains(&std::process::id()));
        let report = clean(&only(q.name())).unwrap();
        assert!(report.removed.is_empty() && exists(q.name()));
        q.publish_ready();
        assert_eq!(info(q.name()).status, Status::OwnerAlive);
        let report = clean(&only(q.name())).unwrap();
        assert!(report.removed.is_empty());
        assert_eq!(names(&report.kept), [q.name()]);
        assert!(exists(q.name()));
    }

    #[test]
    fn a_creator_whose_pid_was_recycled_is_dead_and_its_queue_removed() {
        let q = Segment::create(SegmentKind::Queue, 4096).unwrap();
        q.publish_ready();
        kill_creator(&q);
        let i = info(q.name());
        assert_eq!((i.status, i.owner), (Status::OwnerDead, Liveness::Dead));
        let dry = clean(&CleanOptions {
            dry_run: true,
            ..only(q.name())
        })
        .unwrap();
        assert_eq!(names(&dry.removed), [q.name()]);
        assert!(exists(q.name()), "a dry run removes nothing");
        let report = clean(&only(q.name())).unwrap();
        assert_eq!(names(&report.removed), [q.name()]);
        assert!(!exists(q.name()));
        // Our mapping is still valid after the name is gone.
        // SAFETY: the body is 4096 bytes.
        unsafe { q.body_ptr().write(1) };
    }

    #[test]
    fn blobs_of_dead_creators_go_only_when_nobody_can_receive_them() {
        // Never committed: nobody can ever read it.
        let abandoned = Segment::create(SegmentKind::Blob, 100).unwrap();
        kill_creator(&abandoned);
        assert_eq!(info(abandoned.name()).status, Status::AbandonedBlob);
        // Committed, and this process holds a queue: it could be the receiver.
        let queue = Segment::create(SegmentKind::Queue, 4096).unwrap();
        queue.publish_ready();
        let committed = Segment::create(SegmentKind::Blob, 100).unwrap();
        committed.publish_ready();
        kill_creator(&committed);
        assert_eq!(info(committed.name()).status, Status::MaybeInUse);
        let report = clean(&CleanOptions {
            only: Some(vec![abandoned.name().into(), committed.name().into()]),
            ..CleanOptions::default()
        })
        .unwrap();
        assert_eq!(names(&report.removed), [abandoned.name()]);
        assert_eq!(names(&report.kept), [committed.name()]);
        assert!(!exists(abandoned.name()) && exists(committed.name()));
    }

    #[test]
    fn creators_in_another_or_unrecorded_pid_namespace_are_not_judged() {
        let q = Segment::create(SegmentKind::Queue, 4096).unwrap();
        q.publish_ready();
        kill_creator(&q);
        for ns in [pid_namespace() + 1, 0] {
            q.header().forge(|h| h.creator_pid_ns = ns);
            let i = info(q.name());
            assert_eq!(
                (i.status, i.owner),
                (Status::OtherPidNamespace, Liveness::Unknown)
            );
            assert!(clean(&only(q.name())).unwrap().removed.is_empty());
        }
        assert!(exists(q.name()));
        // Unrecorded, but a process with the creator's pid and start time runs here: that is it.
        q.header().forge(|h| h.creator = ProcessIdentity::current());
        let i = info(q.name());
        assert_eq!((i.status, i.owner), (Status::OwnerAlive, Liveness::Alive));
    }

    #[test]
    fn invalid_headers_are_kept_unless_forced_and_held_by_nobody() {
        let forced = |name: &str| CleanOptions {
            force_invalid: true,
            ..only(name)
        };
        type Forgery = fn(&mut HeaderFields);
        let cases: [(Forgery, Status); 3] = [
            (
                |h| h.magic = 0x1234,
                Status::Invalid(InvalidHeader::BadMagic),
            ),
            (
                |h| h.layout_version = 99,
                Status::Invalid(InvalidHeader::OtherLayoutVersion(99)),
            ),
            (
                |h| h.kind = 77,
                Status::Invalid(InvalidHeader::UnknownKind(77)),
            ),
        ];
        for (change, status) in cases {
            let mut seg = Segment::create(SegmentKind::Queue, 4096).unwrap();
            seg.publish_ready();
            seg.header().forge(change);
            let name = seg.name().to_owned();
            assert_eq!(info(&name).status, status);
            assert!(
                clean(&forced(&name)).unwrap().removed.is_empty(),
                "held by us"
            );
            seg.disown();
            drop(seg);
            assert_eq!(info(&name).held_by, Some(vec![]));
            assert!(
                clean(&only(&name)).unwrap().removed.is_empty(),
                "not forced"
            );
            assert_eq!(
                names(&clean(&forced(&name)).unwrap().removed),
                [name.as_str()]
            );
            assert!(!exists(&name));
        }
        // A header never written: being created while its creator holds it, invalid after.
        let mut seg = Segment::create(SegmentKind::Blob, 64).unwrap();
        seg.header().forge(|h| *h = HeaderFields::decode(&[0; 128]));
        let name = seg.name().to_owned();
        assert_eq!(info(&name).status, Status::Creating);
        seg.disown();
        drop(seg);
        assert_eq!(info(&name).status, Status::Invalid(InvalidHeader::NoHeader));
        assert!(clean(&only(&name)).unwrap().removed.is_empty());
        assert_eq!(
            names(&clean(&forced(&name)).unwrap().removed),
            [name.as_str()]
        );
        // Shorter than a header (a creator that died before sizing it).
        let name = crate::name::random_name();
        std::fs::File::create_new(format!("/dev/shm/{name}")).unwrap();
        assert_eq!(info(&name).status, Status::Invalid(InvalidHeader::TooSmall));
        assert!(clean(&only(&name)).unwrap().removed.is_empty());
        assert_eq!(
            names(&clean(&forced(&name)).unwrap().removed),
            [name.as_str()]
        );
    }

    #[test]
    fn a_blob_is_undeliverable_only_when_every_process_that_could_open_it_was_seen() {
        let blob_inode = 7;
        let not_queues: HashSet<u64> = [blob_inode].into();
        let verdict = |h: Holders, uid| {
            Context {
                our_pid_ns: 1,
                holders: Some(&h),
                not_queues: &not_queues,
            }
            .could_receive(uid)
        };
        let held = |inode: u64| Holders {
            by_inode: [(inode, vec![42])].into(),
            ..Holders::default()
        };
        assert_eq!(verdict(Holders::default(), Some(1000)), Some(false));
        assert_eq!(
            verdict(held(blob_inode), Some(1000)),
            Some(false),
            "a blob holder"
        );
        assert_eq!(verdict(held(8), Some(1000)), Some(true), "a queue holder");
        let removed = Holders {
            of_removed: vec![42],
            ..Holders::default()
        };
        assert_eq!(
            verdict(removed, Some(1000)),
            Some(true),
            "holds a removed segment"
        );
        let hidden = |uid| Holders {
            unreadable: vec![(42, uid)],
            ..Holders::default()
        };
        assert_eq!(
            verdict(hidden(1000), Some(1000)),
            None,
            "same user, not inspected"
        );
        assert_eq!(verdict(hidden(0), Some(1000)), None, "root could open it");
        assert_eq!(
            verdict(hidden(1001), Some(1000)),
            Some(false),
            "cannot open a 0600 segment"
        );
        assert_eq!(verdict(hidden(1001), None), None, "owner unknown");
        let no_scan = Context {
            our_pid_ns: 1,
            holders: None,
            not_queues: &not_queues,
        };
        assert_eq!(no_scan.could_receive(Some(1000)), None);
    }

    #[test]
    fn holding_an_array_does_not_make_a_possible_receiver() {
        let not_queues = HashSet::new(); // the array is not among the listed entries
        let h = Holders {
            by_inode: [(9, vec![42]), (10, vec![43])].into(),
            arrays: [9].into(),
            ..Holders::default()
        };
        let ctx = Context {
            our_pid_ns: 1,
            holders: Some(&h),
            not_queues: &not_queues,
        };
        assert_eq!(
            ctx.possible_receivers(Some(0)),
            [43],
            "only the queue's holder"
        );
        let arrays_only = Holders {
            by_inode: [(9, vec![42])].into(),
            arrays: [9].into(),
            ..Holders::default()
        };
        let ctx = Context {
            holders: Some(&arrays_only),
            ..ctx
        };
        assert_eq!(ctx.could_receive(Some(0)), Some(false));
        assert!(ctx.possible_receivers(Some(0)).is_empty());
    }

    /// Writes `bytes` at `offset` of the file of segment `name` (as any process of its user may).
    fn write_at(name: &str, offset: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{name}"))
            .unwrap();
        file.write_all_at(bytes, offset).unwrap();
    }

    /// Where a record's body and its slot `index` start (`rendezvous::RecordBody`, `Slot`).
    const BODY_AT: u64 = 128;
    fn slot_at(index: u64) -> u64 {
        BODY_AT + 64 + index * 16
    }

    /// A record body: target kind, state, target length, device, inode, slot count.
    fn record_body(kind: u32, len: u64, slot_count: u32) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(kind.to_ne_bytes());
        body.extend(0u32.to_ne_bytes());
        body.extend(len.to_ne_bytes());
        body.extend([0u8; 16]);
        body.extend(slot_count.to_ne_bytes());
        body
    }

    /// A slot naming process `pid` (descriptor 3) started at `start`.
    fn slot(pid: u32, start: u64) -> Vec<u8> {
        let mut slot = (u64::from(pid) << 32 | 3).to_ne_bytes().to_vec();
        slot.extend(start.to_ne_bytes());
        slot
    }

    #[test]
    fn sealed_memory_lists_as_its_memory_and_is_removable_once_no_live_process_holds_it() {
        let seg = Segment::create_in(SegmentKind::Queue, 4096, Backing::Memfd, 1).unwrap();
        seg.publish_ready();
        let i = info(seg.name());
        assert_eq!(i.backing, Backing::Memfd);
        assert_eq!(i.kind, Some(SegmentKind::Queue), "what the memory holds");
        assert_eq!(i.size, 4096 + 128, "the memory's size, not the record's");
        assert_eq!(i.held_by, Some(vec![std::process::id()]));
        assert_eq!((i.status, i.owner), (Status::OwnerAlive, Liveness::Alive));
        assert!(clean(&only(seg.name())).unwrap().removed.is_empty());
        assert!(exists(seg.name()));
        // Its one holder (this process) now reads as dead: same pid, another start time.
        let me = ProcessIdentity::current();
        write_at(seg.name(), slot_at(0) + 8, &(me.start + 1).to_ne_bytes());
        let i = info(seg.name());
        assert_eq!(i.status, Status::OwnerDead, "{i:?}");
        assert_eq!(
            names(&clean(&only(seg.name())).unwrap().removed),
            [seg.name()]
        );
        assert!(!exists(seg.name()));
    }

    #[test]
    fn a_record_not_ready_is_being_created_while_its_creator_lives() {
        let body = crate::record::record_body_size(1);
        let record = Segment::create(SegmentKind::SealedRecord, body).unwrap();
        let i = info(record.name());
        assert_eq!((i.backing, i.kind, i.size), (Backing::Memfd, None, 0));
        assert_eq!((i.status, i.owner), (Status::Creating, Liveness::Alive));
        assert!(clean(&only(record.name())).unwrap().removed.is_empty());
        // Its slots are empty until its creator fills it: what the sweep removes, it keeps.
        assert!(!crate::rendezvous::remove_if_abandoned(record.name()).unwrap());
        assert!(exists(record.name()));
        kill_creator(&record);
        assert_eq!(info(record.name()).status, Status::OwnerDead);
        assert_eq!(
            names(&clean(&only(record.name())).unwrap().removed),
            [record.name()]
        );
        assert!(!exists(record.name()));
    }

    #[test]
    fn a_hostile_record_lists_as_what_fits_its_file_and_no_more() {
        let me = ProcessIdentity::current();
        let body = crate::record::record_body_size(1);
        let record = Segment::create(SegmentKind::SealedRecord, body).unwrap();
        record.publish_ready();
        let name = record.name().to_owned();
        let file_len = 128 + body;
        let slots = (file_len - slot_at(0)) / 16;
        // Claims 4 billion slots; every one in the file holds garbage but the last, which is us.
        write_at(&name, BODY_AT, &record_body(1, u64::MAX, u32::MAX));
        let garbage: Vec<u8> = (0..slots - 1)
            .flat_map(|i| slot(0xdead_0000 + i as u32, 0xffff_ffff_ffff_ffff - i))
            .collect();
        write_at(&name, slot_at(0), &garbage);
        write_at(&name, slot_at(slots - 1), &slot(me.pid, me.start));
        let i = info(&name);
        assert_eq!(
            (i.status, i.kind),
            (Status::OwnerAlive, Some(SegmentKind::Queue))
        );
        assert_eq!((i.size, i.held_by), (u64::MAX, Some(vec![me.pid])));
        assert!(clean(&only(&name)).unwrap().removed.is_empty());
        // A kind the memory cannot hold.
        write_at(&name, BODY_AT, &77u32.to_ne_bytes());
        assert_eq!(
            info(&name).status,
            Status::Invalid(InvalidHeader::UnknownKind(77))
        );
        write_at(&name, BODY_AT, &1u32.to_ne_bytes());
        // A gigabyte long (sparse), its only live holder past what a record can be: not read.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{name}"))
            .unwrap();
        file.set_len(1 << 30).unwrap();
        write_at(&name, slot_at(slots - 1), &[0; 16]);
        let far = (crate::record::MAX_RECORD_LEN as u64).next_multiple_of(16) + 64;
        write_at(&name, far, &slot(me.pid, me.start));
        let i = info(&name);
        assert_eq!(i.status, Status::OwnerDead, "{i:?}");
        assert_eq!(
            names(&clean(&only(&name)).unwrap().removed),
            [name.as_str()]
        );
        assert!(!exists(&name));
    }

    #[test]
    fn clean_rejects_invalid_names() {
        assert!(matches!(
            clean(&only("a/b")),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
