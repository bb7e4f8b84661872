//! `listSegments`, `cleanSegments` and `installSignalCleanup`: the core's inventory and signal
//! cleanup as plain JavaScript objects (the TypeScript layer in `src/cleanup.ts` and the
//! `shmpipe` command in `bin/shmpipe.mjs` sit on top); with the signal cleanup, the arrays it
//! removes (`removeArrayOnSignal`) and the synchronous waits it interrupts
//! (`interruptSyncWaitsOnSignal`, `takeInterruptingSignal`).

use crate::errors::{ErrorCode, IntoNapi, Result};
use napi_derive::napi;
use shmpipe_core::inventory::{Liveness, SegmentInfo as Found, Status};
use shmpipe_core::{Backing, CleanOptions, ListOptions, SegmentKind, SignalSetup};
use std::time::UNIX_EPOCH;

/// What a segment holds.
#[napi(string_enum = "lowercase", js_name = "SegmentKind")]
pub enum Kind {
    /// A pipe's queue.
    Queue,
    /// A message's own segment.
    Blob,
    /// A shared array.
    Array,
}

impl Kind {
    /// What a listed segment holds (a sealed memory's record is listed as what the memory
    /// holds, so a record kind of its own is never shown).
    fn of(kind: SegmentKind) -> Option<Self> {
        match kind {
            SegmentKind::Queue => Some(Self::Queue),
            SegmentKind::Blob => Some(Self::Blob),
            SegmentKind::Array => Some(Self::Array),
            SegmentKind::SealedRecord => None,
        }
    }
}

/// Where a segment's memory lives.
#[napi(string_enum = "lowercase", js_name = "SegmentBacking")]
pub enum BackingKind {
    /// A named file in `/dev/shm` (POSIX shared memory): what it occupies there is its size.
    Shm,
    /// Linux: sealed anonymous memory, found through the small record in `/dev/shm` that bears
    /// the name; freed by the kernel with its last holder.
    Memfd,
}

impl From<Backing> for BackingKind {
    fn from(backing: Backing) -> Self {
        match backing {
            Backing::Shm => Self::Shm,
            Backing::Memfd => Self::Memfd,
        }
    }
}

/// Whether a segment's creator is still running.
#[napi(string_enum = "lowercase", js_name = "OwnerLiveness")]
pub enum Owner {
    /// It is running.
    Alive,
    /// It has exited.
    Dead,
    /// This cannot be told (another PID namespace, no permission…).
    Unknown,
}

impl From<Liveness> for Owner {
    fn from(owner: Liveness) -> Self {
        match owner {
            Liveness::Alive => Self::Alive,
            Liveness::Dead => Self::Dead,
            Liveness::Unknown => Self::Unknown,
        }
    }
}

/// A segment's state, and so what `cleanSegments` does with it:
///
/// - `owner-alive`: its creator is running. Kept.
/// - `creating`: being created (not ready yet, creator running). Kept.
/// - `owner-dead`: a pipe (or array) whose creator has exited. Removed, as the creator's normal
///   exit would have done: processes still using it keep their mapping; new attaches fail.
/// - `abandoned-blob`: a message's own segment whose sender died before sending it. Removed.
/// - `undeliverable-blob`: a sent message's own segment whose sender died and that no live
///   process can receive any more. Removed.
/// - `maybe-in-use`: a sent message's own segment whose sender died, which a live receiver may
///   still take (or this cannot be told, e.g. on macOS or for lack of permission); `mayBeUsedBy`
///   names the processes that may. Kept, unless `force` (the message is lost).
/// - `other-pid-namespace`: made in another PID namespace (another container sharing
///   `/dev/shm`): its pid means nothing here; or made by a version that did not record the
///   namespace, and no such process runs here. Kept.
/// - `invalid`: not a valid header of this version. Kept, unless `forceInvalid` and no process
///   holds it open or mapped.
/// - `unreadable`: cannot be read. Kept.
/// - `array`: a shared array that no process has open or mapped (its creator may be dead: arrays
///   outlive it by design). Kept, unless named in `names` or `arrays`.
/// - `array-in-use`: a shared array that live processes have open or mapped (`mayBeUsedBy`), or
///   where that cannot be told (macOS). Kept, unless named or `arrays`, and `force`: the
///   processes keep their mapping, but nobody can attach to the name any more.
/// - `other-user`: owned by another user than this process's (e.g. when run as root), in any
///   state (but `other-pid-namespace`). Kept, unless `allUsers`, which judges it as one's own.
#[napi(string_enum = "kebab-case", js_name = "SegmentStatus")]
#[allow(missing_docs)] // the list above describes each (TypeScript shows only the enum's comment)
pub enum State {
    OwnerAlive,
    Creating,
    OwnerDead,
    AbandonedBlob,
    UndeliverableBlob,
    MaybeInUse,
    OtherPidNamespace,
    Invalid,
    Unreadable,
    Array,
    ArrayInUse,
    OtherUser,
}

impl From<&Status> for State {
    fn from(status: &Status) -> Self {
        match status {
            Status::OwnerAlive => Self::OwnerAlive,
            Status::Creating => Self::Creating,
            Status::OwnerDead => Self::OwnerDead,
            Status::AbandonedBlob => Self::AbandonedBlob,
            Status::UndeliverableBlob => Self::UndeliverableBlob,
            Status::MaybeInUse => Self::MaybeInUse,
            Status::OtherPidNamespace => Self::OtherPidNamespace,
            Status::Invalid(_) => Self::Invalid,
            Status::Unreadable => Self::Unreadable,
            Status::Array => Self::Array,
            Status::ArrayInUse => Self::ArrayInUse,
            Status::OtherUser(_) => Self::OtherUser,
        }
    }
}

/// A live process, as named in the reasons a segment is kept.
#[napi(object, use_nullable = true)]
pub struct ProcessInfo {
    /// Its pid.
    #[napi(readonly)]
    pub pid: u32,
    /// Its command name (Linux: `/proc/<pid>/comm`); `null` where it cannot be read.
    #[napi(readonly)]
    pub command: Option<String>,
}

/// One shared-memory segment found on this machine.
#[napi(object, use_nullable = true)]
pub struct SegmentInfo {
    /// Its name (a pipe's name is the name of its queue segment; an array's is `shmpipe_a_<name>`).
    #[napi(readonly)]
    pub name: String,
    /// What it holds; `null` when its header is not valid.
    #[napi(readonly)]
    pub kind: Option<Kind>,
    /// Bytes of shared memory it occupies (for `memfd`, the sealed memory's, not its record's).
    #[napi(readonly)]
    pub size: f64,
    /// Where its memory lives: `shm`, a named file in `/dev/shm`; `memfd` (Linux), sealed memory
    /// that the record bearing the name stands for, freed with its last holder.
    #[napi(readonly)]
    pub backing: BackingKind,
    /// The pid of the process that created (and owns) it; `null` when the header does not say.
    #[napi(readonly)]
    pub owner_pid: Option<u32>,
    /// Whether that process is still running.
    #[napi(readonly)]
    pub owner: Owner,
    /// Its state; see `SegmentStatus`.
    #[napi(readonly)]
    pub status: State,
    /// The state in words, with the processes that keep it, e.g. `owner dead, maybe in use: a
    /// receiver may be alive (pid 4242 (node))` or `other user (uid 65534)`.
    #[napi(readonly)]
    pub detail: String,
    /// Whether `cleanSegments` removes it (with the options used, for its reports).
    #[napi(readonly)]
    pub removable: bool,
    /// The shared-memory layout version in its header; `null` if the header is not shmpipe's.
    #[napi(readonly)]
    pub layout_version: Option<u32>,
    /// Whether its creator finished creating it; `null` when the header does not say.
    #[napi(readonly)]
    pub ready: Option<bool>,
    /// The user owning it; `null` where the platform does not say.
    #[napi(readonly)]
    pub uid: Option<u32>,
    /// Pids of the processes that have it open or mapped (for `memfd`: that hold the memory, as
    /// its record lists them); `null` where that cannot be told.
    #[napi(readonly, ts_type = "readonly number[]")]
    pub held_by: Option<Vec<u32>>,
    /// When it was created, in milliseconds since 1970 (its age is `Date.now() - createdAt`);
    /// `null` where unknown (macOS).
    #[napi(readonly)]
    pub created_at: Option<f64>,
    /// The live processes that may still use it, for a segment kept because of them: for
    /// `maybe-in-use`, those that could receive the message (they hold a pipe, or could not be
    /// inspected); for `array-in-use`, those that have the array open or mapped. Empty otherwise.
    #[napi(readonly, ts_type = "readonly ProcessInfo[]")]
    pub may_be_used_by: Vec<ProcessInfo>,
}

/// A segment whose removal failed.
#[napi(object)]
pub struct CleanFailure {
    /// The segment.
    pub segment: SegmentInfo,
    /// The error's code.
    pub code: ErrorCode,
    /// The error's description.
    pub message: String,
}

/// What `cleanSegments` did.
#[napi(object)]
pub struct CleanResult {
    /// Removed (or, in a dry run, would be).
    pub removed: Vec<SegmentInfo>,
    /// Left in place; `status` says why.
    pub kept: Vec<SegmentInfo>,
    /// Removal failed.
    pub failed: Vec<CleanFailure>,
}

fn record(info: Found, removable: bool) -> SegmentInfo {
    SegmentInfo {
        kind: info.kind.and_then(Kind::of),
        size: info.size as f64,
        backing: info.backing.into(),
        owner_pid: info.creator.map(|c| c.pid),
        owner: info.owner.into(),
        status: (&info.status).into(),
        detail: info.detail(),
        removable,
        layout_version: info.layout_version,
        ready: info.ready,
        uid: info.uid,
        held_by: info.held_by,
        created_at: info
            .created
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as f64),
        may_be_used_by: info
            .may_be_used_by
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                command: p.command,
            })
            .collect(),
        name: info.name,
    }
}

/// Options of `listSegments`.
#[napi(object)]
pub struct NativeListOptions {
    /// Judge other users' segments like one's own instead of listing them as `other-user`.
    pub all_users: Option<bool>,
}

/// Every shmpipe segment on this machine, shared arrays included, sorted by name (Linux:
/// `/dev/shm`; macOS: the per-user registry; Windows: none).
#[napi(catch_unwind)]
pub fn list_segments(options: Option<NativeListOptions>) -> Result<Vec<SegmentInfo>> {
    let opts = ListOptions {
        all_users: options.and_then(|o| o.all_users).unwrap_or(false),
    };
    Ok(shmpipe_core::list_segments_with(&opts)
        .napi()?
        .into_iter()
        .map(|info| {
            let removable = info.removable_with(&CleanOptions {
                all_users: opts.all_users,
                ..CleanOptions::default()
            });
            record(info, removable)
        })
        .collect())
}

/// Options of `cleanSegments` (see `CleanOptions` in the core).
#[napi(object)]
#[derive(Default)]
pub struct NativeCleanOptions {
    /// Only these names (naming an array asks for its removal).
    pub names: Option<Vec<String>>,
    /// Also invalid segments no process holds.
    pub force_invalid: Option<bool>,
    /// Remove nothing; report what would go.
    pub dry_run: Option<bool>,
    /// Also other users' segments.
    pub all_users: Option<bool>,
    /// Also shared arrays no process has open.
    pub arrays: Option<bool>,
    /// Also what live processes may still use.
    pub force: Option<bool>,
}

/// Removes the segments whose owner is dead (never one whose owner is alive), and what the
/// options ask for besides (see `CleanOptions` in the core).
#[napi(catch_unwind)]
pub fn clean_segments(options: Option<NativeCleanOptions>) -> Result<CleanResult> {
    let o = options.unwrap_or_default();
    let opts = CleanOptions {
        force_invalid: o.force_invalid.unwrap_or(false),
        only: o.names,
        dry_run: o.dry_run.unwrap_or(false),
        all_users: o.all_users.unwrap_or(false),
        arrays: o.arrays.unwrap_or(false),
        force: o.force.unwrap_or(false),
    };
    let report = shmpipe_core::clean(&opts).napi()?;
    Ok(CleanResult {
        removed: report
            .removed
            .into_iter()
            .map(|i| record(i, true))
            .collect(),
        kept: report
            .kept
            .into_iter()
            .map(|i| {
                let removable = i.removable_with(&opts);
                record(i, removable)
            })
            .collect(),
        failed: report
            .failed
            .into_iter()
            .map(|(i, e)| CleanFailure {
                code: ErrorCode::of(&e),
                message: e.to_string(),
                segment: record(i, true),
            })
            .collect(),
    })
}

/// What `installSignalCleanup` did for one signal.
#[napi(string_enum = "kebab-case", js_name = "SignalCleanupSetup")]
pub enum Setup {
    /// The handler is installed.
    Installed,
    /// It was installed already.
    AlreadyInstalled,
    /// The signal is ignored, and left so.
    LeftIgnored,
    /// This platform has no such handler.
    Unsupported,
}

impl From<&SignalSetup> for Setup {
    fn from(setup: &SignalSetup) -> Self {
        match setup {
            SignalSetup::Installed => Self::Installed,
            SignalSetup::AlreadyInstalled => Self::AlreadyInstalled,
            SignalSetup::LeftIgnored => Self::LeftIgnored,
            SignalSetup::Unsupported => Self::Unsupported,
        }
    }
}

/// Installs the native SIGINT/SIGTERM/SIGABRT handler that removes this process's own segments
/// before the signal ends it (see `shmpipe_core::signals`). Returns what it did per signal
/// (`SIGINT`, `SIGTERM`, `SIGABRT`).
#[napi(catch_unwind)]
pub fn install_signal_cleanup() -> Result<Vec<Setup>> {
    let setup = shmpipe_core::install_signal_cleanup().napi()?;
    Ok(setup.iter().map(Setup::from).collect())
}

/// Has the signal cleanup remove the shared array `name` (its segment as it is now) if a signal
/// ends this process. Returns false where it cannot (see `shmpipe_core::signals::remove_on_signal`).
#[napi(catch_unwind)]
pub fn remove_array_on_signal(name: String) -> bool {
    let segment = format!("{}{name}", shmpipe_core::ARRAY_NAME_PREFIX);
    shmpipe_core::signals::remove_on_signal(&segment)
}

/// Undoes `removeArrayOnSignal(name)`; returns whether it was registered.
#[napi(catch_unwind)]
pub fn keep_array_on_signal(name: String) -> bool {
    let segment = format!("{}{name}", shmpipe_core::ARRAY_NAME_PREFIX);
    shmpipe_core::signals::keep_on_signal(&segment)
}

/// Whether SIGINT/SIGTERM that a JavaScript listener will handle interrupt the synchronous waits
/// (`getSync`, `putSync`, `lockSync`) of the calling thread (Node's main thread), which then
/// throw `ERR_SHMPIPE_ABORTED`.
#[napi(catch_unwind)]
pub fn interrupt_sync_waits_on_signal(on: bool) {
    shmpipe_core::signals::set_interrupt_sync_waits(on);
}

/// The signal number that interrupted synchronous waits, 0 if none; clears it.
#[napi(catch_unwind)]
pub fn take_interrupting_signal() -> i32 {
    shmpipe_core::signals::take_interrupting_signal().unwrap_or(0)
}
