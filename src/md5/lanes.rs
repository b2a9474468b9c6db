//! Sixteen MD5s at once, one in each 32-bit lane of an AVX-512 register: a reader of many
//! values at a time (`verify -deep`, the scrub) hashes them at several GB/s on one core,
//! where one MD5 runs at ~600 MiB/s whatever the core. Without AVX-512 [`available`] says
//! so, and callers hash one value per thread as before.

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use super::K;
use super::{compress, Md5};

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
/// Blocks all lanes take in step before the thread looks for more work (a piece of
/// `verify -deep`, ~0.6 ms): after a wait for more work, as much work as a wait is worth.
const STEP_RUN: usize = 4096;
/// How long the hashing thread waits for more hashes to have work before it runs the lanes
/// it has: readers are many times slower than a lane, so most of the time most hashes wait
/// for their next piece, and lanes run in step only as often as they fill. Readers do not
/// wait for it while they are less than [`AHEAD`] pieces ahead.
const GATHER: std::time::Duration = std::time::Duration::from_micros(1000);
/// Lanes of a register.
const L: usize = 16;
/// How far ahead of each lane's block the next one is prefetched, in blocks.
const AHEAD_BLOCKS: usize = 8;

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

    /// Moves every lane on: up to STEP_RUN blocks each, all lanes in step when enough are
    /// busy, else one lane after the other. Hashes that end go to `done`.
    fn round(&mut self, done: &mut Vec<(T, [u32; 4])>) {
        done.append(&mut self.ready);
        let busy = self.busy();
        if self.simd && busy >= MIN_LANES {
            // as many blocks as every busy lane has left, so no lane ends inside the run
            let run = self
                .lane
                .iter()
                .flatten()
                .map(|(item, at)| (item.as_ref().len() - at) / 64)
                .min()
                .unwrap_or(0)
                .min(STEP_RUN);
            // an idle lane hashes zeros into a state no one reads
            static ZEROS: [u8; 64] = [0; 64];
            let mut at = [ZEROS.as_ptr(); L];
            for (l, slot) in self.lane.iter().enumerate() {
                if let Some((item, off)) = slot {
                    at[l] = item.as_ref()[*off..].as_ptr();
                }
            }
            for _ in 0..run {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `simd` is set only where the CPU has AVX-512F; every busy lane has
                // `run` whole blocks from its pointer on, and an idle one reads ZEROS again.
                // A prefetch never faults, past the end of a piece included.
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    // sixteen streams, fresh from another core's copy out of the socket, are
                    // more than the hardware prefetcher follows: ask for each lane's block
                    // AHEAD_BLOCKS on (measured: 6% less time in compress16 in verify -deep)
                    for p in at {
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * AHEAD_BLOCKS) as *const i8);
                    }
                    compress16(&mut self.st, &at)
                };
                for (l, slot) in self.lane.iter().enumerate() {
                    if slot.is_some() {
                        at[l] = at[l].wrapping_add(64);
                    }
                }
            }
            for slot in self.lane.iter_mut().flatten() {
                slot.1 += 64 * run;
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

/// One block in each of sixteen lanes: RFC 1321's 64 steps, each lane its own MD5. `at[l]`
/// is lane l's block (64 readable bytes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn compress16(st: &mut [[u32; 16]; 4], at: &[*const u8; 16]) {
    use std::arch::x86_64::*;
    let w = transpose(at);
    let mut a = _mm512_loadu_epi32(st[0].as_ptr() as *const i32);
    let mut b = _mm512_loadu_epi32(st[1].as_ptr() as *const i32);
    let mut c = _mm512_loadu_epi32(st[2].as_ptr() as *const i32);
    let mut d = _mm512_loadu_epi32(st[3].as_ptr() as *const i32);
    let (a0, b0, c0, d0) = (a, b, c, d);
    // b + rotl(a + f(b, c, d) + m + k, s); then the roles move on: (a, b, c, d) ← (d, new, b, c)
    macro_rules! step {
        ($f:expr, $g:literal, $i:literal, $s:literal) => {{
            let t = _mm512_add_epi32(_mm512_add_epi32(a, $f), _mm512_add_epi32(w[$g], _mm512_set1_epi32(K[$i] as i32)));
            let nb = _mm512_add_epi32(b, _mm512_rol_epi32::<$s>(t));
            a = d;
            d = c;
            c = b;
            b = nb;
        }};
    }
    // every step spelled out, (word, step, shift) as literals: loops over the steps left the
    // word index computed at run time, which kept the sixteen words on the stack and made
    // each step wait on a load (60 percent of -deep's CPU went to this function, 2.2 GB/s)
    macro_rules! round {
        ($tt:literal, [$(($g:literal, $i:literal, $s:literal)),*]) => {
            $( step!(_mm512_ternarylogic_epi32::<$tt>(b, c, d), $g, $i, $s); )*
        };
    }
    // the round functions as truth tables over (b, c, d): F = b ? c : d, G = d ? b : c,
    // H = b ^ c ^ d, I = c ^ (b | !d)
    round!(
        0xCA,
        [
            (0, 0, 7),
            (1, 1, 12),
            (2, 2, 17),
            (3, 3, 22),
            (4, 4, 7),
            (5, 5, 12),
            (6, 6, 17),
            (7, 7, 22),
            (8, 8, 7),
            (9, 9, 12),
            (10, 10, 17),
            (11, 11, 22),
            (12, 12, 7),
            (13, 13, 12),
            (14, 14, 17),
            (15, 15, 22)
        ]
    );
    round!(
        0xE4,
        [
            (1, 16, 5),
            (6, 17, 9),
            (11, 18, 14),
            (0, 19, 20),
            (5, 20, 5),
            (10, 21, 9),
            (15, 22, 14),
            (4, 23, 20),
            (9, 24, 5),
            (14, 25, 9),
            (3, 26, 14),
            (8, 27, 20),
            (13, 28, 5),
            (2, 29, 9),
            (7, 30, 14),
            (12, 31, 20)
        ]
    );
    round!(
        0x96,
        [
            (5, 32, 4),
            (8, 33, 11),
            (11, 34, 16),
            (14, 35, 23),
            (1, 36, 4),
            (4, 37, 11),
            (7, 38, 16),
            (10, 39, 23),
            (13, 40, 4),
            (0, 41, 11),
            (3, 42, 16),
            (6, 43, 23),
            (9, 44, 4),
            (12, 45, 11),
            (15, 46, 16),
            (2, 47, 23)
        ]
    );
    round!(
        0x39,
        [
            (0, 48, 6),
            (7, 49, 10),
            (14, 50, 15),
            (5, 51, 21),
            (12, 52, 6),
            (3, 53, 10),
            (10, 54, 15),
            (1, 55, 21),
            (8, 56, 6),
            (15, 57, 10),
            (6, 58, 15),
            (13, 59, 21),
            (4, 60, 6),
            (11, 61, 10),
            (2, 62, 15),
            (9, 63, 21)
        ]
    );
    let out = [_mm512_add_epi32(a, a0), _mm512_add_epi32(b, b0), _mm512_add_epi32(c, c0), _mm512_add_epi32(d, d0)];
    for (row, v) in st.iter_mut().zip(out) {
        _mm512_storeu_epi32(row.as_mut_ptr() as *mut i32, v);
    }
}

/// The sixteen blocks as message words: `w[j]` holds word j of every lane's block (a 16×16
/// transpose of 32-bit words in registers: two rounds of unpacks within 128-bit blocks,
/// then a 4×4 transpose of the 128-bit blocks themselves).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose(at: &[*const u8; 16]) -> [std::arch::x86_64::__m512i; 16] {
    use std::arch::x86_64::*;
    let r: [__m512i; 16] = std::array::from_fn(|l| _mm512_loadu_si512(at[l] as *const _));
    // t[2i], t[2i+1]: lanes 2i and 2i+1 interleaved, words 4k, 4k+1 and 4k+2, 4k+3 of block k
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // u[4i+c]: block k holds word 4k+c of lanes 4i..4i+3
    let mut u = [_mm512_setzero_si512(); 16];
    for i in 0..4 {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // word 4k+c of every lane: block k of u[c], u[4+c], u[8+c], u[12+c], in that order
    let mut w = [_mm512_setzero_si512(); 16];
    for c in 0..4 {
        let v0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_i32x4::<0b11_10_11_10>(u[c], u[4 + c]);
        let v2 = _mm512_shuffle_i32x4::<0b01_00_01_00>(u[8 + c], u[12 + c]);
        let v3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(u[8 + c], u[12 + c]);
        w[c] = _mm512_shuffle_i32x4::<0b10_00_10_00>(v0, v2);
        w[4 + c] = _mm512_shuffle_i32x4::<0b11_01_11_01>(v0, v2);
        w[8 + c] = _mm512_shuffle_i32x4::<0b10_00_10_00>(v1, v3);
        w[12 + c] = _mm512_shuffle_i32x4::<0b11_01_11_01>(v1, v3);
    }
    w
}

/// What readers send the hashing thread.
enum Msg {
    /// The next whole blocks of hash `id` (its first piece starts it from [`Md5::INIT`]);
    /// the buffer goes back through `back` once taken in.
    Piece { id: u64, data: Vec<u8>, back: flume::Sender<Vec<u8>> },
    /// Hash `id` has had all its pieces: its state goes to `reply` once they are taken in.
    End { id: u64, reply: flume::Sender<[u32; 4]> },
}

/// A piece in a lane.
struct Running {
    id: u64,
    data: Vec<u8>,
    back: flume::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Running {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// One hash on the thread: its pieces wait their turn here, and the next one takes the lane
/// of the one before as soon as it ends, with no round trip to the reader.
struct Hash {
    state: [u32; 4],
    queue: std::collections::VecDeque<(Vec<u8>, flume::Sender<Vec<u8>>)>,
    running: bool,
    end: Option<flume::Sender<[u32; 4]>>,
}

/// The hashing thread, started on first use.
static THREAD: OnceLock<Option<flume::Sender<Msg>>> = OnceLock::new();

/// Pieces of one stream handed over and not yet back: the reader reads the next while the
/// thread hashes these, and waits when it is this far ahead.
const AHEAD: usize = 3;

/// One MD5 taken in piece by piece on the hashing thread, which hashes the pieces of every
/// stream in step. The reader hands over whole blocks and goes on reading; it waits only
/// when [`AHEAD`] pieces are still out, and at the end for the state.
pub struct Stream {
    id: u64,
    tx: &'static flume::Sender<Msg>,
    back_tx: flume::Sender<Vec<u8>>,
    back: flume::Receiver<Vec<u8>>,
    out: usize,
    hashed: u64,
    ended: bool,
}

impl Stream {
    /// None when the thread could not be started.
    pub fn new() -> Option<Stream> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tx = THREAD.get_or_init(start).as_ref()?;
        let (back_tx, back) = flume::unbounded();
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Stream { id, tx, back_tx, back, out: 0, hashed: 0, ended: false })
    }

    /// Hands over `data` (whole blocks: its length a multiple of 64). Gives back an emptied
    /// buffer of an earlier piece to fill next, if one is back (waiting for one when
    /// [`AHEAD`] are out); None: the thread is gone.
    pub async fn push(&mut self, data: Vec<u8>) -> Option<Option<Vec<u8>>> {
        debug_assert_eq!(data.len() % 64, 0);
        self.hashed += data.len() as u64;
        self.tx.send(Msg::Piece { id: self.id, data, back: self.back_tx.clone() }).ok()?;
        self.out += 1;
        let back = if self.out > AHEAD { Some(self.back.recv_async().await.ok()?) } else { self.back.try_recv().ok() };
        if back.is_some() {
            self.out -= 1;
        }
        Some(back.map(|mut b| {
            b.clear();
            b
        }))
    }

    /// The state after every piece and the bytes it took in, with the buffers still out;
    /// None: the thread is gone.
    pub async fn finish(mut self) -> Option<([u32; 4], u64, Vec<Vec<u8>>)> {
        let (reply, answer) = flume::bounded(1);
        self.ended = true;
        self.tx.send(Msg::End { id: self.id, reply }).ok()?;
        let state = answer.recv_async().await.ok()?;
        // each buffer is sent back before the state
        let bufs = self.back.try_iter().collect();
        Some((state, self.hashed, bufs))
    }
}

impl Drop for Stream {
    /// A stream given up half way (its read failed) is forgotten once its pieces are in.
    fn drop(&mut self) {
        if !self.ended {
            let (reply, _) = flume::bounded(1);
            let _ = self.tx.send(Msg::End { id: self.id, reply });
        }
    }
}

/// The hashing thread: a piece joins a free lane as soon as one is (a stream's next piece
/// first), and each hash is answered the moment its last piece ends.
fn start() -> Option<flume::Sender<Msg>> {
    use std::collections::{HashMap, VecDeque};
    let (tx, rx) = flume::unbounded::<Msg>();
    let spawned = std::thread::Builder::new().name("mkv-md5".into()).spawn(move || {
        let mut lanes: Lanes<Running> = Lanes::new();
        let mut done = Vec::new();
        let mut hashes: HashMap<u64, Hash> = HashMap::new();
        // hashes with a piece to take in and no lane: waiting for one
        let mut waiting: VecDeque<u64> = VecDeque::new();
        let take = |m: Msg, hashes: &mut HashMap<u64, Hash>, waiting: &mut VecDeque<u64>| match m {
            Msg::Piece { id, data, back } => {
                let h = hashes.entry(id).or_insert_with(|| Hash {
                    state: Md5::INIT,
                    queue: VecDeque::new(),
                    running: false,
                    end: None,
                });
                h.queue.push_back((data, back));
                if !h.running && h.queue.len() == 1 {
                    waiting.push_back(id);
                }
            }
            Msg::End { id, reply } => match hashes.get_mut(&id) {
                None => {
                    let _ = reply.send(Md5::INIT);
                }
                Some(h) if !h.running && h.queue.is_empty() => {
                    let _ = reply.send(h.state);
                    hashes.remove(&id);
                }
                Some(h) => h.end = Some(reply),
            },
        };
        let fill = |lanes: &mut Lanes<Running>, hashes: &mut HashMap<u64, Hash>, waiting: &mut VecDeque<u64>| {
            while lanes.free() {
                let Some(id) = waiting.pop_front() else { break };
                let Some(h) = hashes.get_mut(&id) else { continue };
                let Some((data, back)) = h.queue.pop_front() else { continue };
                h.running = true;
                lanes.put(h.state, Running { id, data, back });
            }
        };
        loop {
            if lanes.busy() == 0 && waiting.is_empty() {
                // nothing going on: wait for work (or the end of every sender)
                let Ok(m) = rx.recv() else { return };
                take(m, &mut hashes, &mut waiting);
            }
            for m in rx.try_iter() {
                take(m, &mut hashes, &mut waiting);
            }
            fill(&mut lanes, &mut hashes, &mut waiting);
            // hashes still open are readers about to hand over a piece: gather them for a
            // while (an idle lane is work lost), but no longer than GATHER, so that a reader
            // that stalls does not hold up the others
            let deadline = std::time::Instant::now() + GATHER;
            while lanes.busy() < hashes.len().min(L) {
                let Ok(m) = rx.recv_deadline(deadline) else { break };
                take(m, &mut hashes, &mut waiting);
                fill(&mut lanes, &mut hashes, &mut waiting);
            }
            lanes.round(&mut done);
            for (r, state) in done.drain(..) {
                let _ = r.back.send(r.data);
                let Some(h) = hashes.get_mut(&r.id) else { continue };
                h.state = state;
                h.running = false;
                if !h.queue.is_empty() {
                    waiting.push_front(r.id);
                } else if let Some(reply) = h.end.take() {
                    let _ = reply.send(state);
                    hashes.remove(&r.id);
                }
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

    /// Streams of many lengths, several pieces each, more of them than lanes, read while
    /// the thread works: each ends with the MD5 of its bytes, and every buffer comes back.
    #[test]
    fn streams_end_with_the_md5_of_their_pieces() {
        let data: Vec<u8> = (0..64 * 3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            let jobs = (0..40usize).map(|i| {
                let data = &data;
                async move {
                    let len = 64 * ((i * 97) % 3000) + i % 64;
                    let body = &data[..len];
                    let mut s = Stream::new().expect("the hashing thread starts");
                    let piece = 64 * (1 + i % 7) * 10;
                    let whole = len / 64 * 64;
                    let (mut at, mut given, mut back) = (0, 0, 0);
                    while at < whole {
                        let end = (at + piece).min(whole);
                        given += 1;
                        back += s.push(body[at..end].to_vec()).await.expect("pushed").is_some() as usize;
                        at = end;
                    }
                    let (state, hashed, rest) = s.finish().await.expect("finished");
                    assert_eq!((hashed, back + rest.len()), (whole as u64, given), "stream {i}: bytes and buffers");
                    let mut h = Md5::resume(state, hashed);
                    h.update(&body[whole..]);
                    assert_eq!(h.finalize(), Md5::digest(body), "stream {i} of {len} bytes");
                }
            });
            futures_util::future::join_all(jobs).await;
            // a stream dropped half way leaves the others whole
            let mut s = Stream::new().unwrap();
            s.push(data[..6400].to_vec()).await.unwrap();
            drop(s);
            let mut t = Stream::new().unwrap();
            t.push(data[..640].to_vec()).await.unwrap();
            let (state, hashed, _) = t.finish().await.unwrap();
            assert_eq!(Md5::resume(state, hashed).finalize(), Md5::digest(&data[..640]));
        });
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod speed {
    /// `cargo test --release speed_of_compress16 -- --ignored --nocapture`: the rate of the
    /// sixteen lanes on blocks in L1, to tell the hash's own cost from the reads' (and the
    /// sixteen states checked against the one-lane compress after as many blocks).
    #[test]
    #[ignore]
    fn speed_of_compress16() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        let data: Vec<u8> = (0..16 * 64u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let at: [*const u8; 16] = std::array::from_fn(|l| data[l * 64..].as_ptr());
        let init = crate::md5::Md5::INIT;
        let mut st: [[u32; 16]; 4] = std::array::from_fn(|w| [init[w]; 16]);
        let n = 500_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            // SAFETY: AVX-512F checked above; each pointer has 64 readable bytes
            unsafe { super::compress16(&mut st, &at) };
        }
        let s = t.elapsed().as_secs_f64();
        eprintln!("{:.0} MiB/s ({:.1} ns a call)", (n * 1024) as f64 / s / 1048576.0, s * 1e9 / n as f64);
        for l in 0..16 {
            let block: &[u8; 64] = data[l * 64..][..64].try_into().unwrap();
            let mut one = init;
            for _ in 0..n {
                crate::md5::compress(&mut one, block);
            }
            assert_eq!(one, [st[0][l], st[1][l], st[2][l], st[3][l]], "lane {l}");
        }
    }
}
