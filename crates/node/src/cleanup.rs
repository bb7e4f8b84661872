//! `listSegments`, `cleanSegments` and `installSignalCleanup`: the core's inventory and signal
//! cleanup as plain JavaScript objects (the TypeScript layer in `src/cleanup.ts` and the
//! `shmpipe` command in `bin/shmpipe.mjs` sit on top); with the signal cleanup, the arrays it
//! removes (`removeArrayOnSignal`) and the synchronous waits it interrupts
//! (`interruptSyncWaitsOnSignal`, `takeInterruptingSignal`).

use crate::errors::{code_of, IntoNapi};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use shmpipe_core::inventory::{Liveness, SegmentInfo};
use shmpipe_core::{CleanOptions, ListOptions, SegmentKind, SignalSetup};
use std::time::UNIX_EPOCH;

/// A live process that may still use a kept segment.
#[napi(object)]
pub struct ProcessRecord {
    /// Its pid.
    pub pid: u32,
    /// Its command name, where it can be read.
    pub command: Option<String>,
}

/// One segment found on this machine.
#[napi(object)]
pub struct SegmentRecord {
    /// Its name.
    pub name: String,
    /// `'queue'`, `'blob'` or `'array'`; absent when the header is not valid.
    pub kind: Option<String>,
    /// Bytes it occupies.
    pub size: f64,
    /// Its creator's pid (in the creator's PID namespace), from the header.
    pub owner_pid: Option<u32>,
    /// `'alive'`, `'dead'` or `'unknown'`.
    pub owner: String,
    /// Its state (`Status::code` in the core), which decides what clean does with it.
    pub status: String,
    /// The state in words.
    pub detail: String,
    /// Whether clean removes it (with the options of the call that produced this record).
    pub removable: bool,
    /// The layout version in its header, if the header is shmpipe's.
    pub layout_version: Option<u32>,
    /// Whether its creator published it as ready.
    pub ready: Option<bool>,
    /// The user owning it.
    pub uid: Option<u32>,
    /// Pids of the processes holding it open or mapped; absent where that cannot be told.
    pub held_by: Option<Vec<u32>>,
    /// When it was created, in milliseconds since 1970; absent where unknown.
    pub created_at: Option<f64>,
    /// The live processes that may still use it, for `maybe-in-use` and `array-in-use`.
    pub may_be_used_by: Vec<ProcessRecord>,
}

/// A segment whose removal failed.
#[napi(object)]
pub struct CleanFailure {
    /// The segment.
    pub segment: SegmentRecord,
    /// The error as `ERR_SHMPIPE_*: description`.
    pub error: String,
}

/// What `cleanSegments` did.
#[napi(object)]
pub struct CleanResult {
    /// Removed (or, in a dry run, would be).
    pub removed: Vec<SegmentRecord>,
    /// Left in place; `status` says why.
    pub kept: Vec<SegmentRecord>,
    /// Removal failed.
    pub failed: Vec<CleanFailure>,
}

fn record(info: SegmentInfo, removable: bool) -> SegmentRecord {
    SegmentRecord {
        kind: info.kind.map(|k| {
            match k {
                SegmentKind::Queue => "queue",
                SegmentKind::Blob => "blob",
                SegmentKind::Array => "array",
            }
            .to_owned()
        }),
        size: info.size as f64,
        owner_pid: info.creator.map(|c| c.pid),
        owner: match info.owner {
            Liveness::Alive => "alive",
            Liveness::Dead => "dead",
            Liveness::Unknown => "unknown",
        }
        .to_owned(),
        status: info.status.code().to_owned(),
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
            .map(|p| ProcessRecord {
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
pub fn list_segments(options: Option<NativeListOptions>) -> Result<Vec<SegmentRecord>> {
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
                error: format!("{}: {e}", code_of(&e)),
                segment: record(i, true),
            })
            .collect(),
    })
}

/// Installs the native SIGINT/SIGTERM/SIGABRT handler that removes this process's own segments
/// before the signal ends it (see `shmpipe_core::signals`). Returns, per signal (`SIGINT`,
/// `SIGTERM`, `SIGABRT`): `'installed'`, `'already-installed'`, `'left-ignored'` or
/// `'unsupported'`.
#[napi(catch_unwind)]
pub fn install_signal_cleanup() -> Result<Vec<String>> {
    let setup = shmpipe_core::install_signal_cleanup().napi()?;
    Ok(setup
        .iter()
        .map(|s| {
            match s {
                SignalSetup::Installed => "installed",
                SignalSetup::AlreadyInstalled => "already-installed",
                SignalSetup::LeftIgnored => "left-ignored",
                SignalSetup::Unsupported => "unsupported",
            }
            .to_owned()
        })
        .collect())
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
