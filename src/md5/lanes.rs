//! Sixteen MD5s at once, one in each 32-bit lane of an AVX-512 register: a reader of many
//! values at a time (`verify -deep`, the scrub) hashes them at several GB/s on one core,
//! where one MD5 runs at ~600 MiB/s whatever the core. Without AVX-512 [`available`] says
//! so, and callers hash one value per thread as before.

use std::sync::OnceLock;

use super::compress;
#[cfg(target_arch = "x86_64")]
use super::{K, S};

/// Blocks of one hash to take in: its running state and whole 64-byte blocks.
#[cfg(test)]
pub struct Job<'a> {
    pub state: [u32; 4],
    pub data: &'a [u8],
}

/// Fewer hashes than this in step are taken on one by one: a register of mostly idle lanes
/// does less than a scalar core.
const MIN_LANES: usize = 3;
/// Blocks each hash takes on one by one before the lanes look for more work.
const SCALAR_RUN: usize = 64;
/// Lanes of a register.
const L: usize = 16;

/// Whether this CPU runs sixteen lanes (AVX-512F), and `MKV_MD5_LANES=off` does not say to
/// hash one by one anyway (the tests of the other road, on a CPU that has them).
pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let off = std::env::var_os("MKV_MD5_LANES").is_some_and(|v| v == "off");
        #[cfg(target_arch = "x86_64")]
        let has = std::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let has = false;
        has && !off
    })
}

/// Takes each job's blocks into its state: sixteen jobs in step where the CPU can (the
/// tests' check of the lanes against one-by-one hashing; the thread below is what runs).
#[cfg(test)]
pub fn compress_all(jobs: &mut [Job<'_>]) {
    let mut lanes = Lanes::new();
    let mut next = 0;
    let mut done = Vec::new();
    loop {
        while lanes.free() && next < jobs.len() {
            lanes.put(jobs[next].state, Indexed(next, jobs[next].data));
            next += 1;
        }
        if lanes.busy() == 0 {
            break;
        }
        lanes.round(&mut done);
        for (Indexed(i, _), state) in done.drain(..) {
            jobs[i].state = state;
        }
    }
}

/// A job of [`compress_all`], by its place in the slice.
#[cfg(test)]
struct Indexed<'a>(usize, &'a [u8]);

#[cfg(test)]
impl AsRef<[u8]> for Indexed<'_> {
    fn as_ref(&self) -> &[u8] {
        self.1
    }
}

/// Whole blocks of `data` into `state`, one after the other.
fn blocks(state: &mut [u32; 4], data: &[u8]) {
    for b in data.chunks_exact(64) {
        compress(state, b.try_into().expect("64-byte chunk"));
    }
}

/// Up to sixteen hashes going on at once, each in a lane: a piece of data (whole blocks) and
/// how far into it the lane is.
struct Lanes<T> {
    lane: [Option<(T, usize)>; L],
    /// The states by word, then lane: each row loads as one register.
    st: [[u32; L]; 4],
    simd: bool,
    /// Hashes given nothing to take in: done at once.
    ready: Vec<(T, [u32; 4])>,
}

impl<T: AsRef<[u8]>> Lanes<T> {
    fn new() -> Lanes<T> {
        Lanes { lane: std::array::from_fn(|_| None), st: [[0; L]; 4], simd: available(), ready: Vec::new() }
    }

    fn busy(&self) -> usize {
        self.lane.iter().flatten().count() + self.ready.len()
    }

    fn free(&self) -> bool {
        self.lane.iter().any(Option::is_none)
    }

    /// Starts `item` (its data whole blocks) from `state` in a free lane.
    fn put(&mut self, state: [u32; 4], item: T) {
        if item.as_ref().len() < 64 {
            self.ready.push((item, state));
            return;
        }
        let Some(l) = self.lane.iter().position(Option::is_none) else { return };
        for (w, row) in self.st.iter_mut().enumerate() {
            row[l] = state[w];
        }
        self.lane[l] = Some((item, 0));
    }

    fn state(&self, l: usize) -> [u32; 4] {
        [self.st[0][l], self.st[1][l], self.st[2][l], self.st[3][l]]
    }

    /// Moves every lane on: a block each, all at once, when enough lanes are busy; else up to
    /// SCALAR_RUN blocks each, one lane after the other. Hashes that end go to `done`.
    fn round(&mut self, done: &mut Vec<(T, [u32; 4])>) {
        done.append(&mut self.ready);
        let busy = self.busy();
        if self.simd && busy >= MIN_LANES {
            // message words by word, then lane; an idle lane hashes zeros into a state unused
            let mut m = [[0u32; L]; 16];
            for (l, slot) in self.lane.iter().enumerate() {
                let Some((item, at)) = slot else { continue };
                let b = &item.as_ref()[*at..*at + 64];
                for (w, row) in m.iter_mut().enumerate() {
                    row[l] = u32::from_le_bytes([b[4 * w], b[4 * w + 1], b[4 * w + 2], b[4 * w + 3]]);
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `simd` is set only where the CPU has AVX-512F.
            unsafe {
                compress16(&mut self.st, &m)
            };
            for slot in self.lane.iter_mut().flatten() {
                slot.1 += 64;
            }
        } else {
            for l in 0..L {
                let Some((item, at)) = &mut self.lane[l] else { continue };
                let data = item.as_ref();
                let end = (*at + 64 * SCALAR_RUN).min(data.len() / 64 * 64);
                let mut state = [self.st[0][l], self.st[1][l], self.st[2][l], self.st[3][l]];
                blocks(&mut state, &data[*at..end]);
                *at = end;
                for (w, row) in self.st.iter_mut().enumerate() {
                    row[l] = state[w];
                }
            }
        }
        for l in 0..L {
            let ended = matches!(&self.lane[l], Some((item, at)) if *at + 64 > item.as_ref().len());
            if ended {
                let state = self.state(l);
                if let Some((item, _)) = self.lane[l].take() {
                    done.push((item, state));
                }
            }
        }
    }
}

/// One block in each of sixteen lanes: RFC 1321's 64 steps, each lane its own MD5.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn compress16(st: &mut [[u32; 16]; 4], m: &[[u32; 16]; 16]) {
    use std::arch::x86_64::*;
    let mut w = [_mm512_setzero_si512(); 16];
    for (v, row) in w.iter_mut().zip(m) {
        *v = _mm512_loadu_epi32(row.as_ptr() as *const i32);
    }
    let mut a = _mm512_loadu_epi32(st[0].as_ptr() as *const i32);
    let mut b = _mm512_loadu_epi32(st[1].as_ptr() as *const i32);
    let mut c = _mm512_loadu_epi32(st[2].as_ptr() as *const i32);
    let mut d = _mm512_loadu_epi32(st[3].as_ptr() as *const i32);
    let (a0, b0, c0, d0) = (a, b, c, d);
    // b + rotl(a + f(b, c, d) + m + k, s); then the roles move on: (a, b, c, d) ← (d, new, b, c)
    macro_rules! step {
        ($f:expr, $g:expr, $i:expr) => {{
            let t = _mm512_add_epi32(_mm512_add_epi32(a, $f), _mm512_add_epi32(w[$g], _mm512_set1_epi32(K[$i] as i32)));
            let nb = _mm512_add_epi32(b, _mm512_rolv_epi32(t, _mm512_set1_epi32(S[$i / 16][$i % 4] as i32)));
            a = d;
            d = c;
            c = b;
            b = nb;
        }};
    }
    // the round functions as truth tables over (b, c, d): F = b ? c : d, G = d ? b : c,
    // H = b ^ c ^ d, I = c ^ (b | !d)
    for i in 0..16 {
        step!(_mm512_ternarylogic_epi32::<0xCA>(b, c, d), i, i);
    }
    for i in 16..32 {
        step!(_mm512_ternarylogic_epi32::<0xE4>(b, c, d), (5 * i + 1) % 16, i);
    }
    for i in 32..48 {
        step!(_mm512_ternarylogic_epi32::<0x96>(b, c, d), (3 * i + 5) % 16, i);
    }
    for i in 48..64 {
        step!(_mm512_ternarylogic_epi32::<0x39>(b, c, d), (7 * i) % 16, i);
    }
    let out = [_mm512_add_epi32(a, a0), _mm512_add_epi32(b, b0), _mm512_add_epi32(c, c0), _mm512_add_epi32(d, d0)];
    for (row, v) in st.iter_mut().zip(out) {
        _mm512_storeu_epi32(row.as_mut_ptr() as *mut i32, v);
    }
}

/// A piece of one hash, sent to the hashing thread.
struct Req {
    state: [u32; 4],
    data: Vec<u8>,
    reply: flume::Sender<([u32; 4], Vec<u8>)>,
}

/// The hashing thread, started on first use.
static THREAD: OnceLock<Option<flume::Sender<Req>>> = OnceLock::new();

/// Takes the whole blocks of `data` (its length a multiple of 64) into `state`, on a thread
/// that hashes the pieces of every reader in step. Gives back the state and
/// the buffer (to be reused); None when the thread could not be started or is gone.
pub async fn hash_blocks(state: [u32; 4], data: Vec<u8>) -> Option<([u32; 4], Vec<u8>)> {
    debug_assert_eq!(data.len() % 64, 0);
    let tx = THREAD.get_or_init(start).as_ref()?;
    let (reply, answer) = flume::bounded(1);
    tx.send(Req { state, data, reply }).ok()?;
    answer.recv_async().await.ok()
}

impl AsRef<[u8]> for Req {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// The hashing thread: a piece joins a free lane as soon as one is, and each hash is
/// answered the moment it ends, so readers never wait for a batch.
fn start() -> Option<flume::Sender<Req>> {
    let (tx, rx) = flume::unbounded::<Req>();
    let spawned = std::thread::Builder::new().name("mkv-md5".into()).spawn(move || {
        let mut lanes = Lanes::new();
        let mut done = Vec::new();
        loop {
            if lanes.busy() == 0 {
                // nothing going on: wait for work (or the end of every sender)
                let Ok(r) = rx.recv() else { return };
                lanes.put(r.state, r);
            }
            while lanes.free() {
                let Ok(r) = rx.try_recv() else { break };
                lanes.put(r.state, r);
            }
            lanes.round(&mut done);
            for (r, state) in done.drain(..) {
                let _ = r.reply.send((state, r.data));
            }
        }
    });
    spawned.ok().map(|_| tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::md5::Md5;

    /// Jobs of many lengths, fewer and more than a register holds, against one by one.
    #[test]
    fn lanes_match_one_by_one() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        for count in [1, 2, 3, 5, 16, 17, 40] {
            let pieces: Vec<&[u8]> =
                (0..count).map(|i| &data[i * 97 % 1000..][..(i * 7919 % 3000) / 64 * 64]).collect();
            let mut jobs: Vec<Job<'_>> = pieces.iter().map(|p| Job { state: Md5::INIT, data: p }).collect();
            compress_all(&mut jobs);
            for (j, p) in jobs.iter().zip(&pieces) {
                let mut h = Md5::resume(j.state, p.len() as u64);
                h.update(b"tail");
                let mut want = Md5::new();
                want.update(p);
                want.update(b"tail");
                assert_eq!(h.finalize(), want.finalize(), "{count} jobs, one of {} bytes", p.len());
            }
        }
    }

    #[test]
    fn the_thread_answers_each_piece() {
        let data = vec![7u8; 64 * 1000];
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().unwrap();
        let states = rt.block_on(async {
            let jobs = (0..20).map(|i| hash_blocks(Md5::INIT, data[..64 * (i + 1) * 10].to_vec()));
            futures_util::future::join_all(jobs).await
        });
        for (i, r) in states.into_iter().enumerate() {
            let (state, back) = r.expect("the hashing thread answers");
            assert_eq!(back.len(), 64 * (i + 1) * 10, "the buffer comes back");
            assert_eq!(Md5::resume(state, back.len() as u64).finalize(), Md5::digest(&back));
        }
    }
}
