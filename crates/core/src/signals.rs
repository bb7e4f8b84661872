//! Removal of this process's own segments when SIGINT, SIGTERM or SIGABRT ends it, and the
//! interruption of synchronous waits by SIGINT/SIGTERM when JavaScript must handle them.
//!
//! **The table.** Every segment this process would remove when its handle drops (a queue it
//! created, a blob it is still writing) has its name in a fixed table of [`OWNED_SLOTS`] atomic
//! words: a generated name is `shmpipe_` plus 64 random bits, so one `AtomicU64` holds it
//! (0 = free slot). Registering is a CAS into a free slot, unregistering a CAS back to 0: no
//! lock, no allocation, so a signal handler can read the table at any moment. A name is taken
//! out of the table as soon as this process stops owning it: a blob once committed (its consumer
//! removes it), a queue once its last handle is dropped (the name is unlinked first).
//!
//! **Named segments.** A segment with a chosen name (a shared array that a scope promised to
//! remove) is registered with [`remove_on_signal`] in a second table of [`NAMED_SLOTS`] slots,
//! each holding the name and the file's device and inode as they were when it was registered.
//! A slot's state word (phase and generation) is changed by CAS only, so the handler never
//! reads a half-written name. On Linux the handler unlinks `/dev/shm/<name>` only if `stat`
//! still finds that device and inode, so a segment that someone else removed and made again
//! under the same name stays. Other systems cannot tell, and register nothing.
//!
//! **The handler** (Unix, installed by [`install_signal_cleanup`], never implicitly):
//! - The previous disposition was the default (terminate): unlink every name in the table, reset
//!   the disposition to the default and re-raise, so the process still dies *of the signal*
//!   (exit status "killed by SIGINT/SIGTERM", as a shell or a supervisor expects).
//! - The previous disposition was a handler (for example Node's own, which restores the terminal
//!   and re-raises, or libuv's, which hands the signal to a JavaScript listener): chain to it, as
//!   the kernel would have called it. Whether the process dies is that handler's decision, so the
//!   names are unlinked only if, once it returns, the signal is pending with the default
//!   disposition, i.e. the process is about to die of it. A handler that keeps the process running
//!   (a JavaScript listener that ignores SIGINT) leaves every segment in place; one that exits by
//!   itself (`_exit`) leaves them to the dead-owner cleanup ([`crate::inventory`]).
//! - A one-shot previous handler (`SA_RESETHAND`, as Node's is) is called once, and every later
//!   delivery of that signal takes the default action, as the kernel would do; but our handler
//!   stays installed to give it, rather than the disposition being reset before the call. The same
//!   signal often comes twice at once (a pool worker's parent-death signal is sent once for every
//!   thread of the dying parent) and lands on a second thread while the first is still in the
//!   handler: reset early, it would kill the process before anything was removed.
//! - However many threads handle a signal at once, the names are removed by one of them, and no
//!   other lets the process die before that one is done (`remove_owned_once`).
//! - The previous disposition was "ignore": nothing is installed for that signal.
//!
//! **Interrupted waits.** A handler we chain to may leave the signal to JavaScript (libuv's
//! handler, when a JavaScript listener exists): that listener runs only once the thread returns
//! to the event loop, never while it is blocked in a synchronous wait. When
//! [`set_interrupt_sync_waits`] is on, SIGINT and SIGTERM handled that way are recorded, and a
//! wait run inside [`interruptible`] on the thread that turned it on (Node's main thread, the
//! one JavaScript listeners run on) returns [`crate::Error::Interrupted`] within one sleep slice
//! (at once when the signal lands on that thread, whose sleep it cuts short);
//! [`take_interrupting_signal`] then says which signal it was and clears it.
//!
//! SIGABRT (`abort()`, and V8's out-of-memory end) has no handler in Node: the names are
//! unlinked and the process then dies of it as before, core dump included.
//!
//! Unlinking a name is what a normal exit does too: the other processes' mappings stay valid
//! (they finish reading what is queued), and new attaches fail with `NotFound`. Committed blobs
//! are never in the table, so a live consumer still receives every message sent before the
//! signal. Only async-signal-safe calls are made in the handler: `unlink` and `stat` of
//! `/dev/shm/<name>` on Linux (which is all glibc's and musl's `shm_unlink` does; `shm_unlink`
//! itself is not on POSIX's list), `shm_unlink` elsewhere (a system call on macOS), `sigaction`,
//! `sigpending`, `raise`, `getpid`.
//!
//! **Held blobs** (Linux). A sealed blob a producer holds for a consumer not yet registered lives
//! only in this process: the handler copies each one no consumer has mapped into a named
//! segment of its name ([`HELD`]), with `pread`, `open`, `fstat`, `sendfile` and `close`, so the
//! value outlives the signal as it outlives a producer's close.
//!
//! A forked child that did not exec inherits the table; the handler only unlinks in the process
//! that filled it.

use crate::name::{generated_bits, MAX_NAME_LEN};
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};

/// Capacity of the table of owned names. A process owning more segments at once (queues it
/// created plus blobs being written) leaves the extra ones to the dead-owner cleanup if a signal
/// ends it; [`untracked_count`] says how often that happened.
pub const OWNED_SLOTS: usize = 1024;

static OWNED: [AtomicU64; OWNED_SLOTS] = [const { AtomicU64::new(0) }; OWNED_SLOTS];

/// The process that filled the table (0 before the first registration).
static TABLE_PID: AtomicU32 = AtomicU32::new(0);

/// Set by the handler before it empties the table: the process is dying of a signal.
static TERMINATING: AtomicBool = AtomicBool::new(false);

/// Names that could not be registered (table full, or a name not made by `random_name`).
static UNTRACKED: AtomicUsize = AtomicUsize::new(0);

/// Puts `bits` into a free slot of `table`; the slot's index, or `None` if the table is full.
fn claim_slot(table: &[AtomicU64], bits: u64) -> Option<usize> {
    table.iter().position(|slot| {
        slot.load(Ordering::Relaxed) == 0
            && slot
                .compare_exchange(0, bits, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    })
}

/// Frees the slot of `table` holding `bits`, calling `before` with its index just before; the
/// index, or `None` if no slot held it. Acquire even on failure: a slot emptied by the handler
/// must show what the handler stored before it.
fn free_slot(table: &[AtomicU64], bits: u64, before: impl Fn(usize)) -> Option<usize> {
    table.iter().enumerate().position(|(i, slot)| {
        slot.load(Ordering::Acquire) == bits && {
            before(i);
            slot.compare_exchange(bits, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        }
    })
}

/// Registers `name` as owned by this process. Names not made by [`crate::random_name`] (and the
/// one name whose random bits are all zero) are not tracked.
pub(crate) fn track(name: &str) {
    let Some(bits) = generated_bits(name).filter(|&b| b != 0) else {
        UNTRACKED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    TABLE_PID.store(std::process::id(), Ordering::Relaxed);
    if claim_slot(&OWNED, bits).is_none() {
        UNTRACKED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Unregisters `name`; returns whether it was in the table.
pub(crate) fn untrack(name: &str) -> bool {
    let Some(bits) = generated_bits(name).filter(|&b| b != 0) else {
        return false;
    };
    // A slot emptied by the handler shows its TERMINATING store (see `free_slot`).
    free_slot(&OWNED, bits, |_| {}).is_some()
}

/// Unregisters `name` before ownership passes to another process (a blob about to be
/// committed). If a signal handler has already taken the name to unlink it, this process is
/// dying and the hand-over must not happen (a consumer would find a committed blob without its
/// segment): the calling thread then waits for the end.
pub(crate) fn hand_over(name: &str) {
    if !untrack(name) && TERMINATING.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

/// How many owned names could not be put in the table since the process started.
pub fn untracked_count() -> usize {
    UNTRACKED.load(Ordering::Relaxed)
}

/// Whether `name` is in this process's table of owned names (for tests and diagnostics).
pub fn is_tracked(name: &str) -> bool {
    generated_bits(name)
        .filter(|&b| b != 0)
        .is_some_and(|bits| OWNED.iter().any(|s| s.load(Ordering::Acquire) == bits))
}

// ---------------------------------------------------------------------------------------------
// Named segments

/// Capacity of the table of segments with chosen names ([`remove_on_signal`]).
pub const NAMED_SLOTS: usize = 64;

/// Slot phases (the low bits of the state word; the rest is a generation).
const NAMED_FREE: u64 = 0;
const NAMED_BUSY: u64 = 1;
const NAMED_SET: u64 = 2;
const NAMED_PHASE: u64 = 3;
const NAMED_GENERATION: u64 = 4;

/// One registered name. Its fields change only while the slot is `NAMED_BUSY` for whoever
/// moved it there by CAS.
struct NamedSlot {
    state: AtomicU64,
    pid: AtomicU32,
    len: AtomicU32,
    dev: AtomicU64,
    ino: AtomicU64,
    name: [AtomicU8; MAX_NAME_LEN],
}

#[allow(clippy::declare_interior_mutable_const)] // a template for the table's initialiser
const EMPTY_SLOT: NamedSlot = NamedSlot {
    state: AtomicU64::new(NAMED_FREE),
    pid: AtomicU32::new(0),
    len: AtomicU32::new(0),
    dev: AtomicU64::new(0),
    ino: AtomicU64::new(0),
    name: [const { AtomicU8::new(0) }; MAX_NAME_LEN],
};

static NAMED: [NamedSlot; NAMED_SLOTS] = [EMPTY_SLOT; NAMED_SLOTS];

impl NamedSlot {
    fn holds(&self, name: &[u8]) -> bool {
        self.len.load(Ordering::Relaxed) as usize == name.len()
            && self.pid.load(Ordering::Relaxed) == std::process::id()
            && name
                .iter()
                .zip(&self.name)
                .all(|(b, slot)| slot.load(Ordering::Relaxed) == *b)
    }
}

/// Registers the segment `name` (a valid segment name, such as a shared array's segment) to be
/// unlinked if a signal ends this process, as long as the file under that name is the one there
/// now. Returns `false` where that cannot be done: the table is full, the name is not valid, or
/// the system has no `/dev/shm` (then nothing is registered).
pub fn remove_on_signal(name: &str) -> bool {
    if crate::name::validate_name(name).is_err() {
        return false;
    }
    let Some((dev, ino)) = file_identity(name) else {
        return false;
    };
    for slot in &NAMED {
        let seen = slot.state.load(Ordering::Acquire);
        if seen & NAMED_PHASE != NAMED_FREE {
            continue;
        }
        let busy = ((seen & !NAMED_PHASE).wrapping_add(NAMED_GENERATION)) | NAMED_BUSY;
        if slot
            .state
            .compare_exchange(seen, busy, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        for (i, cell) in slot.name.iter().enumerate() {
            cell.store(
                name.as_bytes().get(i).copied().unwrap_or(0),
                Ordering::Relaxed,
            );
        }
        slot.len.store(name.len() as u32, Ordering::Relaxed);
        slot.pid.store(std::process::id(), Ordering::Relaxed);
        slot.dev.store(dev, Ordering::Relaxed);
        slot.ino.store(ino, Ordering::Relaxed);
        slot.state
            .store((busy & !NAMED_PHASE) | NAMED_SET, Ordering::Release);
        return true;
    }
    false
}

/// Unregisters `name` (registered by [`remove_on_signal`]); returns whether it was registered.
pub fn keep_on_signal(name: &str) -> bool {
    let name = name.as_bytes();
    for slot in &NAMED {
        let seen = slot.state.load(Ordering::Acquire);
        // While SET nobody writes the fields; the CAS fails if the slot changed since we read.
        if seen & NAMED_PHASE == NAMED_SET
            && slot.holds(name)
            && slot
                .state
                .compare_exchange(
                    seen,
                    (seen & !NAMED_PHASE) | NAMED_FREE,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return true;
        }
    }
    false
}

/// Whether `name` is registered by [`remove_on_signal`] in this process.
pub fn is_removed_on_signal(name: &str) -> bool {
    NAMED.iter().any(|slot| {
        slot.state.load(Ordering::Acquire) & NAMED_PHASE == NAMED_SET && slot.holds(name.as_bytes())
    })
}

/// The device and inode of `/dev/shm/<name>`.
#[cfg(target_os = "linux")]
fn file_identity(name: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/dev/shm/{name}")).ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(target_os = "linux"))]
fn file_identity(_name: &str) -> Option<(u64, u64)> {
    None
}

/// Unlinks every registered name of this process whose file is still the registered one.
/// Async-signal-safe: atomics, a stack buffer, `stat` and `unlink`.
#[cfg(target_os = "linux")]
fn remove_named() {
    // SAFETY: getpid has no preconditions and is async-signal-safe.
    let me = unsafe { libc::getpid() } as u32;
    for slot in &NAMED {
        let seen = slot.state.load(Ordering::Acquire);
        if seen & NAMED_PHASE != NAMED_SET || slot.pid.load(Ordering::Relaxed) != me {
            continue;
        }
        let busy = (seen & !NAMED_PHASE) | NAMED_BUSY;
        if slot
            .state
            .compare_exchange(seen, busy, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        const DIR: &[u8] = b"/dev/shm/";
        let mut path = [0u8; 9 + MAX_NAME_LEN + 1];
        path[..DIR.len()].copy_from_slice(DIR);
        let len = (slot.len.load(Ordering::Relaxed) as usize).min(MAX_NAME_LEN);
        for i in 0..len {
            path[DIR.len() + i] = slot.name[i].load(Ordering::Relaxed);
        }
        // path[DIR.len() + len] is already the terminating NUL.
        let path = path.as_ptr() as *const libc::c_char;
        // SAFETY: `path` is a NUL-terminated string on our stack and `st` a valid local; stat and
        // unlink are async-signal-safe.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(path, &mut st) == 0
                && st.st_dev as u64 == slot.dev.load(Ordering::Relaxed)
                && st.st_ino as u64 == slot.ino.load(Ordering::Relaxed)
            {
                libc::unlink(path);
            }
        }
        slot.state
            .store((busy & !NAMED_PHASE) | NAMED_FREE, Ordering::Release);
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
fn remove_named() {}

// ---------------------------------------------------------------------------------------------
// Interrupted waits

/// Whether SIGINT/SIGTERM left to another handler interrupt synchronous waits.
static INTERRUPT_SYNC_WAITS: AtomicBool = AtomicBool::new(false);

/// The signal that interrupts synchronous waits until it is taken (0: none).
static INTERRUPTING: AtomicI32 = AtomicI32::new(0);

thread_local! {
    /// Set while this thread runs a wait inside [`interruptible`].
    static IN_INTERRUPTIBLE: Cell<bool> = const { Cell::new(false) };
    /// Set on the thread that last turned [`set_interrupt_sync_waits`] on.
    static INTERRUPT_TARGET: Cell<bool> = const { Cell::new(false) };
}

/// Turns the interruption of this thread's synchronous waits on or off (see the module
/// documentation). Off also forgets a signal not taken yet.
pub fn set_interrupt_sync_waits(on: bool) {
    INTERRUPT_TARGET.with(|c| c.set(on));
    INTERRUPT_SYNC_WAITS.store(on, Ordering::SeqCst);
    if !on {
        INTERRUPTING.store(0, Ordering::SeqCst);
    }
}

/// Runs `f` with its waits interruptible: while a signal recorded by the handler is not taken,
/// they return [`crate::Error::Interrupted`].
pub fn interruptible<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_INTERRUPTIBLE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(IN_INTERRUPTIBLE.with(|c| c.replace(true)));
    f()
}

/// The signal that interrupted waits, if one did, and forgets it.
pub fn take_interrupting_signal() -> Option<i32> {
    match INTERRUPTING.swap(0, Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Whether a wait of this thread must return [`crate::Error::Interrupted`] now.
pub(crate) fn wait_interrupted() -> bool {
    INTERRUPTING.load(Ordering::Relaxed) != 0
        && IN_INTERRUPTIBLE.with(Cell::get)
        && INTERRUPT_TARGET.with(Cell::get)
}

/// Empties the tables and unlinks every name in them. Async-signal-safe: atomics, stack buffers
/// and one `unlink`/`shm_unlink` (and `stat`) per name.
#[cfg(unix)]
fn remove_owned() {
    remove_named();
    // SAFETY: getpid has no preconditions and is async-signal-safe.
    if TABLE_PID.load(Ordering::Relaxed) != unsafe { libc::getpid() } as u32 {
        return; // a forked child: the names belong to its parent
    }
    TERMINATING.store(true, Ordering::SeqCst);
    #[cfg(target_os = "linux")]
    {
        remove_sealed();
        hand_over_held();
    }
    for slot in &OWNED {
        let bits = slot.swap(0, Ordering::AcqRel);
        if bits != 0 {
            unlink_generated(bits);
        }
    }
}

/// Sealed blobs this process's producers hold for a consumer not yet registered, by the random
/// bits of their generated names (0 = free slot), with their descriptors in [`HELD_FDS`] (-1
/// until set). The handler copies each one no consumer has mapped into a named segment of the
/// same name, as closing the producer would ([`crate::Producer`]), so that the value outlives
/// the signal.
#[cfg(target_os = "linux")]
static HELD: [AtomicU64; OWNED_SLOTS] = [const { AtomicU64::new(0) }; OWNED_SLOTS];

/// The descriptors of the blobs in [`HELD`], slot for slot.
#[cfg(target_os = "linux")]
static HELD_FDS: [AtomicI32; OWNED_SLOTS] = [const { AtomicI32::new(-1) }; OWNED_SLOTS];

/// The queues of the blobs in [`HELD`], slot for slot, by the bits of their names (0: unknown).
#[cfg(target_os = "linux")]
static HELD_QUEUES: [AtomicU64; OWNED_SLOTS] = [const { AtomicU64::new(0) }; OWNED_SLOTS];

/// Registers the held sealed blob `name`, open as `fd`, of the sealed queue `queue` (see
/// [`HELD`]). A full table leaves it out: a signal then ends the value with the process, as
/// SIGKILL would.
#[cfg(target_os = "linux")]
pub(crate) fn track_held(name: &str, fd: i32, queue: &str) {
    let Some(bits) = generated_bits(name).filter(|&b| b != 0) else {
        return;
    };
    TABLE_PID.store(std::process::id(), Ordering::Relaxed);
    match claim_slot(&HELD, bits) {
        Some(i) => {
            HELD_QUEUES[i].store(generated_bits(queue).unwrap_or(0), Ordering::Release);
            HELD_FDS[i].store(fd, Ordering::Release);
        }
        None => {
            UNTRACKED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Unregisters the held blob `name` (before its descriptor is closed).
#[cfg(target_os = "linux")]
pub(crate) fn untrack_held(name: &str) {
    let Some(bits) = generated_bits(name).filter(|&b| b != 0) else {
        return;
    };
    free_slot(&HELD, bits, |i| HELD_FDS[i].store(-1, Ordering::Release));
}

/// Copies every held blob that no consumer has mapped into a named segment of its name, if its
/// queue outlives this process: its record is still there once [`remove_sealed`] has removed
/// those no other live process holds (else nobody could ever receive the copy).
/// Async-signal-safe: `access`, `pread` of the blob's state word, `open`, `fstat`, `sendfile`,
/// `close`.
#[cfg(target_os = "linux")]
fn hand_over_held() {
    for ((slot, fd_slot), queue_slot) in HELD.iter().zip(&HELD_FDS).zip(&HELD_QUEUES) {
        let bits = slot.swap(0, Ordering::AcqRel);
        let fd = fd_slot.swap(-1, Ordering::AcqRel);
        let queue = queue_slot.swap(0, Ordering::AcqRel);
        if bits == 0 || fd < 0 || queue == 0 {
            continue;
        }
        let mut queue_stays = false;
        with_generated_path(queue, |path| {
            // SAFETY: `path` is a NUL-terminated string on our stack; access is a system call.
            queue_stays = unsafe { libc::access(path, libc::F_OK) } == 0;
        });
        if !queue_stays {
            continue;
        }
        let mut state = [0u8; 8];
        // SAFETY: `fd` is a descriptor this process holds open (it is unregistered before it is
        // closed); pread writes at most 8 bytes into our stack buffer.
        let read = unsafe {
            libc::pread(
                fd,
                state.as_mut_ptr().cast(),
                8,
                crate::header::KIND_WORD_OFFSET as libc::off_t,
            )
        };
        if read != 8 || !crate::blob_state::needs_holder(u64::from_ne_bytes(state)) {
            continue;
        }
        with_generated_path(bits, |path| copy_to_new_file(fd, path));
    }
}

/// Copies all of `from` into a new file at `path` (mode 0600); removes it if the copy fails.
/// Async-signal-safe.
#[cfg(target_os = "linux")]
fn copy_to_new_file(from: i32, path: *const libc::c_char) {
    // SAFETY: `path` is a NUL-terminated string on the caller's stack; every call below is a
    // system call on descriptors we opened or hold, with buffers on our stack.
    unsafe {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        if libc::fstat(from, st.as_mut_ptr()) != 0 {
            return;
        }
        let len = st.assume_init().st_size;
        let to = libc::open(
            path,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600,
        );
        if to < 0 {
            return;
        }
        let mut offset: libc::off_t = 0;
        while offset < len {
            let sent = libc::sendfile(to, from, &mut offset, (len - offset) as usize);
            if sent <= 0 {
                libc::unlink(path);
                break;
            }
        }
        libc::close(to);
    }
}

/// Sealed memory this process holds, by the random bits of its generated name (0 = free slot):
/// the records the handler removes if no other live process holds them.
#[cfg(target_os = "linux")]
static SEALED: [AtomicU64; OWNED_SLOTS] = [const { AtomicU64::new(0) }; OWNED_SLOTS];

/// Registers the record `name` of sealed memory this process holds: if a signal ends the
/// process, the handler removes the record unless another live process holds it too. Only
/// generated names are tracked (a record of a chosen name is left to the sweep).
#[cfg(target_os = "linux")]
pub(crate) fn track_sealed(name: &str) {
    let Some(bits) = generated_bits(name).filter(|&b| b != 0) else {
        return;
    };
    TABLE_PID.store(std::process::id(), Ordering::Relaxed);
    if claim_slot(&SEALED, bits).is_none() {
        UNTRACKED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Unregisters the record `name` (this process no longer holds its memory).
#[cfg(target_os = "linux")]
pub(crate) fn untrack_sealed(name: &str) {
    let Some(bits) = generated_bits(name).filter(|&b| b != 0) else {
        return;
    };
    free_slot(&SEALED, bits, |_| {});
}

/// Removes the records of sealed memory this process holds that no other live process holds.
/// Async-signal-safe (see [`crate::record::remove_if_unheld_in_handler`]).
#[cfg(target_os = "linux")]
fn remove_sealed() {
    for slot in &SEALED {
        let bits = slot.swap(0, Ordering::AcqRel);
        if bits != 0 {
            with_generated_path(bits, |path| {
                crate::record::remove_if_unheld_in_handler(path)
            });
        }
    }
}

/// Calls `f` with the NUL-terminated path of the generated name for `bits`, without allocating.
#[cfg(unix)]
fn with_generated_path(bits: u64, f: impl FnOnce(*const libc::c_char)) {
    use crate::name::{write_generated, NAME_PREFIX};
    #[cfg(target_os = "linux")]
    const DIR: &[u8] = b"/dev/shm/";
    #[cfg(not(target_os = "linux"))]
    const DIR: &[u8] = b"/";
    let mut name = [0u8; NAME_PREFIX.len() + 16];
    write_generated(bits, &mut name);
    let mut path = [0u8; 9 + NAME_PREFIX.len() + 16 + 1];
    path[..DIR.len()].copy_from_slice(DIR);
    path[DIR.len()..DIR.len() + name.len()].copy_from_slice(&name);
    // path[DIR.len() + name.len()] is already the terminating NUL.
    f(path.as_ptr() as *const libc::c_char);
}

/// Unlinks the generated name for `bits` without allocating.
#[cfg(unix)]
fn unlink_generated(bits: u64) {
    with_generated_path(bits, |path| {
        #[cfg(target_os = "linux")]
        // SAFETY: `path` is a NUL-terminated string on our stack; unlink is async-signal-safe.
        unsafe {
            libc::unlink(path);
        }
        #[cfg(not(target_os = "linux"))]
        // SAFETY: as above; shm_unlink is a plain system call on macOS and the BSDs.
        unsafe {
            libc::shm_unlink(path);
        }
    });
}

/// What [`install_signal_cleanup`] did for one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalSetup {
    /// Our handler is now installed, chaining to the previous disposition.
    Installed,
    /// Our handler was already the current one.
    AlreadyInstalled,
    /// The signal is ignored in this process; it stays ignored (it cannot end the process).
    LeftIgnored,
    /// This platform has no POSIX signals (Windows): nothing to do.
    Unsupported,
}

/// The signals [`install_signal_cleanup`] covers, by name.
pub const CLEANUP_SIGNALS: [&str; 3] = ["SIGINT", "SIGTERM", "SIGABRT"];

/// Installs the handler that unlinks this process's owned segments when SIGINT, SIGTERM or
/// SIGABRT ends it (see the module documentation for how it chains). Idempotent; call it again
/// after another library replaced the handler (Node's libuv does when a JavaScript listener is
/// added, and resets the signal to the default when the last one is removed).
///
/// Returns what was done for each signal of [`CLEANUP_SIGNALS`], in that order.
pub fn install_signal_cleanup() -> crate::Result<[SignalSetup; 3]> {
    imp::install()
}

#[cfg(unix)]
mod imp {
    use super::{remove_owned, SignalSetup, INTERRUPTING, INTERRUPT_SYNC_WAITS};
    use crate::error::Error;
    use libc::{c_int, c_void, siginfo_t};
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use std::sync::Mutex;

    const SIGNALS: [c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGABRT];

    /// The disposition each signal had before ours: handler address and flags.
    static PREV_HANDLER: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
    static PREV_FLAGS: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];

    /// Serialises installs (never taken in the handler).
    static INSTALL: Mutex<()> = Mutex::new(());

    fn index(sig: c_int) -> Option<usize> {
        SIGNALS.iter().position(|&s| s == sig)
    }

    fn errno_ptr() -> *mut c_int {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        // SAFETY: returns the calling thread's errno location; always valid.
        unsafe {
            libc::__errno_location()
        }
        #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
        // SAFETY: as above.
        unsafe {
            libc::__error()
        }
        #[cfg(not(any(
            target_os = "linux",
            target_os = "android",
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd"
        )))]
        {
            std::ptr::null_mut()
        }
    }

    /// Sets `sig` to its default disposition.
    fn set_default(sig: c_int) {
        // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask and no flags; sigaction is
        // async-signal-safe.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }

    /// Whether `sig` is about to kill the process: default disposition and pending.
    fn about_to_die_of(sig: c_int) -> bool {
        // SAFETY: the out-parameter is a valid local; sigaction (query only) is
        // async-signal-safe.
        let default = unsafe {
            let mut cur: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut cur) == 0
                && cur.sa_sigaction == libc::SIG_DFL
        };
        default && pending(sig)
    }

    /// [`remove_owned_once`]'s progress in this process.
    static CLEANUP: AtomicU32 = AtomicU32::new(CLEANUP_IDLE);
    const CLEANUP_IDLE: u32 = 0;
    const CLEANUP_RUNNING: u32 = 1;
    const CLEANUP_DONE: u32 = 2;
    /// The longest a handler waits for another thread's [`remove_owned`] (1 ms pauses).
    const CLEANUP_WAIT_MS: u32 = 2_000;

    /// Runs [`remove_owned`] once per process, however many threads' handlers ask at the same
    /// time: the first runs it, and the others wait until it is done (at most
    /// [`CLEANUP_WAIT_MS`]), so that none of them lets the process die while it runs.
    /// Async-signal-safe: atomics and `nanosleep`.
    fn remove_owned_once() {
        match CLEANUP.compare_exchange(
            CLEANUP_IDLE,
            CLEANUP_RUNNING,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                remove_owned();
                CLEANUP.store(CLEANUP_DONE, Ordering::Release);
            }
            Err(_) => {
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 1_000_000,
                };
                for _ in 0..CLEANUP_WAIT_MS {
                    if CLEANUP.load(Ordering::Acquire) == CLEANUP_DONE {
                        break;
                    }
                    // SAFETY: `pause` is a valid timespec on our stack; the remainder is not
                    // asked for; nanosleep is async-signal-safe.
                    unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
                }
            }
        }
    }

    /// Removes this process's names, then has `sig` end it with the default action: the
    /// disposition is reset and the signal raised, blocked until this handler returns (our
    /// mask is full) and then delivered.
    fn die_of(sig: c_int) {
        remove_owned_once();
        set_default(sig);
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(sig) };
    }

    /// Whether `sig` is pending for this thread or the process.
    fn pending(sig: c_int) -> bool {
        // SAFETY: `set` is a valid local; sigpending and sigismember are async-signal-safe.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut set) == 0 && libc::sigismember(&set, sig) == 1
        }
    }

    extern "C" fn on_signal(sig: c_int, info: *mut siginfo_t, context: *mut c_void) {
        let errno = errno_ptr();
        // SAFETY: `errno` is this thread's errno location (or null where unknown).
        let saved_errno = (!errno.is_null()).then(|| unsafe { *errno });
        if let Some(i) = index(sig) {
            let prev = PREV_HANDLER[i].load(Ordering::Acquire);
            let flags = PREV_FLAGS[i].load(Ordering::Acquire) as c_int;
            let one_shot = flags & libc::SA_RESETHAND != 0;
            // A one-shot handler is called by the delivery that spends it (the previous
            // disposition becomes the default); a delivery that finds it spent, here or on
            // another thread, takes the default action (see the module documentation).
            let spent_elsewhere = one_shot
                && prev != libc::SIG_DFL
                && PREV_HANDLER[i]
                    .compare_exchange(prev, libc::SIG_DFL, Ordering::AcqRel, Ordering::Acquire)
                    .is_err();
            if prev == libc::SIG_DFL || spent_elsewhere {
                die_of(sig);
            } else if prev != libc::SIG_IGN {
                if flags & libc::SA_SIGINFO != 0 {
                    // SAFETY: `prev` was installed with SA_SIGINFO, so it has this signature; it
                    // is called with the arguments the kernel gave us.
                    let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
                        unsafe { std::mem::transmute(prev) };
                    f(sig, info, context);
                } else {
                    // SAFETY: `prev` was installed as a plain `sa_handler`.
                    let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(prev) };
                    f(sig);
                }
                if one_shot && pending(sig) {
                    die_of(sig); // it re-raised (Node's does): the default action follows
                } else if about_to_die_of(sig) {
                    remove_owned_once();
                } else if sig != libc::SIGABRT && INTERRUPT_SYNC_WAITS.load(Ordering::SeqCst) {
                    // Left to JavaScript, which runs only once no synchronous wait blocks it.
                    INTERRUPTING.store(sig, Ordering::SeqCst);
                }
            }
        }
        if let Some(value) = saved_errno {
            // SAFETY: as above.
            unsafe { *errno = value };
        }
    }

    pub fn install() -> crate::Result<[SignalSetup; 3]> {
        let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        let ours = on_signal as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as usize;
        let mut out = [SignalSetup::Installed; 3];
        for (i, &sig) in SIGNALS.iter().enumerate() {
            // SAFETY: plain queries and installs of a disposition with valid pointers to locals.
            unsafe {
                let mut cur: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut cur) != 0 {
                    return Err(Error::last_os("sigaction"));
                }
                if cur.sa_sigaction == ours {
                    out[i] = SignalSetup::AlreadyInstalled;
                    continue;
                }
                if cur.sa_sigaction == libc::SIG_IGN {
                    out[i] = SignalSetup::LeftIgnored;
                    continue;
                }
                // Our handler is not installed for `sig` now, so none of its runs reads these.
                PREV_FLAGS[i].store(cur.sa_flags as usize, Ordering::Release);
                PREV_HANDLER[i].store(cur.sa_sigaction, Ordering::Release);
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = ours;
                act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
                // Every signal blocked while ours runs: covers the mask of any handler we chain to.
                libc::sigfillset(&mut act.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &act, &mut old) != 0 {
                    return Err(Error::last_os("sigaction"));
                }
                if old.sa_sigaction != cur.sa_sigaction || old.sa_flags != cur.sa_flags {
                    // Another thread changed it in between: chain to what we actually replaced.
                    PREV_FLAGS[i].store(old.sa_flags as usize, Ordering::Release);
                    PREV_HANDLER[i].store(old.sa_sigaction, Ordering::Release);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(not(unix))]
mod imp {
    use super::SignalSetup;

    pub fn install() -> crate::Result<[SignalSetup; 3]> {
        Ok([SignalSetup::Unsupported; 3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_is_exact_and_reversible() {
        let a = crate::name::random_name();
        let b = crate::name::random_name();
        track(&a);
        track(&b);
        assert!(is_tracked(&a) && is_tracked(&b));
        assert!(untrack(&a));
        assert!(!is_tracked(&a) && is_tracked(&b));
        assert!(!untrack(&a), "a name is in the table once");
        hand_over(&b); // not terminating: returns
        assert!(!is_tracked(&b));
        let before = untracked_count();
        track("not-generated");
        assert_eq!(untracked_count(), before + 1);
    }
}
