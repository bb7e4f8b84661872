//! The process-wide budget of kept blobs: alone in its test binary, since the budget is shared
//! by every producer of the process. The budget is set through the environment
//! (`SHMPIPE_BLOB_KEEP_BYTES`), so that the test does not depend on which backing the queues
//! have (each has its own default budget) or on the machine's sizes.

use shmpipe_core::tuning::{kept_in_process, process_keep_budget, KEEP_BUDGET_ENV};
use shmpipe_core::{Queue, QueueOptions, WaitOptions};

fn queue() -> Queue {
    Queue::create(&QueueOptions {
        capacity: 4,
        bytes: 4096,
        max_producers: 1,
    })
    .unwrap()
}

#[test]
fn producers_of_one_process_keep_no_more_than_its_budget_in_all() {
    const BUDGET: u64 = 64 << 20;
    // The only test of this binary: nothing has read the budget (read once) before this.
    std::env::set_var(KEEP_BUDGET_ENV, BUDGET.to_string());
    let budget = process_keep_budget();
    assert_eq!(budget, BUDGET);
    // Each blob is a little over half the budget: one fits, two do not.
    let len = budget / 2 + 4096;
    let send_one = |q: &Queue| {
        let mut p = q.producer().unwrap();
        let mut c = q.consumer().unwrap();
        let mut loan = p.reserve(len, &WaitOptions::forever()).unwrap();
        assert!(loan.is_blob());
        loan.as_mut_slice()[..4096].fill(7);
        loan.commit().unwrap();
        let m = c.try_recv().unwrap().unwrap();
        assert_eq!(m.as_slice()[..4096], [7u8; 4096]);
        drop(m);
        (p, c)
    };
    let (qa, qb) = (queue(), queue());
    let (pa, _ca) = send_one(&qa);
    assert_eq!(pa.kept_blob_bytes(), len);
    assert_eq!(kept_in_process(), len);
    let (pb, _cb) = send_one(&qb);
    assert_eq!(pb.kept_blob_bytes(), 0, "kept past the process's budget");
    assert_eq!(kept_in_process(), len);
    drop(pa);
    assert_eq!(
        kept_in_process(),
        0,
        "a closed producer's blobs stay on the books"
    );
}
