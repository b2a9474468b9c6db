//! A value read through the master, for clients that do not follow redirects (S3) and for
//! copies: a live replica opened together with the record that describes it.
//!
//! The record and the file agree even while a replacement is moved into place: the key's
//! write number is read before the record and again once the replica answered; a move in
//! between changed it (see [`super::write`]), and the read starts over. A move after the
//! answer cannot change what nginx already opened. A replica that fails before its first
//! byte is passed over for the next; one that fails mid-stream is taken over by the next
//! from the byte it stopped at ([`Resume`], [`Reader::resuming`]), while the record is the same.

use bytes::Bytes;

use super::{write::Source, Ctx, Error};
use crate::{
    index::State,
    placement::{key_path, read_order, replica_target},
    record::{Phase, Record},
    volume::{self, Client, Download},
};

/// Tries of a read that a replacement keeps overtaking.
const READ_TRIES: usize = 8;
/// Largest piece of a value held while it is copied.
const PIECE: usize = 1 << 20;
/// How long, in steps, a read waits for a replacement's moves to end (they are renames:
/// milliseconds; one that failed is left to recovery, and the read answers 503 meanwhile).
const MOVE_WAIT: std::time::Duration = std::time::Duration::from_millis(5);
const MOVE_WAITS: usize = 400;

/// A live key's record and, when there are bytes to read, a replica's answer ready to read.
pub struct Opened {
    pub rec: Record,
    /// None for an empty value (nothing to read) and for `head` opens.
    pub body: Option<Download>,
}

/// Opens the value of live `key`; with `range` (first and last byte, inclusive, already
/// checked against the size by the caller through `check`), only those bytes. `check`
/// sees the record before any replica is asked and may refuse the read (preconditions).
pub async fn open<E: From<Error>>(
    ctx: &Ctx,
    key: &[u8],
    range: impl Fn(&Record) -> Result<Option<(u64, u64)>, E>,
) -> Result<Opened, E> {
    let index = &ctx.shared.index;
    let mut last = Error::NoLiveReplica;
    for _ in 0..READ_TRIES {
        let before = index.seq(key);
        // a replacement being moved into place: some replicas may hold the new bytes while
        // the record still names the old ones; wait for its commit (a rename per replica)
        if !settled(ctx, key).await? {
            return Err(Error::Settling.into());
        }
        let rec = match index.get_pinned(State::Live, key).map_err(Error::from)? {
            Some(p) => p.record().map_err(Error::from)?.to_owned(),
            None => return Err(Error::NotFound.into()),
        };
        let want = range(&rec)?;
        if rec.size == 0 {
            return Ok(Opened { rec, body: None });
        }
        let (len, extra) = match want {
            Some((a, b)) => (b - a + 1, format!("Range: bytes={a}-{b}\r\n")),
            None => (rec.size, String::new()),
        };
        let topo = ctx.topo();
        let path = key_path(key);
        let mut changed = false;
        let order: Vec<String> =
            spread(&rec.volumes, ctx.shared.cfg.replicas).filter(|r| topo.is_up(r)).cloned().collect();
        for replica in &order {
            let (server, p) = replica_target(replica, &path);
            let d = match ctx.client.download_with(&topo, &server, "GET", &p, extra.as_bytes()).await {
                Ok(d) if matches!(d.status, 200 | 206) => d,
                Ok(d) => {
                    last = volume::Error::Status(server, d.status).into();
                    continue;
                }
                Err(e) => {
                    last = e.into();
                    continue;
                }
            };
            if index.seq(key) != before {
                // replaced while we asked: read the record again
                changed = true;
                break;
            }
            if d.length != Some(len) {
                // this replica is damaged (verify -repair restores it): the next one
                last = volume::Error::Protocol(server, "the replica's size is not the record's").into();
                continue;
            }
            return Ok(Opened { rec, body: Some(d) });
        }
        // no replica had it: a DELETE (or a replacement) since the record was read takes
        // its files away, and the key is looked up again rather than called broken
        if !changed && index.seq(key) == before {
            return Err(last.into());
        }
    }
    // writes of the key landing faster than a replica answers: they are in flight, and the
    // reader may try again (S3's 503 SlowDown, which clients retry)
    Err(Error::InFlight.into())
}

/// Times one read goes on from another replica after the one it read failed mid-stream.
const RESUMES: usize = 2;

/// Where a read of a key goes on after its replica failed mid-stream: another live replica,
/// from the byte it stopped at, at most [`RESUMES`] times and only while the record read is
/// still the key's (a replacement's bytes must never follow the old ones: the read fails).
pub struct Resume<'a> {
    ctx: &'a Ctx,
    key: &'a [u8],
    rec: &'a Record,
    /// The next byte wanted and the last one.
    at: u64,
    to: u64,
    tries: usize,
}

impl<'a> Resume<'a> {
    /// A read of bytes `from..=to` of `rec`, the record of `key` it was opened with.
    pub fn new(ctx: &'a Ctx, key: &'a [u8], rec: &'a Record, (from, to): (u64, u64)) -> Self {
        Resume { ctx, key, rec, at: from, to, tries: 0 }
    }

    /// `n` more bytes were read.
    pub fn advance(&mut self, n: u64) {
        self.at += n;
    }

    /// The rest of the read from another replica; None when it cannot go on.
    pub async fn take_over(&mut self) -> Option<Download> {
        if self.tries == RESUMES || self.at > self.to {
            return None;
        }
        self.tries += 1;
        let (rec, range) = (self.rec, (self.at, self.to));
        let same = |now: &Record| if now == rec { Ok(Some(range)) } else { Err(Error::NotFound) };
        open(self.ctx, self.key, same).await.ok()?.body
    }
}

/// The replicas of a record in the order one read tries them ([`read_order`]), each read
/// of this thread taking the next turn, so reads of a hot key load every volume that
/// holds it, not the first one.
fn spread(volumes: &[String], replicas: usize) -> impl Iterator<Item = &String> {
    thread_local! {
        static TURN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    let turn = TURN.with(|t| {
        let v = t.get();
        t.set(v.wrapping_add(1));
        v
    });
    read_order(volumes.len(), replicas, turn).map(|i| &volumes[i])
}

/// Waits (a little) while `key` has a replacement in its moving phase; false if it stays.
async fn settled<E: From<Error>>(ctx: &Ctx, key: &[u8]) -> Result<bool, E> {
    for _ in 0..MOVE_WAITS {
        match ctx.shared.index.pending(key).map_err(Error::from)? {
            Some(p) if p.phase == Phase::Moving => monoio::time::sleep(MOVE_WAIT).await,
            _ => return Ok(true),
        }
    }
    Ok(false)
}

/// An opened value as a write's source (a copy, a part assembled into an object).
pub struct Reader<'a> {
    client: &'a Client,
    d: Option<Download>,
    /// The whole length, as the first replica's answer gave it.
    len: Option<u64>,
    /// Where the read goes on when its replica fails mid-stream (None: it fails).
    resume: Option<Resume<'a>>,
}

impl<'a> Reader<'a> {
    /// Reads `d` (None: an empty value) to its end; a failure of its replica fails it.
    pub fn new(client: &'a Client, d: Option<Download>) -> Self {
        let len = d.as_ref().map_or(Some(0), |d| d.length);
        Reader { client, d, len, resume: None }
    }

    /// The read goes on from another replica when its replica fails ([`Resume`]).
    pub fn resuming(self, resume: Resume<'a>) -> Self {
        Reader { resume: Some(resume), ..self }
    }
}

impl Source for Reader<'_> {
    type Error = volume::Error;

    async fn next(&mut self, max: usize) -> Result<Option<Bytes>, volume::Error> {
        loop {
            let Some(d) = self.d.as_mut() else { return Ok(None) };
            match self.client.next_chunk(d, max.min(PIECE)).await {
                Ok(Some(c)) => {
                    if let Some(r) = self.resume.as_mut() {
                        r.advance(c.len() as u64);
                    }
                    return Ok(Some(c));
                }
                Ok(None) => {
                    if let Some(d) = self.d.take() {
                        self.client.finish(d);
                    }
                    return Ok(None);
                }
                Err(e) => match self.resume.as_mut() {
                    // the length stays the one checked at the start: the rest is its tail
                    Some(r) => self.d = Some(r.take_over().await.ok_or(e)?),
                    None => return Err(e),
                },
            }
        }
    }

    fn len(&self) -> Option<u64> {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::spread;

    /// Each of the first `replicas` is tried first in turn; entries past them (a move's
    /// old replicas) always last; every replica once per read.
    #[test]
    fn reads_take_turns_over_the_replicas() {
        let v: Vec<String> = ["a", "b", "c", "old"].iter().map(|s| s.to_string()).collect();
        let mut firsts = Vec::new();
        for _ in 0..6 {
            let order: Vec<&str> = spread(&v, 3).map(String::as_str).collect();
            assert_eq!(order.len(), 4);
            assert_eq!(order[3], "old");
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, ["a", "b", "c", "old"]);
            firsts.push(order[0]);
        }
        firsts.sort();
        assert_eq!(firsts, ["a", "a", "b", "b", "c", "c"]);
        assert_eq!(spread(&[], 3).count(), 0);
        assert_eq!(spread(&v[..1], 3).collect::<Vec<_>>(), [&v[0]]);
    }
}
