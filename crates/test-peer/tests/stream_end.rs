//! The end of a stream, with real producer processes (`shmpipe-peer`): once the consumer has
//! found every producer closed and every message read, every receiving call fails with `Closed`
//! at once, waiting or not, and no producer registers any more; a consumer that closed is named
//! as such. Also the defaults on a 64 MB `/dev/shm` and what `NoSpace` says there.

mod common;

use common::peer::Peer;
use shmpipe_core::{Error, Queue, QueueOptions, WaitOptions};
use shmpipe_test_peer::pattern;
use std::time::{Duration, Instant};

/// Far below the consumer's 100 ms health slice, which is what a caller waited before.
const AT_ONCE: Duration = Duration::from_millis(20);

fn queue() -> Queue {
    Queue::create(&QueueOptions {
        capacity: 64,
        bytes: 64 << 10,
        max_producers: 4,
    })
    .unwrap()
}

fn within(d: Duration) -> WaitOptions {
    WaitOptions::timeout(d)
}

/// Runs a producer process that sends `count` pattern messages, waits for their acks and exits
/// (closing), and receives them all.
fn stream_from_a_process(q: &Queue, c: &mut shmpipe_core::Consumer, count: u64) {
    let mut peer = Peer::run(&[
        "produce",
        q.name(),
        "1",
        &count.to_string(),
        "10",
        "100",
        "5",
    ]);
    for seq in 0..count {
        let m = c.recv(&within(Duration::from_secs(10))).unwrap();
        assert_eq!(pattern::check(m.as_slice()), Ok((1, seq)));
    }
    assert_eq!(peer.line(), "acked");
    peer.wait_success();
}

/// `f` fails with `Closed` within [`AT_ONCE`], ten times in a row.
fn closed_at_once(what: &str, mut f: impl FnMut() -> Result<(), Error>) {
    for i in 0..10 {
        let start = Instant::now();
        let got = f();
        let took = start.elapsed();
        assert!(matches!(got, Err(Error::Closed)), "{what} #{i}: {got:?}");
        assert!(took < AT_ONCE, "{what} #{i} took {took:?}");
    }
}

#[test]
fn every_receive_after_the_end_fails_closed_at_once() {
    let q = queue();
    let mut c = q.consumer().unwrap();
    stream_from_a_process(&q, &mut c, 3);
    // The producer process closed and exited: the first look finds the end.
    let first = c.recv(&within(Duration::from_secs(5))).map(drop);
    assert!(matches!(first, Err(Error::Closed)), "{first:?}");
    closed_at_once("recv", || c.recv(&WaitOptions::forever()).map(drop));
    // A timeout shorter than the health slice: the end, not a timeout.
    closed_at_once("recv with 50 ms", || {
        c.recv(&within(Duration::from_millis(50))).map(drop)
    });
    closed_at_once("wait_ready", || c.wait_ready(&WaitOptions::forever()));
    closed_at_once("recv_with", || c.recv_with(&WaitOptions::forever(), |_| ()));
    closed_at_once("try_recv", || c.try_recv().map(drop));
    closed_at_once("try_recv_with", || c.try_recv_with(|_| ()).map(drop));
}

#[test]
fn try_recv_tells_the_end_from_an_empty_queue() {
    let q = queue();
    let mut c = q.consumer().unwrap();
    assert!(matches!(c.try_recv(), Ok(None)), "no producer yet");
    let holder = q.producer().unwrap(); // holds the stream open
    let mut peer = Peer::run(&["produce", q.name(), "1", "3", "10", "100", "5"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while got < 3 {
        assert!(Instant::now() < deadline, "received {got} of 3");
        match c.try_recv().unwrap() {
            Some(m) => {
                assert_eq!(pattern::check(m.as_slice()), Ok((1, got)));
                got += 1;
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    assert_eq!(peer.line(), "acked");
    peer.wait_success();
    // Empty, but a producer is still registered: not the end.
    assert!(matches!(c.try_recv(), Ok(None)));
    holder.close();
    // Without any wait, the first look finds the end, and every later one.
    closed_at_once("try_recv", || c.try_recv().map(drop));
}

#[test]
fn a_producer_registering_after_the_end_is_refused() {
    let q = queue();
    let mut c = q.consumer().unwrap();
    stream_from_a_process(&q, &mut c, 2);
    assert!(matches!(c.try_recv(), Err(Error::Closed)));
    let mut late = Peer::run(&["register", q.name(), "producer"]);
    let line = late.line();
    assert!(
        line.starts_with("refused StreamEnded: ") && line.contains("stream has ended"),
        "{line}"
    );
    late.wait_success();
    assert!(matches!(q.producer(), Err(Error::StreamEnded)));
    closed_at_once("try_recv", || c.try_recv().map(drop));
}

#[test]
fn a_producer_registering_before_the_consumer_looks_again_is_read() {
    // The end is what the consumer finds: a producer that comes after the others closed, but
    // before the consumer looked, keeps the stream going.
    let q = queue();
    let mut c = q.consumer().unwrap();
    let mut p = q.producer().unwrap();
    p.send(b"first", &within(Duration::from_secs(5))).unwrap();
    p.close();
    let mut late = Peer::run(&["register", q.name(), "producer"]);
    assert_eq!(late.line(), "registered");
    assert_eq!(late.line(), "sent");
    late.wait_success();
    let wait = within(Duration::from_secs(5));
    assert_eq!(c.recv(&wait).unwrap().as_slice(), b"first");
    assert_eq!(c.recv(&wait).unwrap().as_slice(), b"late");
    assert!(matches!(c.recv(&wait), Err(Error::Closed)));
}

#[test]
fn nothing_registers_after_the_consumer_closed_and_the_refusal_says_so() {
    let q = queue();
    let p = q.producer().unwrap();
    let c = q.consumer().unwrap();
    c.close();
    for role in ["producer", "consumer"] {
        let mut late = Peer::run(&["register", q.name(), role]);
        let line = late.line();
        assert!(
            line.starts_with("refused ConsumerClosed: the pipe's receiver was closed"),
            "{role}: {line}"
        );
        assert!(!line.contains("the other side closed"), "{role}: {line}");
        late.wait_success();
    }
    drop(p);
}

/// A producer registering while the consumer finds the end either registers first (and its
/// message is read before the end) or is refused: never registered and unread.
#[test]
fn the_end_and_a_racing_registration_never_lose_a_message() {
    for round in 0..2000u32 {
        let q = queue();
        let mut c = q.consumer().unwrap();
        let mut p = q.producer().unwrap();
        p.send(b"first", &WaitOptions::forever()).unwrap();
        let go = std::sync::Arc::new(std::sync::Barrier::new(2));
        let late = {
            let (q, go) = (q.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                match q.producer() {
                    Ok(mut late) => {
                        late.send(b"late", &WaitOptions::forever()).unwrap();
                        true
                    }
                    Err(Error::StreamEnded) => false,
                    Err(e) => panic!("round {round}: {e:?}"),
                }
            })
        };
        p.close();
        go.wait();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: no end, got {got:?}"
            );
            match c.try_recv() {
                Ok(Some(m)) => got.push(m.as_slice().to_vec()),
                Ok(None) => std::hint::spin_loop(),
                Err(Error::Closed) => break,
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        let registered = late.join().unwrap();
        let want: Vec<&[u8]> = if registered {
            vec![b"first", b"late"]
        } else {
            vec![b"first"]
        };
        assert_eq!(got, want, "round {round}");
    }
}

/// Whether this test may run as root; if not, see `common::skip::cannot_run`.
#[cfg(target_os = "linux")]
fn root_or_opted_out(why: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    common::skip::cannot_run(&format!("needs root ({why})"));
    false
}

/// Docker's `/dev/shm` (64 MB): two queues with the default options carry small and 20 MiB
/// messages, and a queue larger than what is free fails with `NoSpace` naming the bytes needed,
/// the bytes free (as `statvfs` says) and `docker run --shm-size`. Runs the peer in a private
/// mount namespace with a 64 MB tmpfs on `/dev/shm`.
#[test]
#[cfg(target_os = "linux")]
fn defaults_fit_a_64_mb_dev_shm_and_no_space_says_needed_free_and_shm_size() {
    if !root_or_opted_out("a private mount namespace: unshare -m") {
        return;
    }
    let stdout = common::peer::run_in_private_shm("64m", "default-queues");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], "defaults ok");
    let numbers: Vec<u64> = lines[1]
        .strip_prefix("no-space ")
        .unwrap_or_else(|| panic!("{}", lines[1]))
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let (needed, free) = (numbers[0], numbers[1]);
    assert!(needed > 128 << 20, "needed {needed}");
    assert!(free < 64 << 20 && free > 0, "free {free}");
    let message = lines[2].strip_prefix("message ").unwrap();
    assert!(
        message.contains(&format!("{needed} bytes needed"))
            && message.contains(&format!("{free} bytes free in /dev/shm"))
            && message.contains("docker run --shm-size"),
        "{message}"
    );
    let free_after: u64 = lines[3].strip_prefix("free ").unwrap().parse().unwrap();
    assert_eq!(free, free_after, "the error's free bytes are statvfs's");
}
