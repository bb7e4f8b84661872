//! Test and benchmark peer: plays one side of a queue in its own process, so that tests and
//! benches exercise real cross-process shared memory. Not part of the library's API.
//!
//! Roles (all take the queue name first):
//! - `produce NAME ID COUNT MIN MAX SEED`: sends COUNT pattern messages of random payload sizes in
//!   MIN..=MAX, then waits for all acks and prints `acked`.
//! - `produce-huge NAME ID BYTES [stall]`: sends one pattern message of BYTES payload; prints
//!   `writing BLOB-NAME|inline` once the space is reserved and `sent` after commit. With `stall`,
//!   it writes the first half, prints `stalled` and sleeps until killed (a death mid-write).
//! - `stream NAME BYTES`: sends BYTES-long messages until the consumer closes.
//! - `produce-until-killed NAME ID MIN MAX SEED`: registers (retrying for up to 10 s while every
//!   producer slot is taken), prints `ready`, then sends pattern messages of random payload sizes
//!   in MIN..=MAX until the consumer closes or the process is killed.
//! - `stream-for NAME MILLIS`: sends pattern messages of random sizes (some larger than half the
//!   ring) with 20 ms timeouts for MILLIS ms, ignoring every error (the queue may be corrupt),
//!   then prints `done N`.
//! - `corrupt NAME SEED MILLIS`: writes random bytes at random places of the queue segment (its
//!   control block, producer entries and data area) for MILLIS ms, then prints `wrote N`.
//! - `soak NAME ID COUNT SEED`: sends COUNT pattern messages of mixed sizes (mostly under 4 KB,
//!   some up to 1 MB, one in a thousand up to 10 MB), printing `rss KB` (resident set) after a
//!   tenth of them, then waits for all acks and prints `acked rss KB peak KB`.
//! - `no-space`: run on a small `/dev/shm` (16 MB): checks that a named (`shm`) queue too big for it and a
//!   message too big for it are `NoSpace` errors (not SIGBUS), that the failed send left the queue
//!   unchanged, and prints one line per check, then `ok`.
//! - `default-queues`: run on a 64 MB `/dev/shm`: creates two queues with the default options
//!   and sends a small and a 20 MiB message through each, printing `defaults ok`; then asks for a
//!   named (`shm`) queue larger than `/dev/shm` and prints `no-space NEEDED FREE` from the error's fields and
//!   `message MESSAGE` (its Display), then `free FREE` as `statvfs` says after the failure.
//! - `register NAME producer|consumer`: tries to register on the queue NAME and prints
//!   `registered`, or `refused ERROR: MESSAGE`; a producer that registered sends `late`, prints
//!   `sent` or `send ERROR`, and closes.
//! - `fill NAME`: sends 1-byte messages until the queue is full, prints `full`, then blocks in one
//!   more send and prints the error it ends with.
//! - `consume NAME COUNT`: receives and checks COUNT pattern messages, prints `ok N`.
//! - `consume-hold NAME`: becomes the consumer, prints `ready`, and never receives (so that
//!   producers fill the queue and wait for space).
//! - `consume-out-of-order NAME`: becomes the consumer, receives three messages, releases the
//!   second and third, holds the first, prints `holding` and sleeps until killed.
//! - `ack-wait NAME`: sends one message, prints `sent`, waits for its ack and prints the outcome.
//! - `echo IN OUT [SPIN [CPU]]`: receives from IN and sends each message back on OUT until IN
//!   closes, spinning SPIN polls before each sleep (default 0: purely blocking waits); with CPU,
//!   it runs on that CPU only (Linux).
//! - `own-queue [BYTES]`: creates a queue (it owns it) of a BYTES ring (64 KiB), prints its
//!   name, and sleeps until killed.
//! - `own-queues COUNT`: creates COUNT small queues, prints their names on one line
//!   (space-separated), and sleeps until killed, with three more threads idle.
//! - `idle NAME`: registers a producer on the queue NAME, prints `ready`, and sleeps until
//!   killed.
//! - `attach-send NAME ID BYTES`: opens the queue NAME by its name; if that fails, prints
//!   `open-error MILLIS ms DEBUG | MESSAGE` (how long the open took, the error) and exits;
//!   else prints `opened BACKING`, sends one pattern message of BYTES payload as producer ID
//!   and prints `acked` once it is acknowledged (waiting at most 10 s for either).
//! - `create-until-attached`: creates a queue, prints its name, waits (up to 10 s) until
//!   another process holds it too (`list_segments`), prints `attached`, and exits normally
//!   (closing everything).
//! - `sealed-pair RING COUNT MIN MAX` (Linux; run on a small `/dev/shm`): creates a default
//!   (sealed) queue of a RING-byte ring, prints `record LEN` (its record's size in
//!   `/dev/shm`), runs a child of itself that sends COUNT pattern messages of MIN..=MAX bytes
//!   (`produce`), receives and checks each (inline, not a blob), and prints `received COUNT`.
//! - `sealed-huge BYTES` (Linux; run on a small `/dev/shm`): creates a default queue, runs a
//!   child of itself that sends one pattern message of BYTES (`produce-huge`), receives and
//!   checks it, and prints `received BYTES`.
//! - `map-inode INODE` (Linux; run in a private mount namespace with a fresh tmpfs on
//!   `/dev/shm`): creates empty `shmpipe_*` files there until one has inode INODE, maps that
//!   one, prints `mapped`, and sleeps until killed.
//! - `own-array NAME`: creates the shared array NAME (float64, 16 elements), keeps it open,
//!   prints `created`, and sleeps until killed.
//! - `self-send BYTES`: creates a queue (64 KiB ring) and becomes its consumer, sends itself one
//!   message of BYTES, prints the blob's name (or `inline`), never receives it, and sleeps until
//!   killed.
//! - `own-named NAME`: creates the segment NAME, gives up removing it on drop, registers it with
//!   `signals::remove_on_signal`, prints `registered true|false` and sleeps until killed.
//! - `own-sealed-array NAME`: creates the uint8 shared array NAME of 8 elements in sealed memory,
//!   writes 7 at 0, registers its segment with `signals::remove_on_signal` (as a manager does),
//!   prints `registered true|false` and sleeps until killed.
//! - `interruptible-recv on|off`: creates a queue, becomes its consumer, turns
//!   `signals::set_interrupt_sync_waits` on or off, prints the queue's name, then blocks in a
//!   receive inside `signals::interruptible` and prints `returned RESULT SIGNAL` (its outcome and
//!   `take_interrupting_signal()`).
//! - `try-access NAME`: prints `uid N` (its effective uid), then tries to open the queue NAME, to
//!   read its file in `/dev/shm` and to remove it, printing one line per attempt:
//!   `open ok|error …`, `read ok|error …`, `remove ok|error …`.
//! - `memory-headroom BYTES…`: for each BYTES, asks whether that much more shared memory fits
//!   this process's cgroup and machine (`check_memory_headroom`) and prints `ok BYTES`,
//!   `no-space BYTES MESSAGE` or `error BYTES DEBUG`.
//!
//! Environment, applied before the role runs (for the signal-cleanup tests):
//! - `SHMPIPE_PEER_PREV=node-like|node-like-slow|swallow`: first installs a SIGINT/SIGTERM
//!   handler of its own: `node-like` does what Node's default one does (one-shot, re-raises);
//!   `node-like-slow` too, after 300 ms, in a process with a second thread (where another
//!   delivery of the signal lands meanwhile); `swallow` only counts.
//! - `SHMPIPE_PEER_SIGNALS=1`: then calls `install_signal_cleanup` and prints the outcome
//!   (`signals [Installed, Installed, Installed]`: SIGINT, SIGTERM, SIGABRT).

use shmpipe_core::{Error, Queue, QueueOptions, Segment, SegmentKind, WaitOptions};
use shmpipe_test_peer::pattern;
use std::time::Duration;

use shmpipe_test_peer::peer_io::{arg, say, status_kb};

/// Installs the handler named by `SHMPIPE_PEER_PREV`, as another library would have.
#[cfg(unix)]
fn install_previous_handler(kind: &str) {
    extern "C" fn node_like(sig: libc::c_int) {
        // Installed with SA_RESETHAND: the disposition is the default again; die of the signal.
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(sig) };
    }
    extern "C" fn node_like_slow(sig: libc::c_int) {
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 300_000_000,
        };
        // SAFETY: `pause` is a valid timespec; nanosleep and raise are async-signal-safe.
        unsafe {
            libc::nanosleep(&pause, std::ptr::null_mut());
            libc::raise(sig);
        }
    }
    extern "C" fn swallow(_sig: libc::c_int) {}
    let (handler, flags) = match kind {
        "node-like" => (
            node_like as extern "C" fn(libc::c_int) as usize,
            libc::SA_RESETHAND,
        ),
        "node-like-slow" => {
            std::thread::spawn(|| loop {
                std::thread::sleep(Duration::from_secs(60));
            });
            (
                node_like_slow as extern "C" fn(libc::c_int) as usize,
                libc::SA_RESETHAND,
            )
        }
        "swallow" => (swallow as extern "C" fn(libc::c_int) as usize, 0),
        other => panic!("unknown SHMPIPE_PEER_PREV {other}"),
    };
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a valid handler with an initialised sigaction.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = handler;
            act.sa_flags = flags;
            libc::sigfillset(&mut act.sa_mask);
            assert_eq!(libc::sigaction(sig, &act, std::ptr::null_mut()), 0);
        }
    }
}

fn main() {
    #[cfg(unix)]
    if let Ok(kind) = std::env::var("SHMPIPE_PEER_PREV") {
        install_previous_handler(&kind);
    }
    if std::env::var_os("SHMPIPE_PEER_SIGNALS").is_some() {
        let setup = shmpipe_core::install_signal_cleanup().unwrap();
        say(&format!("signals {setup:?}"));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().map(String::as_str).unwrap_or("");
    let forever = WaitOptions::forever();
    match role {
        "produce" => {
            let q = Queue::open(&args[1]).unwrap();
            let (id, count, min, max, seed): (u32, u64, usize, usize, u64) = (
                arg(&args, 2),
                arg(&args, 3),
                arg(&args, 4),
                arg(&args, 5),
                arg(&args, 6),
            );
            let mut p = q.producer().unwrap();
            let mut rng = pattern::Rng::new(seed);
            for seq in 0..count {
                let payload = min + (rng.next_u64() as usize) % (max - min + 1);
                let mut loan = p
                    .reserve((pattern::HEADER + payload) as u64, &forever)
                    .unwrap();
                pattern::write(id, seq, loan.as_mut_slice());
                loan.commit().unwrap();
            }
            p.wait_for_all_ack(&forever).unwrap();
            say("acked");
        }
        "send-and-exit" => {
            // `send-and-exit NAME ID BYTES`: one patterned message, then close and exit at once,
            // without waiting for a receiver.
            let q = Queue::open(&args[1]).unwrap();
            let (id, bytes): (u32, u64) = (arg(&args, 2), arg(&args, 3));
            let mut p = q.producer().unwrap();
            let mut loan = p.reserve(pattern::HEADER as u64 + bytes, &forever).unwrap();
            pattern::write(id, 0, loan.as_mut_slice());
            loan.commit().unwrap();
            p.close();
            say("closed");
        }
        "produce-huge" => {
            let q = Queue::open(&args[1]).unwrap();
            let (id, bytes): (u32, u64) = (arg(&args, 2), arg(&args, 3));
            let mut p = q.producer().unwrap();
            let mut loan = p.reserve(pattern::HEADER as u64 + bytes, &forever).unwrap();
            say(&format!("writing {}", loan.blob_name().unwrap_or("inline")));
            pattern::write(id, 0, loan.as_mut_slice());
            if args.get(4).map(String::as_str) == Some("stall") {
                // Undo the second half: what a process killed halfway through would leave.
                let buf = loan.as_mut_slice();
                let half = buf.len() / 2;
                buf[half..].fill(0);
                say("stalled");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(60));
                }
            }
            loan.commit().unwrap();
            say("sent");
            p.wait_for_all_ack(&forever).unwrap();
        }
        "stream" => {
            let q = Queue::open(&args[1]).unwrap();
            let bytes: usize = arg(&args, 2);
            let mut p = q.producer().unwrap();
            let data = vec![0x5Au8; bytes];
            loop {
                match p.send(&data, &forever) {
                    Ok(()) => {}
                    Err(Error::Closed | Error::PeerGone) => break,
                    Err(e) => panic!("stream: {e}"),
                }
            }
        }
        "produce-until-killed" => {
            let q = Queue::open(&args[1]).unwrap();
            let (id, min, max, seed): (u32, usize, usize, u64) =
                (arg(&args, 2), arg(&args, 3), arg(&args, 4), arg(&args, 5));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut p = loop {
                match q.producer() {
                    Ok(p) => break p,
                    Err(Error::TooManyProducers { .. }) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    Err(e) => panic!("register: {e}"),
                }
            };
            say("ready");
            let mut rng = pattern::Rng::new(seed);
            for seq in 0.. {
                let payload = min + (rng.next_u64() as usize) % (max - min + 1);
                let mut loan = match p.reserve((pattern::HEADER + payload) as u64, &forever) {
                    Ok(loan) => loan,
                    Err(Error::Closed | Error::PeerGone) => break,
                    Err(e) => panic!("reserve: {e}"),
                };
                pattern::write(id, seq, loan.as_mut_slice());
                loan.commit().unwrap();
            }
        }
        "stream-for" => {
            // `stream-for NAME MILLIS [MAX_BYTES]`: messages of up to MAX_BYTES (40,000).
            let q = Queue::open(&args[1]).unwrap();
            let millis: u64 = arg(&args, 2);
            let max: u64 = args.get(3).map_or(40_000, |a| a.parse().unwrap());
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(millis);
            let mut p = q.producer().unwrap();
            let wait = WaitOptions::timeout(std::time::Duration::from_millis(20));
            let mut rng = pattern::Rng::new(millis);
            let mut buf = vec![0u8; max as usize];
            let mut sent = 0u64;
            while std::time::Instant::now() < deadline {
                let len = ((rng.next_u64() % max) as usize).max(pattern::HEADER);
                pattern::write(1, sent, &mut buf[..len]);
                if p.send(&buf[..len], &wait).is_ok() {
                    sent += 1;
                }
            }
            say(&format!("done {sent}"));
        }
        "corrupt" => {
            // `corrupt NAME SEED MILLIS [FROM]`: with FROM, writes only at body offsets from
            // FROM on (e.g. the data area: records, not the control block).
            let seg = shmpipe_core::Segment::open(
                &args[1],
                shmpipe_core::SegmentKind::Queue,
                std::time::Duration::from_secs(1),
            )
            .unwrap();
            let (seed, millis): (u64, u64) = (arg(&args, 2), arg(&args, 3));
            let from: usize = args.get(4).map_or(0, |a| a.parse().unwrap());
            let mut rng = pattern::Rng::new(seed);
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(millis);
            let (body, len) = (seg.body_ptr(), seg.body_len());
            assert!(from < len, "FROM past the body");
            let mut wrote = 0u64;
            while std::time::Instant::now() < deadline {
                // Half the writes hit the first 4 KiB (control block and producer entries, or
                // the first records), where a wrong value does the most damage; the rest land
                // anywhere.
                let span = if rng.next_u64() % 2 == 0 {
                    (len - from).min(4096)
                } else {
                    len - from
                };
                let at = from + (rng.next_u64() as usize) % span;
                let n = (1 + rng.next_u64() % 16) as usize;
                let value = rng.next_u64();
                for i in 0..n.min(len - at) {
                    // SAFETY: `at + i < len`, inside the mapped body. This process is the
                    // attacker: the bytes are meant to race with the other processes' atomics.
                    unsafe {
                        body.add(at + i)
                            .write_volatile((value >> ((i % 8) * 8)) as u8)
                    };
                }
                wrote += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            say(&format!("wrote {wrote}"));
        }
        "no-space" => no_space(),
        "memory-headroom" => {
            for bytes in args[1..].iter().map(|a| a.parse::<u64>().unwrap()) {
                match shmpipe_core::check_memory_headroom(bytes) {
                    Ok(()) => say(&format!("ok {bytes}")),
                    Err(e @ Error::NoSpace { .. }) => say(&format!("no-space {bytes} {e}")),
                    Err(e) => say(&format!("error {bytes} {e:?}")),
                }
            }
        }
        "soak" => {
            let q = Queue::open(&args[1]).unwrap();
            let (id, count, seed): (u32, u64, u64) = (arg(&args, 2), arg(&args, 3), arg(&args, 4));
            let mut p = q.producer().unwrap();
            let mut rng = pattern::Rng::new(seed);
            for seq in 0..count {
                let payload = soak_size(&mut rng);
                let mut loan = p
                    .reserve((pattern::HEADER + payload) as u64, &forever)
                    .unwrap();
                pattern::write(id, seq, loan.as_mut_slice());
                loan.commit().unwrap();
                if seq == count / 10 {
                    say(&format!("rss {}", status_kb("VmRSS")));
                }
            }
            p.wait_for_all_ack(&forever).unwrap();
            say(&format!(
                "acked rss {} peak {}",
                status_kb("VmRSS"),
                status_kb("VmHWM")
            ));
        }
        "fill" => {
            let q = Queue::open(&args[1]).unwrap();
            let mut p = q.producer().unwrap();
            while p.try_send(b"x").unwrap() {}
            say("full");
            match p.send(b"x", &forever) {
                Ok(()) => say("sent"),
                Err(e) => say(&format!("error {e:?}")),
            }
        }
        "consume" => {
            let q = Queue::open(&args[1]).unwrap();
            let count: u64 = arg(&args, 2);
            let mut c = q.consumer().unwrap();
            for _ in 0..count {
                let m = c.recv(&forever).unwrap();
                pattern::check(m.as_slice()).unwrap();
            }
            say(&format!("ok {count}"));
        }
        "consume-hold" => {
            let q = Queue::open(&args[1]).unwrap();
            let _c = q.consumer().unwrap();
            say("ready");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        "consume-out-of-order" => {
            let q = Queue::open(&args[1]).unwrap();
            let mut c = q.consumer().unwrap();
            let first = c.recv(&forever).unwrap();
            drop(c.recv(&forever).unwrap());
            drop(c.recv(&forever).unwrap());
            say("holding");
            std::thread::sleep(std::time::Duration::from_secs(600));
            drop(first);
        }
        "ack-wait" => {
            // `ack-wait NAME [hold]`: with `hold`, the producer stays open and the process alive
            // after the ack, until it is killed.
            let q = Queue::open(&args[1]).unwrap();
            let mut p = q.producer().unwrap();
            if let Err(e) = p.send(b"needs an ack", &forever) {
                say(&format!("error {e:?}"));
                return;
            }
            say("sent");
            match p.wait_for_all_ack(&forever) {
                Ok(()) => say("acked"),
                Err(e) => say(&format!("error {e:?}")),
            }
            if args.get(2).is_some_and(|a| a == "hold") {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(60));
                }
            }
        }
        "echo" => {
            let (qin, qout) = (
                Queue::open(&args[1]).unwrap(),
                Queue::open(&args[2]).unwrap(),
            );
            let spin: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            if let Some(cpu) = args.get(4).and_then(|s| s.parse().ok()) {
                pin_to_cpu(cpu);
            }
            let wait = WaitOptions::forever().with_spin(spin);
            let mut c = qin.consumer().unwrap();
            let mut p = qout.producer().unwrap();
            say("ready");
            loop {
                match c.recv(&wait) {
                    Ok(m) => p.send(m.as_slice(), &wait).unwrap(),
                    Err(Error::Closed | Error::PeerGone) => break,
                    Err(e) => panic!("echo: {e}"),
                }
            }
        }
        "own-queue" => {
            let bytes: u64 = args.get(1).map_or(64 << 10, |a| a.parse().unwrap());
            let q = Queue::create(&QueueOptions {
                capacity: 16,
                bytes,
                max_producers: 4,
            })
            .unwrap();
            say(q.name());
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        "own-queues" => {
            // `own-queues COUNT`: COUNT small queues, their names on one line, in a process with
            // three more threads idle (where further deliveries of a signal land).
            let count: usize = arg(&args, 1);
            for _ in 0..3 {
                std::thread::spawn(|| loop {
                    std::thread::sleep(Duration::from_secs(60));
                });
            }
            let queues: Vec<Queue> = (0..count)
                .map(|_| {
                    Queue::create(&QueueOptions {
                        capacity: 4,
                        bytes: 4 << 10,
                        max_producers: 1,
                    })
                    .unwrap()
                })
                .collect();
            let names: Vec<&str> = queues.iter().map(Queue::name).collect();
            say(&names.join(" "));
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        #[cfg(target_os = "linux")]
        "map-inode" => {
            use std::os::unix::fs::MetadataExt;
            use std::os::unix::io::AsRawFd;
            let target: u64 = arg(&args, 1);
            let file = (0u64..1_000_000)
                .find_map(|i| {
                    let path = format!("/dev/shm/shmpipe_{i:016x}");
                    let file = std::fs::File::options()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .unwrap();
                    (file.metadata().unwrap().ino() == target).then_some(file)
                })
                .expect("no file got the inode asked for");
            file.set_len(4096).unwrap();
            // SAFETY: a fresh shared mapping of one page of a file just sized to it; it is
            // never read or written here, and stays until the process is killed.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(map, libc::MAP_FAILED);
            say("mapped");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        "idle" => {
            let q = Queue::open(&args[1]).unwrap();
            let _p = q.producer().unwrap();
            say("ready");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        "attach-send" => attach_send(&args[1], arg(&args, 2), arg(&args, 3)),
        "create-until-attached" => {
            let q = Queue::create(&QueueOptions {
                capacity: 16,
                bytes: 64 << 10,
                max_producers: 4,
            })
            .unwrap();
            say(q.name());
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let held_by_two = || {
                shmpipe_core::list_segments()
                    .unwrap()
                    .iter()
                    .any(|s| s.name == q.name() && s.held_by.as_ref().is_some_and(|h| h.len() >= 2))
            };
            while !held_by_two() {
                assert!(std::time::Instant::now() < deadline, "nobody attached");
                std::thread::sleep(Duration::from_millis(10));
            }
            say("attached");
        }
        #[cfg(target_os = "linux")]
        "sealed-pair" => sealed_pair(arg(&args, 1), arg(&args, 2), arg(&args, 3), arg(&args, 4)),
        #[cfg(target_os = "linux")]
        "sealed-huge" => sealed_huge(arg(&args, 1)),
        "kept-blob-bytes" => kept_blob_bytes(&args[1]),
        "own-array" => {
            let _array =
                shmpipe_core::SharedArray::create(&args[1], shmpipe_core::Dtype::Float64, &[16])
                    .unwrap();
            say("created");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        "self-send" => {
            let q = Queue::create(&QueueOptions {
                capacity: 4,
                bytes: 64 << 10,
                max_producers: 1,
            })
            .unwrap();
            let _consumer = q.consumer().unwrap();
            let mut p = q.producer().unwrap();
            let bytes: u64 = arg(&args, 1);
            let mut loan = p.reserve(bytes, &forever).unwrap();
            let blob = loan.blob_name().unwrap_or("inline").to_owned();
            loan.as_mut_slice().fill(7);
            loan.commit().unwrap();
            say(&blob);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        "own-named" => {
            let mut seg = Segment::create_named(&args[1], SegmentKind::Blob, 64).unwrap();
            seg.publish_ready();
            seg.disown();
            let registered = shmpipe_core::signals::remove_on_signal(&args[1]);
            say(&format!("registered {registered}"));
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        "own-sealed-array" => {
            use shmpipe_core::{Backing, Dtype, SharedArray, ARRAY_NAME_PREFIX};
            let array =
                SharedArray::create_in(&args[1], Dtype::Uint8, &[8], Backing::Memfd).unwrap();
            // SAFETY: element 0 of the 8-byte array; nothing else writes it before we report.
            unsafe { array.as_ptr().write(7) };
            let segment = format!("{ARRAY_NAME_PREFIX}{}", args[1]);
            let registered = shmpipe_core::signals::remove_on_signal(&segment);
            say(&format!("registered {registered}"));
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        "interruptible-recv" => {
            let q = Queue::create(&QueueOptions {
                capacity: 4,
                bytes: 4096,
                max_producers: 1,
            })
            .unwrap();
            let mut c = q.consumer().unwrap();
            shmpipe_core::signals::set_interrupt_sync_waits(args[1] == "on");
            say(q.name());
            let result = shmpipe_core::signals::interruptible(|| c.recv(&forever).map(|_| ()));
            let signal = shmpipe_core::signals::take_interrupting_signal();
            say(&format!("returned {result:?} {signal:?}"));
        }
        "try-access" => {
            let name = &args[1];
            #[cfg(unix)]
            // SAFETY: geteuid has no preconditions.
            say(&format!("uid {}", unsafe { libc::geteuid() }));
            match Queue::open(name) {
                Ok(_) => say("open ok"),
                Err(e) => say(&format!("open error {e:?}")),
            }
            match std::fs::read(format!("/dev/shm/{name}")) {
                Ok(bytes) => say(&format!("read ok {}", bytes.len())),
                Err(e) => say(&format!("read error {:?}", e.kind())),
            }
            match Segment::remove(name) {
                Ok(()) => say("remove ok"),
                Err(e) => say(&format!("remove error {e:?}")),
            }
        }
        #[cfg(target_os = "linux")]
        "default-queues" => default_queues(),
        "register" => {
            let q = Queue::open(&args[1]).unwrap();
            match args.get(2).map(String::as_str) {
                Some("producer") => match q.producer() {
                    Ok(mut p) => {
                        say("registered");
                        match p.send(b"late", &WaitOptions::timeout(Duration::from_secs(5))) {
                            Ok(()) => say("sent"),
                            Err(e) => say(&format!("send {e:?}")),
                        }
                    }
                    Err(e) => say(&format!("refused {e:?}: {e}")),
                },
                Some("consumer") => match q.consumer() {
                    Ok(_) => say("registered"),
                    Err(e) => say(&format!("refused {e:?}: {e}")),
                },
                other => panic!("register: producer or consumer, not {other:?}"),
            }
        }
        _ => {
            eprintln!("usage: shmpipe-peer ROLE ARGS… (see the source)");
            std::process::exit(2);
        }
    }
}

/// The `no-space` role (see the module docs). Panics (a non-zero exit) on the first failed check.
fn no_space() {
    use shmpipe_core::{Backing, QueueOptions};
    let too_big = Queue::create_in(
        &QueueOptions {
            capacity: 16,
            bytes: 64 << 20,
            max_producers: 2,
        },
        Backing::Shm,
    );
    assert!(
        matches!(too_big, Err(Error::NoSpace { .. })),
        "a 64 MiB queue on a 16 MB /dev/shm: {:?}",
        too_big.err()
    );
    say("queue too big: NoSpace");
    let q = Queue::create_in(
        &QueueOptions {
            capacity: 16,
            bytes: 4 << 20,
            max_producers: 2,
        },
        Backing::Shm,
    )
    .unwrap();
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let wait = WaitOptions::timeout(std::time::Duration::from_secs(1));
    p.send(b"before", &wait).unwrap();
    // A blob bigger than what is left: fails at once, before the queue changes.
    let huge = vec![7u8; 20 << 20];
    let failed = p.send(&huge, &wait);
    assert!(
        matches!(failed, Err(Error::NoSpace { .. })),
        "a 20 MiB message: {failed:?}"
    );
    say("message too big: NoSpace");
    p.send(b"after", &wait).unwrap();
    assert_eq!(c.recv(&wait).unwrap().as_slice(), b"before");
    assert_eq!(c.recv(&wait).unwrap().as_slice(), b"after");
    assert!(matches!(c.try_recv(), Ok(None)), "nothing half-sent");
    assert_eq!(p.sent(), 2);
    say("queue unchanged");
    drop((p, c, q));
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "segments left: {left:?}");
    say("ok");
}

/// The `attach-send` role (see the module docs).
fn attach_send(name: &str, id: u32, bytes: usize) {
    let began = std::time::Instant::now();
    let q = match Queue::open(name) {
        Ok(q) => q,
        Err(e) => {
            say(&format!(
                "open-error {} ms {e:?} | {e}",
                began.elapsed().as_millis()
            ));
            return;
        }
    };
    say(&format!("opened {}", q.backing().as_str()));
    let mut p = q.producer().unwrap();
    let wait = WaitOptions::timeout(Duration::from_secs(10));
    let mut msg = vec![0u8; pattern::HEADER + bytes];
    pattern::write(id, 0, &mut msg);
    p.send(&msg, &wait).unwrap();
    p.wait_for_all_ack(&wait).unwrap();
    say("acked");
}

/// The `sealed-pair` role (see the module docs). Panics (a non-zero exit) on a failed check.
#[cfg(target_os = "linux")]
fn sealed_pair(ring: u64, count: u64, min: usize, max: usize) {
    let q = Queue::create(&QueueOptions {
        capacity: 64,
        bytes: ring,
        max_producers: 2,
    })
    .unwrap();
    assert_eq!(q.backing(), shmpipe_core::Backing::Memfd, "the default");
    let record = std::fs::metadata(std::path::Path::new("/dev/shm").join(q.name()))
        .unwrap()
        .len();
    say(&format!("record {record}"));
    let mut c = q.consumer().unwrap();
    let sender = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["produce", q.name(), "1"])
        .args([count, min as u64, max as u64, 7].map(|v| v.to_string()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let wait = WaitOptions::timeout(Duration::from_secs(60));
    for seq in 0..count {
        let m = c.recv(&wait).unwrap();
        assert!(!m.is_blob(), "message {seq} travelled inline");
        assert!(m.len() >= pattern::HEADER + min);
        assert_eq!(pattern::check(m.as_slice()).unwrap(), (1, seq));
    }
    let out = sender.wait_with_output().unwrap();
    assert!(out.status.success(), "sender: {}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "acked");
    say(&format!("received {count}"));
}

/// The `sealed-huge` role (see the module docs). Panics (a non-zero exit) on a failed check.
#[cfg(target_os = "linux")]
fn sealed_huge(bytes: u64) {
    let q = Queue::create(&QueueOptions::default()).unwrap();
    let mut c = q.consumer().unwrap();
    let mut sender = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["produce-huge", q.name(), "1", &bytes.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let m = c
        .recv(&WaitOptions::timeout(Duration::from_secs(120)))
        .unwrap();
    assert_eq!(m.len() as u64, pattern::HEADER as u64 + bytes);
    assert_eq!(pattern::check(m.as_slice()).unwrap(), (1, 0));
    drop(m);
    let _ = sender.kill();
    let _ = sender.wait();
    say(&format!("received {bytes}"));
}

/// `kept-blob-bytes shm|memfd`: sends one 4 MiB message (a blob: the ring holds 1 MiB) to a
/// consumer of this process, and says how many bytes of blobs the producer kept for reuse.
fn kept_blob_bytes(backing: &str) {
    let backing = match backing {
        "shm" => shmpipe_core::Backing::Shm,
        _ => shmpipe_core::Backing::Memfd,
    };
    let q = Queue::create_in(
        &QueueOptions {
            capacity: 4,
            bytes: 1 << 20,
            max_producers: 1,
        },
        backing,
    )
    .unwrap();
    let mut c = q.consumer().unwrap();
    let mut p = q.producer().unwrap();
    let data = vec![7u8; 4 << 20];
    let wait = WaitOptions::timeout(Duration::from_secs(10));
    p.send(&data, &wait).unwrap();
    assert_eq!(c.recv(&wait).unwrap().len(), data.len());
    say(&format!("kept {}", p.kept_blob_bytes()));
}

/// A soak message's payload size: 99% in 10 B..4 KB, 0.9% up to 1 MB, 0.1% up to 10 MB.
fn soak_size(rng: &mut pattern::Rng) -> usize {
    let (r, x) = (rng.next_u64() % 1000, rng.next_u64() as usize);
    match r {
        0..990 => 10 + x % 4_000,
        990..999 => 4_000 + x % 1_000_000,
        _ => 1_000_000 + x % 9_000_000,
    }
}

/// Restricts this process to one CPU (Linux; elsewhere a no-op).
fn pin_to_cpu(cpu: usize) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it, and
        // sched_setaffinity only reads it.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpu;
}

/// The `default-queues` role (see the module docs). Panics (a non-zero exit) on a failed check.
/// Linux only: it reads `/dev/shm` with `statvfs`.
#[cfg(target_os = "linux")]
fn default_queues() {
    let wait = WaitOptions::timeout(Duration::from_secs(10));
    let queues: Vec<Queue> = (0..2)
        .map(|_| Queue::create(&QueueOptions::default()).unwrap())
        .collect();
    let large = vec![0xC3u8; 20 << 20];
    for q in &queues {
        let mut p = q.producer().unwrap();
        let mut c = q.consumer().unwrap();
        p.send(b"small", &wait).unwrap();
        assert_eq!(c.recv(&wait).unwrap().as_slice(), b"small");
        p.send(&large, &wait).unwrap();
        let m = c.recv(&wait).unwrap();
        assert!(m.is_blob() && m.as_slice() == &large[..]);
    }
    say("defaults ok");
    let too_big = Queue::create_in(
        &QueueOptions {
            bytes: 128 << 20,
            ..QueueOptions::default()
        },
        shmpipe_core::Backing::Shm,
    );
    match too_big {
        Err(e @ Error::NoSpace { needed, free, .. }) => {
            say(&format!("no-space {needed} {}", free.unwrap()));
            say(&format!("message {e}"));
        }
        other => panic!("a 128 MiB queue on a 64 MB /dev/shm: {:?}", other.err()),
    }
    // SAFETY: the path is a NUL-terminated C string and `st` a valid out pointer, filled
    // completely when statvfs returns 0 (asserted).
    let st = unsafe {
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        assert_eq!(libc::statvfs(c"/dev/shm".as_ptr(), st.as_mut_ptr()), 0);
        st.assume_init()
    };
    #[allow(clippy::unnecessary_cast)] // narrower on some 32-bit targets
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    say(&format!("free {free}"));
}
