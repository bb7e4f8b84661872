//! A hostile or corrupted queue segment: another process writes random bytes over the control
//! block, the producer entries and the data while a real producer process sends and this process
//! receives. The receiver must only ever return messages, errors or timeouts: no crash, no
//! out-of-bounds access (the test process would die), and no wait past its timeout.

mod common;

use common::pattern;
use common::shm::remove_created_by;
use shmpipe_core::{Error, Queue, QueueOptions, WaitOptions};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn peer(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_shmpipe-peer"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn shmpipe-peer")
}

fn last_line(child: std::process::Child) -> String {
    let out = child.wait_with_output().expect("peer exits");
    assert!(out.status.success(), "peer failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_receiver_survives_random_writes_over_its_queue() {
    const TIMEOUT: Duration = Duration::from_millis(30);
    // A wait may overrun its timeout by one health check and scheduling noise, never by more.
    const SLACK: Duration = Duration::from_millis(500);
    let mut outcomes = std::collections::BTreeMap::<&str, u64>::new();
    let mut worst = Duration::ZERO;
    let mut leftovers = 0;
    for round in 0..4u64 {
        let q = Queue::create(&QueueOptions {
            capacity: 32,
            bytes: 64 << 10, // 40 KB messages exceed half of it: blobs are corrupted too
            max_producers: 4,
        })
        .unwrap();
        let mut c = q.consumer().unwrap();
        let producer = peer(&["stream-for", q.name(), "1500"]);
        let producer_pid = producer.id();
        let corrupter = peer(&["corrupt", q.name(), &round.to_string(), "1200"]);
        let until = Instant::now() + Duration::from_millis(1800);
        while Instant::now() < until {
            let started = Instant::now();
            let got = c.recv(&WaitOptions::timeout(TIMEOUT));
            worst = worst.max(started.elapsed());
            assert!(
                started.elapsed() < TIMEOUT + SLACK,
                "recv took {:?}",
                started.elapsed()
            );
            let kind = match got {
                Ok(m) => match pattern::check(m.as_slice()) {
                    Ok(_) => "intact message",
                    Err(_) => "damaged message",
                },
                Err(Error::Timeout) => "timeout",
                Err(Error::BadSegment { .. }) => "bad segment",
                Err(Error::PeerGone) => "peer gone",
                Err(Error::Closed) => "closed",
                Err(e) => panic!("unexpected error from a corrupted queue: {e:?}"),
            };
            *outcomes.entry(kind).or_default() += 1;
        }
        let wrote = last_line(corrupter);
        assert!(wrote.starts_with("wrote "), "{wrote}");
        let done = last_line(producer);
        assert!(done.starts_with("done "), "{done}");
        drop(c);
        drop(q);
        // Blobs whose records the damage destroyed can be found by nobody but the dead-creator
        // cleanup; do its job for this test's producer (and count it).
        leftovers += remove_created_by(producer_pid);
    }
    eprintln!(
        "outcomes over 4 rounds: {outcomes:?}; slowest recv {worst:?}; \
         {leftovers} orphaned blobs removed"
    );
    assert!(
        outcomes.get("intact message").copied().unwrap_or(0) > 0,
        "the test moved messages before the damage: {outcomes:?}"
    );
    let noticed = ["bad segment", "damaged message"]
        .iter()
        .map(|k| outcomes.get(k).copied().unwrap_or(0))
        .sum::<u64>();
    assert!(noticed > 0, "the damage showed: {outcomes:?}");
}
