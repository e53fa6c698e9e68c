//! A small thread pool for the kernels' parallel loops, tuned for a decode
//! step: about 120 products of 10–100 µs each, back to back.
//!
//! ONNX Runtime's intra-op pool wakes its workers per operator; for products
//! this short the calling thread has often finished most of the work before
//! a worker arrives, so two threads decoded 8 rows only ~1.1× faster than one.
//! Here the workers spin for [`SPIN`] after each job (a decode step keeps
//! them busy throughout) and then park, so an idle model costs no CPU.
//!
//! Work is split into one contiguous range of items per thread (each thread
//! then streams its own part of the weights); a thread that finishes its
//! range takes ranges nobody has started.
//!
//! Sessions share pools ([`SpinPool::shared`]): two models decoding at once
//! take turns per product instead of four threads spinning on two cores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
pub const SPIN: Duration = Duration::from_micros(300);

/// A job: the function and the number of items, behind a raw pointer
/// (valid while [`SpinPool::run`] waits for the job to finish).
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    items: usize,
    epoch: usize,
}

/// Bits of [`Shared::next_range`] that count ranges; the rest hold the
/// epoch of the job they belong to, so that a late worker cannot claim a
/// range of a newer job with an older job's function.
const RANGE_BITS: u32 = 16;

// SAFETY: the pointee is `Sync`, and `run` keeps it alive until every thread
// is done with it.
unsafe impl Send for Job {}

struct Shared {
    /// Bumped for every job; workers watch it.
    epoch: AtomicUsize,
    /// The current job (read after seeing a new epoch).
    job: Mutex<Option<Job>>,
    /// `epoch << RANGE_BITS | ranges handed out` for the current job.
    next_range: AtomicUsize,
    /// Ranges finished for the current job.
    done_ranges: AtomicUsize,
    /// Workers asleep on `wake`.
    parked: Mutex<usize>,
    wake: Condvar,
    stop: AtomicBool,
}

/// A pool of `threads − 1` workers plus the calling thread.
pub struct SpinPool {
    shared: Arc<Shared>,
    threads: usize,
    workers: Vec<JoinHandle<()>>,
    /// Serialises jobs from several callers.
    running: Mutex<()>,
}

impl std::fmt::Debug for SpinPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpinPool").field("threads", &self.threads).finish_non_exhaustive()
    }
}

impl SpinPool {
    /// A pool whose jobs run on `threads` threads (the caller and
    /// `threads − 1` workers; at least 1).
    pub fn new(threads: usize) -> std::io::Result<SpinPool> {
        let threads = threads.clamp(1, (1 << RANGE_BITS) - 1);
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: Mutex::new(None),
            next_range: AtomicUsize::new(0),
            done_ranges: AtomicUsize::new(0),
            parked: Mutex::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for i in 1..threads {
            let shared = shared.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("techne-kernel-{i}"))
                    .spawn(move || worker(&shared, threads))?,
            );
        }
        Ok(SpinPool { shared, threads, workers, running: Mutex::new(()) })
    }

    /// The process-wide pool of `threads` threads (created on first use;
    /// every session asking for the same count shares it, and its jobs run
    /// one at a time).
    pub fn shared(threads: usize) -> std::io::Result<Arc<SpinPool>> {
        static POOLS: OnceLock<Mutex<HashMap<usize, Arc<SpinPool>>>> = OnceLock::new();
        let threads = threads.clamp(1, (1 << RANGE_BITS) - 1);
        let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = pools.get(&threads) {
            return Ok(pool.clone());
        }
        let pool = Arc::new(SpinPool::new(threads)?);
        pools.insert(threads, pool.clone());
        Ok(pool)
    }

    /// The threads a job runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `f(i)` for every `i < items` on the pool's threads and returns
    /// when all calls have returned.
    pub fn run(&self, items: usize, f: &(dyn Fn(usize) + Sync)) {
        if items == 0 {
            return;
        }
        if self.threads == 1 || items == 1 {
            (0..items).for_each(f);
            return;
        }
        let _one_job = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let s = &*self.shared;
        // SAFETY (lifetime): `f` outlives this call, and this call returns
        // only once every range is done, after which no worker touches it.
        let f_static: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        // One caller at a time (`running`), so nobody else bumps the epoch.
        let epoch = (s.epoch.load(Ordering::Acquire) + 1) & (usize::MAX >> RANGE_BITS);
        let job = Job { f: f_static, items, epoch };
        *s.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(job);
        s.done_ranges.store(0, Ordering::Relaxed);
        s.next_range.store(epoch << RANGE_BITS, Ordering::Release);
        s.epoch.store(epoch, Ordering::Release);
        if *s.parked.lock().unwrap_or_else(|p| p.into_inner()) > 0 {
            s.wake.notify_all();
        }
        run_ranges(s, job, self.threads);
        while s.done_ranges.load(Ordering::Acquire) < self.threads {
            std::hint::spin_loop();
        }
        *s.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Takes ranges of `job` until none is left.
fn run_ranges(s: &Shared, job: Job, threads: usize) {
    let mut cur = s.next_range.load(Ordering::Acquire);
    loop {
        let r = cur & ((1 << RANGE_BITS) - 1);
        if cur >> RANGE_BITS != job.epoch || r >= threads {
            return;
        }
        if let Err(now) = s.next_range.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
            cur = now;
            continue;
        }
        cur += 1;
        let (start, end) = (job.items * r / threads, job.items * (r + 1) / threads);
        // SAFETY: the job is alive until all ranges are counted done.
        let f = unsafe { &*job.f };
        (start..end).for_each(f);
        s.done_ranges.fetch_add(1, Ordering::AcqRel);
    }
}

fn worker(s: &Shared, threads: usize) {
    let mut seen = 0usize;
    loop {
        let spin_start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                let job = *s.job.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(job) = job {
                    run_ranges(s, job, threads);
                }
                break;
            }
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(1024) && spin_start.elapsed() > SPIN {
                let mut parked = s.parked.lock().unwrap_or_else(|p| p.into_inner());
                *parked += 1;
                while s.epoch.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
                    parked = s.wake.wait(parked).unwrap_or_else(|p| p.into_inner());
                }
                *parked -= 1;
                break;
            }
        }
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _parked = self.shared.parked.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_across_jobs_and_after_parking() {
        let pool = SpinPool::new(3).expect("pool");
        for (round, items) in [0usize, 1, 2, 3, 7, 100, 1000].into_iter().enumerate() {
            let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
            pool.run(items, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "round {round}");
            if round == 3 {
                std::thread::sleep(SPIN * 20); // the workers park
            }
        }
    }

    #[test]
    fn sessions_with_the_same_thread_count_share_a_pool() {
        let a = SpinPool::shared(2).expect("pool");
        let b = SpinPool::shared(2).expect("pool");
        let c = SpinPool::shared(3).expect("pool");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.threads(), 3);
    }

    #[test]
    fn jobs_from_several_threads_do_not_mix() {
        let pool = Arc::new(SpinPool::new(2).expect("pool"));
        std::thread::scope(|s| {
            for _ in 0..3 {
                let pool = pool.clone();
                s.spawn(move || {
                    for _ in 0..200 {
                        let sum = AtomicUsize::new(0);
                        pool.run(50, &|i| {
                            sum.fetch_add(i, Ordering::Relaxed);
                        });
                        assert_eq!(sum.load(Ordering::Relaxed), 50 * 49 / 2);
                    }
                });
            }
        });
    }
}
