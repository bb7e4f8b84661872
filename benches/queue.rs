//! Criterion benchmarks of the shmpipe queue.
//!
//! - `spsc_in_process/{shmpipe,crossbeam_ArrayQueue,rtrb}/{8,64,4096}`: one producer thread and one
//!   consumer thread in this process; time per message (so Criterion prints messages/s). Ours
//!   sends with `send` (a copy in) and receives with `recv_with` (read in place, then released).
//! - `stream_1MiB/cross_process_stream_1MiB`: a `shmpipe-peer stream` child sends 1 MiB messages
//!   (one copy in); this process receives each and copies it out into a preallocated buffer (one
//!   copy out). Compared with `memcpy_1MiB` (cache-hot buffers) and `memcpy_1MiB_src64MiB` (the
//!   source rotates across 64 MiB, more than the last-level cache).
//! - `copy_1MB_into_64MiB/{plain,streamed}/dst+{0,8,16,24}`: copying 1 MB (the Node benchmark's
//!   size) from a buffer into a 64 MiB region (a ring larger than the cache), the destination
//!   rotating through it, `+N` bytes past a 64-byte boundary while the source sits 16 bytes past
//!   one (glibc's blocks do): `copy_from_slice` (glibc `memcpy`) against
//!   `shmpipe_core::copy_to_shared` with streaming stores, what a producer uses for large
//!   messages into a ring of that size (`crates/core/src/copy.rs`).
//! - `cross_process_ping_pong/{blocking_spin0,blocking_spin0_one_cpu,default_spin}`: a 64-byte
//!   round trip through a `shmpipe-peer echo` child over two queues; `_one_cpu` pins both
//!   processes to CPU 0. Then `…/round_trip` lines: 20,000 blocking round trips timed one by one,
//!   their median (the bar) and spread.
//!
//! - Linux: `stream_1MiB/cross_process_stream_1MiB_{shm,memfd}` and
//!   `cross_process_ping_pong/default_spin_{shm,memfd}`: the same stream and default-spin round
//!   trip with the queues' memory in each backing (a named `/dev/shm` segment, sealed memfd memory);
//!   the ids without a suffix use the default backing ([`Backing::for_pipes`]).
//!
//! Set `SHMPIPE_BENCH_STREAM_SWEEP=1` to also measure the stream with other queue sizes (4 to
//! 64 MiB), and `SHMPIPE_STREAM_COPIES=always` or `never` to override when the producer streams
//! its copies past the cache (`crates/core/src/copy.rs`; by default only into a ring larger than
//! half the last-level cache).
//!
//! Every child process is closed (or killed) and reaped, and every queue segment removed, before
//! the run ends.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use shmpipe_core::{Backing, Consumer, Producer, Queue, QueueOptions, WaitOptions};
use std::hint::spin_loop;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

const PEER: &str = env!("CARGO_BIN_EXE_shmpipe-peer");
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// A child process that is always reaped.

struct Peer {
    child: Option<Child>,
}

impl Peer {
    /// Spawns `shmpipe-peer ARGS…`; if `ready` is set, waits for the child's `ready` line.
    fn spawn(args: &[&str], ready: bool) -> Self {
        let mut child = Command::new(PEER)
            .args(args)
            .stdin(Stdio::null())
            .stdout(if ready { Stdio::piped() } else { Stdio::null() })
            .spawn()
            .expect("spawn shmpipe-peer");
        if ready {
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .expect("read the peer's first line");
            assert_eq!(line.trim(), "ready", "peer {args:?} said {line:?}");
        }
        Self { child: Some(child) }
    }

    /// Waits for the child to exit on its own (its queues were closed), killing it after a grace
    /// period.
    fn finish(mut self) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("warning: shmpipe-peer exited with {status}");
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
                _ => {
                    eprintln!("warning: shmpipe-peer did not exit on close; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Only reached without `finish` (a panic): never leave the child behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn queue(capacity: u32, bytes: u64, max_producers: u32) -> Queue {
    queue_in(capacity, bytes, max_producers, default_backing())
}

/// A queue whose memory is in `backing`.
fn queue_in(capacity: u32, bytes: u64, max_producers: u32, backing: Backing) -> Queue {
    let opts = QueueOptions {
        capacity,
        bytes,
        max_producers,
    };
    Queue::create_in(&opts, backing).expect("create queue")
}

/// The backing a queue gets by default (`SHMPIPE_BACKING`, else the platform's).
fn default_backing() -> Backing {
    Backing::for_pipes().expect("SHMPIPE_BACKING")
}

/// The backings compared by the `…_shm` / `…_memfd` benchmarks (Linux only: memfd is Linux's).
#[cfg(target_os = "linux")]
const BACKINGS: [Backing; 2] = [Backing::Shm, Backing::Memfd];

// ---------------------------------------------------------------------------------------------
// 1. In-process SPSC throughput.

/// Queue sizes for the in-process runs: at most 4096 messages and 1 MiB of inline data (each
/// record is a 32-byte header plus the payload rounded up to 32 bytes).
const SPSC_CAPACITY: u32 = 4096;
const SPSC_BYTES: u64 = MIB as u64;

/// Messages our queue holds at once for `n`-byte payloads: the reference queues get the same.
fn spsc_slots(n: usize) -> usize {
    let record = 32 + n.div_ceil(32) * 32;
    (SPSC_CAPACITY as usize).min(SPSC_BYTES as usize / record)
}

/// Runs `producer` on this thread and `consumer` on another, both released at once; returns the
/// time from the start until the consumer has taken its last message.
fn two_threads(producer: impl FnOnce(), consumer: impl FnOnce() + Send) -> Duration {
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let barrier = &barrier;
        let handle = s.spawn(move || {
            barrier.wait();
            consumer();
            Instant::now()
        });
        barrier.wait();
        let start = Instant::now();
        producer();
        handle.join().expect("consumer thread") - start
    })
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn spsc_shmpipe(group: &mut Group<'_>, n: usize) {
    // Created lazily so that a filtered-out benchmark makes no segment.
    let mut state: Option<(Producer, Consumer, Queue)> = None;
    let msg = vec![0x5Au8; n];
    let wait = WaitOptions::forever(); // blocking waits with the default spin
    group.bench_with_input(BenchmarkId::new("shmpipe", n), &n, |b, _| {
        let (p, cons, _) = state.get_or_insert_with(|| {
            let q = queue(SPSC_CAPACITY, SPSC_BYTES, 1);
            (q.producer().unwrap(), q.consumer().unwrap(), q)
        });
        b.iter_custom(|iters| {
            two_threads(
                || {
                    for _ in 0..iters {
                        p.send(&msg, &wait).unwrap();
                    }
                },
                || {
                    for _ in 0..iters {
                        cons.recv_with(&wait, |bytes| {
                            black_box(bytes);
                        })
                        .unwrap();
                    }
                },
            )
        });
    });
}

fn spsc_crossbeam<const N: usize>(group: &mut Group<'_>) {
    let mut q: Option<ArrayQueue<[u8; N]>> = None;
    group.bench_with_input(BenchmarkId::new("crossbeam_ArrayQueue", N), &N, |b, _| {
        let q = &*q.get_or_insert_with(|| ArrayQueue::new(spsc_slots(N)));
        b.iter_custom(|iters| {
            two_threads(
                || {
                    // Built once: a black-boxed array built per message is copied byte by byte.
                    let msg: [u8; N] = *black_box(&[0x5Au8; N]);
                    for _ in 0..iters {
                        while q.push(msg).is_err() {
                            // Spin on the cheap check, not on push (which copies the message).
                            while q.is_full() {
                                spin_loop();
                            }
                        }
                    }
                },
                || {
                    for _ in 0..iters {
                        loop {
                            if let Some(v) = q.pop() {
                                black_box(&v);
                                break;
                            }
                            spin_loop();
                        }
                    }
                },
            )
        });
    });
}

fn spsc_rtrb<const N: usize>(group: &mut Group<'_>) {
    type Ends<T> = (rtrb::Producer<T>, rtrb::Consumer<T>);
    let mut state: Option<Ends<[u8; N]>> = None;
    group.bench_with_input(BenchmarkId::new("rtrb", N), &N, |b, _| {
        let (p, cons) = state.get_or_insert_with(|| rtrb::RingBuffer::new(spsc_slots(N)));
        b.iter_custom(|iters| {
            two_threads(
                || {
                    let msg: [u8; N] = *black_box(&[0x5Au8; N]);
                    for _ in 0..iters {
                        while p.push(msg).is_err() {
                            while p.is_full() {
                                spin_loop();
                            }
                        }
                    }
                },
                || {
                    for _ in 0..iters {
                        loop {
                            if let Ok(v) = cons.pop() {
                                black_box(&v);
                                break;
                            }
                            spin_loop();
                        }
                    }
                },
            )
        });
    });
}

fn spsc_in_process(c: &mut Criterion) {
    let mut group = c.benchmark_group("spsc_in_process");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(40)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    spsc_shmpipe(&mut group, 8);
    spsc_crossbeam::<8>(&mut group);
    spsc_rtrb::<8>(&mut group);
    spsc_shmpipe(&mut group, 64);
    spsc_crossbeam::<64>(&mut group);
    spsc_rtrb::<64>(&mut group);
    spsc_shmpipe(&mut group, 4096);
    spsc_crossbeam::<4096>(&mut group);
    spsc_rtrb::<4096>(&mut group);
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. Cross-process stream of 1 MiB messages, against memcpy.

/// The stream's queue: 4 MiB of inline data (messages up to 2 MiB stay inline), so three 1 MiB
/// messages fit at once; the message capacity (8) does not bind. Chosen with
/// `SHMPIPE_BENCH_STREAM_SWEEP=1`: rings of 4 MiB did best here (capacity 2 the same within
/// noise), 8 MiB a little slower, 16 MiB clearly slower and 32 MiB (past the 32 MiB L3 with the
/// rest of the working set) three times slower.
const STREAM_CAPACITY: u32 = 8;
const STREAM_BYTES: u64 = 4 * MIB as u64;

/// A `shmpipe-peer stream` child feeding a queue this process consumes.
struct Stream {
    consumer: Option<Consumer>,
    peer: Option<Peer>,
    _queue: Queue,
}

impl Stream {
    fn start(capacity: u32, bytes: u64, backing: Backing) -> Self {
        let queue = queue_in(capacity, bytes, 1, backing);
        let consumer = queue.consumer().unwrap();
        let peer = Peer::spawn(&["stream", queue.name(), &MIB.to_string()], false);
        Self {
            consumer: Some(consumer),
            peer: Some(peer),
            _queue: queue,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Closing the consumer makes the child's send fail with Closed, so it exits.
        drop(self.consumer.take());
        if let Some(peer) = self.peer.take() {
            peer.finish();
        }
    }
}

fn bench_stream(group: &mut Group<'_>, id: &str, capacity: u32, bytes: u64, backing: Backing) {
    let mut stream: Option<Stream> = None;
    let mut dst = vec![0xA5u8; MIB];
    let wait = WaitOptions::forever();
    group.bench_function(id, |b| {
        let s = stream.get_or_insert_with(|| Stream::start(capacity, bytes, backing));
        let consumer = s.consumer.as_mut().unwrap();
        b.iter(|| {
            let m = consumer.recv(&wait).unwrap();
            dst.copy_from_slice(m.as_slice());
            black_box(&mut dst);
        });
    });
    drop(stream);
}

fn stream_1mib(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_1MiB");
    group
        .throughput(Throughput::Bytes(MIB as u64))
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    bench_stream(
        &mut group,
        "cross_process_stream_1MiB",
        STREAM_CAPACITY,
        STREAM_BYTES,
        default_backing(),
    );
    #[cfg(target_os = "linux")]
    for backing in BACKINGS {
        let id = format!("cross_process_stream_1MiB_{}", backing.as_str());
        bench_stream(&mut group, &id, STREAM_CAPACITY, STREAM_BYTES, backing);
    }
    if std::env::var_os("SHMPIPE_BENCH_STREAM_SWEEP").is_some() {
        // Not swept: under 4 MiB of data a 1 MiB message no longer fits inline and takes the blob
        // path (about 20x slower here), and blobs still queued when the consumer closes leave
        // their segments in /dev/shm.
        for (capacity, mib) in [(2u32, 4u64), (4, 8), (8, 8), (8, 16), (16, 32), (32, 64)] {
            let id = format!("cross_process_stream_1MiB_cap{capacity}_{mib}MiB");
            bench_stream(
                &mut group,
                &id,
                capacity,
                mib * MIB as u64,
                default_backing(),
            );
        }
    }

    // Both buffers cache-hot (2 MiB together: this machine's L2 per core).
    let src = vec![0x5Au8; MIB]; // non-zero, so the pages are real, not the shared zero page
    let mut dst = vec![0xA5u8; MIB];
    group.bench_function("memcpy_1MiB", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        });
    });
    drop(src);

    // The source rotates across 64 MiB, twice the last-level cache, so each copy reads memory.
    let big = vec![0x5Au8; 64 * MIB];
    let mut at = 0;
    group.bench_function("memcpy_1MiB_src64MiB", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&big[at..at + MIB]));
            black_box(&mut dst);
            at = (at + MIB) % big.len();
        });
    });
    group.finish();
}

/// 1 MB copies into a 64 MiB region: plain `memcpy` against streamed, at three alignments.
fn copy_1mb_into_64mib(c: &mut Criterion) {
    const LEN: usize = 1_000_000;
    const REGION: usize = 64 * MIB;
    let mut group = c.benchmark_group("copy_1MB_into_64MiB");
    group
        .throughput(Throughput::Bytes(LEN as u64))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    // The source 16 bytes past a 64-byte boundary, as a glibc block of this size is.
    let src_block = vec![0x5Au8; LEN + 128];
    let src_at = 16 + (64 - src_block.as_ptr() as usize % 64) % 64;
    let src = &src_block[src_at..src_at + LEN];
    let mut region = vec![0xA5u8; REGION + 128]; // non-zero: real pages, not the zero page
    let base = (64 - region.as_ptr() as usize % 64) % 64;
    let slots = REGION / LEN.next_multiple_of(4096);
    for streamed in [false, true] {
        for misalign in [0usize, 8, 16, 24] {
            let id = format!(
                "{}/dst+{misalign}",
                if streamed { "streamed" } else { "plain" }
            );
            let mut slot = 0;
            group.bench_function(id, |b| {
                b.iter(|| {
                    let at = base + slot * LEN.next_multiple_of(4096) + misalign;
                    let dst = &mut region[at..at + LEN];
                    if streamed {
                        shmpipe_core::copy_to_shared(dst, black_box(src), u64::MAX);
                    } else {
                        dst.copy_from_slice(black_box(src));
                    }
                    black_box(&mut region);
                    slot = (slot + 1) % slots;
                });
            });
        }
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Cross-process round trip.

/// Our ends of the two queues of an `echo` child: we send on `a`, it answers on `b`.
struct Echo {
    producer: Option<Producer>,
    consumer: Option<Consumer>,
    peer: Option<Peer>,
    _queues: (Queue, Queue),
}

impl Echo {
    fn start(peer_spin: u32, cpu: Option<usize>, backing: Backing) -> Self {
        let a = queue_in(64, 64 << 10, 1, backing);
        let b = queue_in(64, 64 << 10, 1, backing);
        let producer = a.producer().unwrap();
        let spin = peer_spin.to_string();
        let cpu = cpu.map(|c| c.to_string());
        let mut args = vec!["echo", a.name(), b.name(), &spin];
        args.extend(cpu.as_deref());
        let peer = Peer::spawn(&args, true);
        let consumer = b.consumer().unwrap();
        Self {
            producer: Some(producer),
            consumer: Some(consumer),
            peer: Some(peer),
            _queues: (a, b),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // Closing our producer ends the child's receive loop with Closed; then it exits.
        drop(self.producer.take());
        if let Some(peer) = self.peer.take() {
            peer.finish();
        }
        drop(self.consumer.take());
    }
}

/// This thread's CPU affinity, to put back after pinning (Linux).
#[cfg(target_os = "linux")]
fn affinity() -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        set
    }
}

#[cfg(target_os = "linux")]
fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t; sched_setaffinity only reads it.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
}

/// Runs this thread and the echo child on CPU 0 only while the benchmark runs.
#[cfg(target_os = "linux")]
fn on_cpu0<T>(f: impl FnOnce() -> T) -> T {
    let before = affinity();
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    let cpu0 = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        set
    };
    set_affinity(&cpu0);
    let out = f();
    set_affinity(&before);
    out
}

fn bench_ping_pong(
    group: &mut Group<'_>,
    id: &str,
    peer_spin: u32,
    wait: WaitOptions,
    cpu: Option<usize>,
    backing: Backing,
) {
    let mut echo: Option<Echo> = None;
    let msg = [0x5Au8; 64];
    group.bench_function(id, |b| {
        let e = echo.get_or_insert_with(|| Echo::start(peer_spin, cpu, backing));
        let (p, c) = (e.producer.as_mut().unwrap(), e.consumer.as_mut().unwrap());
        b.iter(|| {
            p.send(&msg, &wait).unwrap();
            let m = c.recv(&wait).unwrap();
            assert_eq!(m.len(), msg.len());
        });
    });
    drop(echo);
}

fn cross_process_ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_process_ping_pong");
    group
        .sample_size(100)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    // Pure blocking waits on both sides: no spinning, a wait that finds nothing goes straight to
    // the sleep path (the crate's health check, then the futex).
    bench_ping_pong(
        &mut group,
        "blocking_spin0",
        0,
        WaitOptions::forever().with_spin(0),
        None,
        default_backing(),
    );
    // The same with both processes on one CPU: a wake-up then needs no inter-processor
    // interrupt to a halted vCPU (on this VM the dominant cost of a cross-CPU futex wake-up),
    // only a context switch.
    #[cfg(target_os = "linux")]
    on_cpu0(|| {
        bench_ping_pong(
            &mut group,
            "blocking_spin0_one_cpu",
            0,
            WaitOptions::forever().with_spin(0),
            Some(0),
            default_backing(),
        )
    });
    // For comparison: the crate's default spin (WaitOptions spin None) on both sides.
    bench_ping_pong(
        &mut group,
        "default_spin",
        shmpipe_core::tuning::DEFAULT_SPIN,
        WaitOptions::forever(),
        None,
        default_backing(),
    );
    #[cfg(target_os = "linux")]
    for backing in BACKINGS {
        bench_ping_pong(
            &mut group,
            &format!("default_spin_{}", backing.as_str()),
            shmpipe_core::tuning::DEFAULT_SPIN,
            WaitOptions::forever(),
            None,
            backing,
        );
    }
    group.finish();
    if selected("cross_process_ping_pong") {
        // Criterion reports means over batches; the bar is on the median round trip.
        ping_pong_distribution("blocking_spin0", None);
        #[cfg(target_os = "linux")]
        on_cpu0(|| ping_pong_distribution("blocking_spin0_one_cpu", Some(0)));
    }
}

/// Whether the command line's benchmark filter (if any) selects `group`.
fn selected(group: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| group.contains(f.as_str()) || f.contains(group))
}

/// Times 20,000 blocking round trips one by one and prints their median and spread.
fn ping_pong_distribution(id: &str, cpu: Option<usize>) {
    const ROUND_TRIPS: usize = 20_000;
    let mut echo = Echo::start(0, cpu, default_backing());
    let (p, c) = (
        echo.producer.as_mut().unwrap(),
        echo.consumer.as_mut().unwrap(),
    );
    let wait = WaitOptions::forever().with_spin(0);
    let msg = [0x5Au8; 64];
    let mut micros = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 1000 {
        let start = Instant::now();
        p.send(&msg, &wait).unwrap();
        c.recv_with(&wait, |m| assert_eq!(m.len(), msg.len()))
            .unwrap();
        if i >= 1000 {
            micros.push(start.elapsed().as_secs_f64() * 1e6); // after 1,000 to warm up
        }
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
    println!(
        "cross_process_ping_pong/{id}/round_trip  median {:.1} µs  p10 {:.1} µs  p90 {:.1} µs  \
         p99 {:.1} µs  ({ROUND_TRIPS} round trips)",
        at(0.5),
        at(0.1),
        at(0.9),
        at(0.99)
    );
}

criterion_group!(
    benches,
    spsc_in_process,
    stream_1mib,
    copy_1mb_into_64mib,
    cross_process_ping_pong
);
criterion_main!(benches);
