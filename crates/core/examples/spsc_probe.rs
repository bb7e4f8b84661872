//! Profiling aid: one producer thread and one consumer thread move N small messages through
//! a queue in this process and print ns/message. `cargo run --release --example spsc_probe -- 64`
//! (`PROBE_CAP` and `PROBE_BYTES` change the queue's capacity and data bytes; `PROBE_HANDLES`
//! receives `Message` handles instead of reading in place; `PROBE_SPIN` sets the waits' spin).
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
            let wait = probe_wait();
            for _ in 0..n {
                p.send(&msg, &wait).unwrap();
            }
        });
        let wait = probe_wait();
        let mut sum = 0usize;
        let in_place = std::env::var_os("PROBE_HANDLES").is_none();
        for _ in 0..n {
            sum += if in_place {
                c.recv_with(&wait, |bytes| bytes.len()).unwrap()
            } else {
                c.recv(&wait).unwrap().len()
            };
        }
        assert_eq!(sum, size * n as usize);
    });
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{size} B: {ns:.1} ns/message, {:.2} M messages/s",
        1000.0 / ns
    );
}

/// Blocking waits; `PROBE_SPIN` sets their spin (in pauses) before sleeping.
fn probe_wait() -> WaitOptions {
    let mut wait = WaitOptions::forever();
    wait.spin = std::env::var("PROBE_SPIN")
        .ok()
        .and_then(|s| s.parse().ok());
    wait
}
