//! Profiling aid: one producer thread and one consumer thread move N small messages through
//! a queue in this process and print ns/message. `cargo run --release --example spsc_probe -- 64`
//! (`PROBE_CAP` and `PROBE_BYTES` change the queue's capacity and data bytes).
use shmpipe_core::{Queue, QueueOptions, WaitOptions};
use std::time::Instant;

fn main() {
    let size: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    let q = Queue::create(&QueueOptions {
        capacity: std::env::var("PROBE_CAP")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4096),
        bytes: std::env::var("PROBE_BYTES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1 << 20),
        max_producers: 1,
    })
    .unwrap();
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let msg = vec![0x5Au8; size];
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(move || {
            let wait = WaitOptions::forever();
            for _ in 0..n {
                p.send(&msg, &wait).unwrap();
            }
        });
        let wait = WaitOptions::forever();
        let mut sum = 0usize;
        for _ in 0..n {
            sum += c.recv(&wait).unwrap().len();
        }
        assert_eq!(sum, size * n as usize);
    });
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{size} B: {ns:.1} ns/message, {:.2} M messages/s",
        1000.0 / ns
    );
}
