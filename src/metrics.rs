//! What the master counts for `/metrics` and the status page: each runtime thread counts
//! into its own block (relaxed adds on lines no other core writes), summed only when read.

use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    Arc, Mutex,
};

/// Request kinds counted apart (the `method` label).
pub const METHODS: [&str; 11] =
    ["GET", "HEAD", "PUT", "DELETE", "UNLINK", "LIST", "REBALANCE", "ADMIN", "S3", "OTHER", "BAD"];
pub const GET: usize = 0;
pub const HEAD: usize = 1;
pub const PUT: usize = 2;
pub const DELETE: usize = 3;
pub const UNLINK: usize = 4;
pub const LIST: usize = 5;
pub const REBALANCE: usize = 6;
/// Admin methods (`VOLUMES`) on either port, and every request to the admin port.
pub const ADMIN: usize = 7;
pub const S3: usize = 8;
pub const OTHER: usize = 9;
/// A request that never got as far as a method (malformed head, timeout).
pub const BAD: usize = 10;

/// Status codes counted by value; any other lands in the last slot, labelled by class.
pub const STATUSES: [u16; 28] = [
    200, 201, 204, 206, 302, 304, 400, 401, 403, 404, 405, 408, 409, 411, 412, 413, 414, 416, 417, 431, 499, 500, 501,
    502, 503, 504, 507, 0,
];
/// The status a request is counted under when its client went away before its body's end
/// (nginx's "client closed request"): its answer, if any, reached no one.
pub const CLIENT_GONE: u16 = 499;
const OTHER_STATUS: usize = STATUSES.len() - 1;

/// Upper bounds of the latency buckets, in microseconds (the last is +Inf).
pub const BUCKETS_US: [u64; 16] = [
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    5_000_000,
    u64::MAX,
];

/// One thread's counters.
#[derive(Default)]
pub struct Block {
    requests: [[AtomicU64; STATUSES.len()]; METHODS.len()],
    latency: [[AtomicU64; BUCKETS_US.len()]; METHODS.len()],
    latency_sum_us: [AtomicU64; METHODS.len()],
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub puts_in_flight: AtomicI64,
    pub connections: AtomicI64,
}

fn status_slot(status: u16) -> usize {
    STATUSES[..OTHER_STATUS].iter().position(|&s| s == status).unwrap_or(OTHER_STATUS)
}

impl Block {
    /// One answered request of kind `method` (an index into [`METHODS`]).
    pub fn request(&self, method: usize, status: u16, micros: u64) {
        self.requests[method][status_slot(status)].fetch_add(1, Relaxed);
        let b = BUCKETS_US.iter().position(|&ub| micros <= ub).unwrap_or(BUCKETS_US.len() - 1);
        self.latency[method][b].fetch_add(1, Relaxed);
        self.latency_sum_us[method].fetch_add(micros, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// Every thread's block.
#[derive(Default)]
pub struct Registry {
    blocks: Mutex<Vec<Arc<Block>>>,
}

/// The blocks summed at one moment.
#[derive(Clone, Default)]
pub struct Totals {
    /// `(method, status, count)` for every non-zero pair; status 0 means "other".
    pub requests: Vec<(usize, u16, u64)>,
    /// Per method: bucket counts (not cumulative) and the sum of microseconds.
    pub latency: Vec<([u64; BUCKETS_US.len()], u64)>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub puts_in_flight: i64,
    pub connections: i64,
}

impl Registry {
    /// A new thread's block.
    pub fn block(&self) -> Arc<Block> {
        let b = Arc::new(Block::default());
        self.blocks.lock().unwrap_or_else(|e| e.into_inner()).push(b.clone());
        b
    }

    pub fn totals(&self) -> Totals {
        let blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut t = Totals { latency: vec![([0; BUCKETS_US.len()], 0); METHODS.len()], ..Totals::default() };
        let mut req = [[0u64; STATUSES.len()]; METHODS.len()];
        for b in &blocks {
            // `m` indexes five arrays in step
            #[allow(clippy::needless_range_loop)]
            for m in 0..METHODS.len() {
                for s in 0..STATUSES.len() {
                    req[m][s] += b.requests[m][s].load(Relaxed);
                }
                for k in 0..BUCKETS_US.len() {
                    t.latency[m].0[k] += b.latency[m][k].load(Relaxed);
                }
                t.latency[m].1 += b.latency_sum_us[m].load(Relaxed);
            }
            t.bytes_in += b.bytes_in.load(Relaxed);
            t.bytes_out += b.bytes_out.load(Relaxed);
            t.cache_hits += b.cache_hits.load(Relaxed);
            t.cache_misses += b.cache_misses.load(Relaxed);
            t.puts_in_flight += b.puts_in_flight.load(Relaxed);
            t.connections += b.connections.load(Relaxed);
        }
        for (m, row) in req.iter().enumerate() {
            for (s, &n) in row.iter().enumerate() {
                if n > 0 {
                    t.requests.push((m, STATUSES[s], n));
                }
            }
        }
        t
    }
}

impl Totals {
    /// Requests answered in all.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.requests.iter().map(|r| r.2).sum()
    }

    /// The `q` quantile (0..1) of one method's latency in microseconds, as the upper bound of
    /// the bucket it falls in (None: no requests).
    pub fn quantile_us(&self, method: usize, q: f64) -> Option<u64> {
        let (buckets, _) = &self.latency[method];
        let n: u64 = buckets.iter().sum();
        if n == 0 {
            return None;
        }
        let want = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in buckets.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(BUCKETS_US[i]);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_sum_and_quantiles_fall_in_buckets() {
        let r = Registry::default();
        let (a, b) = (r.block(), r.block());
        a.request(GET, 302, 40);
        a.request(GET, 302, 40);
        b.request(GET, 404, 3_000);
        b.request(PUT, 599, 70);
        let t = r.totals();
        assert_eq!(t.count(), 4);
        assert!(t.requests.contains(&(GET, 302, 2)));
        assert!(t.requests.contains(&(GET, 404, 1)));
        assert!(t.requests.contains(&(PUT, 0, 1)), "an uncounted status is 'other'");
        assert_eq!(t.quantile_us(GET, 0.5), Some(50));
        assert_eq!(t.quantile_us(GET, 0.99), Some(5_000));
        assert_eq!(t.quantile_us(DELETE, 0.5), None);
        assert_eq!(t.latency[GET].1, 3_080);
    }

    #[test]
    fn every_status_the_native_api_answers_is_counted_by_value() {
        // 417 (an Expect other than 100-continue) was labelled "other"
        for status in [400, 401, 403, 404, 405, 408, 409, 411, 413, 414, 417, 431, 500, 502, 503, 504, 507] {
            assert_ne!(status_slot(status), OTHER_STATUS, "{status}");
        }
    }
}
