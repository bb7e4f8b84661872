//! Named shared arrays: one segment holding an N-dimensional array of fixed-size numbers that
//! every attached process reads and writes in place, and a robust lock for its writers.
//!
//! Layout of the segment body (after the 128-byte segment header):
//!
//! ```text
//! 0     array header: magic "SHMARRAY", array layout version, dtype, ndim, byte length,
//!       data offset, instance nonce, shape (up to MAX_NDIM u64s, row-major)
//! 384   lock line (128 B, see array_lock.rs): owner word, lost-holder mark, wake event
//! 512   data, `byte_len` bytes (absolute offset 640: aligned to 64 bytes)
//! ```
//!
//! Names: the user chooses them (1 to [`MAX_ARRAY_NAME_LEN`] characters of `[A-Za-z0-9_.-]`),
//! and the segment is called [`ARRAY_NAME_PREFIX`] + name, so that the OS name fits macOS's
//! 30-character limit and never collides with shmpipe's random names.
//!
//! Lifetime, by backing ([`SharedArray::create_in`]):
//! - [`Backing::Shm`] (the default, whatever `SHMPIPE_BACKING` says: that variable is for
//!   pipes): a named segment that stays until it is removed ([`SharedArray::remove`]); handles,
//!   the creator's included, only map it. So an array outlives the program that wrote it.
//! - [`Backing::Memfd`] (Linux): sealed memory found through a record of the same name
//!   ([`crate::rendezvous`]). It lives while some process holds it; when the last holder closes
//!   its handles or dies, however, the memory is freed and the record goes with it (a record
//!   that a killed last holder left is removed by the next sealed array creation of that name,
//!   the next sweep, or `shmpipe clean`). Removing the name works as for the other backing.

use crate::array_lock::{Acquired, LockHolder, LockWord};
use crate::backing::Backing;
use crate::error::{BadSegmentReason, Error, Result};
use crate::event::{CancelToken, WaitOptions};
use crate::segment::{Segment, SegmentKind};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::name::{validate_array_name, ARRAY_NAME_PREFIX, MAX_ARRAY_NAME_LEN};

/// Most dimensions an array may have.
pub const MAX_NDIM: usize = 32;

/// `b"SHMARRAY"` read as a little-endian u64.
const ARRAY_MAGIC: u64 = u64::from_le_bytes(*b"SHMARRAY");

/// Version of the array header and lock layout; bumped whenever either changes.
pub const ARRAY_LAYOUT_VERSION: u32 = 1;

/// Where the lock line starts in the body.
const LOCK_OFFSET: usize = 384;

/// Where the data starts in the body.
pub const DATA_OFFSET: u64 = 512;

/// How many processes at once may hold a sealed array (its record's slots: a 20 KiB record).
pub const MAX_SEALED_ARRAY_HOLDERS: u32 = 1024;

/// How long `open` waits for a creator to finish initialising a segment it just created.
const OPEN_READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The element type of a shared array: one per JavaScript TypedArray.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Dtype {
    /// `i8` (`Int8Array`).
    Int8 = 1,
    /// `u8` (`Uint8Array`).
    Uint8 = 2,
    /// `u8` read with clamping on write (`Uint8ClampedArray`).
    Uint8Clamped = 3,
    /// `i16` (`Int16Array`).
    Int16 = 4,
    /// `u16` (`Uint16Array`).
    Uint16 = 5,
    /// `i32` (`Int32Array`).
    Int32 = 6,
    /// `u32` (`Uint32Array`).
    Uint32 = 7,
    /// `f32` (`Float32Array`).
    Float32 = 8,
    /// `f64` (`Float64Array`).
    Float64 = 9,
    /// `i64` (`BigInt64Array`).
    BigInt64 = 10,
    /// `u64` (`BigUint64Array`).
    BigUint64 = 11,
}

impl Dtype {
    /// Every dtype, in code order.
    pub const ALL: [Dtype; 11] = [
        Self::Int8,
        Self::Uint8,
        Self::Uint8Clamped,
        Self::Int16,
        Self::Uint16,
        Self::Int32,
        Self::Uint32,
        Self::Float32,
        Self::Float64,
        Self::BigInt64,
        Self::BigUint64,
    ];

    /// The code stored in the segment.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The dtype stored as `code`, if it is one.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Bytes per element.
    pub fn item_size(self) -> u64 {
        match self {
            Self::Int8 | Self::Uint8 | Self::Uint8Clamped => 1,
            Self::Int16 | Self::Uint16 => 2,
            Self::Int32 | Self::Uint32 | Self::Float32 => 4,
            Self::Float64 | Self::BigInt64 | Self::BigUint64 => 8,
        }
    }

    /// The lower-case name (`"float64"`, `"bigint64"`, `"uint8clamped"`…).
    pub fn name(self) -> &'static str {
        match self {
            Self::Int8 => "int8",
            Self::Uint8 => "uint8",
            Self::Uint8Clamped => "uint8clamped",
            Self::Int16 => "int16",
            Self::Uint16 => "uint16",
            Self::Int32 => "int32",
            Self::Uint32 => "uint32",
            Self::Float32 => "float32",
            Self::Float64 => "float64",
            Self::BigInt64 => "bigint64",
            Self::BigUint64 => "biguint64",
        }
    }

    /// The dtype called `name` (as [`name`](Self::name) spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// The array header at the start of the body. All atomics: it lives in shared memory.
#[repr(C)]
struct ArrayHeader {
    magic: AtomicU64,
    version: AtomicU32,
    dtype: AtomicU32,
    ndim: AtomicU32,
    _pad: AtomicU32,
    byte_len: AtomicU64,
    data_offset: AtomicU64,
    /// Random per creation: tells this array from a later one created under the same name.
    nonce: AtomicU64,
    shape: [AtomicU64; MAX_NDIM],
}

const _: () = assert!(std::mem::size_of::<ArrayHeader>() <= LOCK_OFFSET);
const _: () = assert!(LOCK_OFFSET + std::mem::size_of::<LockWord>() <= DATA_OFFSET as usize);
// The body starts 128 bytes into a page-aligned mapping: data at 128 + 512 is 64-byte aligned.
const _: () = assert!((crate::segment::SEGMENT_HEADER_SIZE as u64 + DATA_OFFSET) % 64 == 0);

/// The segment name of the array called `name`, after checking the name.
pub fn array_segment_name(name: &str) -> Result<String> {
    validate_array_name(name)?;
    Ok(format!("{ARRAY_NAME_PREFIX}{name}"))
}

/// Creates the segment `seg_name` of an array with a body of `body_size` bytes in `backing`.
fn create_segment(seg_name: &str, body_size: u64, backing: Backing) -> Result<Segment> {
    let create = || {
        Segment::create_named_in(
            seg_name,
            SegmentKind::Array,
            body_size,
            backing,
            MAX_SEALED_ARRAY_HOLDERS,
        )
    };
    #[cfg(target_os = "linux")]
    if backing == Backing::Memfd {
        crate::rendezvous::sweep();
    }
    match create() {
        // A sealed array's record outlives a last holder killed by a signal it cannot catch:
        // such a record (only a record, nothing holding it, its name still standing for it)
        // does not keep the name from a new array.
        #[cfg(target_os = "linux")]
        Err(Error::AlreadyExists { .. })
            if backing == Backing::Memfd
                && crate::rendezvous::remove_if_abandoned(seg_name).unwrap_or(false) =>
        {
            create()
        }
        made => made,
    }
}

/// Elements and bytes of an array of `dtype` and `shape`, after checking the shape.
fn size_of_array(dtype: Dtype, shape: &[u64]) -> Result<(u64, u64)> {
    if shape.is_empty() || shape.len() > MAX_NDIM {
        return Err(Error::InvalidArgument {
            name: "shape",
            expected: "an array of 1 to 32 dimensions",
        });
    }
    if shape.contains(&0) {
        return Err(Error::InvalidArgument {
            name: "shape",
            expected: "an array of dimensions of at least 1",
        });
    }
    let limit = (isize::MAX as u64) - crate::segment::SEGMENT_HEADER_SIZE as u64 - DATA_OFFSET;
    let too_large = Error::TooLarge {
        requested: u64::MAX,
        limit,
    };
    let len = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or(too_large)?;
    let bytes = len
        .checked_mul(dtype.item_size())
        .filter(|&b| b <= limit)
        .ok_or(Error::TooLarge {
            requested: len.saturating_mul(dtype.item_size()),
            limit,
        })?;
    Ok((len, bytes))
}

/// The mapping and the addresses inside it; shared with cancel tokens so it outlives them.
struct Mapping {
    segment: Segment,
    lock: *const LockWord,
    data: *mut u8,
}

// SAFETY: the pointers point into the mapping owned by `segment`, which stays mapped as long as
// this struct lives, wherever it is dropped; the lock is all atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared access goes through atomics (lock) or through raw pointers whose
// users promise their own synchronisation (data).
unsafe impl Sync for Mapping {}

impl Mapping {
    fn lock(&self) -> &LockWord {
        // SAFETY: `lock` points at a LockWord inside the mapping, which lives as long as `self`.
        unsafe { &*self.lock }
    }
}

/// A handle on a named shared array: its metadata, a pointer to its data, and its lock.
///
/// Every handle maps the same memory: a write through one is seen by all, in every process.
/// Dropping a handle unmaps the array (if nothing else holds the mapping) but never removes it.
/// A handle that holds the lock when it is dropped releases it, and the next holder is told
/// ([`Acquired::recovered`]).
pub struct SharedArray {
    map: Arc<Mapping>,
    name: String,
    dtype: Dtype,
    shape: Vec<u64>,
    len: u64,
    byte_len: u64,
    nonce: u64,
    holder: LockHolder,
}

impl SharedArray {
    /// Creates the array `name` of `dtype` and `shape` (row-major), filled with zeros, in a
    /// named segment that stays until it is removed ([`Backing::Shm`]).
    ///
    /// Fails with [`Error::AlreadyExists`] if the name is taken, [`Error::InvalidArgument`] for a
    /// bad name or shape, [`Error::TooLarge`] if the size overflows, [`Error::NoSpace`] if the
    /// system cannot reserve the memory.
    pub fn create(name: &str, dtype: Dtype, shape: &[u64]) -> Result<Self> {
        Self::create_in(name, dtype, shape, Backing::Shm)
    }

    /// Creates the array as [`create`](Self::create) does, its memory in `backing`: with
    /// [`Backing::Memfd`] (Linux only, else [`Error::Unsupported`]) the array is freed when its
    /// last holder closes or dies, at most [`MAX_SEALED_ARRAY_HOLDERS`] processes hold it at
    /// once, and a record of the name that only dead processes held is removed first.
    pub fn create_in(name: &str, dtype: Dtype, shape: &[u64], backing: Backing) -> Result<Self> {
        let seg_name = array_segment_name(name)?;
        let (len, byte_len) = size_of_array(dtype, shape)?;
        let backing = backing.check()?;
        let mut segment = create_segment(&seg_name, DATA_OFFSET + byte_len, backing)?;
        let nonce = rand::random::<u64>() | 1;
        // SAFETY: the body is DATA_OFFSET + byte_len bytes, zero-filled by the OS and aligned to
        // 128 bytes; the header is all atomics and fits before LOCK_OFFSET.
        let h = unsafe { &*(segment.body_ptr() as *const ArrayHeader) };
        h.magic.store(ARRAY_MAGIC, Ordering::Relaxed);
        h.version.store(ARRAY_LAYOUT_VERSION, Ordering::Relaxed);
        h.dtype.store(dtype.code(), Ordering::Relaxed);
        h.ndim.store(shape.len() as u32, Ordering::Relaxed);
        h.byte_len.store(byte_len, Ordering::Relaxed);
        h.data_offset.store(DATA_OFFSET, Ordering::Relaxed);
        h.nonce.store(nonce, Ordering::Relaxed);
        for (slot, &d) in h.shape.iter().zip(shape) {
            slot.store(d, Ordering::Relaxed);
        }
        segment.publish_ready();
        if backing == Backing::Shm {
            // The array outlives its creator's handle: it is removed by name, not on drop.
            segment.disown();
        }
        Ok(Self::from_parts(
            segment,
            name,
            dtype,
            shape.to_vec(),
            len,
            byte_len,
            nonce,
        ))
    }

    /// Attaches to the array `name`: dtype and shape come from the segment.
    ///
    /// Fails with [`Error::NotFound`] if there is no such array, [`Error::BadSegment`] if the
    /// segment is not a shared array of this layout version or is inconsistent.
    pub fn open(name: &str) -> Result<Self> {
        let seg_name = array_segment_name(name)?;
        let segment = Segment::open(&seg_name, SegmentKind::Array, OPEN_READY_TIMEOUT)?;
        let bad = |reason| Error::BadSegment {
            name: seg_name.clone(),
            reason,
        };
        let body_len = segment.body_len() as u64;
        if body_len < DATA_OFFSET {
            return Err(bad(BadSegmentReason::TooSmall));
        }
        // SAFETY: the body holds at least DATA_OFFSET bytes (checked above), so the header fits;
        // it is all atomics, valid for any bytes.
        let h = unsafe { &*(segment.body_ptr() as *const ArrayHeader) };
        if h.magic.load(Ordering::Relaxed) != ARRAY_MAGIC {
            return Err(bad(BadSegmentReason::BadMagic));
        }
        if h.version.load(Ordering::Relaxed) != ARRAY_LAYOUT_VERSION {
            return Err(bad(BadSegmentReason::IncompatibleVersion));
        }
        let dtype = Dtype::from_code(h.dtype.load(Ordering::Relaxed))
            .ok_or_else(|| bad(BadSegmentReason::Corrupt))?;
        let ndim = h.ndim.load(Ordering::Relaxed) as usize;
        if !(1..=MAX_NDIM).contains(&ndim) {
            return Err(bad(BadSegmentReason::Corrupt));
        }
        let shape: Vec<u64> = h.shape[..ndim]
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect();
        let (len, byte_len) =
            size_of_array(dtype, &shape).map_err(|_| bad(BadSegmentReason::Corrupt))?;
        if h.byte_len.load(Ordering::Relaxed) != byte_len
            || h.data_offset.load(Ordering::Relaxed) != DATA_OFFSET
        {
            return Err(bad(BadSegmentReason::Corrupt));
        }
        if body_len < DATA_OFFSET + byte_len {
            return Err(bad(BadSegmentReason::TooSmall));
        }
        let nonce = h.nonce.load(Ordering::Relaxed);
        Ok(Self::from_parts(
            segment, name, dtype, shape, len, byte_len, nonce,
        ))
    }

    fn from_parts(
        segment: Segment,
        name: &str,
        dtype: Dtype,
        shape: Vec<u64>,
        len: u64,
        byte_len: u64,
        nonce: u64,
    ) -> Self {
        let body = segment.body_ptr();
        // SAFETY: the body is at least DATA_OFFSET + byte_len bytes (by construction in
        // `create`, checked in `open`), so both offsets are inside it.
        let (lock, data) = unsafe {
            (
                body.add(LOCK_OFFSET) as *const LockWord,
                body.add(DATA_OFFSET as usize),
            )
        };
        Self {
            map: Arc::new(Mapping {
                segment,
                lock,
                data,
            }),
            name: name.to_owned(),
            dtype,
            shape,
            len,
            byte_len,
            nonce,
            holder: LockHolder::new(),
        }
    }

    /// Removes the array `name`: no process can attach to it any more, and its memory is freed
    /// once every process has unmapped it (handles already open keep working).
    pub fn remove(name: &str) -> Result<()> {
        Segment::remove(&array_segment_name(name)?)
    }

    /// Removes the array `name` only if it is still the one created with `nonce` (see
    /// [`nonce`](Self::nonce)), not another array created later under the same name. Returns
    /// whether it removed it. The check and the removal are two steps: a removal and re-creation
    /// by another process between them is not detected.
    pub fn remove_if_same(name: &str, nonce: u64) -> Result<bool> {
        match Self::open(name) {
            Ok(a) if a.nonce == nonce => match Self::remove(name) {
                Ok(()) => Ok(true),
                Err(Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            },
            Ok(_) | Err(Error::NotFound { .. }) | Err(Error::BadSegment { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The names of the shared arrays that exist now, sorted.
    ///
    /// Linux lists `/dev/shm`. Other systems offer no way to enumerate POSIX shared memory:
    /// there this fails with [`Error::Unsupported`].
    pub fn list() -> Result<Vec<String>> {
        #[cfg(target_os = "linux")]
        {
            let entries = std::fs::read_dir("/dev/shm").map_err(|e| Error::Os {
                op: "read /dev/shm",
                code: e.raw_os_error().unwrap_or(0),
            })?;
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|n| n.strip_prefix(ARRAY_NAME_PREFIX).map(str::to_owned))
                .filter(|n| validate_array_name(n).is_ok())
                .collect();
            names.sort();
            Ok(names)
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(Error::Unsupported {
                op: "listing shared arrays",
            })
        }
    }

    /// The array's name (as given to [`create`](Self::create), without the segment prefix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the segment behind the array (`shmpipe_a_` + name; on Linux, the file in
    /// `/dev/shm`).
    pub fn segment_name(&self) -> &str {
        self.map.segment.name()
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The shape (row-major: the last index varies fastest).
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Number of elements (the product of the shape).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: every array has at least one element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size of the data in bytes.
    pub fn byte_len(&self) -> u64 {
        self.byte_len
    }

    /// A random number chosen at creation, telling this array from a later one of the same name.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// Where the array's memory lives.
    pub fn backing(&self) -> Backing {
        self.map.segment.backing()
    }

    /// Pointer to the first element: [`byte_len`](Self::byte_len) bytes, aligned to 64 bytes,
    /// valid while this handle (or a clone of the mapping held elsewhere) lives.
    ///
    /// Other processes may write this memory at any time; synchronise through the lock (or your
    /// own protocol) before reading what they wrote.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.data
    }

    /// Keeps the mapping alive as long as the returned value lives (for views handed to other
    /// owners, such as a JavaScript ArrayBuffer).
    pub fn keep_alive(&self) -> Arc<dyn Send + Sync> {
        self.map.clone()
    }

    /// Takes the lock, waiting as `opts` allows; a holder whose process died is taken over.
    ///
    /// Fails with [`Error::AlreadyLocked`] if this handle holds the lock or is waiting for it,
    /// [`Error::Timeout`], [`Error::Interrupted`] (cancel token), or [`Error::Closed`] after
    /// [`close_lock`](Self::close_lock).
    pub fn lock(&self, opts: &WaitOptions) -> Result<Acquired> {
        self.holder.lock(self.map.lock(), opts)
    }

    /// Takes the lock if it is free or its holder died; `None` if a live holder has it.
    pub fn try_lock(&self) -> Result<Option<Acquired>> {
        self.holder.try_lock(self.map.lock())
    }

    /// Releases the lock; [`Error::LockNotHeld`] if this handle does not hold it.
    pub fn unlock(&self) -> Result<()> {
        self.holder.unlock(self.map.lock())
    }

    /// Whether this handle holds the lock.
    pub fn holds_lock(&self) -> bool {
        self.holder.holds()
    }

    /// The pid of the process holding the lock now (0: free), for diagnostics.
    pub fn lock_holder_pid(&self) -> u32 {
        self.map.lock().holder_pid()
    }

    /// How many times the lock was recovered from a holder that went away without unlocking,
    /// over the array's life.
    pub fn lock_recoveries(&self) -> u64 {
        self.map.lock().recoveries()
    }

    /// Ends this handle's use of the lock: releases it if held (the next holder is told it was
    /// recovered), and makes later lock calls fail with [`Error::Closed`].
    pub fn close_lock(&self) {
        self.holder.close(self.map.lock())
    }

    /// A token that interrupts lock waits given it (with [`Error::Interrupted`]).
    pub fn cancel_token(&self) -> CancelToken {
        CancelToken::new(vec![self.map.lock().event() as *const _], self.map.clone())
    }
}

impl Drop for SharedArray {
    fn drop(&mut self) {
        self.close_lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A unique array name for one test, removed when the guard drops.
    struct Name(String);

    impl Name {
        fn new(tag: &str) -> Self {
            Self(format!("t{tag}{:08x}", rand::random::<u32>()))
        }
    }

    impl Drop for Name {
        fn drop(&mut self) {
            let _ = SharedArray::remove(&self.0);
        }
    }

    #[test]
    fn create_attach_share_and_remove() {
        let n = Name::new("share");
        let a = SharedArray::create(&n.0, Dtype::Float64, &[3, 4]).unwrap();
        assert_eq!((a.len(), a.byte_len()), (12, 96));
        assert_eq!(a.as_ptr() as usize % 64, 0);
        // SAFETY: the data is 12 f64s, aligned; nothing else writes it in this test.
        unsafe { (a.as_ptr() as *mut f64).add(11).write(2.5) };
        let b = SharedArray::open(&n.0).unwrap();
        assert_eq!(b.dtype(), Dtype::Float64);
        assert_eq!(b.shape(), &[3, 4]);
        assert_eq!(b.nonce(), a.nonce());
        // SAFETY: as above, through the second mapping.
        assert_eq!(unsafe { (b.as_ptr() as *const f64).add(11).read() }, 2.5);
        drop(a); // the creator's handle does not remove the array
        assert!(SharedArray::open(&n.0).is_ok());
        assert!(SharedArray::list().unwrap().contains(&n.0));
        SharedArray::remove(&n.0).unwrap();
        assert!(!SharedArray::list().unwrap().contains(&n.0));
        assert!(matches!(
            SharedArray::open(&n.0),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            SharedArray::remove(&n.0),
            Err(Error::NotFound { .. })
        ));
        // SAFETY: `b` still maps the removed array.
        assert_eq!(unsafe { (b.as_ptr() as *const f64).add(11).read() }, 2.5);
    }

    #[test]
    fn creation_is_exclusive() {
        let n = Name::new("excl");
        let _a = SharedArray::create(&n.0, Dtype::Uint8, &[1]).unwrap();
        assert!(matches!(
            SharedArray::create(&n.0, Dtype::Uint8, &[1]),
            Err(Error::AlreadyExists { .. })
        ));
    }

    #[test]
    fn every_dtype_keeps_its_code_name_and_size() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_code(d.code()), Some(d));
            assert_eq!(Dtype::from_name(d.name()), Some(d));
            let n = Name::new(&format!("d{}", d.code()));
            let a = SharedArray::create(&n.0, d, &[2, 3, 5]).unwrap();
            assert_eq!(a.byte_len(), 30 * d.item_size());
            let b = SharedArray::open(&n.0).unwrap();
            assert_eq!((b.dtype(), b.shape(), b.len()), (d, &[2, 3, 5][..], 30));
        }
        assert_eq!(Dtype::from_code(0), None);
        assert_eq!(Dtype::from_name("float16"), None);
    }

    #[test]
    fn bad_names_and_shapes_are_rejected() {
        for bad in ["", "a/b", "sp ace", "ünï", &"x".repeat(21)] {
            assert!(
                matches!(
                    SharedArray::create(bad, Dtype::Uint8, &[1]),
                    Err(Error::InvalidArgument { name: "name", .. })
                ),
                "{bad:?}"
            );
            assert!(matches!(
                SharedArray::open(bad),
                Err(Error::InvalidArgument { .. })
            ));
        }
        let n = Name::new("shape");
        for shape in [&[][..], &[0], &[3, 0], &[1; 33]] {
            assert!(
                matches!(
                    SharedArray::create(&n.0, Dtype::Uint8, shape),
                    Err(Error::InvalidArgument { name: "shape", .. })
                ),
                "{shape:?}"
            );
        }
        for shape in [&[u64::MAX, 2][..], &[1 << 62], &[1 << 40, 1 << 30]] {
            assert!(
                matches!(
                    SharedArray::create(&n.0, Dtype::Float64, shape),
                    Err(Error::TooLarge { .. })
                ),
                "{shape:?}"
            );
        }
        assert!(SharedArray::list().unwrap().iter().all(|x| x != &n.0));
        let max = "m".repeat(MAX_ARRAY_NAME_LEN);
        let _cleanup = Name(max.clone());
        SharedArray::create(&max, Dtype::Uint8, &[1]).unwrap();
        assert_eq!(
            array_segment_name(&max).unwrap().len(),
            crate::name::MAX_NAME_LEN
        );
    }

    #[test]
    fn other_segments_and_versions_are_bad_segments() {
        let n = Name::new("kind");
        let seg_name = array_segment_name(&n.0).unwrap();
        {
            let seg = Segment::create_named(&seg_name, SegmentKind::Blob, 4096).unwrap();
            seg.publish_ready();
            assert!(matches!(
                SharedArray::open(&n.0),
                Err(Error::BadSegment {
                    reason: BadSegmentReason::WrongKind,
                    ..
                })
            ));
        } // the blob segment is removed here (its creator's handle owns it)
        let a = SharedArray::create(&n.0, Dtype::Int32, &[4]).unwrap();
        // SAFETY: the header is at the start of the body; its fields are atomics.
        let h = unsafe { &*(a.map.segment.body_ptr() as *const ArrayHeader) };
        h.version.store(ARRAY_LAYOUT_VERSION + 1, Ordering::Relaxed);
        assert!(matches!(
            SharedArray::open(&n.0),
            Err(Error::BadSegment {
                reason: BadSegmentReason::IncompatibleVersion,
                ..
            })
        ));
        h.version.store(ARRAY_LAYOUT_VERSION, Ordering::Relaxed);
        h.shape[0].store(1 << 20, Ordering::Relaxed);
        assert!(matches!(
            SharedArray::open(&n.0),
            Err(Error::BadSegment {
                reason: BadSegmentReason::Corrupt,
                ..
            })
        ));
    }

    #[test]
    fn remove_if_same_spares_a_recreated_array() {
        let n = Name::new("same");
        let first = SharedArray::create(&n.0, Dtype::Uint8, &[1]).unwrap();
        let nonce = first.nonce();
        SharedArray::remove(&n.0).unwrap();
        let second = SharedArray::create(&n.0, Dtype::Uint8, &[1]).unwrap();
        assert!(!SharedArray::remove_if_same(&n.0, nonce).unwrap());
        assert!(SharedArray::open(&n.0).is_ok());
        assert!(SharedArray::remove_if_same(&n.0, second.nonce()).unwrap());
        assert!(!SharedArray::remove_if_same(&n.0, second.nonce()).unwrap());
    }

    #[test]
    fn handles_lock_each_other_out_and_a_dropped_holder_is_reported() {
        let n = Name::new("lock");
        let a = SharedArray::create(&n.0, Dtype::BigUint64, &[1]).unwrap();
        let b = SharedArray::open(&n.0).unwrap();
        assert!(!a.lock(&WaitOptions::forever()).unwrap().recovered);
        assert_eq!(b.try_lock().unwrap(), None);
        assert_eq!(b.lock_holder_pid(), std::process::id());
        assert!(matches!(b.unlock(), Err(Error::LockNotHeld)));
        drop(a);
        let got = b.try_lock().unwrap().unwrap();
        assert!(got.recovered, "the dropped holder is reported");
        assert_eq!(b.lock_recoveries(), 1);
        b.unlock().unwrap();
        assert_eq!(b.segment_name(), format!("shmpipe_a_{}", n.0));
    }

    #[test]
    fn a_cancel_token_interrupts_a_lock_wait() {
        let n = Name::new("cancel");
        let a = SharedArray::create(&n.0, Dtype::Uint8, &[1]).unwrap();
        let b = Arc::new(SharedArray::open(&n.0).unwrap());
        a.lock(&WaitOptions::forever()).unwrap();
        let token = b.cancel_token();
        let opts = WaitOptions::forever().with_cancel(token.clone());
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.lock(&opts));
        std::thread::sleep(Duration::from_millis(50));
        token.cancel();
        assert!(matches!(t.join().unwrap(), Err(Error::Interrupted)));
        assert!(!b.holds_lock());
        a.unlock().unwrap();
        assert!(b.try_lock().unwrap().is_some());
    }

    #[test]
    fn threads_with_their_own_handles_keep_a_counter_exact() {
        let n = Name::new("count");
        let a = SharedArray::create(&n.0, Dtype::BigUint64, &[1]).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let name = n.0.clone();
                std::thread::spawn(move || {
                    let h = SharedArray::open(&name).unwrap();
                    // SAFETY: one aligned u64; only accessed under the lock.
                    let cell = unsafe { &*(h.as_ptr() as *const AtomicU64) };
                    for _ in 0..10_000 {
                        h.lock(&WaitOptions::forever()).unwrap();
                        let v = cell.load(Ordering::Relaxed);
                        cell.store(v + 1, Ordering::Relaxed);
                        h.unlock().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: as above.
        assert_eq!(unsafe { (a.as_ptr() as *const u64).read() }, 40_000);
    }
}
