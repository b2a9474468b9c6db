//! One body streamed to every replica at once: a writer task per replica fed from a short
//! queue of shared pieces, so one briefly slower volume does not hold up the others.

use super::*;

/// Pieces of a streamed PUT queued per replica (shared by the replicas, not copied): with
/// the store's quarter-MiB pieces, a replica may fall 1.5 MiB behind before reading pauses.
pub(super) const UPLOAD_QUEUE: usize = 6;

/// A PUT in progress to several replicas at once.
pub struct Upload {
    pub(super) legs: Vec<UploadLeg>,
    pub(super) chunked: bool,
    pub(super) timeout: Duration,
    /// Bytes queued for every replica so far (framing included).
    pub(super) queued: u64,
    /// The bytes that make the whole request body: known at the start with a length, and
    /// once the terminator is queued when chunked.
    pub(super) whole: Option<u64>,
    /// Set when the upload fails: the writers stop after the piece in hand. (A receiving end
    /// kept here to empty the queues would keep a full queue's sender waiting forever.)
    pub(super) abort: Rc<Cell<bool>>,
}

/// One replica of an [`Upload`]: the queue to its writer task, and that task, which ends
/// with the bytes it wrote.
pub(super) struct UploadLeg {
    /// The file's path on the volume (for a fence).
    pub(super) path: String,
    pub(super) tx: Option<flume::Sender<Bytes>>,
    pub(super) task: Option<monoio::task::JoinHandle<(Leased, Result<u64, Error>)>>,
}

impl Drop for Upload {
    /// An upload dropped unfinished (its client failed) stops at the piece each writer has
    /// in hand instead of sending what is queued.
    fn drop(&mut self) {
        self.abort.set(true);
    }
}

/// One replica's writer: sends the queued pieces in order until the queue closes, and ends
/// with the bytes it wrote. Dropping the [`Upload`] closes the queues, so an abandoned PUT
/// ends here and its connection, never released to the pool, closes.
pub(super) async fn write_leg(
    mut l: Leased,
    rx: flume::Receiver<Bytes>,
    abort: Rc<Cell<bool>>,
    t: Duration,
) -> (Leased, Result<u64, Error>) {
    let mut written = 0;
    while let Ok(piece) = rx.recv_async().await {
        if abort.get() {
            break;
        }
        let n = piece.len() as u64;
        if let Err(e) = write_to(&mut l, piece, t).await {
            return (l, Err(e));
        }
        written += n;
    }
    (l, Ok(written))
}

impl Client {
    /// Starts a streamed PUT to every target: `len` is the body length, or None for chunked.
    /// Each replica gets its own writer task fed from a short queue, so a replica that is
    /// briefly slower does not hold up the others or the reading of the next piece. A copy
    /// of a value written at `modified_ms` keeps that time (see [`dated`]; 0: a new value).
    pub async fn upload_dated(
        &self,
        topo: &Topology,
        targets: &[(String, String)],
        len: Option<u64>,
        modified_ms: u64,
    ) -> Result<Upload, Error> {
        let date = dated(modified_ms);
        // fresh connections: a body is streamed once and cannot be sent again, so a pooled
        // connection that nginx closed at the same moment would fail the PUT (and wrongly
        // mark a healthy volume down); a connect on a LAN costs little next to a streamed body
        let leases = join_all(targets.iter().map(|(s, _)| self.lease(topo, s, true, true))).await;
        let mut legs = Vec::with_capacity(targets.len());
        for l in leases {
            legs.push(l?);
        }
        let t = topo.timeout;
        let writes = legs.iter_mut().zip(targets).map(|(l, (server, path))| {
            let msg = head_with("PUT", server, path, date.as_bytes(), len);
            async move { write_to(l, msg, t).await }
        });
        let results = join_all(writes).await;
        let mut first = None;
        for (l, r) in legs.iter().zip(results) {
            if let Err(e) = r {
                first.get_or_insert(failed(l.vol.as_ref(), e));
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        let abort = Rc::new(Cell::new(false));
        let legs = legs
            .into_iter()
            .zip(targets)
            .map(|(l, (_, path))| {
                let (tx, rx) = flume::bounded(UPLOAD_QUEUE);
                let task = Some(monoio::spawn(write_leg(l, rx, abort.clone(), t)));
                UploadLeg { path: path.clone(), tx: Some(tx), task }
            })
            .collect();
        Ok(Upload { legs, chunked: len.is_none(), timeout: t, queued: 0, whole: len, abort })
    }

    /// Queues one piece of the body for every replica (the bytes are shared, not copied);
    /// waits only while a replica's queue is full.
    pub async fn upload_chunk(&self, up: &mut Upload, chunk: Bytes) -> Result<(), Error> {
        let data = if up.chunked {
            let mut framed = Vec::with_capacity(chunk.len() + 20);
            framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            Bytes::from(framed)
        } else {
            chunk
        };
        self.queue(up, data).await
    }

    /// Queues bytes, as they are, for every replica's writer.
    async fn queue(&self, up: &mut Upload, data: Bytes) -> Result<(), Error> {
        let n = data.len() as u64;
        for leg in &up.legs {
            let sent = match &leg.tx {
                Some(tx) => tx.send_async(data.clone()).await.is_ok(),
                None => false,
            };
            if !sent {
                // that replica's writer stopped: it failed; stop the others and say why
                let err = self.end_legs(up, true).await.err();
                return Err(err.unwrap_or_else(|| Error::Protocol("volume".into(), "a replica writer stopped early")));
            }
        }
        up.queued += n;
        Ok(())
    }

    /// Ends the body and waits for every replica's answer.
    pub async fn upload_finish(&self, mut up: Upload) -> Result<(), Error> {
        if up.chunked {
            const LAST: &[u8] = b"0\r\n\r\n";
            up.whole = Some(up.queued + LAST.len() as u64);
            self.queue(&mut up, Bytes::from_static(LAST)).await?;
        }
        let legs = self.end_legs(&mut up, false).await?;
        let t = up.timeout;
        let answers = join_all(legs.into_iter().map(|(mut l, path, _)| async move {
            let a = read_answer(&mut l, t).await;
            (l, path, a)
        }))
        .await;
        let mut first: Option<Error> = None;
        for (l, path, a) in answers {
            match a {
                Ok(a) if matches!(a.status, 200 | 201 | 204) => {
                    if a.keep {
                        self.release(l);
                    }
                }
                Ok(a) => {
                    first.get_or_insert(Error::Status(l.server, a.status));
                }
                Err(e) => {
                    let e = failed(l.vol.as_ref(), e);
                    if matches!(e, Error::Timeout(_)) {
                        fence(l, &path);
                    }
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Gives up an upload whose source failed at its end: the writers stop, and replicas that
    /// took the whole body are answered (so a DELETE sent next cannot overtake their PUT).
    pub async fn upload_cancel(&self, mut up: Upload) {
        let (t, whole) = (up.timeout, up.whole);
        if let Ok(legs) = self.end_legs(&mut up, true).await {
            join_all(legs.into_iter().filter(|(_, _, w)| Some(*w) == whole).map(|(mut l, path, _)| async move {
                if let Err(Error::Timeout(_)) = read_answer(&mut l, t).await {
                    fence(l, &path);
                }
            }))
            .await;
        }
    }

    /// Closes every queue (what is queued is dropped if `abort`) and waits for the writers. All wrote
    /// everything: their connections. One failed: its error (its volume marked down if it
    /// was unreachable), once every replica that did get the whole body has answered, so
    /// that a DELETE sent next to clean up cannot overtake that replica's PUT.
    async fn end_legs(&self, up: &mut Upload, abort: bool) -> Result<Vec<(Leased, String, u64)>, Error> {
        if abort {
            up.abort.set(true);
        }
        for leg in &mut up.legs {
            leg.tx = None;
        }
        let mut done = Vec::with_capacity(up.legs.len());
        let mut first = None;
        for leg in &mut up.legs {
            let Some(task) = leg.task.take() else { continue };
            let (l, r) = task.await;
            match r {
                Ok(written) => done.push((l, leg.path.clone(), written)),
                Err(e) => {
                    first.get_or_insert(failed(l.vol.as_ref(), e));
                }
            }
        }
        let Some(err) = first else { return Ok(done) };
        let t = up.timeout;
        let whole = up.whole;
        join_all(done.into_iter().filter(|(_, _, w)| Some(*w) == whole).map(|(mut l, path, _)| async move {
            if let Err(Error::Timeout(_)) = read_answer(&mut l, t).await {
                fence(l, &path);
            }
        }))
        .await;
        Err(err)
    }
}
