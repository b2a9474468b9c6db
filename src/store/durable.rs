//! `-sync`: a write is answered only once the index's write-ahead log is on disk. One
//! thread fsyncs for everyone: every write that arrives during an fsync waits for the next
//! one, so concurrent writes share each fsync (group commit) and no runtime thread blocks.

use std::sync::{Arc, Condvar, Mutex};

use super::Error;
use crate::index::Index;

#[derive(Default)]
struct State {
    /// Tickets handed out: each is a write that wants to be on disk.
    asked: u64,
    /// Every ticket up to this one is on disk.
    done: u64,
    waiters: Vec<(u64, flume::Sender<Result<(), String>>)>,
}

pub struct Syncer {
    state: Mutex<State>,
    wake: Condvar,
}

impl Syncer {
    /// Starts the fsync thread over `index`.
    pub fn start(index: Arc<Index>) -> std::io::Result<Arc<Syncer>> {
        let s = Arc::new(Syncer { state: Mutex::default(), wake: Condvar::new() });
        let me = s.clone();
        std::thread::Builder::new().name("mkv-fsync".into()).spawn(move || loop {
            let target = {
                let mut st = me.state.lock().unwrap_or_else(|e| e.into_inner());
                while st.asked == st.done {
                    st = me.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                st.asked
            };
            // every write that took a ticket up to `target` finished before the ticket
            let r = index.sync().map_err(|e| e.to_string());
            let mut st = me.state.lock().unwrap_or_else(|e| e.into_inner());
            st.done = target;
            let waiters = std::mem::take(&mut st.waiters);
            let (ready, later): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|(t, _)| *t <= target);
            st.waiters = later;
            drop(st);
            for (_, tx) in ready {
                let _ = tx.send(r.clone());
            }
        })?;
        Ok(s)
    }

    /// Waits until every index write this thread finished before the call is on disk.
    pub async fn wait(&self) -> Result<(), Error> {
        let (tx, rx) = flume::bounded(1);
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.asked += 1;
            let ticket = st.asked;
            st.waiters.push((ticket, tx));
        }
        self.wake.notify_one();
        match rx.recv_async().await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Internal("the index's log could not be synced to disk")),
            Err(_) => Err(Error::Internal("the fsync thread stopped")),
        }
    }
}
