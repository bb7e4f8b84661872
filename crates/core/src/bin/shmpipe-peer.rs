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
//! - `fill NAME`: sends 1-byte messages until the queue is full, prints `full`, then blocks in one
//!   more send and prints the error it ends with.
//! - `consume NAME COUNT`: receives and checks COUNT pattern messages, prints `ok N`.
//! - `consume-hold NAME`: becomes the consumer, prints `ready`, and never receives (so that
//!   producers fill the queue and wait for space).
//! - `consume-out-of-order NAME`: becomes the consumer, receives three messages, releases the
//!   second and third, holds the first, prints `holding` and sleeps until killed.
//! - `ack-wait NAME`: sends one message, prints `sent`, waits for its ack and prints the outcome.
//! - `echo IN OUT [SPIN]`: receives from IN and sends each message back on OUT until IN closes,
//!   spinning SPIN polls before each sleep (default 0: purely blocking waits).
//! - `own-queue`: creates a queue (it owns it), prints its name, and sleeps until killed.
//! - `try-access NAME`: prints `uid N` (its effective uid), then tries to open the queue NAME, to
//!   read its file in `/dev/shm` and to remove it, printing one line per attempt:
//!   `open ok|error …`, `read ok|error …`, `remove ok|error …`.
//!
//! Environment, applied before the role runs (for the signal-cleanup tests):
//! - `SHMPIPE_PEER_PREV=node-like|swallow`: first installs a SIGINT/SIGTERM handler of its own:
//!   `node-like` does what Node's default one does (one-shot, re-raises), `swallow` only counts.
//! - `SHMPIPE_PEER_SIGNALS=1`: then calls `install_signal_cleanup` and prints the outcome
//!   (`signals [Installed, Installed]`).

#[path = "../../tests/common/pattern.rs"]
mod pattern;

use shmpipe_core::{Error, Queue, QueueOptions, Segment, WaitOptions};
use std::io::Write;

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} missing or invalid: {args:?}"))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Installs the handler named by `SHMPIPE_PEER_PREV`, as another library would have.
#[cfg(unix)]
fn install_previous_handler(kind: &str) {
    extern "C" fn node_like(sig: libc::c_int) {
        // Installed with SA_RESETHAND: the disposition is the default again; die of the signal.
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(sig) };
    }
    extern "C" fn swallow(_sig: libc::c_int) {}
    let (handler, flags) = match kind {
        "node-like" => (
            node_like as extern "C" fn(libc::c_int) as usize,
            libc::SA_RESETHAND,
        ),
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
        }
        "echo" => {
            let (qin, qout) = (
                Queue::open(&args[1]).unwrap(),
                Queue::open(&args[2]).unwrap(),
            );
            let spin: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
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
            let q = Queue::create(&QueueOptions {
                capacity: 16,
                bytes: 64 << 10,
                max_producers: 4,
            })
            .unwrap();
            say(q.name());
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
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
        _ => {
            eprintln!("usage: shmpipe-peer ROLE ARGS… (see the source)");
            std::process::exit(2);
        }
    }
}
