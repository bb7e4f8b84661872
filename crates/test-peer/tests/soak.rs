//! Issue 4's soak: 4 producer processes and 1 consumer move a million messages of mixed sizes
//! (10 B to 10 MB), every one checked; the memory of every process is flat at the end. Prints
//! the figures the README quotes. `SHMPIPE_SOAK_MESSAGES` overrides the total.

mod common;

use shmpipe_core::{Error, Queue, QueueOptions, WaitOptions};
use shmpipe_test_peer::pattern;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmpipe_test_peer::peer_io::status_kb;

#[test]
fn four_producers_one_consumer_a_million_mixed_messages() {
    let total: u64 = std::env::var("SHMPIPE_SOAK_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per = total / 4;
    let q = Queue::create(&QueueOptions {
        capacity: 1024,
        bytes: 16 << 20, // messages over 8 MiB travel as blobs
        max_producers: 4,
    })
    .unwrap();
    let started = Instant::now();
    let mut producers: Vec<_> = (0..4u32)
        .map(|id| {
            let mut child = Command::new(env!("CARGO_BIN_EXE_shmpipe-peer"))
                .args(["soak", q.name(), &id.to_string(), &per.to_string()])
                .arg((1000 + id).to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn shmpipe-peer");
            let out = BufReader::new(child.stdout.take().unwrap());
            (child, out)
        })
        .collect();
    let mut c = q.consumer().unwrap();
    let (mut next, mut bytes) = ([0u64; 4], 0u64);
    let mut rss_at_tenth = 0;
    for n in 0..4 * per {
        let m = c
            .recv(&WaitOptions::timeout(Duration::from_secs(30)))
            .unwrap();
        let (producer, seq) = pattern::check(m.as_slice()).expect("intact");
        assert_eq!(seq, next[producer as usize], "producer {producer} in order");
        next[producer as usize] += 1;
        bytes += m.len() as u64;
        if n == 4 * per / 10 {
            rss_at_tenth = status_kb("VmRSS");
        }
    }
    assert_eq!(next, [per; 4], "every message arrived once");
    let consumer_end = status_kb("VmRSS");
    let mut report = Vec::new();
    for (child, out) in &mut producers {
        let lines: Vec<String> = out.lines().map(Result::unwrap).collect();
        assert!(child.wait().unwrap().success());
        let field = |line: &str, key: &str| -> u64 {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == key).expect(key);
            words[at + 1].parse().unwrap()
        };
        let (tenth, end) = (&lines[0], &lines[1]);
        let (early, late, peak) = (field(tenth, "rss"), field(end, "rss"), field(end, "peak"));
        report.push((early, late, peak));
    }
    assert!(matches!(
        c.recv(&WaitOptions::timeout(Duration::from_secs(5))),
        Err(Error::Closed)
    ));
    let elapsed = started.elapsed();
    let peak_all: u64 = status_kb("VmHWM") + report.iter().map(|r| r.2).sum::<u64>();
    eprintln!(
        "soak: {} messages, {:.1} GB, {elapsed:.1?}, 0 lost; consumer RSS {} KB at 10% -> {} KB \
         at end; producers (10% -> end, peak KB) {report:?}; peak RSS of all processes {} MB",
        4 * per,
        bytes as f64 / 1e9,
        rss_at_tenth,
        consumer_end,
        peak_all / 1024
    );
    // Flat: nothing grows with the number of messages. Allowance: allocator slack, and the blobs
    // (messages of up to 10 MB) that each producer keeps for reuse and the consumer keeps mapped,
    // at most MAX_KEPT_BLOBS per producer, which may still be filling up at 10%.
    const SLACK_KB: u64 = 32 << 10;
    let kept_kb = shmpipe_core::tuning::MAX_KEPT_BLOBS as u64 * (10_000_000 / 1024);
    assert!(
        consumer_end <= rss_at_tenth + SLACK_KB + 4 * kept_kb,
        "consumer grew from {rss_at_tenth} KB to {consumer_end} KB"
    );
    for (early, late, _) in report {
        assert!(
            late <= early + SLACK_KB + kept_kb,
            "a producer grew from {early} KB to {late} KB"
        );
    }
}
